"""Stacked regression over feature spaces (Lin, Naselaris, Kay & Wehbe 2024, NeuroImage,
"Stacked regressions and structured variance partitioning for interpretable brain maps").

With feature spaces ``b = 1..k`` (column groups ``X_b``, e.g. each extractor with all its
FIR delays):

1. one cross-validated ridge per space, :func:`~scalenc.ridge.solver.solve_ridge_cv` on
   ``X_b`` alone (its own per-voxel alpha, refitted on all training rows: ``coef_b``);
2. out-of-fold predictions of each space on the training rows: for every fold, the ridge of
   that space refitted on the fold's training rows with each voxel's chosen alpha predicts
   the fold's held-out rows (the alpha is the one chosen by the same folds, step 1; nothing
   outside the training rows given is ever read);
3. per voxel, stacking weights on the simplex (``w_b >= 0``, ``sum_b w_b = 1``) minimising
   ``||y - sum_b w_b yhat_b||^2`` over the out-of-fold rows: a k-variable quadratic
   programme solved exactly for every voxel at once (:func:`simplex_least_squares`);
4. the stacked model is linear: ``coef = [w_1 coef_1; ...; w_k coef_k]`` (each space's rows
   scaled by its weight) and ``intercept = sum_b w_b intercept_b``, so it predicts, saves and
   reloads like any ridge fit.

Structured variance partitioning (:func:`structured_variance_partitioning`) takes the spaces
in their given order (e.g. low to high level, or layers of a network) and, on scored rows,
compares stacked models on the contiguous runs of spaces that the order allows (the paper's
"forward" and "backward" analyses), re-using the fitted per-space models and re-solving only
the small weight problem on each subset's out-of-fold predictions.
"""
from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np

from .backend import array_module_of, host_array
from .banded import SpacePredictions, feature_spaces
from .cv import check_cv
from .scoring import r2_score
from .solver import local_workers, predict_linear, run_blocks, solve_ridge_cv, solver_targets

__all__ = ["StackingCV", "StackingCVResult", "simplex_least_squares", "solve_stacking_cv",
           "structured_variance_partitioning"]


# ---- the per-voxel weight problem ---------------------------------------------------------------
def simplex_least_squares(gram, cross, *, rtol: float = 1e-12) -> np.ndarray:
    """Exact minimiser of ``w^T H w - 2 c^T w`` over the simplex, for many problems at once.

    With ``H = P^T P`` and ``c = P^T y`` this is ``argmin ||y - P w||^2`` subject to
    ``w >= 0`` and ``sum(w) = 1`` (stacking weights of ``k`` predictions ``P``).

    Every non-empty support ``S`` of the ``k`` weights is tried: the minimiser on the affine
    hull of that face (``w_S`` from the KKT system ``[H_SS 1; 1^T 0] [w_S; mu] = [c_S; 1]``)
    is kept when it lies in the face (``w_S >= 0``), and the feasible candidate with the
    lowest objective is returned. The problem is convex, so its minimiser is the minimiser
    on the affine hull of its own face: the enumeration is exact (``2^k - 1`` batched
    solves of size at most ``k + 1``; k is the number of feature spaces, a few).

    Parameters
    ----------
    gram : (..., k, k) array
        ``P^T P`` per problem (symmetric positive semi-definite).
    cross : (..., k) array
        ``P^T y`` per problem.
    rtol : float
        A ridge of ``rtol * trace(H) / k`` keeps the KKT systems solvable when predictions
        are collinear (the objective is evaluated without it). A problem with ``H = 0``
        gets equal weights.

    Returns
    -------
    w : (..., k) float64, rows on the simplex
    """
    H = np.asarray(gram, dtype=np.float64)
    c = np.asarray(cross, dtype=np.float64)
    if H.ndim < 2 or H.shape[-1] != H.shape[-2] or c.shape != H.shape[:-1]:
        raise ValueError(f"simplex_least_squares: gram must be (..., k, k) and cross (..., k), "
                         f"got {H.shape} and {c.shape}")
    batch, k = H.shape[:-2], H.shape[-1]
    H = H.reshape(-1, k, k)
    c = c.reshape(-1, k)
    m = H.shape[0]
    scale = np.trace(H, axis1=1, axis2=2) / k
    ok = np.isfinite(scale) & np.all(np.isfinite(c), axis=1) & (scale > 0)
    H = np.where(ok[:, None, None], H, np.eye(k))
    c = np.where(ok[:, None], c, 0.0)
    jitter = rtol * np.where(ok, scale, 1.0)
    best_w = np.full((m, k), 1.0 / k)
    best_f = np.full(m, np.inf)
    for size in range(1, k + 1):
        for S in itertools.combinations(range(k), size):
            idx = np.asarray(S)
            w = np.zeros((m, k))
            if size == 1:
                w[:, idx[0]] = 1.0
                feasible = np.ones(m, bool)
            else:
                M = np.zeros((m, size + 1, size + 1))
                M[:, :size, :size] = H[:, idx[:, None], idx[None, :]] + jitter[:, None, None] * np.eye(size)
                M[:, :size, size] = 1.0
                M[:, size, :size] = 1.0
                rhs = np.concatenate([c[:, idx], np.ones((m, 1))], axis=1)
                wS = np.linalg.solve(M, rhs[..., None])[..., 0][:, :size]
                feasible = np.all(wS >= -1e-12, axis=1) & np.all(np.isfinite(wS), axis=1)
                wS = np.clip(wS, 0.0, None)
                wS /= np.where(feasible, wS.sum(1), 1.0)[:, None]
                w[:, idx] = wS
            f = np.einsum("mi,mij,mj->m", w, H, w) - 2 * np.einsum("mi,mi->m", c, w)
            better = feasible & (f < best_f)
            best_w[better] = w[better]
            best_f[better] = f[better]
    return best_w.reshape(*batch, k)


