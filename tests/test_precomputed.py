"""The ``precomputed`` feature source: model folders in the scaling-laws layout.

Files are written by :func:`scalenc.synthetic.writers.write_precomputed`; numbers are
checked against the arrays written, a dense Lanczos kernel and FIR written out here, and
the synthetic dataset's ground truth (its noise-free signal and the fit's recovery).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import xarray as xr

from scalenc import results
from scalenc.align import Downsampler, TrimmingConfig, align_story
from scalenc.synthetic.writers import write_precomputed
from scalenc.features import FeatureError, FeatureExtractorFactory
from scalenc.features.precomputed import PrecomputedExtractor

RNG = np.random.default_rng(7)
TRIM = TrimmingConfig.lebel()
DELAYS = (1, 2, 3, 4)


def make(folder, config=None, cache=None):
    return FeatureExtractorFactory.create_extractor("precomputed", str(folder), config or {}, cache)


class Grid:
    """What the extractor asks of an assembly with downsampled=True: the TR grid."""

    def __init__(self, n, tr=2.0):
        self.grid = np.arange(n) * tr + tr / 2

    def tr_times(self, story):
        return xr.DataArray(self.grid, dims="tr_grid")


# ------------------------------------------------------------------------- reading the layout


def test_layer_folders_in_numeric_order_times_from_second_column(tmp_path):
    feats = {s: RNG.standard_normal((12, 9, 5)).astype(np.float32) for s in ("a", "b")}
    t = {s: np.sort(RNG.uniform(0, 20, 9)) for s in feats}
    for s in feats:
        write_precomputed(tmp_path / "m", s, feats[s], times=t[s], time_start=np.maximum(t[s] - 16.1, 0))
    (tmp_path / "m" / "stride_0.5" / "encoder.0").mkdir(parents=True)  # the script's own subfolders: not layers
    np.savez(tmp_path / "m" / "stride_0.5" / "a.npz", features=np.zeros((2, 2)))
    ex = make(tmp_path / "m")
    assert ex.layers == [f"encoder.{i}" for i in range(12)]  # encoder.10 after encoder.9
    assert ex.stories == ["a", "b"]
    fs = ex.extract(None, "b")
    assert list(fs["layer"].values) == ex.layers
    np.testing.assert_array_equal(fs["features"].values, feats["b"])
    np.testing.assert_array_equal(fs["time"].values, t["b"])
    np.testing.assert_array_equal(fs["time_start"].values, np.maximum(t["b"] - 16.1, 0))
    assert fs.attrs["feature_space"] == "m" and fs.attrs["downsampled"] == 0
    # a position counts layer folders (encoder.10 is the 11th), a label picks itself
    assert ex.layer_labels(10) == ["encoder.10"] and ex.layer_labels(["encoder.3", -1]) == ["encoder.3", "encoder.11"]
    sel = make(tmp_path / "m", {"layer": [10, "encoder.2"]}).extract(None, "a")
    np.testing.assert_array_equal(sel["features"].values, feats["a"][[10, 2]])


def test_single_layer_folder(tmp_path):
    F, t = RNG.standard_normal((6, 3)), np.arange(6) * 0.1
    write_precomputed(tmp_path / "m", "s", F, times=t)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["s.npz", "s_times.npz"]
    fs = make(tmp_path / "m", {"name": "whisper"}).extract(None, "s")
    assert list(fs["layer"].values) == [0] and fs.attrs["feature_space"] == "whisper"
    np.testing.assert_allclose(fs["features"].values[0], F, rtol=1e-6)
    np.testing.assert_array_equal(fs["time"].values, t)


def test_downsampled_through_lanczos_equals_dense_kernel(tmp_path):
    """Rows at their times, through the assembly's downsampler: a dense Lanczos written here."""
    grid = Grid(40).grid
    t = np.arange(0.05, 80, 0.1)
    F = RNG.standard_normal((2, t.size, 3))
    write_precomputed(tmp_path / "m", "s", F, times=t)
    fs = make(tmp_path / "m").extract(None, "s")
    u = (grid[:, None] - t[None, :]) / 2.0
    W = np.where(np.abs(u) < 3, np.sinc(u) * np.sinc(u / 3), 0.0)
    for i, lay in enumerate(["encoder.0", "encoder.1"]):
        got = Downsampler().downsample(fs["features"].sel(layer=lay).values, fs["time"].values, grid)
        np.testing.assert_allclose(got, W @ F[i].astype(np.float32), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------- downsampled=True


def _fir_trim_zscore(R, delays, rows):
    """FIR delays (row k of delay d = row k - d, zeros before the start), rows kept, z-score."""
    n, p = R.shape
    blocks = []
    for d in delays:
        B = np.zeros_like(R)
        B[d:] = R[:n - d]
        blocks.append(B)
    X = np.hstack(blocks)[rows]
    sd = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1)


