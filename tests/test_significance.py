"""Calibrated p-values: block length from autocorrelation (AR(1) nulls), short test sets
(effective degrees of freedom), degenerate voxels, the ceiling-normalised correlation."""
import logging

import numpy as np
import pytest
from scipy.signal import lfilter

from scalenc.ridge.scoring import (autocorrelation, choose_block_length, degenerate_voxels,
                                   distinct_block_orderings, effective_dof_pvalues, noise_ceiling,
                                   normalized_correlation, significance)


def _ar1(rng, rho, n, v):
    e = rng.standard_normal((n + 100, v))
    return lfilter([np.sqrt(1 - rho ** 2)], [1, -rho], e, axis=0)[100:]


def _within_two_sd(rate, v, level=0.05):
    return abs(rate - level) <= 2 * np.sqrt(level * (1 - level) / v)


def test_autocorrelation_of_ar1_and_orderings():
    rng = np.random.default_rng(0)
    x = _ar1(rng, 0.6, 4000, 50)
    acf = autocorrelation(x, 3).mean(axis=1)
    np.testing.assert_allclose(acf, [0.6, 0.36, 0.216], atol=0.02)
    # within stories: a series and its copy stacked as two stories has the same autocorrelation
    two = np.concatenate([x[:, :5], x[:, :5]])
    np.testing.assert_allclose(autocorrelation(two, 3, stories=np.repeat([0, 1], 4000)), autocorrelation(x[:, :5], 3))
    # orderings: 30 rows in blocks of 10: 3! = 6; 28 rows: blocks 10, 10, 8: 2
    assert distinct_block_orderings(30, 10) == 6 and distinct_block_orderings(28, 10) == 2
    assert distinct_block_orderings(70, 10) == 5040 and distinct_block_orderings(70, 10, cap=100) == 100


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.8])
def test_block_permutation_calibrated_on_ar1_nulls(rho):
    # independent AR(1) responses and predictions (the hardest case: both autocorrelated);
    # the block length from the data keeps the false-positive rate within 2 binomial sd of 5 %
    # (over seeds the rate at rho 0.8 averages about 5.5 %: the blocks lose up to 5 % of the
    # null variance by design, see choose_block_length)
    rng = np.random.default_rng(11)
    n, v = 1200, 1500
    y, pred = _ar1(rng, rho, n, v), _ar1(rng, rho, n, v)
    p, info = significance(y, pred, n_permutations=300, seed=1)
    assert info["pvalue_method"] == "permutation"
    L = info["permutation_block"]
    # at least 10 TRs and past the lag where the AR(1) autocorrelation falls below 0.1
    assert L >= max(10, int(np.ceil(np.log(0.1) / np.log(rho))))
    assert _within_two_sd(float(np.mean(p < 0.05)), v), (rho, L, np.mean(p < 0.05))
    if rho == 0.8:
        # a fixed 10-TR block is too short there: too many false positives
        p10, _ = significance(y, pred, n_permutations=300, seed=1, block_length=10)
        assert np.mean(p10 < 0.05) > 0.05 + 2 * np.sqrt(0.05 * 0.95 / v)


def test_choose_block_length_grows_with_autocorrelation():
    rng = np.random.default_rng(1)
    lengths = [choose_block_length(_ar1(rng, rho, 800, 200), _ar1(rng, rho, 800, 200)) for rho in (0.0, 0.6, 0.9)]
    assert lengths[0] == 10 and lengths[0] < lengths[1] < lengths[2]


@pytest.mark.parametrize("rho", [0.3, 0.6])
def test_short_test_set_uses_effective_dof_and_is_calibrated(rho, caplog):
    # 30 rows (the synthetic test story with the tutorials' trimming): blocks of 10 TRs give
    # only 6 orderings, so the effective-dof t-test is used; it holds the 5 % level
    rng = np.random.default_rng(int(rho * 100))
    n, v = 30, 6000
    y, pred = _ar1(rng, rho, n, v), _ar1(rng, rho, n, v)
    with caplog.at_level(logging.WARNING):
        p, info = significance(y, pred, n_permutations=1000)
    assert info["pvalue_method"] == "effective_dof" and "distinct block orderings" in caplog.text
    np.testing.assert_array_equal(p, effective_dof_pvalues(y, pred))
    assert _within_two_sd(float(np.mean(p < 0.05)), v), np.mean(p < 0.05)
    if rho == 0.6:  # the uncorrected t-test (n - 2 dof) is too liberal on the same data
        from scalenc.ridge.scoring import pearson_pvalues, pearson_r

        naive = pearson_pvalues(pearson_r(y, pred), n)
        assert np.mean(naive < 0.05) > 0.05 + 4 * np.sqrt(0.05 * 0.95 / v)