# ---- the fit --------------------------------------------------------------------------------------
@dataclasses.dataclass
class StackingCVResult:
    """Output of :func:`solve_stacking_cv`.

    Attributes
    ----------
    coef : (n_features, n_voxels) ndarray
        The stacked linear model: the rows of space b are ``weights[b] * space_coef`` rows.
    intercept : (n_voxels,) ndarray
        ``sum_b weights[b] * space_intercept[b]``.
    best_alphas : (n_voxels,) ndarray
        The alpha of each voxel's highest-weight space (first on ties).
    weights : (n_spaces, n_voxels) ndarray
        Stacking weights, on the simplex per voxel: each space's share of the prediction.
    space_coef : (n_features, n_voxels) ndarray
        Each space's own ridge weights, in that space's rows (unweighted; the ridge's dtype,
        as ``coef``).
    space_intercept, space_alphas : (n_spaces, n_voxels) ndarray
        Each space's intercept and chosen alpha (``alpha ||w||^2`` units).
    space_cv_scores : (n_spaces, n_alphas, n_voxels) ndarray
        Each space's mean held-out score per alpha (the alpha choice).
    oof_gram : (n_spaces, n_spaces, n_voxels) ndarray
        ``P^T P`` of the out-of-fold predictions ``P`` (rows of all folds' test sets; with
        one space not computed: ones).
    oof_cross : (n_spaces, n_voxels) ndarray
        ``P^T y`` of the out-of-fold predictions (one space: ones).
    alphas : (n_alphas,) ndarray
    spaces : list
        Feature-space labels, in order of first appearance.
    space_of_feature : (n_features,) int ndarray
    """

    coef: np.ndarray
    intercept: np.ndarray
    best_alphas: np.ndarray
    weights: np.ndarray
    space_coef: np.ndarray
    space_intercept: np.ndarray
    space_alphas: np.ndarray
    space_cv_scores: np.ndarray
    oof_gram: np.ndarray
    oof_cross: np.ndarray
    alphas: np.ndarray
    spaces: list
    space_of_feature: np.ndarray

    def predict_spaces(self, X) -> np.ndarray:
        """(n_spaces, n_trs, n_voxels) predictions of each space's own ridge (with its intercept)."""
        X = np.asarray(X)
        return np.stack([predict_linear(X[:, self.space_of_feature == b], self.space_coef[self.space_of_feature == b],
                                        self.space_intercept[b]) for b in range(len(self.spaces))])

    def subset_weights(self, subset: Sequence[int]) -> np.ndarray:
        """(len(subset), n_voxels) stacking weights of the model restricted to the spaces
        ``subset`` (indices), from the same out-of-fold predictions."""
        idx = np.asarray(list(subset), dtype=np.int64)
        if idx.size == 0:
            raise ValueError("subset_weights: empty subset of spaces")
        if idx.size == len(self.spaces) and np.array_equal(idx, np.arange(idx.size)):
            return self.weights
        H = np.moveaxis(self.oof_gram[idx[:, None], idx[None, :]], -1, 0)
        return simplex_least_squares(H, self.oof_cross[idx].T).T


