"""Banded ridge against himalaya (same candidates and folds), RidgeCV (one space) and
synthetic ground truth; split scores and variance partitioning against their definitions."""
from __future__ import annotations

import functools
import warnings

import dask.array as da
import numpy as np
import pytest

from scalenc.ridge import (BandedRidgeCV, RidgeCV, banded_candidates, correlation_score_split, pearson_r,
                           r2_score, r2_score_split, solve_banded_ridge_cv, variance_partitioning)

ALPHAS = np.logspace(-1, 4, 8)


def _two_spaces(n=300, p_a=12, p_b=5, v=40, seed=0, noise=2.0, spread=True):
    """Voxels 0..v/2 driven by space A, the rest by space B (each with a weak leak);
    signal norms spread over voxels, or all 1.5 (``spread=False``)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p_a + p_b)) + 0.5
    groups = np.r_[np.zeros(p_a, int), np.ones(p_b, int)]
    W = rng.standard_normal((p_a + p_b, v))
    W[:p_a, v // 2:] *= 0.02
    W[p_a:, : v // 2] *= 0.02
    W *= rng.uniform(0.2, 1.0, v) if spread else 1.5 / np.linalg.norm(W, axis=0)
    Y = X @ W + noise * rng.standard_normal((n, v)) + 1.0
    return X, Y, groups


def _kfold(n, k=5):
    tests = np.array_split(np.arange(n), k)
    return [(np.setdiff1d(np.arange(n), t), t) for t in tests]


@functools.lru_cache(maxsize=None)
def _himalaya_case(score):
    """Data, folds, candidates and himalaya's fit (computed once per score for all backends)."""
    X, Y, groups = _two_spaces(n=240, v=30)
    folds = _kfold(len(X))
    cands = banded_candidates(2, 7, corners=False, random_state=1)  # himalaya cannot take exact zeros
    return X, Y, groups, folds, cands, _himalaya(X, Y, groups, folds, cands, score)


def _himalaya(X, Y, groups, folds, cands, score):
    from himalaya.backend import set_backend
    from himalaya.ridge import BandedRidgeCV as HBandedRidgeCV
    from himalaya.scoring import correlation_score
    from himalaya.scoring import r2_score as h_r2

    set_backend("numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = HBandedRidgeCV(groups=groups, cv=folds, fit_intercept=True,
                           solver_params=dict(n_iter=cands, alphas=ALPHAS, progress_bar=False,
                                              score_func=correlation_score if score == "r" else h_r2)).fit(X, Y)
    e = np.exp(np.asarray(h.deltas_))
    gammas = e / e.sum(0)
    cand = np.argmin(((cands[:, :, None] - gammas[None]) ** 2).sum(1), axis=0)
    return h, cand, 1.0 / e.sum(0)


@pytest.mark.parametrize("score", ["r", "r2"])
def test_equals_himalaya_given_the_same_candidates_and_folds(backend, score):
    X, Y, groups, folds, cands, (h, h_cand, h_alpha) = _himalaya_case(score)
    res = solve_banded_ridge_cv(X, backend.asarray(Y), groups, ALPHAS, folds, candidates=cands,
                                score=score, backend=backend, dtype="float64")
    np.testing.assert_array_equal(res.best_candidate, h_cand)
    np.testing.assert_allclose(res.best_alphas, h_alpha, rtol=1e-10)
    np.testing.assert_allclose(res.gammas, cands[h_cand].T)
    hc = np.asarray(h.coef_)
    assert np.abs(res.coef - hc).max() / np.abs(hc).max() < 1e-4
    np.testing.assert_allclose(res.intercept, np.asarray(h.intercept_), rtol=1e-4, atol=1e-8)
    # himalaya's CV score per candidate is at its best alpha (plus a 1e-10 log(alpha) tie-breaking slope)
    np.testing.assert_allclose(res.cv_scores.max(axis=1), np.asarray(h.cv_scores_), atol=1e-8)
    assert len(np.unique(res.best_candidate)) > 2  # the data choose different candidates


