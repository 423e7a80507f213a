"""The synthetic dataset: its ground truth is checked against independent recomputation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.io.wavfile

from scalenc.synthetic import synthetic
from scalenc.synthetic.synthetic import TEST_STORY


def _naive_lanczos(t_events, t_trs, tr=2.0, a=3):
    """Dense, loop-based Lanczos weights written from the formula (REFERENCE.md)."""
    W = np.zeros((len(t_trs), len(t_events)))
    c = 1.0 / tr
    for j, tau in enumerate(t_trs):
        for i, t in enumerate(t_events):
            u = (tau - t) * c
            if u == 0:
                W[j, i] = 1.0
            elif abs(u) < a:
                W[j, i] = a * math.sin(math.pi * u) * math.sin(math.pi * u / a) / (math.pi ** 2 * u ** 2)
    return W


def _naive_design(asm, story, kv, delays=(1, 2, 3, 4)):
    words = [str(w) for w in asm.words(story).word.values]
    t = asm.word_times(story)
    grid = asm.tr_times(story).values
    ev = np.column_stack([np.ones(len(words)), np.stack([kv[w] for w in words])])
    F = _naive_lanczos(t, grid) @ ev
    n, p = F.shape
    D = np.zeros((n, p * len(delays)))
    for k, d in enumerate(delays):
        D[d:, k * p:(k + 1) * p] = F[:n - d]
    off = asm.grid_offset(story)
    D = D[off:off + asm.bold(story).shape[0]]
    sd = D.std(0)
    return np.where(sd > 0, (D - D.mean(0)) / np.where(sd > 0, sd, 1), 0.0)


@pytest.fixture(scope="module")
def kv(synthetic_small):
    from gensim.models import KeyedVectors

    return KeyedVectors.load_word2vec_format(str(synthetic_small.embeddings_path), binary=False)


def test_signal_equals_independent_recomputation(synthetic_small, kv):
    asm = synthetic_small.assembly()
    gt = synthetic_small.ground_truth()
    W = gt["weights"].values
    for story in asm.stories:
        X = _naive_design(asm, story, kv)
        np.testing.assert_allclose(X @ W, gt[f"stories/{story}"]["signal"].values, rtol=1e-4, atol=1e-4)


def test_embedding_files_text_and_binary_agree(synthetic_small, kv):
    from gensim.models import KeyedVectors

    kb = KeyedVectors.load_word2vec_format(str(synthetic_small.embeddings_binary_path), binary=True)
    assert kb.index_to_key == kv.index_to_key and kv.vector_size == 8
    np.testing.assert_allclose(kb.vectors, kv.vectors, rtol=1e-6)
    asm = synthetic_small.assembly()
    assert all(str(w) in kv for s in asm.stories for w in asm.words(s).word.values)


def test_voxel_drivers_snr_and_ceiling(synthetic_small):
    asm = synthetic_small.assembly()
    gt = synthetic_small.ground_truth()
    driver = gt["driver"].values
    assert (driver == "noise").sum() == 24  # 20 % of 120
    assert set(driver) == {"noise", "wordrate", "embeddings", "both"}
    # signal has unit variance over the training stories for driven voxels, zero for noise voxels
    sig = np.vstack([gt[f"stories/{s}"]["signal"].values for s in asm.train_stories])
    np.testing.assert_allclose(sig.std(0)[driver != "noise"], 1.0, rtol=1e-4)
    assert np.all(sig[:, driver == "noise"] == 0)
    # ceiling r == corr(noise-free signal, observed repeat-mean test response)
    s = gt[f"stories/{TEST_STORY}"]["signal"].values
    y = asm.bold(TEST_STORY).values
    r = np.array([np.corrcoef(s[:, v], y[:, v])[0, 1] if driver[v] != "noise" else 0.0 for v in range(y.shape[1])])
    np.testing.assert_allclose(gt["ceiling_r"].values, r, atol=1e-5)
    assert np.all(gt["ceiling_r"].values[driver == "noise"] == 0)
    # higher SNR -> higher ceiling (rank correlation over driven voxels)
    from scipy.stats import spearmanr

    driven = driver != "noise"
    assert spearmanr(gt["snr"].values[driven], gt["ceiling_r"].values[driven]).statistic > 0.8
    assert asm.n_repeats(TEST_STORY) == 3


def test_known_model_is_recoverable(synthetic_small, kv):
    """A ridge fit on the training stories predicts the test story close to the ceiling."""
    asm = synthetic_small.assembly()
    gt = synthetic_small.ground_truth()
    X = np.vstack([_naive_design(asm, s, kv) for s in asm.train_stories])
    Y = np.vstack([asm.bold(s).values for s in asm.train_stories])
    B = np.linalg.solve(X.T @ X + 10.0 * np.eye(X.shape[1]), X.T @ Y)
    P = _naive_design(asm, TEST_STORY, kv) @ B
    Yt = asm.bold(TEST_STORY).values
    r = np.array([np.corrcoef(P[:, v], Yt[:, v])[0, 1] for v in range(Yt.shape[1])])
    driver = gt["driver"].values
    ceil = gt["ceiling_r"].values
    assert np.median(r[driver != "noise"]) > np.median(ceil[driver != "noise"]) - 0.2
    assert np.median(np.abs(r[driver == "noise"])) < 0.2


def test_audio_follows_the_words(synthetic_small):
    asm = synthetic_small.assembly()
    story = asm.stories[0]
    path = asm.audio_path(story)
    assert path is not None and path.endswith(f"{story}.wav")
    sr, y = scipy.io.wavfile.read(path)
    assert sr == 16000 and y.ndim == 1
    y = y.astype(np.float64)
    grid = asm.tr_times(story).values
    assert abs(len(y) / sr - (grid[-1] + 1.0)) < 0.01
    w = asm.words(story)
    inside = np.concatenate([y[int(a * sr):int(b * sr)] for a, b in zip(w.start.values, w.end.values)])
    gaps = [(b, a) for b, a in zip(w.end.values[:-1], w.start.values[1:]) if a - b > 0.25]
    assert gaps, "the story should contain pauses"
    outside = np.concatenate([y[int(b * sr) + 10:int(a * sr) - 10] for b, a in gaps])
    assert np.sqrt(np.mean(inside ** 2)) > 100 * (np.sqrt(np.mean(outside ** 2)) + 1e-9)


def test_tree_uses_several_textgrid_encodings(synthetic_small):
    heads = {p.read_bytes()[:3] for p in (synthetic_small.root / "derivative" / "TextGrids").glob("*.TextGrid")}
    assert b"\xef\xbb\xbf" in heads  # UTF-8 BOM
    assert any(h[:2] in (b"\xff\xfe", b"\xfe\xff") for h in heads)  # UTF-16


def test_reproducible_from_seed(tmp_path):
    kw = dict(n_stories=2, words_per_story=80, n_voxels=10, embedding_dim=4, n_test_repeats=1, audio=False)
    a = synthetic(tmp_path / "a", seed=3, **kw).assembly()
    b = synthetic(tmp_path / "b", seed=3, **kw).assembly()
    c = synthetic(tmp_path / "c", seed=4, **kw).assembly()
    s = a.stories[0]
    np.testing.assert_array_equal(a.bold(s).values, b.bold(s).values)
    assert not np.allclose(a.bold(s).values, c.bold(s).values)
    with pytest.raises(FileExistsError, match="not empty"):
        synthetic(tmp_path / "a", seed=3, **kw)
    with pytest.raises(ValueError, match="words_per_story must be >= 60"):
        synthetic(tmp_path / "d", words_per_story=10)
