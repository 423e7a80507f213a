"""NestedCVModel on every available ridge backend against float64 brute-force references
(explicit closed-form solves per fold and alpha, then scores of the refitted model)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from scalenc.models import NestedCVModel
from scalenc.ridge import ChunkKFold, r2_score, ridge_closed_form

ALPHAS = np.logspace(-1, 4, 8)


def _data(n, p=10, v=20, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) + 0.3
    W = rng.standard_normal((p, v)) * rng.uniform(0.05, 1.0, v)
    return X, X @ W + rng.standard_normal((n, v)) + 1.0


def _corr(a, b):
    return np.array([stats.pearsonr(a[:, j], b[:, j]).statistic for j in range(a.shape[1])])


def _brute(X, Y, folds, use_corr=True):
    """Per-voxel alpha maximising the mean held-out score, from explicit solves."""
    S = np.zeros((len(ALPHAS), Y.shape[1]))
    for tr, te in folds:
        for i, a in enumerate(ALPHAS):
            W, b = ridge_closed_form(X[tr], Y[tr], a)
            P = X[te] @ W + b
            S[i] += _corr(Y[te], P) if use_corr else 1 - ((Y[te] - P) ** 2).sum(0) / ((Y[te] - Y[te].mean(0)) ** 2).sum(0)
    return ALPHAS[S.argmax(0)]


@pytest.mark.parametrize("use_corr", [True, False])
def test_train_test_mode_equals_brute_force(backend, use_corr):
    X, Y = _data(300, seed=1)
    Xt, Yt = _data(80, seed=2)
    model = NestedCVModel(alphas=ALPHAS, n_inner_folds=4, chunk_length=15, seed=4, use_corr=use_corr,
                          backend=backend.name, device=backend.device, dtype="float64", pvalue_method="analytic")
    metrics, weights, best = model.fit_predict(X, Y, X_test=Xt, y_test=Yt)
    folds = list(ChunkKFold(chunk_length=15, n_splits=4, seed=4).split(len(X)))
    np.testing.assert_array_equal(best, _brute(X, Y, folds, use_corr))
    W, b = ridge_closed_form(X, Y, best)
    np.testing.assert_allclose(weights, W, rtol=1e-8, atol=1e-10)
    P = Xt @ W + b
    np.testing.assert_allclose(metrics["correlations"], _corr(Yt, P), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(metrics["r2_scores"], r2_score(Yt, P), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(metrics["p_values"],
                               [stats.pearsonr(Yt[:, j], P[:, j], alternative="greater").pvalue for j in range(20)],
                               rtol=1e-6)


def test_outer_loop_equals_brute_force(backend):
    X, Y = _data(360, seed=3)
    model = NestedCVModel(alphas=ALPHAS, n_outer_folds=3, n_inner_folds=3, chunk_length=20, seed=2,
                          backend=backend.name, device=backend.device, dtype="float64")
    metrics, weights, best = model.fit_predict(X, Y)
    rs, coefs, alphas = [], [], []
    for tr, te in ChunkKFold(chunk_length=20, n_splits=3, seed=2).split(len(X)):
        inner = list(ChunkKFold(chunk_length=20, n_splits=3, seed=2).split(len(tr)))
        a = _brute(X[tr], Y[tr], inner)
        W, b = ridge_closed_form(X[tr], Y[tr], a)
        rs.append(_corr(Y[te], X[te] @ W + b))
        coefs.append(W)
        alphas.append(a)
    np.testing.assert_allclose(metrics["fold_correlations"], rs, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(metrics["correlations"], np.mean(rs, 0), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(weights, np.mean(coefs, 0), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(best, np.exp(np.mean(np.log(alphas), 0)), rtol=1e-12)