def test_one_space_equals_ridgecv(backend):
    X, Y, _ = _two_spaces(seed=2)
    folds = _kfold(len(X))
    b = BandedRidgeCV(feature_space=np.zeros(X.shape[1]), alphas=ALPHAS, cv=folds, dtype="float64",
                      backend=backend).fit(X, Y)
    r = RidgeCV(alphas=ALPHAS, cv=folds, dtype="float64").fit(X, Y)  # numpy: the reference
    assert b.candidates_.tolist() == [[1.0]]  # corner and Dirichlet draws coincide: deduplicated
    np.testing.assert_array_equal(b.alphas_, r.alphas_)
    np.testing.assert_allclose(b.coef_, r.coef_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.intercept_, r.intercept_, rtol=1e-10)
    np.testing.assert_allclose(b.cv_scores_[0], r.cv_scores_, atol=1e-12)


def test_split_assigns_each_voxel_to_its_space():
    X, Y, groups = _two_spaces(n=700, v=30, seed=3, noise=1.0)
    Xtr, Ytr, Xte, Yte = X[:500], Y[:500], X[500:], Y[500:]
    m = BandedRidgeCV(feature_space=np.where(groups == 0, "A", "B"), alphas=ALPHAS, n_iter=10, cv=5, scoring="r2",
                      dtype="float64").fit(Xtr, Ytr)
    assert m.spaces_ == ["A", "B"]
    truth = (np.arange(30) >= 15).astype(int)  # 0: space A, 1: space B
    split = m.score_split(Xte, Yte)
    np.testing.assert_array_equal(split.argmax(0), truth)
    np.testing.assert_array_equal((m.gammas_[1] > 0.5).astype(int), truth)
    np.testing.assert_allclose(split.sum(0), r2_score(Yte - Yte.mean(0), (m.predict(Xte, split=True)
                                                                            - m.predict(Xte, split=True).mean(1,
                                                                            keepdims=True)).sum(0)),
                               atol=1e-12)
    parts = m.predict(Xte, split=True)
    assert parts.shape == (2, 200, 30)
    np.testing.assert_allclose(parts.sum(0) + m.intercept_, m.predict(Xte), rtol=1e-12, atol=1e-12)


def test_split_scores_sum_to_joint_and_equal_himalaya():
    from himalaya.scoring import correlation_score_split as h_corr_split
    from himalaya.scoring import r2_score_split as h_r2_split

    rng = np.random.default_rng(4)
    y = rng.standard_normal((80, 6))
    P = 0.4 * y[None] + rng.standard_normal((3, 80, 6)) * [[[0.5]], [[1.0]], [[2.0]]]
    yc = y - y.mean(0)
    s = r2_score_split(yc, P, center=False)
    np.testing.assert_allclose(s.sum(0), 1 - ((yc - P.sum(0)) ** 2).sum(0) / (yc ** 2).sum(0), rtol=1e-12)
    np.testing.assert_allclose(s, h_r2_split(yc, P), rtol=1e-10, atol=1e-12)
    Pc = P - P.mean(1, keepdims=True)
    np.testing.assert_allclose(r2_score_split(y, P), r2_score_split(yc, Pc, center=False), rtol=1e-12)
    c = correlation_score_split(y, P)
    np.testing.assert_allclose(c.sum(0), pearson_r(y, P.sum(0)), rtol=1e-12)
    np.testing.assert_allclose(c, h_corr_split(y, P), rtol=1e-8, atol=1e-12)
    with pytest.raises(ValueError, match="y_pred must be"):
        r2_score_split(y, P[:, :10])


def test_variance_partitioning_recovers_venn_areas():
    # areas of the regions of a three-set Venn diagram of explained variance
    area = {"A": 0.10, "B": 0.20, "C": 0.05, "AB": 0.03, "AC": 0.02, "BC": 0.04, "ABC": 0.01}

    def union(spaces):
        return sum(a for k, a in area.items() if set(k) & set(spaces))

    subsets = ["A", "B", "C", "AB", "AC", "BC", "ABC"]
    parts = variance_partitioning({tuple(s): np.array([union(s)]) for s in subsets})
    for k, a in area.items():
        np.testing.assert_allclose(parts[frozenset(k)], [a], atol=1e-15)
    two = variance_partitioning({("A",): 0.3, ("B",): 0.2, ("A", "B"): 0.6})
    np.testing.assert_allclose([two[frozenset("A")], two[frozenset("B")], two[frozenset("AB")]], [0.4, 0.3, -0.1])
    assert sum(two.values()) == pytest.approx(0.6)  # negative shared part kept, not clipped
    with pytest.raises(ValueError, match="missing the R"):
        variance_partitioning({("A",): 0.3, ("A", "B"): 0.6})
    with pytest.raises(ValueError, match="two or three feature spaces"):
        variance_partitioning({("A",): 0.3})


