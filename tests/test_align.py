"""scalenc.align: downsampling kernels, FIR delays, trimming, z-scoring, align_story.

Expected numbers are computed independently in the tests (math.sin loops, hand-written
arrays), never by calling the code under test.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import xarray as xr

from scalenc.align import (TRIM_KEYS, Downsampler, TrimmingConfig, align_story, feature_space_slices, fir,
                           lanczos_matrix, lanczos_weights, trim_story, zscore)


def _sinc(x: float) -> float:
    return 1.0 if x == 0 else math.sin(math.pi * x) / (math.pi * x)


def _lanczos(u: float, a: int) -> float:
    return _sinc(u) * _sinc(u / a) if abs(u) < a else 0.0


def _trunc_sinc(u: float, a: int) -> float:
    return _sinc(u) if abs(u) < a else 0.0


def _dense_reference(kernel, events, trs, tr, window, cutoff_mult=1.0):
    return np.array([[kernel((tau - t) * cutoff_mult / tr, window) for t in events] for tau in trs])


# ------------------------------------------------------------------ lanczos / sinc kernels

EVENTS = [0.0, 0.7, 1.9, 9.0, 10.0]   # 10.0 is 3 TRs from the last TR: weight exactly 0
TRS = [0.0, 2.0, 4.0]


@pytest.mark.parametrize("cutoff_mult", [1.0, 0.8])
def test_lanczos_matrix_matches_formula(cutoff_mult):
    W = Downsampler("lanczos", window=3, cutoff_mult=cutoff_mult, tr=2.0).matrix(EVENTS, TRS)
    assert sp.issparse(W) and W.shape == (3, 5)
    ref = _dense_reference(_lanczos, EVENTS, TRS, 2.0, 3, cutoff_mult)
    np.testing.assert_allclose(W.toarray(), ref, rtol=0, atol=1e-12)
    assert W[0, 0] == pytest.approx(1.0, abs=1e-15)      # u = 0: L(0) = 1
    if cutoff_mult == 1.0:
        # entries written out: TR 0, event 0.7 -> u = (0 - 0.7)/2 = -0.35
        u = -0.35
        hand = math.sin(math.pi * u) / (math.pi * u) * math.sin(math.pi * u / 3) / (math.pi * u / 3)
        assert W[0, 1] == pytest.approx(hand, abs=1e-12)
        assert W[2, 4] == 0.0 and W[0, 3] == 0.0          # |u| = 3 and 4.5 >= window: outside
    else:
        # u = (4 - 10) * 0.8 / 2 = -2.4: inside the window once the cutoff is lowered
        assert W[2, 4] == pytest.approx(_lanczos(-2.4, 3), abs=1e-12) and W[2, 4] != 0.0
    # same through the module-level function (used by scalenc.synthetic.synthetic)
    W2 = lanczos_matrix(EVENTS, TRS, tr=2.0, window=3, cutoff_mult=cutoff_mult)
    np.testing.assert_allclose(W2.toarray(), ref, rtol=0, atol=1e-12)


def test_lanczos_weights_values():
    w = lanczos_weights(np.array([0.0, 0.5, -1.5, 2.999, 3.0, -3.0, 7.0]), window=3)
    assert w[0] == 1.0
    assert w[1] == pytest.approx(_lanczos(0.5, 3), abs=1e-12)
    assert w[2] == pytest.approx(_lanczos(-1.5, 3), abs=1e-12)
    assert w[3] != 0.0
    assert np.all(w[4:] == 0.0)


def test_sinc_matrix_matches_formula():
    W = Downsampler("sinc", window=3, tr=2.0).matrix(EVENTS, TRS)
    ref = _dense_reference(_trunc_sinc, EVENTS, TRS, 2.0, 3)
    np.testing.assert_allclose(W.toarray(), ref, rtol=0, atol=1e-12)
    u = 0.65   # TR 2.0, event 0.7
    assert W[1, 1] == pytest.approx(math.sin(math.pi * u) / (math.pi * u), abs=1e-12)
    # plain sinc differs from lanczos away from 0
    assert abs(W[1, 1] - _lanczos(u, 3)) > 1e-3
    # window 2: |u| = 2.5 (TR 4, event 9) is outside, so 0
    W2 = Downsampler("sinc", window=2, tr=2.0).matrix(EVENTS, TRS)
    np.testing.assert_allclose(W2.toarray(), _dense_reference(_trunc_sinc, EVENTS, TRS, 2.0, 2), atol=1e-12)
    assert W2[2, 3] == 0.0 and W[2, 3] != 0.0


def test_lanczos_one_event_per_tr_gives_one():
    tr = 2.0
    tau = np.arange(40) * tr + 1.0
    x = np.ones(tau.size)
    y = Downsampler().downsample(x, tau, tau)           # events on the TR centres
    assert y.shape == (40,)
    # L(0) = 1 and L(k) = 0 at nonzero integers: every TR (edges included) is exactly 1
    np.testing.assert_allclose(y, 1.0, atol=1e-12)
    np.testing.assert_allclose(Downsampler().downsample(2.5 * x, tau, tau)[3:-3], 2.5, atol=1e-12)


def test_lanczos_four_events_per_tr_constant():
    tr, a = 2.0, 3
    tau = np.arange(40) * tr + 1.0
    offsets = np.array([-0.375, -0.125, 0.125, 0.375]) * tr    # 4 events per TR, half-step offsets
    t = (tau[:, None] + offsets[None, :]).ravel()
    # expected constant, independently: sum of L((tau_j - t_i)/tr) over all events for TR j=20
    j = 20
    const = sum(_lanczos((tau[j] - ti) / tr, a) for ti in t)
    # = 2 * sum_k [L(k + 1/8) + L(k + 3/8)] = 3.98820358314... (Lanczos-3 is not an exact
    # partition of unity off the integers: about 0.3% below 4)
    assert const == pytest.approx(3.988203583141257, abs=1e-12)
    y = Downsampler("lanczos", window=a).downsample(np.ones(t.size), t, tau)
    np.testing.assert_allclose(y[4:-4], const, rtol=0, atol=1e-12)
    y2 = Downsampler("lanczos", window=a).downsample(np.full((t.size, 2), -1.5), t, tau)
    np.testing.assert_allclose(y2[4:-4], -1.5 * const, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ rect / average / sum / last

# TRs of 2 s centred at 1, 3, 5, 7 -> intervals [0,2) [2,4) [4,6) [6,8)
BIN_TRS = np.array([1.0, 3.0, 5.0, 7.0])
BIN_TIMES = np.array([1.5, 0.5, 2.0, 3.9, 7.99, 6.0, 8.0, -0.1])
BIN_VALUES = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
# TR0: events 1.5, 0.5 (values 1, 2); TR1: 2.0 (on TR0's end -> TR1), 3.9 (values 3, 4);
# TR2: none (6.0 sits on its end -> TR3); TR3: 7.99, 6.0 (values 5, 6); 8.0 and -0.1: outside.
BIN_EXPECTED = {
    "average": [1.5, 3.5, 0.0, 5.5],
    "rect": [1.5, 3.5, 0.0, 5.5],
    "sum": [3.0, 7.0, 0.0, 11.0],
    "last": [1.0, 4.0, 0.0, 5.0],     # last by time: 1.5 -> 1, 3.9 -> 4, 7.99 -> 5
}


@pytest.mark.parametrize("method", ["rect", "average", "sum", "last"])
def test_bin_methods_hand_example(method):
    ds = Downsampler(method)
    y = ds.downsample(BIN_VALUES, BIN_TIMES, BIN_TRS)
    np.testing.assert_array_equal(y, BIN_EXPECTED[method])
    Y = ds.downsample(np.stack([BIN_VALUES, 10 * BIN_VALUES], axis=1), BIN_TIMES, BIN_TRS)
    assert Y.shape == (4, 2)
    np.testing.assert_array_equal(Y[:, 1], 10 * np.array(BIN_EXPECTED[method]))
    W = ds.matrix(BIN_TIMES, BIN_TRS)
    assert W.shape == (4, 8) and sp.isspmatrix_csr(W)
    assert W[:, 6].nnz == 0 and W[:, 7].nnz == 0     # events outside the grid: dropped


def test_bin_boundaries_with_rounding_go_to_one_tr():
    tr = 0.3
    tau = np.arange(50) * tr + tr / 2
    t = np.arange(1, 50) * tr             # every event exactly on a boundary (up to rounding)
    W = Downsampler("sum", tr=tr).matrix(t, tau)
    np.testing.assert_array_equal(np.asarray(W.sum(axis=0)).ravel(), 1.0)   # each in exactly one TR
    np.testing.assert_array_equal(W.indices, np.arange(49))
    np.testing.assert_array_equal(np.diff(W.indptr), [0] + [1] * 49)       # event k*tr -> TR k


# ------------------------------------------------------------------ input types and call styles

def test_dataarray_with_layer_dim():
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 20, 30))
    tau = np.arange(10) * 2.0 + 1.0
    vals = rng.standard_normal((2, 30, 3)).astype(np.float32)
    da = xr.DataArray(vals, dims=("layer", "time", "feature"),
                      coords={"layer": [4, 7], "feature": ["a", "b", "c"]}, attrs={"model": "m"})
    ds = Downsampler()
    out = ds.downsample(da, t, tau)
    assert isinstance(out, xr.DataArray)
    assert out.dims == ("layer", "tr", "feature")
    assert out.shape == (2, 10, 3)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out["layer"].values, [4, 7])
    np.testing.assert_array_equal(out["tr_time"].values, tau)
    assert out["tr_time"].dims == ("tr",)
    assert out.attrs["model"] == "m"
    W = lanczos_matrix(t, tau).toarray()
    for k in range(2):
        np.testing.assert_allclose(out.values[k], W @ vals[k].astype(np.float64), rtol=1e-5, atol=1e-5)
    # (time, feature) DataArray; event times from its numeric time coordinate
    da2 = xr.DataArray(vals[0], dims=("time", "feature"), coords={"time": t})
    out2 = ds.downsample(da2, None, tau)
    assert out2.dims == ("tr", "feature")
    np.testing.assert_allclose(out2.values, out.values[0], rtol=1e-6)


def test_litcoder_call_style_and_overrides():
    rng = np.random.default_rng(1)
    t = np.sort(rng.uniform(0, 30, 40))
    tau = np.arange(15) * 2.0 + 1.0
    x = rng.standard_normal((40, 2))
    got = Downsampler().downsample(data=x, data_times=t, tr_times=tau, method="lanczos", window=3, cutoff_mult=1.0)
    np.testing.assert_allclose(got, lanczos_matrix(t, tau).toarray() @ x, atol=1e-12)
    # a method override on a rect downsampler, with per-call config
    got = Downsampler("rect").downsample(data=x, data_times=t, tr_times=tau, method="sinc", window=2)
    ref = _dense_reference(_trunc_sinc, t, tau, 2.0, 2) @ x
    np.testing.assert_allclose(got, ref, atol=1e-12)
    # config overrides on the instance's own method
    got = Downsampler("lanczos", window=3).downsample(x, t, tau, cutoff_mult=0.5)
    np.testing.assert_allclose(got, _dense_reference(_lanczos, t, tau, 2.0, 3, 0.5) @ x, atol=1e-12)


def test_attributes_and_repr():
    ds = Downsampler()
    assert ds.method == "lanczos"
    assert ds.config == {"window": 3, "cutoff_mult": 1.0, "tr": None}
    assert repr(ds) == "Downsampler(method='lanczos', window=3, cutoff_mult=1.0, tr=None)"
    assert Downsampler("last", tr=2.0).config == {"tr": 2.0}
    assert "rect" in (Downsampler.__doc__ or "") and "lanczos" in (Downsampler.__doc__ or "")


# ------------------------------------------------------------------ memory / sparsity

def test_lanczos_matrix_is_sparse_at_lebel_scale():
    window = 3
    n_trs, n_events = 30_000, 150_000
    rng = np.random.default_rng(0)
    tau = np.arange(n_trs) * 2.0 + 1.0
    t = rng.uniform(0.0, n_trs * 2.0, n_events)
    W = Downsampler("lanczos", window=window).matrix(t, tau)
    assert W.shape == (n_trs, n_events)
    # each event sits within |u| < window of at most 2 * window TR centres
    assert W.nnz <= n_events * 2 * window
    assert W.nnz > n_events * 2 * window * 0.9
    assert W.data.nbytes < 20e6
    assert W.data.nbytes + W.indices.nbytes + W.indptr.nbytes < 40e6


# ------------------------------------------------------------------ errors

def test_errors():
    t, tau = np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0])
    with pytest.raises(ValueError, match=r"unknown downsampling method 'gauss'.*lanczos.*sinc.*rect.*average"):
        Downsampler("gauss")
    with pytest.raises(ValueError, match=r"unknown downsampling method 'nope'"):
        Downsampler().downsample(np.ones(3), t, tau, method="nope")
    with pytest.raises(ValueError, match=r"'windw'.*'lanczos'.*window, cutoff_mult, tr"):
        Downsampler("lanczos", windw=3)
    with pytest.raises(ValueError, match=r"'window'.*'average'.*accepted keys: tr"):
        Downsampler("average").downsample(np.ones(3), t, tau, window=3)
    with pytest.raises(ValueError, match=r"4 rows.*3 entries"):
        Downsampler().downsample(np.ones((4, 2)), t, tau)
    with pytest.raises(ValueError, match=r"split_indices.*times"):
        Downsampler().downsample(data=np.ones(3), data_times=t, tr_times=tau, method="average", split_indices=[0, 2])
    with pytest.raises(ValueError, match=r"split_indices"):
        Downsampler("sum", split_indices=[0, 2])
    with pytest.raises(ValueError, match=r"event_times must be finite"):
        Downsampler().downsample(np.ones(3), [0.0, np.nan, 1.0], tau)
    with pytest.raises(ValueError, match=r"tr_times must be finite"):
        Downsampler().matrix(t, [0.0, np.inf])
    with pytest.raises(ValueError, match=r"strictly increasing"):
        Downsampler("rect").matrix(t, [1.0, 3.0, 3.0])
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"window must be a positive int"):
            Downsampler(window=bad)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match=r"cutoff_mult must be"):
            Downsampler(cutoff_mult=bad)
    with pytest.raises(ValueError, match=r"tr must be"):
        Downsampler("rect", tr=0)


# ------------------------------------------------------------------ trimming

def test_trimming_config_lebel_and_slices():
    cfg = TrimmingConfig.lebel()
    assert cfg.to_dict() == dict(train_features_start=10, train_features_end=-5, train_targets_start=0,
                                 train_targets_end=None, test_features_start=50, test_features_end=-5,
                                 test_targets_start=40, test_targets_end=None)
    assert cfg.slices("train") == (slice(10, -5), slice(0, None))
    assert cfg.slices("test") == (slice(50, -5), slice(40, None))
    assert TrimmingConfig().slices("train") == (slice(0, None), slice(0, None))
    assert TrimmingConfig.from_dict(cfg.to_dict()) == cfg
    assert TrimmingConfig.from_dict({"train_features_start": np.int64(3)}).train_features_start == 3
    with pytest.raises(ValueError, match=r"split"):
        cfg.slices("val")
    assert len(TRIM_KEYS) == 8


def test_trimming_config_errors():
    with pytest.raises(ValueError, match=r"'train_feature_start'.*train_features_start.*test_targets_end"):
        TrimmingConfig.from_dict({"train_feature_start": 10})
    with pytest.raises(TypeError, match=r"'test_targets_start'"):
        TrimmingConfig.from_dict({"test_targets_start": "40"})
    with pytest.raises(TypeError, match=r"'train_features_end'"):
        TrimmingConfig(train_features_end=2.0)


def test_trim_story_lebel_train_and_test():
    cfg = TrimmingConfig.lebel()
    # train: N = 50 -> grid N - 5 = 45 rows, responses N - 20 = 30 rows
    feats = np.arange(45 * 2, dtype=float).reshape(45, 2)
    targ = np.arange(30 * 3, dtype=float).reshape(30, 3)
    X, Y = trim_story(feats, targ, cfg, "train", story="s1")
    assert X.shape == (30, 2) and Y.shape == (30, 3)
    np.testing.assert_array_equal(X, feats[10:40])
    np.testing.assert_array_equal(Y, targ)
    # test: grid 95 rows, responses 80 rows -> features [50:-5] = 40 rows, targets [40:] = 40 rows
    feats = np.arange(95, dtype=float)[:, None]
    targ = np.arange(80, dtype=float)[:, None]
    X, Y = trim_story(feats, targ, cfg, "test", story="wheretheressmoke")
    assert X.shape[0] == 40 and Y.shape[0] == 40
    assert X[0, 0] == 50 and X[-1, 0] == 89 and Y[0, 0] == 40 and Y[-1, 0] == 79
    # dict config and DataArrays with a tr dim
    fda = xr.DataArray(np.zeros((45, 2)), dims=("tr", "feature"))
    tda = xr.DataArray(np.zeros((30, 4)), dims=("tr", "voxel"))
    X, Y = trim_story(fda, tda, cfg.to_dict(), "train")
    assert X.sizes["tr"] == 30 and Y.sizes["tr"] == 30


def test_trim_story_mismatch_names_story_and_counts():
    cfg = TrimmingConfig.lebel()
    with pytest.raises(ValueError, match=r"story 'souls' \(train\).*31 rows.*features\[10:-5\] of 46.*30 rows"):
        trim_story(np.zeros((46, 2)), np.zeros((30, 3)), cfg, "train", story="souls")
    with pytest.raises(ValueError, match=r"'tr' dim"):
        trim_story(xr.DataArray(np.zeros((45, 2)), dims=("time", "feature")), np.zeros((30, 3)), cfg, "train")


# ------------------------------------------------------------------ zscore

def test_zscore_population_std_and_constant_columns():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((20, 3)) * [1.0, 5.0, 1.0] + [0.0, 3.0, 0.0]
    X[:, 2] = 0.1                          # constant column
    Z = zscore(X)
    manual = (X[:, :2] - X[:, :2].mean(0)) / X[:, :2].std(0, ddof=0)
    np.testing.assert_allclose(Z[:, :2], manual, atol=1e-12)
    np.testing.assert_array_equal(Z[:, 2], 0.0)
    assert np.all(np.isfinite(Z))
    # population std: the z-scored columns have std 1 with ddof=0 (not with ddof=1)
    np.testing.assert_allclose(Z[:, :2].std(0, ddof=0), 1.0, atol=1e-12)
    assert abs(Z[:, 0].std(ddof=1) - 1.0) > 1e-3
    # float32 stays float32
    Z32 = zscore(X.astype(np.float32))
    assert Z32.dtype == np.float32
    np.testing.assert_allclose(Z32[:, :2], manual, atol=1e-5)
    np.testing.assert_array_equal(Z32[:, 2], 0.0)
    # axis=1
    np.testing.assert_allclose(zscore(X[:, :2].T, axis=1), manual.T, atol=1e-12)


def test_zscore_dataarray_over_tr():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((3, 12)).astype(np.float32)
    X[1] = 2.0
    da = xr.DataArray(X, dims=("feature", "tr"), coords={"feature": ["a", "b", "c"]})
    Z = zscore(da)
    assert Z.dims == ("feature", "tr") and Z.dtype == np.float32
    rows = X[[0, 2]]
    manual = (rows - rows.mean(1, keepdims=True)) / rows.std(1, ddof=0, keepdims=True)
    np.testing.assert_allclose(Z.values[[0, 2]], manual, atol=1e-5)
    np.testing.assert_array_equal(Z.values[1], 0.0)
    np.testing.assert_array_equal(Z["feature"].values, ["a", "b", "c"])


# ------------------------------------------------------------------ fir

def test_fir_hand_example():
    X = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    np.testing.assert_array_equal(fir(X, [1, 2]), [[0, 0, 0, 0],
                                                   [1, 2, 0, 0],
                                                   [3, 4, 1, 2]])
    np.testing.assert_array_equal(fir(X, [0, -1]), [[1, 2, 3, 4],
                                                    [3, 4, 5, 6],
                                                    [5, 6, 0, 0]])
    np.testing.assert_array_equal(fir(X, [3]), np.zeros((3, 2)))
    np.testing.assert_array_equal(fir(X, [-5]), np.zeros((3, 2)))


def test_fir_per_story_never_leaks():
    rng = np.random.default_rng(4)
    stories = [rng.standard_normal((n, 2)) for n in (5, 3, 7)]
    delays = [-1, 0, 1, 2, 4]
    got = np.concatenate([fir(s, delays) for s in stories])
    rows = []
    for s in stories:                      # naive reference: story-local row indices
        n, p = s.shape
        for i in range(n):
            row = []
            for d in delays:
                row.extend(s[i - d] if 0 <= i - d < n else [0.0] * p)
            rows.append(row)
    np.testing.assert_array_equal(got, np.array(rows))


# ------------------------------------------------------------------ align_story

def test_align_story_matches_manual_composition():
    rng = np.random.default_rng(5)
    tr = 2.0
    n_grid, n_tr = 45, 30
    tau = np.arange(n_grid) * tr + 1.0
    t = np.sort(rng.uniform(0, n_grid * tr, 120))
    vals = rng.standard_normal((120, 3))
    targets = rng.standard_normal((n_tr, 4))
    delays = [1, 2, 3]
    X, Y = align_story(vals, tau, targets, event_times=t, downsampler=Downsampler("lanczos"), delays=delays,
                       trimming=TrimmingConfig.lebel(), split="train", story="s", zscore_targets=False,
                       dtype="float64")
    # manual: dense Lanczos from the formula -> delays by hand -> rows [10:-5] -> z-score by hand
    ds = _dense_reference(_lanczos, t, tau, tr, 3) @ vals
    delayed = np.zeros((n_grid, 3 * len(delays)))
    for k, d in enumerate(delays):
        delayed[d:, 3 * k:3 * (k + 1)] = ds[:n_grid - d]
    kept = delayed[10:-5]
    manual = (kept - kept.mean(0)) / kept.std(0)
    assert isinstance(X, xr.DataArray) and X.dims == ("tr", "feature") and X.shape == (30, 9)
    np.testing.assert_allclose(X.values, manual, atol=1e-10)
    np.testing.assert_array_equal(X["delay"].values, [1, 1, 1, 2, 2, 2, 3, 3, 3])
    np.testing.assert_array_equal(X["tr_time"].values, tau[10:-5])
    np.testing.assert_array_equal(Y, targets)          # targets trimmed, not z-scored
    X2, Y2 = align_story((vals, t), tau, targets, downsampler="lanczos", delays=delays,
                         trimming=TrimmingConfig.lebel(), split="train", zscore_features=False, dtype="float64")
    np.testing.assert_allclose(X2.values, kept, atol=1e-12)
    np.testing.assert_allclose(Y2, (targets - targets.mean(0)) / targets.std(0), atol=1e-12)  # z-scored by default
    with pytest.raises(ValueError, match=r"story 'bad'"):
        align_story(vals, tau, targets[:29], event_times=t, delays=delays, trimming=TrimmingConfig.lebel(),
                    split="train", story="bad")


def test_align_story_labels_feature_spaces_and_uses_the_grid_offset():
    rng = np.random.default_rng(1)
    tau = np.arange(40) * 2.0 + 1.0
    t = np.sort(rng.uniform(0, 80, 90))
    a = xr.DataArray(rng.standard_normal((1, 90, 2)), dims=("layer", "time", "feature"),
                     coords={"time": t, "layer": [0], "feature": ["a0", "a1"]})
    b = (rng.standard_normal((90, 3)), t)
    targets = rng.standard_normal((30, 5))
    X, Y = align_story({"A": a, "B": b}, tau, targets, delays=[1, 2], grid_offset=6, dtype="float64",
                       zscore_features=False, zscore_targets=False)
    assert X.shape == (30, 10)
    assert list(X["feature_space"].values) == ["A", "A", "B", "B", "B"] * 2
    assert list(X["feature_name"].values[:2]) == ["a0", "a1"]
    assert feature_space_slices(X) == {"A": (0, 2), "B": (2, 5)}
    # by hand: both spaces downsampled, delayed on the whole grid, rows [6:36]
    F = np.column_stack([Downsampler().downsample(a.values[0], t, tau), Downsampler().downsample(b[0], t, tau)])
    np.testing.assert_allclose(X.values, fir(F, [1, 2])[6:36], atol=1e-12)
    np.testing.assert_array_equal(Y, targets)
    # a trimming config that sets only the train keys leaves the test split on the grid offset
    half = {"train_features_start": 6, "train_features_end": 36}
    Xt, _ = align_story({"A": a}, tau, targets, delays=[1], trimming=half, split="test", grid_offset=6)
    Xr, _ = align_story({"A": a}, tau, targets, delays=[1], trimming=half, split="train")
    np.testing.assert_array_equal(Xt.values, Xr.values)
    with pytest.raises(ValueError, match=r"story 'x' \(train\): 30 response rows from grid row 12"):
        align_story({"A": a}, tau, targets, grid_offset=12, story="x")
    with pytest.raises(ValueError, match="select one first"):
        align_story({"A": xr.concat([a, a], "layer")}, tau, targets)


def test_zscore_of_a_dask_array_stays_lazy_and_equal():
    import dask.array as da

    rng = np.random.default_rng(0)
    y = rng.standard_normal((40, 30)).astype(np.float32)
    y[:, 4] = 2.0
    d = da.from_array(y, chunks=(40, 7))
    z = zscore(d)
    assert isinstance(z, da.Array) and z.chunks[1] == d.chunks[1] and z.dtype == np.float32
    ref = (y - y.mean(0)) / y.std(0)
    ref[:, 4] = 0.0
    np.testing.assert_allclose(z.compute(), ref, atol=1e-5)


# --------------------------------------------------------------------------------------
# FIR delays are checked: integers, non-empty, each leaving stimulus in the kept rows
@pytest.mark.parametrize("delays, match", [
    ([], "fir_delays is empty"), ([1.5], "must be integers"), ([True], "must be integers"), (["1"], "must be integers"),
    ("1234", "must be a list of integers"), (3, "must be a list of integers"), ([1, 2, 2], r"repeats delay\(s\) \[2\]"),
])
def test_validate_delays_refuses_bad_values(delays, match):
    from scalenc.align.fir import validate_delays

    with pytest.raises(ValueError, match=match) as ei:
        validate_delays(delays)
    assert "\n" not in str(ei.value)


def test_validate_delays_matches_brute_force_zero_columns():
    """A delay is refused exactly when its block of ``fir`` is all zero on the kept rows
    (brute force over delays and trimmings of a 12-row grid)."""
    from scalenc.align.fir import validate_delays

    n = 12
    X = np.arange(1, n + 1, dtype=float)[:, None]  # no zero rows of its own
    for start in range(0, n):
        for stop in range(start + 1, n + 1):
            kept = np.arange(start, stop)
            for d in range(-n - 2, n + 3):
                zero = not fir(X, [d])[kept].any()
                if zero:
                    with pytest.raises(ValueError, match=f"delay {d} TRs leaves no stimulus in the kept rows of "
                                                         f"story 's'"):
                        validate_delays([d], kept=kept, n_rows=n, story="s")
                else:
                    assert validate_delays([d], kept=kept, n_rows=n, story="s") == [d]


def test_align_story_and_trainer_refuse_delays_past_the_story(synthetic_small, tmp_path):
    from scalenc.assembly import Assembly
    from scalenc.features import FeatureExtractorFactory
    from scalenc.trainer import AbstractTrainer

    a = Assembly(synthetic_small.assembly_path)
    s = a.train_stories[0]
    grid = a.tr_times(s).values
    words = a.words(s)
    F = (np.ones(words.sizes["word"]), ((words["start"] + words["end"]) / 2).values)
    n = len(grid)
    with pytest.raises(ValueError, match=rf"fir_delays: delay 1000 TRs leaves no stimulus in the kept rows of story "
                                         rf"'{s}' \(grid rows \d+\.\.\d+ of {n}\)"):
        align_story({"rate": F}, grid, a.bold_data(s), delays=[1, 1000], grid_offset=a.grid_offset(s), story=s)
    with pytest.raises(ValueError, match="fir_delays is empty"):
        align_story({"rate": F}, grid, a.bold_data(s), delays=[], grid_offset=a.grid_offset(s), story=s)
    # the trainer refuses them before any work, naming the shortest story that cannot hold them
    trim = {"train_features_start": 10, "train_features_end": -5, "train_targets_start": 0, "train_targets_end": None,
            "test_features_start": 10, "test_features_end": -5, "test_targets_start": 0, "test_targets_end": None}
    rate = FeatureExtractorFactory.create_extractor("wordrate", None, {"include_phonemes": False}, tmp_path)
    longest = max(len(a.tr_times(x)) for x in a.stories)
    shortest = min(a.stories, key=lambda x: len(a.tr_times(x)) - 5)
    for delays, match in [([], "fir_delays is empty"), ([1000], "fir_delays: delay 1000 TRs"),
                          ([1, longest - 6], f"kept rows of story '{shortest}'"), ([2.0], "must be integers")]:
        with pytest.raises(ValueError, match=match):
            AbstractTrainer(a, [rate], fir_delays=delays, trimming_config=trim, results_dir=tmp_path)
    t = AbstractTrainer(a, [rate], fir_delays=np.array([1, 2]), trimming_config=trim, results_dir=tmp_path)
    assert t.fir_delays == [1, 2] and all(type(d) is int for d in t.fir_delays)