def _read_block(Y, sl: slice) -> np.ndarray:
    if hasattr(Y, "iter_blocks"):
        return np.asarray(Y.read(sl.start, sl.stop), dtype=np.float64)
    part = Y[:, sl]
    if array_module_of(part) == "dask":
        part = part.compute()
    return np.asarray(host_array(part), dtype=np.float64)


def _oof_side(Xb: np.ndarray, folds, fit_intercept: bool) -> list[tuple]:
    """Per fold: ``(train, test, A_te, B_tr, lam)`` such that the ridge of the fold's training
    rows predicts its test rows as ``A_te @ ((B_tr^T Yc_tr) / (lam + alpha)) + mean(Y_tr)``
    (primal eigenbasis when the space has fewer features than training rows, else the kernel's)."""
    out = []
    for tr, te in folds:
        Xtr = Xb[tr]
        mx = Xtr.mean(0) if fit_intercept else np.zeros(Xb.shape[1])
        Xc = Xtr - mx
        Xte = Xb[te] - mx
        if Xb.shape[1] <= len(tr):
            lam, V = np.linalg.eigh(Xc.T @ Xc)
            A, B = Xte @ V, Xc @ V
        else:
            lam, U = np.linalg.eigh(Xc @ Xc.T)
            A, B = Xte @ (Xc.T @ U), U
        out.append((np.asarray(tr), np.asarray(te), A, B, np.clip(lam, 0.0, None)))
    return out


def _oof_block(Y: np.ndarray, sides: list[list[tuple]], alphas: np.ndarray, fit_intercept: bool):
    """(gram (k, k, vb), cross (k, vb)) of the out-of-fold predictions of one voxel block."""
    k, vb = len(sides), Y.shape[1]
    gram = np.zeros((k, k, vb))
    cross = np.zeros((k, vb))
    for f in range(len(sides[0])):
        tr, te = sides[0][f][0], sides[0][f][1]
        my = Y[tr].mean(0) if fit_intercept else np.zeros(vb)
        Yc = Y[tr] - my
        P = np.empty((k, te.size, vb))
        for b in range(k):
            _, _, A, B, lam = sides[b][f]
            P[b] = A @ ((B.T @ Yc) / (lam[:, None] + alphas[b][None, :])) + my
        Yte = Y[te]
        for i in range(k):  # pairwise column dot products (a k-index einsum would not use fast loops)
            cross[i] += np.einsum("nv,nv->v", P[i], Yte)
            for j in range(i, k):
                gram[i, j] += np.einsum("nv,nv->v", P[i], P[j])
    for i in range(k):
        for j in range(i):
            gram[i, j] = gram[j, i]
    return gram, cross


