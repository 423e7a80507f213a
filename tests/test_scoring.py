"""Per-voxel scores and statistics against independent references."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import signal, stats

from scalenc.ridge.scoring import (
    block_permutation_pvalues,
    fdr_bh,
    noise_ceiling,
    pearson_pvalues,
    pearson_r,
    r2_score,
    score_summary,
)


def _ar1(rng: np.random.Generator, n: int, v: int, rho: float) -> np.ndarray:
    """(n, v) independent stationary AR(1) columns with unit variance."""
    e = rng.standard_normal((n + 200, v)) * np.sqrt(1 - rho**2)
    return signal.lfilter([1.0], [1.0, -rho], e, axis=0)[200:]


# --------------------------------------------------------------------------------------
# pearson_r, r2_score
# --------------------------------------------------------------------------------------
def test_pearson_r_matches_corrcoef_and_scipy(backend):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((50, 7))
    b = 0.5 * a + rng.standard_normal((50, 7)) + 3.0
    r = pearson_r(backend.asarray(a), backend.asarray(b))
    assert r.shape == (7,)
    expected = [np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(7)]
    np.testing.assert_allclose(r, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(r, [stats.pearsonr(a[:, j], b[:, j]).statistic for j in range(7)], atol=1e-12)


def test_pearson_r_float32_accumulates_in_float64(backend):
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((4000, 3)) + 1000.0).astype(np.float32)  # large offset
    b = (a - 1000.0 + rng.standard_normal((4000, 3)) + 1000.0).astype(np.float32)
    ref = [np.corrcoef(a[:, j].astype(np.float64), b[:, j].astype(np.float64))[0, 1] for j in range(3)]
    r = pearson_r(backend.asarray(a), backend.asarray(b))
    assert r.dtype == np.float64
    np.testing.assert_allclose(r, ref, rtol=1e-10)


def test_pearson_r_constant_column_is_zero(backend):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((30, 3))
    b = rng.standard_normal((30, 3))
    a[:, 1] = 0.1  # constant in y_true (not exactly representable: float sums round)
    b[:, 2] = -7.3  # constant in y_pred
    with np.errstate(all="raise"):
        r = pearson_r(backend.asarray(a), backend.asarray(b))
    assert r[1] == 0.0 and r[2] == 0.0
    assert r[0] == pytest.approx(np.corrcoef(a[:, 0], b[:, 0])[0, 1])


def test_r2_score_matches_manual_loop(backend):
    rng = np.random.default_rng(3)
    y = rng.standard_normal((40, 5)) * [1, 2, 3, 4, 5]
    pred = y + rng.standard_normal((40, 5))
    pred[:, 4] = 10.0  # very bad prediction -> strongly negative
    expected = []
    for j in range(5):
        sse = sum((y[t, j] - pred[t, j]) ** 2 for t in range(40))
        m = sum(y[:, j]) / 40
        sst = sum((y[t, j] - m) ** 2 for t in range(40))
        expected.append(1 - sse / sst)
    out = r2_score(backend.asarray(y), backend.asarray(pred))
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    assert out[4] < -1
    y[:, 0] = 2.0
    assert r2_score(y, pred)[0] == 0.0


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\(10, 2\) and \(10, 3\)"):
        pearson_r(np.zeros((10, 2)), np.zeros((10, 3)))


# --------------------------------------------------------------------------------------
# pearson_pvalues
# --------------------------------------------------------------------------------------
def test_pearson_pvalues_match_scipy():
    rng = np.random.default_rng(4)
    n = 25
    a = rng.standard_normal((n, 40))
    b = 0.3 * a + rng.standard_normal((n, 40))
    r = pearson_r(a, b)
    ref = np.array([stats.pearsonr(a[:, j], b[:, j]).pvalue for j in range(40)])
    np.testing.assert_allclose(pearson_pvalues(r, n, alternative="two-sided"), ref, rtol=1e-8)
    greater = pearson_pvalues(r, n)  # default "greater"
    pos = r > 0
    np.testing.assert_allclose(greater[pos], ref[pos] / 2, rtol=1e-8)
    np.testing.assert_allclose(greater[~pos], 1 - ref[~pos] / 2, rtol=1e-8)
    ref_greater = [stats.pearsonr(a[:, j], b[:, j], alternative="greater").pvalue for j in range(40)]
    np.testing.assert_allclose(greater, ref_greater, rtol=1e-8)
    np.testing.assert_allclose(pearson_pvalues(r, n, alternative="less"), 1 - greater, rtol=1e-8, atol=1e-15)


def test_pearson_pvalues_edges():
    p = pearson_pvalues([1.0, -1.0, 0.0, np.nan], 10)
    assert p[0] == 0.0 and p[1] == 1.0 and p[2] == pytest.approx(0.5) and np.isnan(p[3])
    with pytest.raises(ValueError, match="n > 2"):
        pearson_pvalues([0.1], 2)
    with pytest.raises(ValueError, match="alternative"):
        pearson_pvalues([0.1], 10, alternative="bigger")


# --------------------------------------------------------------------------------------
# fdr_bh
# --------------------------------------------------------------------------------------
def test_fdr_bh_hand_example():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5, np.nan, 0.2])
    # non-NaN m = 6; sorted: 0.005, 0.01, 0.03, 0.04, 0.2, 0.5
    # m p / rank:            0.03,  0.03, 0.06, 0.06, 0.24, 0.5
    # running min from top:  0.03,  0.03, 0.06, 0.06, 0.24, 0.5
    expected_q = np.array([0.03, 0.06, 0.06, 0.03, 0.5, np.nan, 0.24])
    reject, q = fdr_bh(p, alpha=0.05)
    np.testing.assert_allclose(q, expected_q, rtol=1e-12)
    np.testing.assert_array_equal(reject, [True, False, False, True, False, False, False])
    reject, _ = fdr_bh(p, alpha=0.06)
    np.testing.assert_array_equal(reject, [True, True, True, True, False, False, False])
    # monotone with p and clipped at 1
    reject, q = fdr_bh([0.9, 0.95, 0.99])
    np.testing.assert_allclose(q, [0.99, 0.99, 0.99])
    assert not reject.any()
    _, q = fdr_bh([1.0, 1.0])
    np.testing.assert_array_equal(q, [1.0, 1.0])


def test_fdr_bh_matches_scipy():
    if not hasattr(stats, "false_discovery_control"):
        pytest.skip("scipy without false_discovery_control")
    rng = np.random.default_rng(5)
    p = np.concatenate([rng.uniform(size=300), rng.uniform(0, 1e-3, size=50)])
    reject, q = fdr_bh(p, alpha=0.1)
    np.testing.assert_allclose(q, stats.false_discovery_control(p, method="bh"), rtol=1e-12)
    np.testing.assert_array_equal(reject, stats.false_discovery_control(p) <= 0.1)
    # q-values are monotone in p
    order = np.argsort(p)
    assert np.all(np.diff(q[order]) >= -1e-15)


def test_fdr_bh_errors_and_shape():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fdr_bh([0.1, 1.5])
    reject, q = fdr_bh(np.full((2, 3), 0.01))
    assert reject.shape == q.shape == (2, 3) and reject.all()


# --------------------------------------------------------------------------------------
# block_permutation_pvalues
# --------------------------------------------------------------------------------------
def test_block_permutation_null_uniform():
    rng = np.random.default_rng(6)
    a = rng.standard_normal((200, 400))
    b = rng.standard_normal((200, 400))
    p = block_permutation_pvalues(a, b, block_length=10, n_permutations=200, seed=0)
    assert p.shape == (400,)
    assert np.all((p >= 1 / 201) & (p <= 1))
    assert 0.01 < np.mean(p < 0.05) < 0.12
    assert 0.4 < np.mean(p) < 0.6
    # seeded
    np.testing.assert_array_equal(p, block_permutation_pvalues(a, b, block_length=10, n_permutations=200, seed=0))
    assert not np.array_equal(p, block_permutation_pvalues(a, b, block_length=10, n_permutations=200, seed=1))


def test_block_permutation_strong_signal_and_constant():
    rng = np.random.default_rng(7)
    y = rng.standard_normal((150, 4))
    pred = y + 0.1 * rng.standard_normal((150, 4))
    pred[:, 3] = 1.0
    p, null = block_permutation_pvalues(y, pred, n_permutations=99, return_null=True)
    np.testing.assert_allclose(p[:3], 1 / 100)
    assert p[3] == 1.0
    assert null.shape == (99, 4)
    assert np.all(np.abs(null[:, :3]) < 0.5)


def test_block_permutation_methods_agree_and_match_definition(backend):
    rng = np.random.default_rng(8)
    y = rng.standard_normal((93, 6))
    pred = 0.2 * y + rng.standard_normal((93, 6))
    groups = np.repeat([0, 1, 2], [31, 40, 22])
    p_g, null_g = block_permutation_pvalues(backend.asarray(y), backend.asarray(pred), block_length=8,
                                            n_permutations=50, stories=groups,
                                            return_null=True, method="gather")
    p_b, null_b = block_permutation_pvalues(y, pred, block_length=8, n_permutations=50, stories=groups,
                                            return_null=True, method="blocks")
    np.testing.assert_allclose(null_g, null_b, atol=1e-12)
    np.testing.assert_array_equal(p_g, p_b)
    # each null row is np.corrcoef of y with pred whose blocks were reordered: rebuild
    # the permuted rows block by block from the same seeded permutations
    from scalenc.ridge.scoring import _block_permutations

    starts = np.array([0, 8, 16, 24, 31, 39, 47, 55, 63, 71, 79, 87])
    lengths = np.array([8, 8, 8, 7, 8, 8, 8, 8, 8, 8, 8, 6])  # stories of 31, 40, 22 TRs
    perms, _ = _block_permutations(lengths, 50, np.random.default_rng(0))
    for k in (0, 17, 49):
        assert all(lengths[perms[k, j]] == lengths[j] for j in range(12))
        rows = np.concatenate([np.arange(starts[b], starts[b] + lengths[b]) for b in perms[k]])
        np.testing.assert_array_equal(np.sort(rows), np.arange(93))
        for vox in range(6):
            ref = np.corrcoef(y[:, vox], pred[rows, vox])[0, 1]
            assert null_g[k, vox] == pytest.approx(ref, abs=1e-12)
    observed = pearson_r(y, pred)
    np.testing.assert_allclose(p_g, (1 + (null_g >= observed - 1e-12).sum(0)) / 51)


def test_block_permutation_controls_autocorrelated_false_positives():
    rng = np.random.default_rng(9)
    n, v = 400, 400
    y = _ar1(rng, n, v, 0.9)
    pred = _ar1(rng, n, v, 0.9)  # independent of y
    r = pearson_r(y, pred)
    fpr_analytic = np.mean(pearson_pvalues(r, n) < 0.05)
    fpr_block = np.mean(block_permutation_pvalues(y, pred, block_length=40, n_permutations=200, seed=0) < 0.05)
    assert fpr_analytic > 0.2  # nominal 0.05: autocorrelation makes it ~6x too liberal
    assert fpr_block < 0.12
    assert fpr_analytic > 2.5 * fpr_block


def test_block_permutation_too_few_blocks():
    with pytest.raises(ValueError, match="no two blocks"):
        block_permutation_pvalues(np.ones((15, 2)), np.ones((15, 2)), block_length=10)


# --------------------------------------------------------------------------------------
# noise_ceiling
# --------------------------------------------------------------------------------------
def test_noise_ceiling_simulated_repeats(backend):
    rng = np.random.default_rng(10)
    k, n, v = 4, 3000, 30
    s2 = np.linspace(0.2, 3.0, v)  # signal variance per voxel
    n2 = 1.0  # noise variance
    s = rng.standard_normal((n, v)) * np.sqrt(s2)
    y = s[None] + rng.standard_normal((k, n, v)) * np.sqrt(n2)
    nc = noise_ceiling(backend.asarray(y))
    np.testing.assert_allclose(nc["explainable_variance"], s2 / (s2 + n2), atol=0.05)
    cc_empirical = pearson_r(s, y.mean(axis=0))
    np.testing.assert_allclose(nc["cc_max"], cc_empirical, atol=0.05)
    np.testing.assert_allclose(nc["cc_max"], np.sqrt(s2 / (s2 + n2 / k)), atol=0.05)
    # split-half reliability (Spearman-Brown to k repeats) estimates cc_max**2
    np.testing.assert_allclose(nc["split_half_r"], s2 / (s2 + n2 / k), atol=0.06)
    np.testing.assert_allclose(nc["signal_power"], s2, rtol=0.15)


def test_noise_ceiling_pure_noise_and_constant():
    rng = np.random.default_rng(11)
    y = rng.standard_normal((3, 2000, 20))
    y[:, :, 0] = 5.0
    with np.errstate(all="raise"):
        nc = noise_ceiling(y)
    # no signal: estimates scatter around 0 (cc_max, a square root of a clipped
    # estimate, is biased upwards at low signal, so its bound is looser)
    for key, bound in (("explainable_variance", 0.1), ("split_half_r", 0.15), ("cc_max", 0.4)):
        assert nc[key].shape == (20,)
        assert nc[key][0] == 0.0
        assert np.all(np.abs(nc[key][1:]) < bound), key
    assert abs(np.mean(nc["explainable_variance"][1:])) < 0.02
    assert np.all((nc["cc_max"] >= 0) & (nc["cc_max"] <= 1))
    with pytest.raises(ValueError, match="at least 2 repeats"):
        noise_ceiling(np.ones((1, 10, 2)))
    with pytest.raises(ValueError, match="shape"):
        noise_ceiling(np.ones((10, 2)))


# --------------------------------------------------------------------------------------
# score_summary
# --------------------------------------------------------------------------------------
def test_score_summary():
    r = np.array([0.1, 0.5, np.nan, 0.3, -0.2])
    p = np.array([0.02, 0.001, np.nan, 0.04, 0.9])
    out = score_summary(r, p, alpha=0.05)
    assert set(out) == {
        "median_score", "mean_score", "std_score", "min_score", "max_score", "correlations", "p_values",
        "corrected_p_values", "significant_mask", "n_significant", "percent_significant",
    }
    assert out["median_score"] == pytest.approx(0.2)
    assert out["mean_score"] == pytest.approx(0.175)
    assert out["std_score"] == pytest.approx(np.std([0.1, 0.5, 0.3, -0.2]))
    assert out["min_score"] == pytest.approx(-0.2) and out["max_score"] == pytest.approx(0.5)
    # m = 4: sorted p 0.001, 0.02, 0.04, 0.9 -> q 0.004, 0.04, 0.0533.., 0.9
    np.testing.assert_allclose(out["corrected_p_values"], [0.04, 0.004, np.nan, 0.16 / 3, 0.9])
    np.testing.assert_array_equal(out["significant_mask"], [True, True, False, False, False])
    assert out["n_significant"] == 2 and isinstance(out["n_significant"], int)
    assert out["percent_significant"] == pytest.approx(40.0)
    assert isinstance(out["correlations"], np.ndarray) and isinstance(out["median_score"], float)
    empty = score_summary(np.full(3, np.nan), np.full(3, np.nan))
    assert np.isnan(empty["mean_score"]) and empty["n_significant"] == 0


# --------------------------------------------------------------------------------------
# every backend: arrays of any ridge backend give the float64 numpy references
# --------------------------------------------------------------------------------------



@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_scores_of_backend_arrays_equal_float64_references(backend, dtype):
    b = backend
    rng = np.random.default_rng(20)
    y = rng.standard_normal((120, 9)) + 2.0
    yh = 0.4 * y + rng.standard_normal((120, 9))
    y, yh = y.astype(dtype), yh.astype(dtype)  # the references see the same rounded values
    yb, yhb = b.asarray(y), b.asarray(yh)
    y64, yh64 = y.astype(np.float64), yh.astype(np.float64)
    r_ref = [np.corrcoef(y64[:, j], yh64[:, j])[0, 1] for j in range(9)]
    np.testing.assert_allclose(pearson_r(yb, yhb), r_ref, rtol=1e-12, atol=1e-14)
    sse = ((y64 - yh64) ** 2).sum(0)
    sst = ((y64 - y64.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(r2_score(yb, yhb), 1 - sse / sst, rtol=1e-12)
    p_np = block_permutation_pvalues(y, yh, block_length=10, n_permutations=50, seed=3)
    np.testing.assert_array_equal(block_permutation_pvalues(yb, yhb, block_length=10, n_permutations=50, seed=3),
                                  p_np)
    reps = np.stack([y, y + rng.standard_normal(y.shape).astype(dtype)])
    nc = noise_ceiling(b.asarray(reps))
    var = reps.astype(np.float64).var(axis=1, ddof=1)
    sp = ((reps.astype(np.float64).sum(0)).var(0, ddof=1) - var.sum(0)) / 2
    np.testing.assert_allclose(nc["signal_power"], sp, rtol=1e-10)