def test_effective_dof_matches_a_direct_computation():
    rng = np.random.default_rng(2)
    n = 40
    y, q = _ar1(rng, 0.5, n, 3), _ar1(rng, 0.5, n, 3)
    from scipy import stats

    for j in range(3):
        a, b = y[:, j] - y[:, j].mean(), q[:, j] - q[:, j].mean()
        M = n // 5
        ra = [np.sum(a[k:] * a[:-k]) / np.sum(a * a) + 1 / n for k in range(1, M + 1)]
        rb = [np.sum(b[k:] * b[:-k]) / np.sum(b * b) + 1 / n for k in range(1, M + 1)]
        f = 1 + 2 * sum((n - k) / n * ra[k - 1] * rb[k - 1] for k in range(1, M + 1))
        neff = min(max(n / f, 3), n)
        r = np.corrcoef(a, b)[0, 1]
        t = r * np.sqrt((neff - 2) / (1 - r * r))
        assert effective_dof_pvalues(y, q)[j] == pytest.approx(stats.t.sf(t, neff - 2), rel=1e-9)


def test_synthetic_tutorial_trimming_finds_the_signal_voxels(tmp_path):
    # the README pipeline: the test story keeps ~30 rows; the permutation test could not get
    # below p = 0.16 there, the effective-dof t-test finds most signal voxels and few noise ones
    from scalenc import AbstractTrainer, Downsampler, FeatureExtractorFactory, NestedCVModel, load_assembly
    from scalenc.synthetic import synthetic

    ds = synthetic(tmp_path / "syn", n_stories=6, n_voxels=300, audio=False)
    ex = [FeatureExtractorFactory.create_extractor("embeddings", str(ds.embeddings_path), {}, tmp_path / "c")]
    trainer = AbstractTrainer(assembly=load_assembly(ds.assembly_path), feature_extractors=ex, downsampler=Downsampler(),
                        model=NestedCVModel(), fir_delays=[1, 2, 3, 4],
                        trimming_config={"train_features_start": 10, "train_features_end": -5,
                                         "test_features_start": 50, "test_features_end": -5,
                                         "test_targets_start": 40},
                        use_train_test_split=True, logger_backend="none", results_dir=tmp_path,
                        run_name="short")
    m = trainer.train()
    assert m["pvalue_method"] == "effective_dof"
    # the ceiling-normalised correlation is in the results, with its threshold and count
    res = trainer.results_
    ceil = res["noise_ceiling"].values
    keep = ceil >= 0.1
    np.testing.assert_array_equal(res["r_norm"].values[0, keep], res["r"].values[0, keep] / ceil[keep])
    assert np.all(np.isnan(res["r_norm"].values[0, ~keep]))
    assert res["r_norm"].attrs["n_below_ceiling_threshold"] == int((~keep).sum()) > 0
    truth = ds.ground_truth()
    signal = truth["snr"].values > 0
    sig = np.asarray(m["significant_mask"])
    strong = truth["snr"].values >= 1
    # power (28 rows, n_eff ~ 10): 58 % of the voxels with SNR >= 1, 38 % of all signal voxels (SNR 0.1 - 3)
    assert sig[strong].mean() > 0.5 and sig[signal].mean() > 0.3, (sig[strong].mean(), sig[signal].mean())
    assert sig[~signal].mean() < 0.1                              # few noise voxels (FDR 5 %)
    assert np.nanmin(m["p_values"]) < 1e-4


def test_degenerate_voxels_change_no_other_voxel():
    from scalenc import NestedCVModel

    rng = np.random.default_rng(5)
    n, p, v = 260, 12, 40
    X = rng.standard_normal((n, p))
    Y = X @ rng.standard_normal((p, v)) * 0.3 + _ar1(rng, 0.3, n, v)
    groups = np.repeat(np.arange(4), 50)
    model = NestedCVModel(alphas=np.logspace(-1, 4, 6), n_inner_folds=3, n_permutations=99)
    ref = model.fit_dataset(X[:200], Y[:200], X_test=X[200:], y_test=Y[200:], stories=groups)
    # constant, all-NaN, partly-NaN (a dropped training volume; a dropped test volume) voxels
    bad = np.stack([np.full(n, 3.0), np.full(n, np.nan), Y[:, 0].copy(), Y[:, 1].copy()], axis=1)
    bad[17, 2] = np.nan
    bad[230, 3] = np.nan
    where = np.array([0, 7, 20, 43])                # positions in the widened dataset
    Yb = np.insert(Y, where - np.arange(4), bad, axis=1)
    others = np.setdiff1d(np.arange(v + 4), where)
    np.testing.assert_array_equal(Yb[:, others], Y)
    got = model.fit_dataset(X[:200], Yb[:200], X_test=X[200:], y_test=Yb[200:], stories=groups)
    for name in ("r", "alpha", "p", "r2"):
        np.testing.assert_array_equal(got[name].values[others], ref[name].values, err_msg=name)
        assert np.all(np.isnan(got[name].values[where])) if name != "p" else np.all(got["p"].values[where] == 1)
    assert not got["significant"].values[where].any() and got.attrs["n_degenerate"] == 4
    # every voxel degenerate: one line
    with pytest.raises(ValueError, match="all 4 voxels are degenerate"):
        model.fit_dataset(X[:200], bad[:200], X_test=X[200:], y_test=bad[200:], stories=groups)
    # and at scoring (responses not in memory: the predictions of such voxels are NaN or constant)
    y = rng.standard_normal((30, 3))
    p_, info = significance(y, np.column_stack([y[:, 0], np.full(30, 2.0), y[:, 2]]))
    assert p_[1] == 1.0 and info["n_degenerate"] == 1
    assert degenerate_voxels(np.column_stack([y[:, 0], np.full(30, 2.0)])).tolist() == [False, True]
    with pytest.raises(ValueError, match="all 1 voxels are degenerate"):
        significance(np.ones((30, 1)), y[:, :1])


