"""Feature cache behaviour through the extractors: hits, misses, rebuilds, interrupted writes."""
from __future__ import annotations

import json
import os
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

from scalenc.features import CustomExtractor, FeatureCache, StaticEmbeddingExtractor, WordRateExtractor, cache_key
from scalenc.features import base as base_mod
from scalenc.features import cache as cache_mod


class CountingWordRate(WordRateExtractor):
    calls = 0

    def compute(self, assembly, story):
        type(self).calls += 1
        return super().compute(assembly, story)


class CountingEmbeddings(StaticEmbeddingExtractor):
    calls = 0

    def compute(self, assembly, story):
        type(self).calls += 1
        return super().compute(assembly, story)


class CountingCustom(CustomExtractor):
    calls = 0

    def compute(self, assembly, story):
        type(self).calls += 1
        return super().compute(assembly, story)


def three_layers(words, times):
    base = np.column_stack([np.arange(len(words), dtype=float), [len(w) for w in words]])
    return times, np.stack([base * (k + 1) for k in range(3)])


class ShiftedAssembly:
    """The same story with every word (and phone) ``shift`` seconds later: another stimulus."""

    def __init__(self, asm, shift):
        self._a, self._shift = asm, shift

    def words(self, story):
        w = self._a.words(story)
        return w.assign(start=w["start"] + self._shift, end=w["end"] + self._shift)

    def word_times(self, story):
        return self._a.word_times(story) + self._shift

    def phones(self, story):
        p = self._a.phones(story)
        return None if p is None else p.assign(start=p["start"] + self._shift, end=p["end"] + self._shift)


@pytest.fixture(scope="module")
def asm(synthetic_small):
    return synthetic_small.assembly()


@pytest.fixture(autouse=True)
def _reset_counts():
    CountingWordRate.calls = CountingEmbeddings.calls = CountingCustom.calls = 0


def entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def key_of(ex, assembly, story):
    return cache_key(ex.identity(), ex.stimulus(assembly, story))


def test_hit_after_write_reads_lazily(asm, tmp_path):
    story = asm.stories[0]
    fs1 = CountingWordRate(config={"include_phonemes": True}, cache_dir=tmp_path).extract(asm, story)
    assert CountingWordRate.calls == 1
    ex2 = CountingWordRate("wordrate", {"include_phonemes": True}, cache_dir=tmp_path)  # new instance, same config
    fs2 = ex2.extract(asm, story)
    assert CountingWordRate.calls == 1  # hit
    key = key_of(ex2, asm, story)
    assert FeatureCache(tmp_path).keys() == [key] and entries(tmp_path) == [f"{key}.zarr"]
    assert isinstance(fs2["features"].data, da.Array)  # lazy
    np.testing.assert_array_equal(fs2["features"].values, fs1["features"].values)
    np.testing.assert_array_equal(fs2["time"].values, fs1["time"].values)
    assert list(fs2["feature"].values) == ["word_rate", "phoneme_rate"]
    ref = WordRateExtractor(config={"include_phonemes": True}).compute(asm, story)
    xr.testing.assert_equal(fs2.drop_attrs(), ref.drop_attrs())
    assert fs2.attrs["cache_key"] == key and fs2.attrs["n_words"] == 200


def test_other_layer_later_reads_cache(asm, tmp_path):
    story = asm.stories[0]
    ref = CustomExtractor(config={"function": three_layers}).compute(asm, story)["features"].values
    fs = CountingCustom(config={"function": three_layers}, cache_dir=tmp_path).extract(asm, story, layers=[1])
    assert CountingCustom.calls == 1 and fs["features"].shape[0] == 1
    np.testing.assert_array_equal(fs["features"].values[0], ref[1])
    ex = CountingCustom(config={"function": three_layers}, cache_dir=tmp_path)
    for layers, want in (([2], [2]), ([0, 2], [0, 2]), (-1, [2]), (None, [0, 1, 2])):
        fs = ex.extract(asm, story, layers=layers)
        assert list(fs["layer"].values) == want
        assert isinstance(fs["features"].data, da.Array)
        np.testing.assert_array_equal(fs["features"].values, ref[want])
    assert CountingCustom.calls == 1  # every later layer came from the cache


def test_config_and_stimulus_changes_miss(asm, tmp_path):
    story = asm.stories[1]
    CountingWordRate(config={"include_phonemes": True}, cache_dir=tmp_path).extract(asm, story)
    fs = CountingWordRate(config={"include_phonemes": False}, cache_dir=tmp_path).extract(asm, story)
    assert CountingWordRate.calls == 2 and fs["features"].shape[-1] == 1
    shifted = ShiftedAssembly(asm, 0.5)
    fs_s = CountingWordRate(cache_dir=tmp_path).extract(shifted, story)
    assert CountingWordRate.calls == 3
    fs_0 = CountingWordRate(cache_dir=tmp_path).extract(asm, story)
    assert CountingWordRate.calls == 3  # the original is still a hit
    np.testing.assert_allclose(fs_s["time"].values, fs_0["time"].values + 0.5)
    assert len(FeatureCache(tmp_path).keys()) == 3


