"""Word rate, static embeddings, custom features and the extractor factory."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from scalenc.align import Downsampler
from scalenc.features import (CustomExtractor, FeatureError, FeatureExtractorFactory, StaticEmbeddingExtractor,
                              WordRateExtractor, cache_key)
from scalenc.features import embeddings as emb_mod

gensim = pytest.importorskip("gensim")
GENSIM_DATA = Path(gensim.__file__).parent / "test" / "test_data"


class FakeAssembly:
    """The part of the Assembly API extractors use: words (+ times), optional phones."""

    def __init__(self, stories: dict, phones: dict | None = None):
        self._s = {k: (list(w), np.asarray(a, float), np.asarray(b, float)) for k, (w, a, b) in stories.items()}
        self._p = phones or {}

    @property
    def stories(self):
        return list(self._s)

    def words(self, story):
        w, a, b = self._s[story]
        return xr.Dataset({"start": ("word", a), "end": ("word", b)},
                          coords={"word": ("word", np.asarray(w, dtype=object))})

    def word_times(self, story):
        _, a, b = self._s[story]
        return (a + b) / 2

    def phones(self, story):
        if story not in self._p:
            return None
        lab, a, b = self._p[story]
        return xr.Dataset({"start": ("phone", np.asarray(a, float)), "end": ("phone", np.asarray(b, float))},
                          coords={"phone": ("phone", np.asarray(lab, dtype=object))})


def fake(words, story="s1"):
    """A story with the given words, 0.5 s apart (midpoints at 0.25, 0.75, ...)."""
    n = len(words)
    return FakeAssembly({story: (words, np.arange(n) * 0.5, np.arange(n) * 0.5 + 0.5)})


def story_words(asm, story):
    return [str(w) for w in asm.words(story)["word"].values]


def parse_w2v_text(path) -> dict[str, np.ndarray]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    v, d = map(int, lines[0].split())
    out = {}
    for line in lines[1:]:
        parts = line.split(" ")
        out[parts[0]] = np.array([float(x) for x in parts[1:]], dtype=np.float64)
        assert len(out[parts[0]]) == d
    assert len(out) == v
    return out


def write_w2v_text(path, vectors: dict[str, np.ndarray], header=True):
    d = len(next(iter(vectors.values())))
    with open(path, "w", encoding="utf-8") as f:
        if header:
            f.write(f"{len(vectors)} {d}\n")
        for w, v in vectors.items():
            f.write(w + " " + " ".join(repr(float(x)) for x in v) + "\n")
    return path


@pytest.fixture(scope="module")
def asm(synthetic_small):
    return synthetic_small.assembly()


@pytest.fixture(scope="module")
def ref_vectors(synthetic_small):
    return parse_w2v_text(synthetic_small.embeddings_path)


# ------------------------------------------------------------------------------ wordrate
def test_wordrate_events_and_counts_per_tr(asm):
    story = asm.stories[0]
    fs = WordRateExtractor(config={"include_phonemes": True}).extract(asm, story)
    wm = asm.word_times(story)
    ph = asm.phones(story)
    pm = (ph["start"].values + ph["end"].values) / 2
    n_w, n_p = wm.size, pm.size
    assert n_w == 200 and n_p > n_w
    F = fs["features"].values
    t = fs["time"].values
    assert F.shape == (1, n_w + n_p, 2)
    assert list(fs["layer"].values) == [0]
    assert list(fs["feature"].values) == ["word_rate", "phoneme_rate"]
    assert np.all(np.diff(t) >= 0)
    np.testing.assert_array_equal(t, np.sort(np.concatenate([wm, pm])))
    assert F[0, :, 0].sum() == n_w and F[0, :, 1].sum() == n_p
    np.testing.assert_array_equal(F[0].sum(axis=1), np.ones(n_w + n_p))  # one-hot rows
    np.testing.assert_array_equal(np.sort(t[F[0, :, 0] == 1]), np.sort(wm))

    tau = asm.tr_times(story).values
    tr = asm.tr_seconds
    counts = Downsampler(method="sum").downsample(F[0], t, tau)
    hand_w = np.array([np.count_nonzero((wm >= c - tr / 2) & (wm < c + tr / 2)) for c in tau])
    hand_p = np.array([np.count_nonzero((pm >= c - tr / 2) & (pm < c + tr / 2)) for c in tau])
    np.testing.assert_array_equal(counts[:, 0], hand_w)
    np.testing.assert_array_equal(counts[:, 1], hand_p)
    # the same bins with np.histogram (its last bin is closed; no midpoint sits on the last edge)
    edges = np.concatenate([tau - tr / 2, [tau[-1] + tr / 2]])
    np.testing.assert_array_equal(np.histogram(wm, bins=edges)[0], hand_w)
    assert hand_w.sum() == n_w and hand_w.max() >= 3  # every word falls in a TR, several per TR


def test_wordrate_without_phonemes(asm):
    story = asm.stories[1]
    n_w = asm.words(story).sizes["word"]
    for fs in (WordRateExtractor(config={"include_phonemes": False}).extract(asm, story),
               WordRateExtractor().extract(asm, story),  # word rate only by default (the tutorials' one column)
               FeatureExtractorFactory.create_extractor("wordrate", "wordrate", {}, None).extract(asm, story)):
        assert fs["features"].shape == (1, n_w, 1)
        assert list(fs["feature"].values) == ["word_rate"]
        np.testing.assert_allclose(fs["time"].values, asm.word_times(story))


def test_phonemerate_modality(asm, tmp_path):
    story = asm.stories[1]
    ph = asm.phones(story)
    pm = np.sort((ph["start"].values + ph["end"].values) / 2)
    fs = FeatureExtractorFactory.create_extractor("phonemerate", None, {}, tmp_path).extract(asm, story)
    assert fs["features"].shape == (1, pm.size, 1) and list(fs["feature"].values) == ["phoneme_rate"]
    np.testing.assert_array_equal(fs["time"].values, pm)
    assert fs.attrs["feature_space"] == "phonemerate"
    both = WordRateExtractor(config={"include_phonemes": True}).extract(asm, story)
    np.testing.assert_array_equal(fs["time"].values, both["time"].values[both["features"].values[0, :, 1] == 1])
    # an assembly without a phone tier
    words = story_words(asm, story)[:5]
    fs = WordRateExtractor().extract(fake(words), "s1")
    assert fs["features"].shape == (1, 5, 1)
    np.testing.assert_allclose(fs["time"].values, [0.25, 0.75, 1.25, 1.75, 2.25])


def test_wordrate_phones_sorted_words_first():
    a = FakeAssembly({"s": (["ab", "c"], [0.0, 1.0], [1.0, 1.5])},
                     phones={"s": (["A", "B", "C"], [0.0, 0.5, 1.0], [0.5, 1.0, 1.5])})
    fs = WordRateExtractor(config={"include_phonemes": True}).extract(a, "s")
    np.testing.assert_allclose(fs["time"].values, [0.25, 0.5, 0.75, 1.25, 1.25])
    np.testing.assert_array_equal(fs["features"].values[0], [[0, 1], [1, 0], [0, 1], [1, 0], [0, 1]])


# ------------------------------------------------------------------------------ embeddings
@pytest.mark.parametrize("which", ["text", "binary"])
def test_embeddings_match_file_rows(synthetic_small, asm, ref_vectors, which):
    path = synthetic_small.embeddings_path if which == "text" else synthetic_small.embeddings_binary_path
    story = asm.stories[0]
    fs = StaticEmbeddingExtractor(str(path)).extract(asm, story)
    words = story_words(asm, story)
    F = fs["features"].values[0]
    assert F.shape == (len(words), 8)
    expected = np.stack([ref_vectors[w] for w in words])
    np.testing.assert_allclose(F, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fs["time"].values, asm.word_times(story))
    assert fs.attrs["n_oov"] == 0 and fs.attrs["oov_rate"] == 0.0
    assert fs.attrs["vectors_format"] == "word2vec"


def test_embeddings_lowercase(synthetic_small, asm, ref_vectors):
    words = story_words(asm, asm.stories[0])[:12]
    upper = fake([w.upper() for w in words])
    path = str(synthetic_small.embeddings_path)
    fs = StaticEmbeddingExtractor(path).extract(upper, "s1")
    np.testing.assert_allclose(fs["features"].values[0], np.stack([ref_vectors[w] for w in words]), rtol=1e-6)
    fs = StaticEmbeddingExtractor(path, {"lowercase": False, "oov_handling": "zero"}).extract(upper, "s1")
    assert fs.attrs["n_oov"] == sum(w.upper() != w for w in words) == 12
    np.testing.assert_array_equal(fs["features"].values[0], 0)


@pytest.fixture(scope="module")
def oov_case(asm, ref_vectors, tmp_path_factory):
    """Story 0 of the synthetic data and a vectors file without some of its words (the first included)."""
    story = asm.stories[0]
    words = story_words(asm, story)
    vocab = list(dict.fromkeys(words))
    removed = {vocab[0], vocab[3], vocab[7], "the"} & set(vocab)
    assert words[0] in removed and "the" in removed
    kept = {w: ref_vectors[w] for w in vocab if w not in removed}
    path = write_w2v_text(tmp_path_factory.mktemp("oov") / "subset.w2v.txt", kept)
    return story, words, removed, kept, path


def test_embeddings_oov_modes(asm, oov_case):
    story, words, removed, kept, path = oov_case
    n, d = len(words), 8
    is_oov = np.array([w in removed for w in words])
    n_oov = int(is_oov.sum())
    assert 0 < n_oov < n and is_oov[0]
    mean = np.mean(np.stack(list(kept.values())), axis=0)
    exp_copy, exp_zero, exp_mean = (np.zeros((n, d)) for _ in range(3))
    prev = np.zeros(d)
    for i, w in enumerate(words):
        if w in kept:
            prev = kept[w]
            exp_copy[i] = exp_zero[i] = exp_mean[i] = kept[w]
        else:
            exp_copy[i], exp_mean[i] = prev, mean
    out = {m: StaticEmbeddingExtractor(str(path), {"oov_handling": m}).extract(asm, story)
           for m in ("copy_prev", "zero", "mean", "skip")}
    np.testing.assert_allclose(out["copy_prev"]["features"].values[0], exp_copy, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out["copy_prev"]["features"].values[0, 0], 0)  # OOV at story start
    np.testing.assert_allclose(out["zero"]["features"].values[0], exp_zero, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out["mean"]["features"].values[0], exp_mean, rtol=1e-5, atol=1e-6)
    skip = out["skip"]
    np.testing.assert_allclose(skip["features"].values[0], exp_zero[~is_oov], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(skip["time"].values, asm.word_times(story)[~is_oov])
    for fs in out.values():
        assert fs.attrs["n_oov"] == n_oov
        assert fs.attrs["oov_rate"] == pytest.approx(n_oov / n)
        assert fs.attrs["oov_examples"][0] == words[0]
        assert set(fs.attrs["oov_examples"]) == removed
    with pytest.raises(FeatureError, match=story) as ei:
        StaticEmbeddingExtractor(str(path), {"oov_handling": "error"}).extract(asm, story)
    assert repr(words[0]) in str(ei.value) and f"{n_oov} of {n}" in str(ei.value)


def test_embeddings_oov_rate_logged(asm, oov_case, caplog):
    story, words, removed, _, path = oov_case
    n_oov = sum(w in removed for w in words)
    with caplog.at_level("INFO", logger="scalenc.features.embeddings"):
        StaticEmbeddingExtractor(str(path), {"oov_handling": "zero"}).extract(asm, story)
    assert any(f"{n_oov} of {len(words)} words out of vocabulary" in r.getMessage() for r in caplog.records)


def test_embeddings_l2_normalize(synthetic_small, asm, ref_vectors):
    story = asm.stories[1]
    words = story_words(asm, story)
    F = StaticEmbeddingExtractor(str(synthetic_small.embeddings_path), {"l2_normalize": True}).extract(
        asm, story)["features"].values[0]
    np.testing.assert_allclose(np.linalg.norm(F, axis=1), 1.0, rtol=1e-6)
    raw = np.stack([ref_vectors[w] for w in words])
    np.testing.assert_allclose(F, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_embeddings_glove_text(tmp_path, ref_vectors):
    vecs = {w: ref_vectors[w] for w in list(ref_vectors)[:20]}
    path = write_w2v_text(tmp_path / "glove.txt", vecs, header=False)
    words = list(vecs)[5:10] + ["notaword"]
    fs = StaticEmbeddingExtractor(str(path), {"oov_handling": "zero"}).extract(fake(words), "s1")
    assert fs.attrs["vectors_format"] == "glove"
    np.testing.assert_allclose(fs["features"].values[0, :5], np.stack([vecs[w] for w in words[:5]]), rtol=1e-6)
    np.testing.assert_array_equal(fs["features"].values[0, 5], 0)
    assert fs.attrs["n_oov"] == 1 and fs.attrs["oov_examples"] == ["notaword"]
    # LITcoder style: model_name is a label, the file in vector_path, no_header=True forces GloVe
    ex = FeatureExtractorFactory.create_extractor("embeddings", "glove", {"vector_path": str(path),
                                                                         "no_header": True, "use_tqdm": False,
                                                                         "oov_handling": "zero"})
    np.testing.assert_array_equal(ex.extract(fake(words), "s1")["features"].values, fs["features"].values)


def test_embeddings_fasttext_subwords():
    from gensim.models.fasttext import load_facebook_vectors

    path = GENSIM_DATA / "lee_fasttext.bin"
    kv = load_facebook_vectors(str(path))
    words = ["the", "Government", "qzxwvbnm", "unfathomablyness"]
    assert "qzxwvbnm" not in kv.key_to_index and "unfathomablyness" not in kv.key_to_index
    fs = StaticEmbeddingExtractor(str(path), {"oov_handling": "error"}).extract(fake(words), "s1")
    assert fs.attrs["vectors_format"] == "fasttext"
    assert fs.attrs["n_oov"] == 0 and fs.attrs["n_subword"] == 2
    expected = np.stack([kv[w.lower()] for w in words])
    np.testing.assert_allclose(fs["features"].values[0], expected, rtol=1e-6, atol=1e-7)
    assert np.all(np.abs(expected[2:]).sum(axis=1) > 0)


@pytest.mark.parametrize("name,binary", [("euclidean_vectors.bin", True), ("lee_fasttext.vec", False),
                                         ("test_glove.txt", False)])
def test_embeddings_gensim_shipped_files(name, binary):
    from gensim.models import KeyedVectors

    path = GENSIM_DATA / name
    kv = KeyedVectors.load_word2vec_format(str(path), binary=binary, no_header=name.endswith("glove.txt"))
    words = kv.index_to_key[:6]
    fs = StaticEmbeddingExtractor(str(path), {"lowercase": False}).extract(fake(words), "s1")
    assert fs.attrs["n_oov"] == 0
    np.testing.assert_array_equal(fs["features"].values[0], np.stack([kv[w] for w in words]))


def test_embeddings_kv_format_and_process_cache(tmp_path, ref_vectors):
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=8)
    words = list(ref_vectors)[:10]
    kv.add_vectors(words, np.stack([ref_vectors[w] for w in words]).astype(np.float32))
    kv.save(str(tmp_path / "v.kv"))
    ex = StaticEmbeddingExtractor(str(tmp_path / "v.kv"))
    fs = ex.extract(fake(words[2:6]), "s1")
    assert fs.attrs["vectors_format"] == "kv"
    np.testing.assert_allclose(fs["features"].values[0], np.stack([ref_vectors[w] for w in words[2:6]]), rtol=1e-6)
    assert ex.vectors() is StaticEmbeddingExtractor(str(tmp_path / "v.kv")).vectors()  # loaded once per process


def test_embeddings_file_errors(tmp_path, monkeypatch):
    with pytest.raises(FeatureError, match="nothere.bin"):
        StaticEmbeddingExtractor(str(tmp_path / "nothere.bin"))
    with pytest.raises(FeatureError, match="model_name"):
        StaticEmbeddingExtractor(None)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(FeatureError, match="empty.txt.* is empty"):
        StaticEmbeddingExtractor(str(tmp_path / "empty.txt")).extract(fake(["a"]), "s1")
    (tmp_path / "garbled.txt").write_text("3 4\nthe 0.1 0.2\nnot numbers at all here\n")
    with pytest.raises(FeatureError, match="garbled.txt"):
        StaticEmbeddingExtractor(str(tmp_path / "garbled.txt")).extract(fake(["a"]), "s1")
    (tmp_path / "garbled.bin").write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(FeatureError, match="garbled.bin"):
        StaticEmbeddingExtractor(str(tmp_path / "garbled.bin")).extract(fake(["a"]), "s1")
    with pytest.raises(FeatureError, match="oov_handling.*copy_prev"):
        StaticEmbeddingExtractor(str(tmp_path / "garbled.txt"), {"oov_handling": "random"})
    with pytest.raises(FeatureError, match="format"):
        StaticEmbeddingExtractor(str(tmp_path / "garbled.txt"), {"format": "bert"})
    # gensim missing: plain word2vec / GloVe files are read without it; a gensim-only format
    # (.kv, fastText .bin) gets an error naming the extra
    emb_mod.clear_vector_cache()
    monkeypatch.setitem(sys.modules, "gensim", None)
    monkeypatch.setitem(sys.modules, "gensim.models", None)
    write_w2v_text(tmp_path / "ok.txt", {"a": np.ones(3)})
    fs = StaticEmbeddingExtractor(str(tmp_path / "ok.txt")).extract(fake(["a"]), "s1")
    np.testing.assert_array_equal(fs["features"].values[0], np.ones((1, 3), np.float32))
    (tmp_path / "v.kv").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ImportError, match=r"scalenc\[embeddings\]"):
        StaticEmbeddingExtractor(str(tmp_path / "v.kv")).extract(fake(["a"]), "s1")


@pytest.mark.parametrize("name,binary,no_header", [
    ("euclidean_vectors.bin", True, False), ("lee_fasttext.vec", False, False), ("test_glove.txt", False, True),
    ("high_precision.kv.txt", False, False), ("high_precision.kv.bin", True, False)])
def test_plain_reader_equals_gensim(name, binary, no_header):
    """word2vec text/binary and GloVe files read without gensim hold exactly gensim's words,
    order and float32 vectors."""
    from gensim.models import KeyedVectors

    path = GENSIM_DATA / name
    kv = KeyedVectors.load_word2vec_format(str(path), binary=binary, no_header=no_header)
    plain = emb_mod.read_plain(path, "glove" if no_header else "word2vec", binary)
    assert plain.index_to_key == kv.index_to_key and plain.key_to_index == kv.key_to_index
    assert plain.vectors.dtype == np.float32 and plain.vector_size == kv.vector_size
    np.testing.assert_array_equal(plain.vectors, kv.vectors)


def test_plain_reader_refuses_what_gensim_refuses(tmp_path):
    (tmp_path / "short.txt").write_text("3 2\nthe 0.1 0.2\ncat 1 2\n")
    with pytest.raises(EOFError):
        emb_mod.read_plain(tmp_path / "short.txt", "word2vec", False)
    (tmp_path / "bad.txt").write_text("2 2\nthe 0.1\ncat 1 2\n")
    with pytest.raises(ValueError):
        emb_mod.read_plain(tmp_path / "bad.txt", "word2vec", False)
    (tmp_path / "dup.txt").write_text("3 2\nthe 0.1 0.2\ncat 1 2\nthe 5 6\n")
    v = emb_mod.read_plain(tmp_path / "dup.txt", "word2vec", False)  # gensim keeps the first
    assert v.index_to_key == ["the", "cat"]
    np.testing.assert_array_equal(v.vectors, np.array([[0.1, 0.2], [1.0, 2.0]], np.float32))


# ------------------------------------------------------------------------------ custom
def _letters(words, times):
    return times, np.array([[len(w), w.count("e")] for w in words], dtype=float)


def test_custom_function(asm):
    story = asm.stories[0]
    words = story_words(asm, story)
    fs = CustomExtractor(config={"function": _letters, "name": "letters"}).extract(asm, story)
    assert fs.attrs["feature_space"] == "letters"
    np.testing.assert_array_equal(fs["features"].values[0, :, 0], [len(w) for w in words])
    np.testing.assert_allclose(fs["time"].values, asm.word_times(story))

    def three_layers(words, times):
        base = np.arange(len(words), dtype=float)[:, None]
        return times, np.stack([base * k for k in (1, 2, 3)])

    fs = CustomExtractor(config={"function": three_layers}).extract(asm, story, layers=[2])
    assert list(fs["layer"].values) == [2]
    np.testing.assert_array_equal(fs["features"].values[0, :, 0], 3 * np.arange(len(words)))


def test_custom_arrays_npz_zarr_tuple(tmp_path):
    import zarr

    t = np.array([0.5, 1.0, 1.0, 2.5])
    F = np.arange(12, dtype=float).reshape(4, 3)
    np.savez(tmp_path / "s1.npz", times=t, features=F)
    g = zarr.open_group(str(tmp_path / "s2.zarr"), mode="w")
    g.create_array("times", data=t + 1)
    g.create_array("features", data=np.stack([F, -F]))
    a = FakeAssembly({s: (["x"], [0.0], [1.0]) for s in ("s1", "s2", "s3")})
    ex = CustomExtractor(config={"arrays": {"s1": str(tmp_path / "s1.npz"), "s2": tmp_path / "s2.zarr",
                                            "s3": (t * 2, F[:, :2])}})
    fs1, fs2, fs3 = (ex.extract(a, s) for s in ("s1", "s2", "s3"))
    np.testing.assert_array_equal(fs1["features"].values[0], F)
    np.testing.assert_array_equal(fs1["time"].values, t)
    assert fs2["features"].shape == (2, 4, 3)
    np.testing.assert_array_equal(fs2["features"].values[1], -F)
    np.testing.assert_array_equal(fs2["time"].values, t + 1)
    np.testing.assert_array_equal(fs3["features"].values[0], F[:, :2])
    with pytest.raises(FeatureError, match=r"'s4'.*available stories: \['s1', 's2', 's3'\]"):
        ex.extract(FakeAssembly({"s4": (["x"], [0.0], [1.0])}), "s4")


def test_custom_validation_errors(tmp_path):
    a = FakeAssembly({"s1": (["x", "y", "z"], [0, 1, 2], [1, 2, 3])})
    np.savez(tmp_path / "rows.npz", times=np.arange(5.0), features=np.zeros((4, 2)))
    with pytest.raises(FeatureError, match=r"'s1'.*rows\.npz.*4 rows.*5 times"):
        CustomExtractor(config={"arrays": {"s1": str(tmp_path / "rows.npz")}}).extract(a, "s1")
    np.savez(tmp_path / "back.npz", times=np.array([0.0, 2.0, 1.0]), features=np.zeros((3, 2)))
    with pytest.raises(FeatureError, match=r"'s1'.*back\.npz.*backwards at row 2 \(1\.0 after 2\.0\)"):
        CustomExtractor(config={"arrays": {"s1": str(tmp_path / "back.npz")}}).extract(a, "s1")

    def with_nan(words, times):
        F = np.ones((len(words), 2))
        F[1, 1] = np.nan
        return times, F

    with pytest.raises(FeatureError, match=r"'s1'.*with_nan.*1 NaN/inf.*\(1, 1\)"):
        CustomExtractor(config={"function": with_nan}).extract(a, "s1")
    np.savez(tmp_path / "nokey.npz", t=np.arange(3.0), features=np.zeros((3, 2)))
    with pytest.raises(FeatureError, match=r"nokey\.npz lacks \['times'\]"):
        CustomExtractor(config={"arrays": {"s1": str(tmp_path / "nokey.npz")}}).extract(a, "s1")
    with pytest.raises(FeatureError, match="1-D"):
        CustomExtractor(config={"arrays": {"s1": (np.zeros((3, 1)), np.zeros((3, 2)))}}).extract(a, "s1")
    with pytest.raises(FeatureError, match="exactly one"):
        CustomExtractor(config={})
    with pytest.raises(FeatureError, match="callable"):
        CustomExtractor(config={"function": 3})


def _make_feature_fn(variant):
    if variant == "a":
        def feat(words, times):
            return times, np.ones((len(words), 1))
    elif variant == "a_again":
        def feat(words, times):
            return times, np.ones((len(words), 1))
    else:
        def feat(words, times):
            return times, 2 * np.ones((len(words), 1))
    return feat


def test_custom_identity_follows_code(asm):
    story = asm.stories[0]
    fa, fa2, fb = (_make_feature_fn(v) for v in ("a", "a_again", "b"))
    assert fa.__qualname__ == fb.__qualname__ and fa.__module__ == fb.__module__

    def key(fn):
        ex = CustomExtractor(config={"function": fn})
        return cache_key(ex.identity(), ex.stimulus(asm, story))

    assert key(fa) == key(fa2)  # same code, another function object (a new process would agree)
    assert key(fa) != key(fb)  # edited body: another cache entry
    assert key(fa) != key(_letters)


# ------------------------------------------------------------------------------ factory
def test_factory_builtin_modalities(synthetic_small, tmp_path):
    f = FeatureExtractorFactory
    assert set(f.modalities()) >= {"wordrate", "embeddings", "language_model", "speech", "custom"}
    ex = f.create_extractor("wordrate", "wordrate", {}, str(tmp_path))
    assert type(ex) is WordRateExtractor and ex.cache_dir == tmp_path
    assert type(f.create_extractor(modality="word_rate", model_name=None, config=None, cache_dir=None)) \
        is WordRateExtractor
    ex = f.create_extractor("embeddings", str(synthetic_small.embeddings_path), None, None)
    assert type(ex) is StaticEmbeddingExtractor and ex.cache_dir is None
    ex = f.create_extractor(modality="Embedding", model_name="word2vec",
                            config={"vector_path": str(synthetic_small.embeddings_binary_path), "binary": True,
                                    "lowercase": False, "oov_handling": "copy_prev", "use_tqdm": True},
                            cache_dir=tmp_path)
    assert type(ex) is StaticEmbeddingExtractor and ex.config["lowercase"] is False
    assert type(f.create_extractor("custom", None, {"function": _letters})) is CustomExtractor
    # LITcoder configs carry model_name; it must agree with the argument
    assert f.create_extractor("wordrate", None, {"model_name": "wordrate"}).model_name == "wordrate"
    with pytest.raises(FeatureError, match="model_name"):
        f.create_extractor("wordrate", "a", {"model_name": "b"})


@pytest.mark.parametrize("modality,module,cls", [("language_model", "scalenc.features.language_model",
                                                  "LanguageModelExtractor"),
                                                 ("speech", "scalenc.features.speech", "SpeechExtractor")])
def test_factory_lazy_modalities(modality, module, cls):
    if not os.path.exists(Path(__file__).parents[1] / (module.replace(".", "/") + ".py")):
        pytest.skip(f"{module} not written yet")
    mod = pytest.importorskip(module)
    assert FeatureExtractorFactory.resolve(modality) is getattr(mod, cls)


def test_factory_errors_and_register(monkeypatch):
    f = FeatureExtractorFactory
    with pytest.raises(FeatureError, match=r"unknown modality 'vision'.*'wordrate'.*'embeddings'.*'custom'"):
        f.create_extractor("vision", None, {}, None)
    with pytest.raises(FeatureError, match=r"unknown config key\(s\) \['bogus'\]; accepted: \['include_phonemes'\]"):
        f.create_extractor("wordrate", None, {"bogus": 1}, None)
    with pytest.raises(FeatureError, match=r"'include_phonemes' must be bool, got str"):
        f.create_extractor("wordrate", None, {"include_phonemes": "yes"}, None)
    monkeypatch.setattr(f, "_registry", dict(f._registry))

    class Mine(WordRateExtractor):
        modality = "mine"

    f.register("mine", Mine)
    assert "mine" in f.modalities() and type(f.create_extractor("mine")) is Mine
    with pytest.raises(FeatureError, match="not a FeatureExtractor"):
        f.register("bad", dict)
    f.register("ghost", "scalenc.features._no_such_module:Ghost", extra="scalenc[ghost]")
    with pytest.raises(ImportError, match=r"pip install 'scalenc\[ghost\]'"):
        f.create_extractor("ghost")
    monkeypatch.setitem(f._registry, "language_model",
                        ("scalenc.features._missing_lm:LanguageModelExtractor", "scalenc[lm]"))
    with pytest.raises(ImportError, match=r"scalenc\[lm\]"):
        f.create_extractor("lm", "gpt2")