def test_variance_partitioning_of_fitted_submodels():
    """Unique variance of the space that drives a voxel is large, of the other near zero."""
    X, Y, groups = _two_spaces(n=700, v=20, seed=5, noise=1.0, spread=False)
    tr, te = slice(0, 500), slice(500, None)
    r2 = {}
    for key, cols in ((("A",), groups == 0), (("B",), groups == 1), (("A", "B"), slice(None))):
        m = BandedRidgeCV(feature_space=groups[cols], alphas=ALPHAS, n_iter=6, dtype="float64").fit(X[tr][:, cols], Y[tr])
        r2[key] = r2_score(Y[te], m.predict(X[te][:, cols]))
    parts = variance_partitioning(r2)
    uA, uB = parts[frozenset("A")], parts[frozenset("B")]
    assert np.all(uA[:10] > 0.1) and np.all(np.abs(uB[:10]) < 0.05)
    assert np.all(uB[10:] > 0.1) and np.all(np.abs(uA[10:]) < 0.05)
    np.testing.assert_allclose(uA + uB + parts[frozenset("AB")], r2[("A", "B")], atol=1e-12)


def test_dask_path_equals_in_memory():
    X, Y, groups = _two_spaces(v=30, seed=6)
    folds = _kfold(len(X))
    kw = dict(n_iter=5, score="r2", dtype="float64")
    ref = solve_banded_ridge_cv(X, Y, groups, ALPHAS, folds, **kw)
    r = solve_banded_ridge_cv(X, da.from_array(Y, chunks=(100, 8)), groups, ALPHAS, folds, **kw)
    np.testing.assert_array_equal(r.best_candidate, ref.best_candidate)
    np.testing.assert_array_equal(r.best_alpha_index, ref.best_alpha_index)
    np.testing.assert_allclose(r.coef, ref.coef, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r.cv_scores, ref.cv_scores, atol=1e-12)


def test_candidates_and_bad_input():
    c = banded_candidates(3, 10, concentration=[0.1, 1.0], random_state=0)
    np.testing.assert_array_equal(c[:3], np.eye(3))
    # 3 corners + 10 draws, less draws that round to a corner or an earlier draw (concentration 0.1)
    assert 10 <= c.shape[0] <= 13 and len(np.unique(c, axis=0)) == c.shape[0] and np.allclose(c.sum(1), 1)
    np.testing.assert_array_equal(c, banded_candidates(3, 10, concentration=[0.1, 1.0], random_state=0))
    X, Y, groups = _two_spaces(v=4)
    folds = _kfold(len(X))
    with pytest.raises(ValueError, match=r"candidates must be an \(n_candidates, 2\) array"):
        solve_banded_ridge_cv(X, Y, groups, ALPHAS, folds, candidates=np.ones((3, 3)) / 3)
    with pytest.raises(ValueError, match="one feature-space label per column"):
        solve_banded_ridge_cv(X, Y, groups[:-1], ALPHAS, folds)
    with pytest.raises(ValueError, match="gammas must be finite, >= 0"):
        solve_banded_ridge_cv(X, Y, groups, ALPHAS, folds, candidates=[[0.5, -0.5]])
    with pytest.raises(RuntimeError, match="not fitted"):
        BandedRidgeCV(feature_space=groups).predict(X)
    m = BandedRidgeCV(feature_space=groups, alphas=ALPHAS, n_iter=2).fit(X, Y)
    with pytest.raises(ValueError, match="must have 17 features"):
        m.predict(X[:, :3])