@pytest.mark.parametrize("downsampler", [Downsampler(), Downsampler("lanczos", cutoff_mult=0.5),
                                         Downsampler("rect", tr=6.0)])
def test_downsampled_design_is_the_raw_rows_after_fir_and_trim(tmp_path, downsampler):
    """One row per TR passes the downsampler untouched (even one that would smooth it),
    also when read back from the cache."""
    asm = Grid(60)
    R = RNG.standard_normal((3, 60, 4))
    write_precomputed(tmp_path / "m", "s", R)  # no times file
    assert not (tmp_path / "m" / "s_times.npz").exists()
    ex = make(tmp_path / "m", {"downsampled": True}, tmp_path / "cache")
    for attempt in ("computed", "cached"):
        fs = ex.extract(asm, "s")
        np.testing.assert_array_equal(fs["time"].values, asm.grid)
        for i, lay in enumerate(ex.layers):
            X, Y = align_story({"m": fs["features"].sel(layer=lay)}, asm.grid, np.zeros((45, 1)), delays=DELAYS,
                               downsampler=downsampler, trimming=TRIM, story="s", dtype="float64")
            np.testing.assert_allclose(X.values, _fir_trim_zscore(R[i].astype(np.float32), DELAYS, slice(10, 55)),
                                       rtol=1e-6, atol=1e-6, err_msg=attempt)
    assert fs.attrs["cache_key"]


def test_downsampled_row_count_checked_against_tr_grid(tmp_path):
    write_precomputed(tmp_path / "m", "s", RNG.standard_normal((2, 58, 4)))
    with pytest.raises(FeatureError) as e:
        make(tmp_path / "m", {"downsampled": True}).extract(Grid(60), "s")
    msg = str(e.value)
    assert "\n" not in msg and "'s'" in msg and str(tmp_path / "m" / "encoder.0" / "s.npz") in msg
    assert "58 rows" in msg and "60 TRs" in msg
    # align_story refuses a downsampled space on another grid
    fs = make(tmp_path / "m", {"downsampled": True}).extract(Grid(58), "s")
    with pytest.raises(ValueError, match="58 rows are not the 60-row TR grid"):
        align_story(fs["features"].isel(layer=0), Grid(60).grid, np.zeros((60, 1)), story="s")


# ------------------------------------------------------------------------- errors


def test_errors_name_the_file(tmp_path):
    for s in ("a", "b"):
        write_precomputed(tmp_path / "m", s, RNG.standard_normal((3, 5, 2)), times=np.arange(5.0))
    ex = make(tmp_path / "m")
    with pytest.raises(FeatureError, match=r"story 'c': file .*encoder\.0/c\.npz not found"):
        ex.extract(None, "c")
    # times file shorter than the features
    np.savez(tmp_path / "m" / "b_times.npz", times=np.zeros((4, 2)))
    with pytest.raises(FeatureError) as e:
        ex.extract(None, "b")
    assert "\n" not in str(e.value) and "b_times.npz has 4 times" in str(e.value) and "5 rows" in str(e.value)
    (tmp_path / "m" / "b_times.npz").unlink()
    with pytest.raises(FeatureError, match=r"times file .*b_times\.npz not found.*downsampled=True"):
        ex.extract(None, "b")
    # layers of one story with different rows
    np.savez(tmp_path / "m" / "encoder.2" / "a.npz", features=np.zeros((4, 2)))
    with pytest.raises(FeatureError, match=r"encoder\.2/a\.npz has shape \(4, 2\)"):
        ex.extract(None, "a")
    # layer folders with different story sets: named when the extractor is made
    (tmp_path / "m" / "encoder.1" / "a.npz").unlink()
    with pytest.raises(FeatureError) as e:
        make(tmp_path / "m")
    assert "\n" not in str(e.value) and "layer folder encoder.1 lacks a (in encoder.0)" in str(e.value)
    with pytest.raises(FeatureError, match="folder .* not found"):
        make(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FeatureError, match="neither <story>.npz files nor layer folders"):
        make(tmp_path / "empty")
    np.savez(tmp_path / "m" / "encoder.1" / "a.npz", wrong=np.zeros((5, 2)))
    with pytest.raises(FeatureError, match=r"encoder\.1/a\.npz has no key 'features'"):
        make(tmp_path / "m").extract(None, "a")


