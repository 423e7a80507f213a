"""The three LITcoder tutorials (examples/) run end to end on the synthetic assembly with local
models and wandb offline, and recover the synthetic ground truth.

The data are kept small so that the speech tutorial (a forward pass per 0.1 s of audio)
stays fast: 3 stories of 60 words (~30 s of audio each) on a 0.25 s TR grid, so that the
tutorials' LeBel trimming (test features from row 50, targets from row 40) still leaves
~100 test rows.
"""
from __future__ import annotations

import logging
import runpy
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    from scalenc.datasets import synthetic
    from scalenc.datasets.tiny_lm import build_tiny_lm

    root = tmp_path_factory.mktemp("tutorials")
    ds = synthetic(root / "data", n_stories=3, words_per_story=60, n_voxels=60, embedding_dim=8, tr=0.25,
                   seed=5)
    asm = ds.assembly()
    lm = build_tiny_lm(root / "tiny-gpt2", [str(w) for s in asm.stories for w in asm.words(s).word.values],
                       n_layer=2, n_embd=32, n_head=2, presence=0.5)
    torch.manual_seed(0)
    hub = HubertModel(HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                                   conv_dim=(16, 16, 16), conv_kernel=(10, 8, 8), conv_stride=(5, 8, 8),
                                   num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, vocab_size=12))
    hub.save_pretrained(root / "tiny-hubert")
    Wav2Vec2FeatureExtractor().save_pretrained(root / "tiny-hubert")
    e = dict(SCALENC_ASSEMBLY=str(ds.assembly_path), SCALENC_VECTORS=str(ds.embeddings_binary_path),
             SCALENC_LM=str(lm), SCALENC_LM_LAYER="2", SCALENC_SPEECH_MODEL=str(root / "tiny-hubert"),
             SCALENC_SPEECH_LAYER="2", SCALENC_AUDIO_DIR=str(ds.audio_dir), WANDB_MODE="offline",
             WANDB_SILENT="true", HF_HUB_OFFLINE="1")
    return root, ds, e


def run_tutorial(path: Path, work: Path, env: dict, monkeypatch, caplog) -> dict:
    """Run a tutorial script in this process (cwd ``work``, ``env`` set); its ``metrics``."""
    work.mkdir()
    monkeypatch.chdir(work)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with caplog.at_level(logging.INFO):
        out = runpy.run_path(str(path), run_name="__main__")
    assert "Median correlation:" in caplog.text
    runs = list((work / "results").glob("run-*"))
    assert len(runs) == 1
    assert list((runs[0] / "wandb").glob("offline-run-*")), "wandb ran offline and kept its run"
    assert any((work / next(p for p in ("cache", "cache_language_model", "cache_speech")
                            if (work / p).exists())).iterdir())
    return out["metrics"]


def ground_truth_recovery(ds, metrics: dict) -> dict[str, dict[str, float]]:
    """Per ground-truth driver (noise, wordrate, embeddings, both): the median test-story r
    of the fit and the median ceiling r (noise-free signal vs observed response)."""
    gt = ds.ground_truth()
    r = np.asarray(metrics["correlations"], dtype=np.float64)
    driver = np.array([str(d) for d in gt["driver"].values])
    ceiling = gt["ceiling_r"].values
    assert r.shape == driver.shape
    rec = {d: {"r": float(np.median(r[driver == d])), "ceiling": float(np.median(ceiling[driver == d]))}
           for d in ("noise", "wordrate", "embeddings", "both")}
    print("ground-truth recovery:", rec)
    return rec


def assert_word_rate_recovered(rec) -> None:
    """Features that carry word rate predict the word-rate voxels (a good part of their
    ceiling) far better than the pure-noise ones, which stay at chance."""
    assert abs(rec["noise"]["r"]) < 0.1, rec
    assert rec["wordrate"]["r"] > max(0.3 * rec["wordrate"]["ceiling"], rec["noise"]["r"] + 0.15), rec
    assert rec["both"]["r"] > rec["noise"]["r"] + 0.1, rec


@pytest.mark.slow
def test_tutorial_embeddings(env, monkeypatch, caplog):
    root, ds, e = env
    m = run_tutorial(ROOT / "examples" / "tutorial_embeddings.py", root / "emb", e, monkeypatch, caplog)
    rec = ground_truth_recovery(ds, m)
    # the generative word vectors themselves: the embedding voxels reach most of their ceiling,
    # the word-rate-only voxels (no word-rate column here) and the noise voxels stay near 0
    assert abs(rec["noise"]["r"]) < 0.1, rec
    assert rec["embeddings"]["r"] > 0.7 * rec["embeddings"]["ceiling"], rec
    assert rec["both"]["r"] > 0.4 * rec["both"]["ceiling"], rec
    assert rec["wordrate"]["r"] < 0.2, rec


@pytest.mark.slow
def test_tutorial_language_model(env, monkeypatch, caplog):
    root, ds, e = env
    m = run_tutorial(ROOT / "examples" / "tutorial_language_model.py", root / "lm", e, monkeypatch, caplog)
    assert_word_rate_recovered(ground_truth_recovery(ds, m))


@pytest.mark.slow
def test_tutorial_speech(env, monkeypatch, caplog):
    root, ds, e = env
    m = run_tutorial(ROOT / "examples" / "tutorial_speech.py", root / "speech", e, monkeypatch, caplog)
    assert_word_rate_recovered(ground_truth_recovery(ds, m))