def _write_vectors(path, words, rng):
    vecs = rng.standard_normal((len(words), 3))
    with open(path, "w") as f:
        f.write(f"{len(words)} 3\n")
        for w, v in zip(words, vecs):
            f.write(w + " " + " ".join(f"{x:.6f}" for x in v) + "\n")
    return {w: np.round(v, 6) for w, v in zip(words, vecs)}


def test_embeddings_file_change_misses(asm, tmp_path):
    story = asm.stories[0]
    words = [str(w) for w in asm.words(story)["word"].values]
    vocab = sorted(set(words))
    path = tmp_path / "vecs.txt"
    rng = np.random.default_rng(0)
    v1 = _write_vectors(path, vocab, rng)
    cache = tmp_path / "cache"
    fs1 = CountingEmbeddings(str(path), cache_dir=cache).extract(asm, story)
    CountingEmbeddings(str(path), cache_dir=cache).extract(asm, story)
    assert CountingEmbeddings.calls == 1
    np.testing.assert_allclose(fs1["features"].values[0], np.stack([v1[w] for w in words]), atol=1e-6)
    mtime = path.stat().st_mtime_ns
    v2 = _write_vectors(path, vocab, rng)  # same words, new vectors
    os.utime(path, ns=(mtime + 5_000_000_000, mtime + 5_000_000_000))
    fs2 = CountingEmbeddings(str(path), cache_dir=cache).extract(asm, story)
    assert CountingEmbeddings.calls == 2  # miss, and the per-process vectors were reloaded
    np.testing.assert_allclose(fs2["features"].values[0], np.stack([v2[w] for w in words]), atol=1e-6)
    assert len(FeatureCache(cache).keys()) == 2


def test_rebuild_recomputes(asm, tmp_path):
    story = asm.stories[0]
    ex = CountingWordRate(cache_dir=tmp_path)
    fs1 = ex.extract(asm, story)
    fs2 = ex.extract(asm, story, rebuild=True)
    assert CountingWordRate.calls == 2
    np.testing.assert_array_equal(fs1["features"].values, fs2["features"].values)
    assert len(FeatureCache(tmp_path).keys()) == 1
    ex.extract(asm, story)
    assert CountingWordRate.calls == 2


def test_interrupted_write_leaves_nothing(asm, tmp_path, monkeypatch):
    story = asm.stories[0]
    ex = CountingCustom(config={"function": three_layers}, cache_dir=tmp_path)
    key = key_of(ex, asm, story)
    original = cache_mod._write_group
    made = []

    def failing_write_group(path, attributes):
        made.append(path.name)
        if path.name == "1":  # the second layer's group: layer 0 is already written
            raise OSError("disk full (simulated)")
        return original(path, attributes)

    monkeypatch.setattr(cache_mod, "_write_group", failing_write_group)
    with pytest.raises(OSError, match="simulated"):
        ex.extract(asm, story)
    assert made == ["layers", "0", "1"]  # it failed in the middle of the layer loop
    cache = FeatureCache(tmp_path)
    assert key not in cache and cache.load(key) is None and cache.keys() == []
    assert [n for n in entries(tmp_path) if not n.startswith(".")] == []
    monkeypatch.setattr(cache_mod, "_write_group", original)
    fs = ex.extract(asm, story)
    assert CountingCustom.calls == 2 and key in cache
    assert fs["features"].shape[0] == 3


def test_leftover_temp_dir_ignored_and_cleaned(asm, tmp_path):
    story = asm.stories[0]
    ex = CountingWordRate(cache_dir=tmp_path)
    key = key_of(ex, asm, story)
    tmp = tmp_path / f".{key}.zarr.tmp-dead0001"
    g = zarr.open_group(str(tmp), mode="w", zarr_format=3)  # a half-written entry of a killed process
    g.create_group("layers/0").create_array("features", shape=(3, 2), dtype="f4")
    g.attrs.update(scalenc_cache=1, layers=[0])
    fs = ex.extract(asm, story)
    assert CountingWordRate.calls == 1 and fs["features"].shape[1] == 200 + fs.attrs["n_phones"]
    assert FeatureCache(tmp_path).keys() == [key]
    # the write removed the dead process's leftover (stale temporaries of a cache are cleaned on write)
    assert FeatureCache(tmp_path).clean() == 0
    assert entries(tmp_path) == [f"{key}.zarr"]
    ex.extract(asm, story)
    assert CountingWordRate.calls == 1  # the real entry survived the clean


def test_entry_without_complete_attr_is_a_miss(asm, tmp_path):
    story = asm.stories[0]
    ex = CountingWordRate(cache_dir=tmp_path)
    key = key_of(ex, asm, story)
    ex.extract(asm, story)
    cache = FeatureCache(tmp_path)
    assert key in cache
    del zarr.open_group(str(cache.path(key)), mode="r+").attrs["complete"]
    assert key not in cache and cache.load(key) is None and cache.keys() == []
    fs = ex.extract(asm, story)
    assert CountingWordRate.calls == 2 and key in cache
    assert fs["features"].values[0, :, 0].sum() == 200