def test_cache_key_follows_the_files(tmp_path):
    write_precomputed(tmp_path / "m", "s", RNG.standard_normal((2, 5, 3)), times=np.arange(5.0))
    write_precomputed(tmp_path / "m", "t", RNG.standard_normal((2, 5, 3)), times=np.arange(5.0))
    ex = make(tmp_path / "m", cache=tmp_path / "cache")
    k1, k_other = ex.extract(None, "s").attrs["cache_key"], ex.extract(None, "t").attrs["cache_key"]
    assert ex.extract(None, "s").attrs["cache_key"] == k1 != k_other
    new = RNG.standard_normal((2, 5, 3))
    write_precomputed(tmp_path / "m", "s", new, times=np.arange(5.0), overwrite=True)
    f = tmp_path / "m" / "encoder.1" / "s.npz"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new mtime even on a coarse clock
    fs = ex.extract(None, "s")
    assert fs.attrs["cache_key"] != k1
    np.testing.assert_allclose(fs["features"].values, new.astype(np.float32))
    # ... and only that story's entry: the other story is still a hit
    assert ex.extract(None, "t").attrs["cache_key"] == k_other
    with pytest.raises(FileExistsError, match="s.npz exists"):
        write_precomputed(tmp_path / "m", "s", new, times=np.arange(5.0))


# ------------------------------------------------------------------------- the synthetic dataset


def _synthetic_events(data, asm, story):
    """The generative model's word events: word rate and the word vector, at word midpoints."""
    lines = open(data.embeddings_path, encoding="utf-8").read().splitlines()[1:]
    kv = {w: np.array(v, float) for w, *v in (ln.split() for ln in lines)}
    words = [str(w) for w in asm.words(story)["word"].values]
    return asm.word_times(story), np.column_stack([np.ones(len(words)), np.stack([kv[w] for w in words])])


def _write_synthetic(data, asm, folder, downsampled: bool):
    """Two layers: encoder.0 random rows, encoder.1 the true features (as words or per TR)."""
    rng = np.random.default_rng(0)
    for story in asm.stories:
        t, E = _synthetic_events(data, asm, story)
        if downsampled:
            grid = asm.tr_times(story).values
            E = Downsampler().downsample(E, t, grid)
            write_precomputed(folder, story, np.stack([rng.standard_normal(E.shape), E]))
        else:
            write_precomputed(folder, story, np.stack([rng.standard_normal(E.shape), E]), times=t,
                              time_start=t - 0.2)


@pytest.mark.parametrize("downsampled", [False, True])
def test_design_reproduces_the_ground_truth_signal(synthetic_small, tmp_path, downsampled):
    asm = synthetic_small.assembly()
    _write_synthetic(synthetic_small, asm, tmp_path / "m", downsampled)
    ex = make(tmp_path / "m", {"downsampled": downsampled})
    gt = synthetic_small.ground_truth()
    w = gt["weights"].values
    for story in asm.train_stories:
        fs = ex.extract(asm, story)
        X, _ = align_story(fs["features"].sel(layer="encoder.1"), asm.tr_times(story).values,
                           asm.bold(story).values, delays=list(gt.attrs["delays"]), trimming=TRIM, story=story,
                           dtype="float64")
        sig = gt[f"stories/{story}"]["signal"].values
        np.testing.assert_allclose(X.values @ w, sig, atol=2e-3 * np.abs(sig).max())


@pytest.mark.parametrize("downsampled", [False, True])
def test_trainer_recovers_the_synthetic_signal(synthetic_small, tmp_path, downsampled):
    from scalenc.models import NestedCVModel
    from scalenc.trainer import AbstractTrainer

    asm = synthetic_small.assembly()
    _write_synthetic(synthetic_small, asm, tmp_path / "m", downsampled)
    ex = make(tmp_path / "m", {"downsampled": downsampled}, tmp_path / "cache")
    tr = AbstractTrainer(asm, [ex], Downsampler(), NestedCVModel(alphas=np.logspace(-1, 5, 7), seed=1),
                         list(DELAYS), results_dir=tmp_path / "res", run_name="r", logger_backend="none")
    m = tr.train()
    assert m["layer"] == "encoder.1" and set(m["per_layer"]) == {"encoder.0", "encoder.1"}
    driver = synthetic_small.ground_truth()["driver"].values
    res = results.load(tmp_path / "res" / "r")
    r_true, r_noise = res.layer("encoder.1")["r"].values, res.layer("encoder.0")["r"].values
    ceiling = m["noise_ceiling"]
    driven = driver != "noise"
    assert np.median(r_true[driven]) > 0.7 * np.median(ceiling[driven])
    assert abs(np.median(r_true[~driven])) < 0.3
    # random rows in the other layer predict nothing
    assert abs(np.median(r_noise[driven])) < 0.2 < np.median(r_true[driven]) - 0.3


def test_registered_in_factory():
    assert "precomputed" in FeatureExtractorFactory.modalities()
    assert FeatureExtractorFactory.resolve("precomputed") is PrecomputedExtractor