def solve_stacking_cv(X, Y, feature_space, alphas, folds: Sequence[tuple[np.ndarray, np.ndarray]], *,
                      fit_intercept: bool = True, score: str = "r", single_alpha: bool = False,
                      alpha_squared: bool = False, voxel_block: int | None = 10_000,
                      backend: str | None = None, device: str | None = None, dtype: str = "float32",
                      progress: bool | None = None) -> StackingCVResult:
    """Stacked ridge: one cross-validated ridge per feature space, combined per voxel with
    simplex weights fitted on their out-of-fold predictions (see the module docstring).

    Parameters
    ----------
    X : (n_trs, n_features) array
    Y : (n_trs, n_voxels) numpy/CuPy/torch array, voxel-chunked dask array, or
        :class:`~scalenc.assembly.stacked.StackedResponses`
    feature_space : (n_features,) array-like
        Feature-space label of each column (the design's ``feature_space`` coordinate).
    alphas : (n_alphas,) array
        Penalty grid of every space's ridge (``alpha ||w||^2``; squared with ``alpha_squared``).
    folds : list of (train_idx, test_idx)
        Over the rows of ``X`` (the training rows only): they choose each space's alpha and
        give the out-of-fold predictions that fit the weights.
    fit_intercept, score, single_alpha, alpha_squared, voxel_block, backend, device, dtype, progress
        As :func:`~scalenc.ridge.solver.solve_ridge_cv` (each space's ridge). The
        out-of-fold predictions and the weights are computed in float64 numpy, in blocks of
        ``voxel_block`` voxels.

    Returns
    -------
    StackingCVResult
    """
    X = np.asarray(X)
    n, p = X.shape
    if Y.ndim != 2 or Y.shape[0] != n:
        raise ValueError(f"Y must be 2-D with {n} rows like X, got shape {tuple(Y.shape)}")
    Y = solver_targets(Y)
    spaces, space_of = feature_spaces(feature_space, p)
    folds = [(np.asarray(tr, np.int64), np.asarray(te, np.int64)) for tr, te in folds]
    k, v = len(spaces), Y.shape[1]
    space_coef = None
    icpt, best, cvs = np.empty((k, v)), np.empty((k, v)), []
    grid = None
    for b in range(k):
        cols = space_of == b
        res = solve_ridge_cv(X[:, cols], Y, alphas, folds, fit_intercept=fit_intercept, score=score,
                             single_alpha=single_alpha, alpha_squared=alpha_squared, voxel_block=voxel_block,
                             backend=backend, device=device, dtype=dtype, progress=progress)
        if space_coef is None:  # in the solver's dtype (float32 by default): p x v can be large
            space_coef = np.empty((p, v), dtype=res.coef.dtype)
        space_coef[cols] = res.coef
        icpt[b], best[b], grid = res.intercept, res.best_alphas, res.alphas
        cvs.append(res.cv_scores)
    gram, cross = np.ones((k, k, v)), np.ones((k, v))
    if k > 1:
        Xd = X.astype(np.float64)
        sides = [_oof_side(Xd[:, space_of == b], folds, fit_intercept) for b in range(k)]
        width = v if not voxel_block else max(1, min(int(voxel_block), v))
        spans = [slice(a, min(a + width, v)) for a in range(0, v, width)]

        def one(sl):
            return _oof_block(_read_block(Y, sl), sides, best[:, sl], fit_intercept)

        def store(sl, part):
            gram[..., sl], cross[:, sl] = part

        run_blocks(one, spans, store, workers=local_workers(len(spans)))  # numpy, whatever the ridge backend
        weights = simplex_least_squares(np.moveaxis(gram, -1, 0), cross.T).T
    else:
        weights = np.ones((1, v))
    coef = np.empty_like(space_coef)
    for b in range(k):
        cols = space_of == b
        coef[cols] = space_coef[cols] * weights[b].astype(space_coef.dtype)[None, :]
    top = np.argmax(weights, axis=0)
    return StackingCVResult(coef=coef, intercept=(weights * icpt).sum(0), best_alphas=best[top, np.arange(v)],
                            weights=weights, space_coef=space_coef, space_intercept=icpt, space_alphas=best,
                            space_cv_scores=np.stack(cvs), oof_gram=gram, oof_cross=cross, alphas=grid,
                            spaces=spaces, space_of_feature=space_of)


# ---- structured variance partitioning ---------------------------------------------------------------
def structured_variance_partitioning(result: StackingCVResult, X, Y) -> dict[str, np.ndarray]:
    """Structured variance partitioning of a stacked fit on scored rows (e.g. the test set).

    The spaces are taken in their order ``1..k`` (the order of the design's columns: put
    them from low to high level, e.g. speech then semantics, or a network's layers). Only
    stacked models on runs of consecutive spaces are compared (the paper's restricted
    hypothesis space), each with its own simplex weights re-fitted on the same out-of-fold
    predictions (:meth:`StackingCVResult.subset_weights`), and scored by held-out R²
    (:func:`~scalenc.ridge.scoring.r2_score`) on ``X, Y``:

    - ``r2_from[b] = R2(stack of spaces b..k)`` (the "forward" analysis: spaces removed from
      the start); ``r2_from[0]`` is the full stacked model, ``r2_from[k-1]`` the last space alone;
    - ``r2_upto[b] = R2(stack of spaces 1..b)`` (the "backward" analysis: removed from the end);
    - ``svp_forward[b] = r2_from[b] - r2_from[b+1]`` (with ``r2_from[k] = 0``): what space b
      adds to the spaces after it;
    - ``svp_backward[b] = r2_upto[b] - r2_upto[b-1]`` (with ``r2_upto[-1] = 0``): what space b
      adds to the spaces before it.

    Both ``svp_forward`` and ``svp_backward`` sum over spaces to the full stacked model's R².
    A part can be negative (held-out noise, or a subset whose weights generalise better).
    ``r2_space`` is each space's own ridge alone. The paper assigns a voxel to a range of
    layers with a threshold on these curves (e.g. the first space whose removal costs more
    than 5 % of the full R²); that reading is left to the user.

    Returns
    -------
    dict of (n_spaces, n_voxels) float64 arrays
        ``r2_space``, ``r2_from``, ``r2_upto``, ``svp_forward``, ``svp_backward``.
    """
    Y = np.asarray(Y, dtype=np.float64)
    P = result.predict_spaces(X)
    k = P.shape[0]

    def r2_of(idx):
        w = result.subset_weights(idx)
        return r2_score(Y, np.einsum("bv,btv->tv", w, P[list(idx)]))

    r2_space = np.stack([r2_score(Y, P[b]) for b in range(k)])
    r2_from = np.stack([r2_of(range(b, k)) for b in range(k)])
    r2_upto = np.stack([r2_of(range(0, b + 1)) for b in range(k)])
    zeros = np.zeros((1, Y.shape[1]))
    return {"r2_space": r2_space, "r2_from": r2_from, "r2_upto": r2_upto,
            "svp_forward": r2_from - np.concatenate([r2_from[1:], zeros]),
            "svp_backward": r2_upto - np.concatenate([zeros, r2_upto[:-1]])}