def test_noise_ceiling_from_repeats_matches_the_known_variances():
    # y_i = s + e_i, Var(s) = vs, Var(e) = ve, k repeats: CC_max = sqrt(vs / (vs + ve / k))
    rng = np.random.default_rng(7)
    k, n, v = 4, 400, 300
    vs = np.repeat([0.2, 1.0, 3.0], v // 3)
    ve = 1.0
    s = rng.standard_normal((n, v)) * np.sqrt(vs)
    reps = s[None] + rng.standard_normal((k, n, v)) * np.sqrt(ve)
    nc = noise_ceiling(reps)
    expected = np.sqrt(vs / (vs + ve / k))
    for level in np.unique(vs):
        sel = vs == level
        # per voxel the estimate over 400 rows has an sd of 0.01-0.035; the mean of 100 voxels is tighter
        assert abs(np.mean(nc["cc_max"][sel]) - expected[sel][0]) < 0.01, level
        assert np.max(np.abs(nc["cc_max"][sel] - expected[sel])) < 0.15  # about 4 sd at the weakest level
        np.testing.assert_allclose(np.mean(nc["signal_power"][sel]), level, rtol=0.05)
    # CC_norm: r against the repeat mean divided by CC_max; the true signal reaches about 1
    r_true = np.array([np.corrcoef(s[:, j], reps.mean(0)[:, j])[0, 1] for j in range(v)])
    r_norm, n_out = normalized_correlation(r_true, nc["cc_max"], threshold=0.1)
    assert n_out == 0 and abs(np.median(r_norm) - 1) < 0.02
    # voxels below the threshold are left out and counted; leading dims (layer) are kept
    ceiling = np.array([0.05, np.nan, 0.5, 0.8])
    r = np.array([[0.1, 0.2, 0.25, 0.4], [0.0, 0.1, 0.5, -0.4]])
    out, n_out = normalized_correlation(r, ceiling, threshold=0.1)
    assert n_out == 2 and np.all(np.isnan(out[:, :2]))
    np.testing.assert_allclose(out[:, 2:], [[0.5, 0.5], [1.0, -0.5]])


def test_permutation_block_setting_in_the_model_and_the_config(tmp_path):
    from scalenc import NestedCVModel
    from scalenc.config import model_kwargs

    assert NestedCVModel().permutation_block == "auto"
    assert NestedCVModel(**model_kwargs({"permutation_block": 20}, NestedCVModel)).permutation_block == 20
    assert NestedCVModel(**model_kwargs({"permutation_block": "auto"}, NestedCVModel)).permutation_block == "auto"
    with pytest.raises(ValueError, match="permutation_block must be a positive int or 'auto'"):
        NestedCVModel(permutation_block="long")
    # the length used is recorded with the results
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((400, 5)), rng.standard_normal((400, 30))
    ds = NestedCVModel(alphas=[1.0, 10.0], n_inner_folds=3, n_permutations=99).fit_dataset(
        X[:200], Y[:200], X_test=X[200:], y_test=Y[200:])
    assert ds.attrs["pvalue_method"] == "permutation" and ds.attrs["permutation_block"] == 10


def test_block_length_ignores_the_sampling_noise_a_good_model_shares():
    # white responses predicted well: the sample autocorrelations of y and prediction share
    # their noise; that is not autocorrelation and must not lengthen the blocks
    rng = np.random.default_rng(3)
    X = rng.standard_normal((70, 5))
    y = X @ rng.standard_normal((5, 22)) + 0.3 * rng.standard_normal((70, 22))
    pred = X @ np.linalg.lstsq(X, y, rcond=None)[0]
    assert choose_block_length(y, pred) == 10
