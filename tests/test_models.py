"""RidgeCV estimator and the tutorials' NestedCVModel against brute-force references."""
from __future__ import annotations

import numpy as np
import pytest

from scalenc.models import NestedCVModel
from scalenc.ridge import ChunkKFold, RidgeCV, StoryKFold, pearson_r, ridge_closed_form


def _data(n=400, p=10, v=24, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    W = rng.standard_normal((p, v))
    W[:, : v // 4] = 0  # pure-noise voxels
    Y = X @ W * rng.uniform(0.2, 1.0, v) + rng.standard_normal((n, v))
    groups = np.repeat(np.arange(4), n // 4)
    return X, Y, groups


def _brute_alpha(X, Y, alphas, folds):
    S = np.zeros((len(alphas), Y.shape[1]))
    for tr, te in folds:
        for i, a in enumerate(alphas):
            W, b = ridge_closed_form(X[tr], Y[tr], a)
            S[i] += pearson_r(Y[te], X[te] @ W + b)
    return np.asarray(alphas)[S.argmax(0)]


ALPHAS = np.logspace(-1, 4, 8)


def test_ridgecv_estimator_api():
    X, Y, groups = _data()
    m = RidgeCV(alphas=ALPHAS, cv=4, dtype="float64").fit(X, Y, stories=groups)
    folds = list(StoryKFold(4).split(len(X), groups))
    np.testing.assert_allclose(m.alphas_, _brute_alpha(X, Y, ALPHAS, folds))
    W, b = ridge_closed_form(X, Y, m.alphas_)
    np.testing.assert_allclose(m.coef_, W, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(m.intercept_, b, rtol=1e-8, atol=1e-10)
    assert m.cv_scores_.shape == (8, 24) and m.n_features_in_ == 10
    np.testing.assert_allclose(m.predict(X[:5]), X[:5] @ W + b, rtol=1e-8)
    np.testing.assert_allclose(m.score(X, Y), pearson_r(Y, X @ W + b), rtol=1e-8)
    assert m.get_params()["cv"] == 4 and m.set_params(dtype="float32").dtype == "float32"
    with pytest.raises(ValueError, match="invalid parameter 'bogus'"):
        m.set_params(bogus=1)
    with pytest.raises(RuntimeError, match="not fitted"):
        RidgeCV().predict(X)
    with pytest.raises(ValueError, match="must have 10 features"):
        m.predict(X[:, :3])


def test_nested_cv_train_test_mode_matches_brute_force():
    Xa, Ya, _ = _data(n=520, seed=1)
    X, Y, Xt, Yt = Xa[:400], Ya[:400], Xa[400:], Ya[400:]
    groups = np.repeat(np.arange(4), 100)
    model = NestedCVModel(alphas=ALPHAS, n_inner_folds=5, chunk_length=20, seed=3, dtype="float64")
    metrics, weights, best = model.fit_predict(X, Y, X_test=Xt, y_test=Yt, stories=groups)
    folds = list(ChunkKFold(chunk_length=20, n_splits=5, seed=3).split(len(X), groups))
    np.testing.assert_allclose(best, _brute_alpha(X, Y, ALPHAS, folds))
    W, b = ridge_closed_form(X, Y, best)
    np.testing.assert_allclose(weights, W, rtol=1e-8, atol=1e-10)
    r = pearson_r(Yt, Xt @ W + b)
    np.testing.assert_allclose(metrics["correlations"], r, rtol=1e-8)
    assert metrics["median_score"] == pytest.approx(np.median(r))
    for key in ("median_score", "mean_score", "std_score", "min_score", "max_score", "best_alphas",
                "correlations", "p_values", "corrected_p_values", "significant_mask", "n_significant",
                "percent_significant"):
        assert key in metrics
    # signal voxels significant, most pure-noise voxels not
    assert metrics["significant_mask"][6:].mean() > 0.9
    assert metrics["significant_mask"][:6].mean() < 0.5


def test_nested_cv_outer_loop_and_reproducibility():
    X, Y, groups = _data(seed=4)
    m1 = NestedCVModel(alphas=ALPHAS, n_outer_folds=4, n_inner_folds=3, folding="story", dtype="float64")
    metrics, weights, best = m1.fit_predict(X, Y, stories=groups)
    assert metrics["fold_correlations"].shape == (4, 24)
    np.testing.assert_allclose(metrics["correlations"], metrics["fold_correlations"].mean(0))
    # the first outer fold by hand: story 0 (the largest-first assignment puts one story per fold)
    outer = list(StoryKFold(4).split(len(X), groups))
    tr, te = outer[0]
    inner = list(StoryKFold(3).split(len(tr), groups[tr]))
    a = _brute_alpha(X[tr], Y[tr], ALPHAS, inner)
    W, b = ridge_closed_form(X[tr], Y[tr], a)
    np.testing.assert_allclose(metrics["fold_correlations"][0], pearson_r(Y[te], X[te] @ W + b), rtol=1e-8)
    m2 = NestedCVModel(alphas=ALPHAS, n_outer_folds=4, n_inner_folds=3, folding="chunked", seed=5)
    m3 = NestedCVModel(alphas=ALPHAS, n_outer_folds=4, n_inner_folds=3, folding="chunked", seed=5)
    np.testing.assert_array_equal(m2.fit_predict(X, Y)[0]["correlations"], m3.fit_predict(X, Y)[0]["correlations"])


def test_nested_cv_permutation_pvalues_and_noise_ceiling():
    X, Y, groups = _data(seed=6)
    rng = np.random.default_rng(0)
    Xt = rng.standard_normal((100, 10))
    sig = Xt @ rng.standard_normal((10, 24))
    reps = sig[None] + rng.standard_normal((4, 100, 24)) * 2
    m = NestedCVModel(alphas=ALPHAS, pvalue_method="permutation", n_permutations=99, seed=1)
    metrics, _, _ = m.fit_predict(X, Y, X_test=Xt, y_test=reps.mean(0), test_repeats=reps)
    assert metrics["pvalue_method"] == "permutation"
    assert metrics["noise_ceiling"].shape == (24,) and np.all(metrics["noise_ceiling"] > 0.5)


def _null_rate(method, noise, n_perm=199, v=1500, seed=0):
    """Fraction of pure-noise voxels called p < .05 (X carries no information about Y).

    ``method=None`` uses the model's default test."""
    rng = np.random.default_rng(seed)
    X = noise(rng, 300, 6)
    Y = noise(rng, 300, v)
    groups = np.repeat(np.arange(3), 100)
    kw = {} if method is None else {"pvalue_method": method, "n_permutations": n_perm}
    m = NestedCVModel(alphas=np.logspace(0, 4, 3), n_inner_folds=3, seed=seed, **kw)
    ds = m.fit_dataset(X[:200], Y[:200], X_test=X[200:], y_test=Y[200:], stories=groups[:200])
    assert ds.attrs["pvalue_method"] == (method or m.pvalue_method) and ds["p"].shape == (v,)
    return float((ds["p"].values < 0.05).mean())


def _ar1(rng, n, v, rho=0.6):
    e = rng.standard_normal((n, v))
    x = np.empty_like(e)
    x[0] = e[0]
    for t in range(1, n):
        x[t] = rho * x[t - 1] + np.sqrt(1 - rho ** 2) * e[t]
    return x


def test_default_pvalues_calibrated_on_autocorrelated_null_data():
    # AR(1) noise (rho 0.6) in both X and Y: the default (block permutation) holds the .05 level
    # within binomial error over 1500 voxels; LITcoder's analytic test does not (about 12 %)
    sd = np.sqrt(0.05 * 0.95 / 1500)
    assert abs(_null_rate(None, _ar1) - 0.05) < 3 * sd
    assert _null_rate("analytic", _ar1) > 0.05 + 6 * sd
    assert NestedCVModel().pvalue_method == "permutation"


def test_outer_loop_permutes_within_stories(monkeypatch):
    import scalenc.ridge.scoring as ncv

    seen = []
    orig = ncv.block_permutation_pvalues
    monkeypatch.setattr(ncv, "block_permutation_pvalues", lambda *a, **k: seen.append(k["stories"]) or orig(*a, **k))
    X, Y, groups = _data(seed=2)
    NestedCVModel(alphas=ALPHAS, n_outer_folds=4, n_inner_folds=3, n_permutations=19).fit_predict(X, Y, stories=groups)
    outer = [te for _, te in ChunkKFold(chunk_length=20, n_splits=4, seed=0).split(len(X), groups)]
    assert len(seen) == 4
    for g, te in zip(seen, outer):
        np.testing.assert_array_equal(g, groups[te])


def test_pvalues_calibrated_on_null_data():
    # white noise: both tests hold their level; binomial sd of the rate over 1500 voxels is 0.0056
    white = lambda rng, n, v: rng.standard_normal((n, v))  # noqa: E731
    for method in ("analytic", "permutation"):
        assert abs(_null_rate(method, white) - 0.05) < 3 * np.sqrt(0.05 * 0.95 / 1500), method


def test_nested_cv_errors_and_alpha_squared():
    with pytest.raises(ValueError, match="unknown model_name 'lasso'"):
        NestedCVModel("lasso")
    with pytest.raises(ValueError, match="unknown folding"):
        NestedCVModel(folding="timeseries")
    X, Y, _ = _data()
    with pytest.raises(ValueError, match="folding='story' needs the story of each row"):
        NestedCVModel(folding="story").fit_predict(X, Y, X_test=X, y_test=Y)
    with pytest.raises(ValueError, match="pass both X_test and y_test"):
        NestedCVModel().fit_predict(X, Y, X_test=X)
    a = NestedCVModel(alphas=np.sqrt(ALPHAS), alpha_squared=True, dtype="float64").fit_predict(X, Y, X_test=X, y_test=Y)
    b = NestedCVModel(alphas=ALPHAS, dtype="float64").fit_predict(X, Y, X_test=X, y_test=Y)
    np.testing.assert_allclose(a[2], b[2])


def test_too_few_test_rows_fall_back_to_effective_dof_and_say_so(caplog):
    X, Y, groups = _data(seed=3)
    ds = NestedCVModel(alphas=ALPHAS).fit_dataset(X, Y, X_test=X[:13], y_test=Y[:13], stories=groups)
    assert ds.attrs["pvalue_method"] == "effective_dof" and "distinct block orderings" in caplog.text
    from scalenc.ridge.scoring import effective_dof_pvalues

    pred = X[:13] @ ds["weights"].values + ds["intercept"].values
    np.testing.assert_allclose(ds["p"].values, effective_dof_pvalues(Y[:13], pred), rtol=1e-6)


def test_permutation_pvalues_do_not_depend_on_the_voxel_block():
    from scalenc.ridge import block_permutation_pvalues

    X, Y, groups = _data(seed=5)
    ds = NestedCVModel(alphas=ALPHAS, voxel_block=5, n_permutations=99).fit_dataset(
        X[:300], Y[:300], X_test=X[300:], y_test=Y[300:], stories=groups[:300])
    pred = X[300:] @ ds["weights"].values + ds["intercept"].values
    np.testing.assert_allclose(ds["p"].values, block_permutation_pvalues(Y[300:], pred, n_permutations=99, seed=0),
                               rtol=0, atol=0)


def test_grouped_options_equal_their_keywords():
    """NestedCVModel's grouped options (SolverOptions, BandedSearch) and their flat keywords
    are the same settings; unknown keywords are one error naming the accepted ones."""
    from scalenc.config import model_kwargs
    from scalenc.models.solvers import BandedSearch, SolverOptions

    a = NestedCVModel("banded_ridge", solver_options=SolverOptions(dtype="float64", voxel_block=64),
                      search=BandedSearch(n_iter=3))
    b = NestedCVModel("banded_ridge", dtype="float64", voxel_block=64, n_iter=3)
    pa, pb = a.get_params(), b.get_params()
    np.testing.assert_array_equal(pa.pop("alphas"), pb.pop("alphas"))
    assert pa == pb and pa["dtype"] == "float64" and pa["voxel_block"] == 64 and pa["n_iter"] == 3
    assert a.solver_kwargs == {"backend": None, "device": None, "dtype": "float64", "voxel_block": 64}
    # a [model] table with the flat keys round-trips through the config checker
    c = NestedCVModel(**model_kwargs({"model_name": "banded_ridge", "dtype": "float64", "voxel_block": 64,
                                      "n_iter": 3}, NestedCVModel))
    pc = c.get_params()
    pc.pop("alphas")
    assert pc == pa
    with pytest.raises(TypeError, match="unexpected keyword 'voxelblock'.*voxel_block"):
        NestedCVModel(voxelblock=3)
    X, Y, _ = _data()
    ra = a.fit_dataset(X[:200], Y[:200], X_test=X[200:], y_test=Y[200:], feature_space=np.arange(X.shape[1]) % 2)
    rb = b.fit_dataset(X[:200], Y[:200], X_test=X[200:], y_test=Y[200:], feature_space=np.arange(X.shape[1]) % 2)
    np.testing.assert_array_equal(ra["r"].values, rb["r"].values)
    np.testing.assert_array_equal(ra["gamma"].values, rb["gamma"].values)
