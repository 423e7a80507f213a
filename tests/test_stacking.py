"""Stacked regression over feature spaces (scalenc.ridge.stacking): the simplex weights against
a brute-force QP, the out-of-fold statistics against direct refits, the no-leak property,
recovery of the driving space, one space == plain ridge, structured variance partitioning,
and NestedCVModel(model_name="stacking") through the trainer into results.zarr."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import minimize

from scalenc import AbstractTrainer, FeatureExtractorFactory, NestedCVModel
from scalenc import results as results_mod
from scalenc.ridge.backend import CHECKED, unavailable
from scalenc.ridge import RidgeCV, StackingCV, simplex_least_squares, solve_stacking_cv
from scalenc.ridge.cv import ChunkKFold
from scalenc.ridge.scoring import r2_score
from scalenc.ridge.solver import ridge_closed_form

BACKENDS = [pytest.param(b, id="-".join(filter(None, b)),
                         marks=[pytest.mark.skipif(unavailable(*b) is not None, reason=str(unavailable(*b)))]
                         + ([pytest.mark.gpu] if b[0] == "cupy" or b[1] == "cuda" else [])) for b in CHECKED]


def _slsqp(P, y):
    k = P.shape[1]
    r = minimize(lambda w: np.sum((y - P @ w) ** 2), np.full(k, 1.0 / k), jac=lambda w: -2 * P.T @ (y - P @ w),
                 method="SLSQP", bounds=[(0, 1)] * k, constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
                 options=dict(ftol=1e-14, maxiter=1000))
    assert r.success or r.status == 8, r.message  # 8: converged to the rounding level
    return r.x


@pytest.mark.parametrize("k", [2, 3, 4])
def test_simplex_weights_match_slsqp(k):
    rng = np.random.default_rng(k)
    m, n = 40, 25
    P = rng.standard_normal((m, n, k))
    # some problems with the optimum inside the simplex, some on a face or a vertex
    y = np.einsum("mnk,mk->mn", P, rng.dirichlet(np.ones(k), m))
    y += rng.standard_normal((m, n)) * rng.uniform(0, 2, (m, 1))
    y[: m // 4] = 3 * P[: m // 4, :, 0] - P[: m // 4, :, 1]
    H = np.einsum("mni,mnj->mij", P, P)
    c = np.einsum("mni,mn->mi", P, y)
    w = simplex_least_squares(H, c)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-12)
    assert w.min() >= 0
    on_face = 0
    for j in range(m):
        ref = _slsqp(P[j], y[j])
        np.testing.assert_allclose(w[j], ref, atol=2e-6)
        obj, obj_ref = np.sum((y[j] - P[j] @ w[j]) ** 2), np.sum((y[j] - P[j] @ ref) ** 2)
        assert obj <= obj_ref * (1 + 1e-10)
        on_face += bool(np.any(w[j] < 1e-9))
    assert on_face >= m // 4  # the constrained cases were exercised


def test_simplex_weights_beat_a_fine_grid_k3():
    rng = np.random.default_rng(7)
    g = np.linspace(0, 1, 201)
    grid = np.array([(a, b, 1 - a - b) for a, b in itertools.product(g, g) if a + b <= 1 + 1e-12])
    for _ in range(10):
        P = rng.standard_normal((30, 3))
        y = rng.standard_normal(30) + P[:, rng.integers(3)]
        w = simplex_least_squares(P.T @ P, P.T @ y)
        best = np.min(np.sum((y[:, None] - P @ grid.T) ** 2, axis=0))
        assert np.sum((y - P @ w) ** 2) <= best + 1e-10


def test_simplex_degenerate_inputs():
    # identical predictions (singular gram), an all-zero problem and a NaN problem
    p = np.array([1.0, 2.0, 3.0])
    H = np.stack([np.outer([1, 1], [1, 1]) * (p @ p), np.zeros((2, 2)), np.full((2, 2), np.nan)])
    c = np.stack([np.array([1.0, 1.0]) * (p @ p), np.zeros(2), np.zeros(2)])
    w = simplex_least_squares(H, c)
    np.testing.assert_allclose(w.sum(1), 1.0)
    assert np.all(w >= 0)
    np.testing.assert_allclose(w[1:], 0.5)


def _two_space_problem(n=360, pa=6, pb=9, v=30, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    Xa, Xb = rng.standard_normal((n, pa)), rng.standard_normal((n, pb))
    X = np.hstack([Xa, Xb])
    space = np.array(["a"] * pa + ["b"] * pb, dtype=object)
    W = np.zeros((pa + pb, v))
    third = v // 3
    W[:pa, :third] = rng.standard_normal((pa, third))                     # driven by a
    W[pa:, third:2 * third] = rng.standard_normal((pb, third))            # driven by b
    W[:, 2 * third:] = rng.standard_normal((pa + pb, v - 2 * third))     # both
    Y = X @ W + noise * rng.standard_normal((n, v)) * np.sqrt(np.sum(W ** 2, 0) + 1e-9) / 2
    return X, Y, space, third, W


def test_out_of_fold_statistics_match_direct_refits():
    X, Y, space, *_ = _two_space_problem(v=12)
    folds = list(ChunkKFold(chunk_length=20, n_splits=4, seed=0).split(len(X)))
    alphas = np.logspace(-1, 4, 8)
    res = solve_stacking_cv(X, Y, space, alphas, folds, dtype="float64", voxel_block=5)
    cols = [space == "a", space == "b"]
    P = np.zeros((2, 0, Y.shape[1]))
    ys = []
    for tr, te in folds:  # float64 closed-form refit of each space on the fold's rows, chosen alpha
        part = []
        for b in range(2):
            W, c0 = ridge_closed_form(X[tr][:, cols[b]], Y[tr], res.space_alphas[b])
            part.append(X[te][:, cols[b]] @ W + c0)
        P = np.concatenate([P, np.stack(part)], axis=1)
        ys.append(Y[te])
    y_oof = np.concatenate(ys)
    np.testing.assert_allclose(res.oof_gram, np.einsum("inv,jnv->ijv", P, P), rtol=1e-8)
    np.testing.assert_allclose(res.oof_cross, np.einsum("inv,nv->iv", P, y_oof), rtol=1e-8)
    for j in range(Y.shape[1]):
        np.testing.assert_allclose(res.weights[:, j], _slsqp(P[:, :, j].T, y_oof[:, j]), atol=2e-6)
    # each space's ridge is plain ridge on its columns; the stacked model is linear in them
    for b in range(2):
        W, c0 = ridge_closed_form(X[:, cols[b]], Y, res.space_alphas[b])
        np.testing.assert_allclose(res.space_coef[cols[b]], W, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(res.coef[cols[b]], W * res.weights[b], rtol=1e-6, atol=1e-9)
    stacked = np.einsum("bv,btv->tv", res.weights, res.predict_spaces(X))
    np.testing.assert_allclose(X @ res.coef + res.intercept, stacked, rtol=1e-9, atol=1e-9)


def test_weights_go_to_the_driving_space():
    X, Y, space, third, W = _two_space_problem(n=600, v=30, seed=1)
    est = StackingCV(feature_space=space, alphas=np.logspace(-1, 4, 8), cv=5, dtype="float64").fit(X, Y)
    w = est.weights_
    assert est.spaces_ == ["a", "b"]
    np.testing.assert_allclose(w.sum(0), 1.0, atol=1e-12)
    assert np.all(w[0, :third] > 0.85) and np.all(w[1, third:2 * third] > 0.85)
    # voxels driven by both: the weight follows the true share of the signal variance
    # (independent unit-variance features: |W_a|^2 / (|W_a|^2 + |W_b|^2))
    both = slice(2 * third, None)
    share_a = np.sum(W[:6, both] ** 2, 0) / np.sum(W[:, both] ** 2, 0)
    assert np.corrcoef(share_a, w[0, both])[0, 1] > 0.8
    # the alpha reported is the highest-weight space's
    top = np.argmax(w, 0)
    np.testing.assert_array_equal(est.alphas_, est.space_alphas_[top, np.arange(w.shape[1])])


def test_one_space_equals_ridgecv():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 12))
    Y = X @ rng.standard_normal((12, 20)) + rng.standard_normal((300, 20))
    kw = dict(alphas=np.logspace(-1, 4, 8), cv=5, dtype="float64")
    plain = RidgeCV(**kw).fit(X, Y)
    st = StackingCV(feature_space=np.zeros(12, int), **kw).fit(X, Y)
    np.testing.assert_array_equal(st.weights_, 1.0)
    np.testing.assert_array_equal(st.alphas_, plain.alphas_)
    np.testing.assert_allclose(st.coef_, plain.coef_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(st.intercept_, plain.intercept_, rtol=1e-12, atol=1e-12)
    Xt = rng.standard_normal((50, 12))
    np.testing.assert_allclose(st.predict(Xt), plain.predict(Xt), rtol=1e-10, atol=1e-10)


def test_no_leak_test_rows_never_touch_the_fit():
    X, Y, space, *_ = _two_space_problem(n=400, v=15, seed=2)
    Xtr, Ytr, Xt, Yt = X[:300], Y[:300], X[300:], Y[300:]
    model = NestedCVModel(model_name="stacking", alphas=np.logspace(-1, 4, 8), pvalue_method="analytic",
                          dtype="float64")
    a = model.fit_dataset(Xtr, Ytr, X_test=Xt, y_test=Yt, feature_space=space)
    rng = np.random.default_rng(9)
    b = model.fit_dataset(Xtr, Ytr, X_test=rng.standard_normal(Xt.shape), y_test=rng.standard_normal(Yt.shape),
                          feature_space=space)
    for name in ("stack_weight", "space_alpha", "weights", "intercept", "alpha"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert not np.allclose(a["r"].values, b["r"].values)
    # and the fit equals the estimator's on the training rows alone, with the model's folds
    folds = list(ChunkKFold(chunk_length=20, n_splits=5, seed=0).split(300))
    ref = solve_stacking_cv(Xtr, Ytr, space, np.logspace(-1, 4, 8), folds, dtype="float64")
    np.testing.assert_array_equal(a["stack_weight"].values, ref.weights)


def test_structured_variance_partitioning_against_subset_fits():
    rng = np.random.default_rng(4)
    n, v = 500, 18
    Xs = [rng.standard_normal((n, p)) for p in (4, 6, 5)]
    X = np.hstack(Xs)
    space = np.repeat(["low", "mid", "high"], [4, 6, 5])
    Y = sum(x @ rng.standard_normal((x.shape[1], v)) for x in Xs[1:]) + 2 * rng.standard_normal((n, v))
    folds = list(ChunkKFold(chunk_length=20, n_splits=5, seed=0).split(400))
    alphas = np.logspace(-1, 4, 8)
    est = StackingCV(feature_space=space, alphas=alphas, cv=folds, dtype="float64").fit(X[:400], Y[:400])
    svp = est.variance_partitioning(X[400:], Y[400:])
    full = r2_score(Y[400:], est.predict(X[400:]))
    np.testing.assert_allclose(svp["r2_from"][0], full, atol=1e-10)
    np.testing.assert_allclose(svp["r2_upto"][-1], full, atol=1e-10)
    np.testing.assert_allclose(svp["svp_forward"].sum(0), full, atol=1e-10)
    np.testing.assert_allclose(svp["svp_backward"].sum(0), full, atol=1e-10)
    np.testing.assert_allclose(svp["r2_from"][-1], svp["r2_space"][-1], atol=1e-10)
    np.testing.assert_allclose(svp["r2_upto"][0], svp["r2_space"][0], atol=1e-10)
    # a subset's stacked R2 is the R2 of a stacking fit on those spaces' columns alone
    for keep, name, b in (([1, 2], "r2_from", 1), ([0, 1], "r2_upto", 1)):
        cols = np.isin(space, np.array(["low", "mid", "high"])[keep])
        sub = StackingCV(feature_space=space[cols], alphas=alphas, cv=folds, dtype="float64").fit(X[:400, cols],
                                                                                                  Y[:400])
        np.testing.assert_allclose(svp[name][b], r2_score(Y[400:], sub.predict(X[400:, cols])), atol=1e-9)
    # the low space drives nothing: what it adds to the later spaces is small
    assert np.median(svp["svp_forward"][0]) < 0.02 < np.median(svp["svp_forward"][1])


def test_dask_targets_and_outer_cv_mode():
    import dask.array as da

    X, Y, space, *_ = _two_space_problem(n=300, v=20, seed=5)
    folds = list(ChunkKFold(chunk_length=20, n_splits=5, seed=0).split(300))
    ref = solve_stacking_cv(X, Y, space, np.logspace(-1, 4, 8), folds, voxel_block=7)
    got = solve_stacking_cv(X, da.from_array(Y, chunks=(300, 8)), space, np.logspace(-1, 4, 8), folds, voxel_block=7)
    np.testing.assert_array_equal(got.weights, ref.weights)
    np.testing.assert_array_equal(got.coef, ref.coef)
    # without a test set: outer folds, the solver's outputs averaged over them
    ds = NestedCVModel(model_name="stacking", alphas=np.logspace(-1, 4, 8), pvalue_method="analytic",
                       n_outer_folds=3).fit_dataset(X, Y, feature_space=space)
    assert ds.attrs["mode"] == "outer cv" and ds["stack_weight"].dims == ("space", "voxel")
    np.testing.assert_allclose(ds["stack_weight"].sum("space"), 1.0, atol=1e-9)
    np.testing.assert_allclose(ds["svp_backward"].sum("space"), ds["svp_forward"].sum("space"), atol=1e-9)


@pytest.mark.parametrize("bk", BACKENDS)
def test_backends_give_the_numpy_fit(bk):
    X, Y, space, *_ = _two_space_problem(n=300, v=20, seed=6)
    folds = list(ChunkKFold(chunk_length=20, n_splits=5, seed=0).split(300))
    kw = dict(dtype="float64", voxel_block=8)
    ref = solve_stacking_cv(X, Y, space, np.logspace(-1, 4, 8), folds, **kw)
    got = solve_stacking_cv(X, Y, space, np.logspace(-1, 4, 8), folds, backend=bk[0], device=bk[1], **kw)
    np.testing.assert_array_equal(got.space_alphas, ref.space_alphas)
    np.testing.assert_allclose(got.weights, ref.weights, atol=1e-8)
    np.testing.assert_allclose(got.coef, ref.coef, rtol=1e-7, atol=1e-9)


def test_stacking_needs_feature_space():
    X = np.random.default_rng(1).standard_normal((100, 4))
    with pytest.raises(ValueError, match="feature_space"):
        NestedCVModel(model_name="stacking").fit_dataset(X, X[:, :2], X_test=X[:20], y_test=X[:20, :2])


def test_stacking_through_the_trainer_reaches_results_zarr(synthetic_small, tmp_path):
    ex = [FeatureExtractorFactory.create_extractor("wordrate", None, {}, str(tmp_path / "cache")),
          FeatureExtractorFactory.create_extractor("embeddings", str(synthetic_small.embeddings_path), {},
                                                   str(tmp_path / "cache"))]
    model = NestedCVModel(model_name="stacking", pvalue_method="analytic")
    metrics = AbstractTrainer(assembly=synthetic_small.assembly_path, feature_extractors=ex, model=model,
                              results_dir=tmp_path / "res", run_name="stack", logger_backend="none").train()
    res = results_mod.load(tmp_path / "res" / "stack").dataset.isel(layer=0)
    assert list(res["space"].values) == ["wordrate", "embeddings"]
    for name in ("stack_weight", "space_alpha", "r2_split", "r_split", "r2_space", "r2_from", "r2_upto",
                 "svp_forward", "svp_backward"):
        assert res[name].dims == ("space", "voxel"), name
    w = res["stack_weight"].values
    np.testing.assert_allclose(w.sum(0), 1.0, atol=1e-9)
    assert w.min() >= 0
    np.testing.assert_allclose(res["svp_forward"].values.sum(0), res["r2"].values, atol=1e-6)
    np.testing.assert_allclose(res["r2_split"].values.sum(0), res["r2"].values, atol=0.05)
    driver = np.array([str(d) for d in synthetic_small.ground_truth()["driver"].values])
    wr, em = driver == "wordrate", driver == "embeddings"
    assert np.median(w[0, wr]) > 0.7 and np.median(w[1, em]) > 0.7
    assert metrics["median_score"] > 0.3


@pytest.mark.slow
def test_stacking_benchmark_runs_small(tmp_path):
    """benchmarks/stacking.py end to end at a tiny size: the three models' rows and the split
    table come out, and the ground-truth design check holds (numbers are not timings)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "stacking.py"
    r = subprocess.run([sys.executable, str(script), "--stories", "4", "--words", "300", "--voxels", "60",
                        "--n-iter", "4", "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = re.findall(r"^\| (plain ridge \(concatenated\)|banded ridge|stacking) \| ([\d.]+) \| ([\d.]+) \|", r.stdout,
                      re.M)
    assert [x[0] for x in rows] == ["plain ridge (concatenated)", "banded ridge", "stacking"]
    assert all(0 < float(x[2]) <= 1.2 for x in rows)
    check = float(re.search(r"stored signal\) = ([\d.]+)", r.stdout).group(1))
    assert check > 0.999
    assert "stacking: weights" in r.stdout