def _embeddings_file(asm, path):
    vocab = sorted({str(w) for s in asm.stories for w in asm.words(s)["word"].values})
    _write_vectors(path, vocab[5:], np.random.default_rng(1))  # a few OOV words
    return str(path)


@pytest.mark.parametrize("which", ["wordrate", "custom", "embeddings"])
def test_miss_returns_what_a_hit_reads(asm, tmp_path, which):
    """A miss returns the computed FeatureSet in memory; a later hit reads the same
    arrays, coordinates and attrs (lazily) from the entry."""
    story = asm.stories[2]
    vectors = _embeddings_file(asm, tmp_path / "v.txt") if which == "embeddings" else None
    make = {"wordrate": lambda: CountingWordRate(config={"include_phonemes": True}, cache_dir=tmp_path / "c"),
            "custom": lambda: CountingCustom(config={"function": three_layers}, cache_dir=tmp_path / "c"),
            "embeddings": lambda: CountingEmbeddings(vectors, cache_dir=tmp_path / "c")}[which]
    miss = make().extract(asm, story)
    assert not isinstance(miss["features"].data, da.Array)  # as computed, not read back
    hit = make().extract(asm, story)
    assert isinstance(hit["features"].data, da.Array)
    assert CountingWordRate.calls + CountingCustom.calls + CountingEmbeddings.calls == 1
    xr.testing.assert_identical(miss, hit.compute())
    assert miss.attrs == hit.attrs and miss.attrs["cache_key"] == key_of(make(), asm, story)
    for name in miss.variables:
        assert miss[name].dtype == hit[name].dtype, name


def test_big_miss_is_read_back_lazily(asm, tmp_path, monkeypatch):
    monkeypatch.setattr(base_mod, "IN_MEMORY_MAX_BYTES", 0)
    story = asm.stories[0]
    fs = CountingCustom(config={"function": three_layers}, cache_dir=tmp_path).extract(asm, story)
    assert isinstance(fs["features"].data, da.Array)
    ref = CustomExtractor(config={"function": three_layers}).compute(asm, story)
    np.testing.assert_array_equal(fs["features"].values, ref["features"].values)


def test_entry_is_a_zarr_v3_group(asm, tmp_path):
    """Entries are written without zarr but are plain zarr v3 groups (any reader reads them)."""
    story = asm.stories[0]
    ex = CountingCustom(config={"function": three_layers}, cache_dir=tmp_path)
    fs = ex.extract(asm, story)
    g = zarr.open_group(str(FeatureCache(tmp_path).path(key_of(ex, asm, story))), mode="r")
    assert g.attrs["complete"] is True and g.attrs["scalenc_cache"] == 1 and g.attrs["layers"] == [0, 1, 2]
    for i in range(3):
        a = g[f"layers/{i}/features"]
        assert a.dtype == np.float32 and a.metadata.dimension_names == ("time", "feature")
        np.testing.assert_array_equal(a[...], fs["features"].values[i])
    np.testing.assert_array_equal(g["time"][...], fs["time"].values)
    tree = xr.open_datatree(str(FeatureCache(tmp_path).path(key_of(ex, asm, story))), engine="zarr",
                            consolidated=False)
    np.testing.assert_array_equal(tree["layers/1"]["features"].values, fs["features"].values[1])


def _store_with_zarr(cache, key, fs, meta):
    """An entry as scalenc wrote them before (zarr's own writer, compressed chunks)."""
    F = fs["features"]
    p = cache.path(key)
    g = zarr.open_group(str(p), mode="w", zarr_format=3)
    g.create_array("time", shape=(fs.sizes["time"],), dtype="f8", dimension_names=["time"])[...] = fs["time"].values
    lg = g.create_group("layers")
    for i in range(F.sizes["layer"]):
        a = np.asarray(F.isel(layer=i).values, dtype=np.float32)
        lg.create_group(str(i)).create_array("features", shape=a.shape, dtype="f4",
                                             dimension_names=["time", "feature"])[...] = a
    g.attrs.update(dict(scalenc_cache=1, layers=[int(v) for v in fs["layer"].values],
                        feature_names=[str(x) for x in fs["feature"].values] if "feature" in fs.coords else None,
                        meta=meta, fs_attrs=json.loads(json.dumps(dict(fs.attrs), default=str))))
    g.attrs["complete"] = True


def test_entries_of_the_zarr_writer_still_hit(asm, tmp_path):
    """Entries written by zarr itself (earlier scalenc versions) are hits with the same arrays."""
    story = asm.stories[1]
    ex = CountingWordRate(cache_dir=tmp_path)
    ref = WordRateExtractor().compute(asm, story)
    key = key_of(ex, asm, story)
    _store_with_zarr(FeatureCache(tmp_path), key, ref, {"story": story})
    fs = ex.extract(asm, story)
    assert CountingWordRate.calls == 0
    xr.testing.assert_equal(fs.drop_attrs(), ref.drop_attrs())
    assert FeatureCache(tmp_path).meta(key) == {"story": story}