# ---- estimator ----------------------------------------------------------------------------------------
class StackingCV(SpacePredictions):
    """Stacked ridge over feature spaces (scikit-learn style; :func:`solve_stacking_cv`).

    Parameters
    ----------
    feature_space : (n_features,) array-like
        Feature-space label of each column of ``X`` (a labeled design's ``feature_space``).
    alphas : (n_alphas,) array
        Every space's ridge grid (default ``logspace(0, 6, 13)``).
    cv : int, splitter or list of (train, test)
        As :class:`~scalenc.ridge.RidgeCV`.
    fit_intercept : bool
    scoring : {"r", "r2"}
        Held-out metric of each space's alpha choice, and what :meth:`score` returns.
    single_alpha, alpha_squared, voxel_block, backend, device, dtype
        As :class:`~scalenc.ridge.RidgeCV`.

    Attributes
    ----------
    coef_ : (n_features, n_voxels) ndarray
        The stacked linear model.
    intercept_ : (n_voxels,) ndarray
    weights_ : (n_spaces, n_voxels) ndarray
        Stacking weights (simplex per voxel).
    alphas_ : (n_voxels,) ndarray
        Alpha of each voxel's highest-weight space.
    space_alphas_ : (n_spaces, n_voxels) ndarray
    spaces_ : list
    result_ : StackingCVResult
    n_features_in_ : int
    """


    def __init__(self, feature_space=None, alphas=None, cv=5, *, fit_intercept: bool = True, scoring: str = "r",
                 single_alpha: bool = False, alpha_squared: bool = False, voxel_block: int | None = 10_000,
                 backend: str | None = None, device: str | None = None, dtype: str = "float32"):
        self.feature_space = feature_space
        self.alphas = alphas
        self.cv = cv
        self.fit_intercept = fit_intercept
        self.scoring = scoring
        self.single_alpha = single_alpha
        self.alpha_squared = alpha_squared
        self.voxel_block = voxel_block
        self.backend = backend
        self.device = device
        self.dtype = dtype

    def fit(self, X, Y, stories=None) -> StackingCV:
        """Fit on ``X`` (n_trs, n_features) and ``Y`` (n_trs, n_voxels); ``stories`` (n_trs,)
        labels the story of each row (story-grouped folds)."""
        n, p = np.shape(X)
        if np.shape(Y)[0] != n:
            raise ValueError(f"X has {n} rows but Y has {np.shape(Y)[0]}")
        spaces = np.zeros(p, np.int64) if self.feature_space is None else self.feature_space
        alphas = np.logspace(0, 6, 13) if self.alphas is None else self.alphas
        res = solve_stacking_cv(X, Y, spaces, alphas, check_cv(self.cv, n, stories),
                                fit_intercept=self.fit_intercept, score=self.scoring, single_alpha=self.single_alpha,
                                alpha_squared=self.alpha_squared, voxel_block=self.voxel_block,
                                backend=self.backend, device=self.device, dtype=self.dtype)
        self.result_ = res
        self.coef_, self.intercept_, self.weights_ = res.coef, res.intercept, res.weights
        self.alphas_, self.space_alphas_, self.spaces_ = res.best_alphas, res.space_alphas, res.spaces
        self.n_features_in_ = p
        return self

    def variance_partitioning(self, X, Y) -> dict[str, np.ndarray]:
        """:func:`structured_variance_partitioning` of this fit on ``X, Y``."""
        return structured_variance_partitioning(self.result_, self._check_X(X), Y)
