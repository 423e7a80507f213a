"""p-space cross-validated ridge regression (DESIGN.md, "Ridge: the p-space algorithm").

Penalty convention: the loss is ``||Y - X W||^2 + alpha ||W||^2`` (himalaya's). HuthLab and
LITcoder grids are in ``alpha^2`` units; pass ``alpha_squared=True`` to square a grid given
in those units (their ``logspace(1, 3, 10)`` becomes ``logspace(2, 6, 10)`` here).

With n TRs, p features, v voxels, A alphas and K folds:

1. X side, once (float64): ``G = X^T X``; per fold the training Gram is the downdate
   ``G - X_te^T X_te`` (centred with the training means when ``fit_intercept``), and
   ``eigh`` gives ``Q diag(lambda) Q^T``. When a training set has fewer rows than
   features, the training kernel ``X_tr X_tr^T`` is decomposed instead and turned into
   the same ``(Q, lambda)`` on the row space (the ridge solution lies there), so every
   later step is shared.
2. Y side, per voxel block: ``C = X^T Y`` and per fold ``C_te = X_te^T Y_te``; the
   training cross-product is ``C - C_te``; ``Z = Q^T C_train``.
3. Per alpha: ``W_alpha = Q diag(1 / (lambda + alpha)) Z``. Held-out scores come from
   sufficient statistics (``Q^T X_te^T X_te Q``, ``Q^T X_te^T Y_te``, sums) when the test
   fold has more rows than the decomposition's rank, else from predictions; neither an
   ``n_te x n_tr`` nor a per-alpha ``p x n`` matrix is ever formed.
4. Best alpha per voxel (or one shared alpha) from the mean score over folds; refit on
   all rows with each voxel's own alpha.

Steps 2-4 are independent per voxel: :func:`solve_ridge_cv` maps them over voxel blocks
(``voxel_block``) in memory, or over the chunks of a voxel-chunked dask array, with the
X-side quantities computed once and shared. Big products run in ``dtype`` (float32 by
default); the p x p algebra is float64.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
import numpy as np
from tqdm.auto import tqdm

from .backend import Backend, array_module_of, get_backend

logger = logging.getLogger(__name__)

SCORES = ("r", "r2")


@dataclasses.dataclass
class RidgeCVResult:
    """Output of :func:`solve_ridge_cv`.

    Attributes
    ----------
    coef : (n_features, n_voxels) ndarray or None
    intercept : (n_voxels,) ndarray
    best_alphas : (n_voxels,) ndarray
        Chosen penalty per voxel (in the solver's ``alpha ||w||^2`` units).
    best_alpha_index : (n_voxels,) int ndarray
    cv_scores : (n_alphas, n_voxels) ndarray
        Mean held-out score over folds.
    fold_scores : (n_folds, n_alphas, n_voxels) ndarray
    alphas : (n_alphas,) ndarray
        The grid actually used (squared if ``alpha_squared``).
    """

    coef: np.ndarray | None
    intercept: np.ndarray
    best_alphas: np.ndarray
    best_alpha_index: np.ndarray
    cv_scores: np.ndarray
    fold_scores: np.ndarray
    alphas: np.ndarray


# --------------------------------------------------------------------------------------
# X side
@dataclasses.dataclass
class _Fold:
    train: np.ndarray
    test: np.ndarray
    complement: bool          # train == all rows minus test
    mx: np.ndarray            # (p,) training mean of X (zeros without intercept)
    sx: np.ndarray            # (p,) training sum of X
    n_train: int
    Q: np.ndarray             # (p, r)
    lam: np.ndarray           # (r,)
    mode: str                 # "stats" | "pred"
    H: np.ndarray | None      # (r, r) Q^T Xc_te^T Xc_te Q   (stats mode)
    u: np.ndarray | None      # (r,) Q^T sum(Xc_te)           (stats mode)
    XQ: np.ndarray | None     # (n_te, r) Xc_te Q             (pred mode)
    Xte: np.ndarray | None = None  # (n_te, p) rows of the (globally centred) X, in dtype


@dataclasses.dataclass
class XSide:
    """Everything of the ridge problem that does not depend on Y (computed once, shared
    by all voxel blocks and sent once to each Dask worker)."""

    X: np.ndarray             # (n, p) globally centred when fit_intercept, in dtype
    mean_x: np.ndarray        # (p,) global mean (zeros without intercept)
    folds: list[_Fold]
    full: _Fold               # the refit on all rows (test empty)
    alphas: np.ndarray
    fit_intercept: bool
    score: str
    dtype: str
    partition: bool           # the test folds partition the rows: C = sum of C_te


def _decompose(Xc_train: np.ndarray | None, G_train_c: np.ndarray, n_train: int, rtol: float = 1e-10):
    """(Q, lambda) of the centred training Gram, in the cheaper of p- or n-space."""
    p = G_train_c.shape[0]
    if Xc_train is not None and n_train < p:
        K = Xc_train @ Xc_train.T
        mu, U = np.linalg.eigh(K)
        keep = mu > rtol * max(mu.max(initial=0.0), 1e-300)
        mu, U = mu[keep], U[:, keep]
        Q = (Xc_train.T @ U) / np.sqrt(mu)
        return Q, mu
    lam, Q = np.linalg.eigh(G_train_c)
    return Q, np.maximum(lam, 0.0)


def prepare_x(X, folds: Sequence[tuple[np.ndarray, np.ndarray]], alphas, *, fit_intercept: bool = True,
              score: str = "r", dtype: str = "float32") -> XSide:
    """Compute the X-side quantities of the p-space solver.

    Parameters
    ----------
    X : (n_trs, n_features) array
    folds : list of (train_idx, test_idx)
    alphas : (n_alphas,) array
        Penalties, ``alpha ||w||^2`` convention.
    fit_intercept : bool
        Centre with training means (an unpenalised intercept).
    score : {"r", "r2"}
    dtype : {"float32", "float64"}
        Precision of the products with Y.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    X64 = np.asarray(X, dtype=np.float64)
    if X64.ndim != 2:
        raise ValueError(f"X must be 2-D (n_trs, n_features), got shape {X64.shape}")
    if not np.all(np.isfinite(X64)):
        raise ValueError("X contains NaN or infinite values")
    n, p = X64.shape
    alphas = np.asarray(alphas, dtype=np.float64).ravel()
    if alphas.size == 0 or np.any(alphas <= 0) or not np.all(np.isfinite(alphas)):
        raise ValueError(f"alphas must be positive and finite, got {alphas}")
    mean_x = X64.mean(axis=0) if fit_intercept else np.zeros(p)
    X64 = X64 - mean_x
    G = X64.T @ X64
    sx_all = X64.sum(axis=0)
    covered = np.zeros(n, int)
    out = []
    for k, (train, test) in enumerate(folds):
        train = np.asarray(train, dtype=np.int64)
        test = np.asarray(test, dtype=np.int64)
        if train.size == 0 or test.size == 0:
            raise ValueError(f"fold {k}: empty train or test set")
        covered[test] += 1
        complement = train.size + test.size == n and not np.intersect1d(train, test).size
        Xte = X64[test]
        if complement:
            Gtr = G - Xte.T @ Xte
            sx = sx_all - Xte.sum(axis=0)
        else:
            Xtr = X64[train]
            Gtr = Xtr.T @ Xtr
            sx = Xtr.sum(axis=0)
        ntr = train.size
        mx = sx / ntr if fit_intercept else np.zeros(p)
        Gc = Gtr - ntr * np.outer(mx, mx) if fit_intercept else Gtr
        Xc_tr = (X64[train] - mx) if ntr < p else None
        Q, lam = _decompose(Xc_tr, Gc, ntr)
        Xc_te = Xte - mx
        r = Q.shape[1]
        if test.size > r:
            XQ = Xc_te @ Q
            H, u, XQ_keep, mode = XQ.T @ XQ, XQ.sum(axis=0), None, "stats"
        else:
            H, u, XQ_keep, mode = None, None, (Xc_te @ Q).astype(dtype), "pred"
        out.append(_Fold(train, test, complement, mx, sx, ntr, Q.astype(dtype), lam, mode,
                         None if H is None else H.astype(dtype), None if u is None else u.astype(dtype), XQ_keep,
                         Xte.astype(dtype)))
    Qf, lamf = _decompose(X64 if n < p else None, G, n)
    full = _Fold(np.arange(n), np.zeros(0, np.int64), False, np.zeros(p), sx_all, n, Qf.astype(dtype), lamf,
                 "none", None, None, None)
    partition = bool(np.all(covered == 1)) and all(f.complement for f in out)
    return XSide(X=X64.astype(dtype), mean_x=mean_x, folds=out, full=full, alphas=alphas,
                 fit_intercept=fit_intercept, score=score, dtype=str(np.dtype(dtype)), partition=partition)


# --------------------------------------------------------------------------------------
# Y side (one voxel block)
def _scores_from_stats(se, see, sye, sy, syy, n, my, score, bk: Backend):
    """Per-voxel held-out score from sums: e = centred prediction, y = target.

    se = sum e, see = sum e^2, sye = sum y e, sy = sum y, syy = sum y^2 (all (v,)), n rows,
    my = training mean of y (the intercept part of the prediction)."""
    vy = syy - sy * sy / n
    if score == "r":
        cov = sye - sy * se / n
        ve = see - se * se / n
        den = bk.sqrt(bk.maximum(ve, 0.0) * bk.maximum(vy, 0.0))
        return bk.where(den > 0, cov / bk.where(den > 0, den, 1.0), 0.0 * den)
    # R^2 of y against the prediction e + my: sum((y - my - e)^2) from the sums
    sse = (syy - 2 * my * sy + n * my * my) - 2 * (sye - my * se) + see
    return bk.where(vy > 0, 1.0 - sse / bk.where(vy > 0, vy, 1.0), 0.0 * vy)


def _fold_scores(xs: XSide, f: _Fold, Cc, Yte, Cte_c, bk: Backend, my):
    """(A, vb) scores of one fold for all alphas."""
    Q = bk.asarray(f.Q)
    Z = Q.T @ Cc                                                  # (r, vb)
    lam = bk.asarray(f.lam, dtype=xs.dtype)
    sy = bk.sum(Yte, 0)
    syy = bk.coldot(Yte, Yte)
    n_te = f.test.size
    out = []
    if f.mode == "stats":
        H = bk.asarray(f.H)
        u = bk.asarray(f.u)
        R = Q.T @ Cte_c                                           # (r, vb): Q^T Xc_te^T Y_te
        for a in xs.alphas:  # float(a): a numpy float64 scalar would promote the GEMMs to float64
            Za = Z * (1.0 / (lam + float(a)))[:, None]
            se = u @ Za
            see = bk.coldot(Za, H @ Za)
            sye = bk.coldot(R, Za)
            out.append(_scores_from_stats(se, see, sye, sy, syy, n_te, my, xs.score, bk))
    else:
        XQ = bk.asarray(f.XQ)
        for a in xs.alphas:
            E = XQ @ (Z * (1.0 / (lam + float(a)))[:, None])     # (n_te, vb)
            out.append(_scores_from_stats(bk.sum(E, 0), bk.coldot(E, E), bk.coldot(Yte, E), sy, syy,
                                          n_te, my, xs.score, bk))
    return bk.stack(out, 0)


def cv_scores_block(xs: XSide, Y, bk: Backend):
    """Held-out scores of every fold and alpha for one voxel block.

    Returns
    -------
    fold_scores : (n_folds, n_alphas, vb) backend array
    C : (p, vb) backend array, ``X^T Y`` (reused by the refit)
    """
    X = bk.asarray(xs.X)
    Ytes = [Y[bk.asarray(f.test)] for f in xs.folds]
    Cte = [bk.asarray(f.Xte).T @ Yte for f, Yte in zip(xs.folds, Ytes)]
    if xs.partition:
        C = Cte[0]
        for c in Cte[1:]:
            C = C + c
    else:
        C = X.T @ Y
    sy_all = bk.sum(Y, 0)
    scores = []
    for f, C_te, Yte in zip(xs.folds, Cte, Ytes):
        if f.complement:
            Ctr, sy_tr = C - C_te, sy_all - bk.sum(Yte, 0)
        else:
            tr = bk.asarray(f.train)
            Ctr, sy_tr = X[tr].T @ Y[tr], bk.sum(Y[tr], 0)
        my = sy_tr / f.n_train if xs.fit_intercept else 0.0 * sy_tr
        mx = bk.asarray(f.mx, dtype=xs.dtype)
        sx = bk.asarray(f.sx, dtype=xs.dtype)
        Cc = Ctr - sx[:, None] * my[None, :] if xs.fit_intercept else Ctr
        # Xc_te^T Y_te with Xc_te = X_te - mx
        Cte_c = C_te - mx[:, None] * bk.sum(Yte, 0)[None, :]
        scores.append(_fold_scores(xs, f, Cc, Yte, Cte_c, bk, my))
    return bk.stack(scores, 0), C


def refit_block(xs: XSide, C, alpha_index, bk: Backend):
    """Weights with each voxel's own alpha, refitted on all rows.

    Parameters
    ----------
    C : (p, vb) backend array
        ``X^T Y`` of the globally centred X and Y.
    alpha_index : (vb,) int array

    Returns
    -------
    coef : (p, vb) backend array
    """
    Q = bk.asarray(xs.full.Q)
    lam = bk.asarray(xs.full.lam, dtype=xs.dtype)
    Z = Q.T @ C
    a = bk.asarray(xs.alphas[np.asarray(alpha_index)], dtype=xs.dtype)
    W = Q @ (Z / (lam[:, None] + a[None, :]))
    return W


def _solve_block(xs: XSide, Y_np, bk: Backend, *, single_alpha_index: int | None, with_coef: bool):
    """One voxel block: returns numpy (fold_scores or None, best_index, coef or None, mean_y).

    With ``single_alpha_index`` the cross-validation is skipped (it was done in a first
    pass) and only the refit with that alpha runs."""
    Y = bk.asarray(Y_np, dtype=xs.dtype)
    vb = Y.shape[1]
    mean_y = bk.sum(Y, 0) / Y.shape[0] if xs.fit_intercept else None
    if xs.fit_intercept:
        Y = Y - mean_y[None, :]
    if single_alpha_index is None:
        fs, C = cv_scores_block(xs, Y, bk)
        idx = bk.to_numpy(bk.argmax(bk.sum(fs, 0), 0)).astype(np.int64)
        fs = bk.to_numpy(fs)
    else:
        fs, C = None, bk.asarray(xs.X).T @ Y
        idx = np.full(vb, single_alpha_index, np.int64)
    coef = bk.to_numpy(refit_block(xs, C, idx, bk)) if with_coef else None
    my = np.zeros(vb) if mean_y is None else bk.to_numpy(mean_y).astype(np.float64)
    return fs, idx, coef, my


# --------------------------------------------------------------------------------------
def _dask_block(Yb, xs: XSide, backend: Backend, single_alpha_index, with_coef: bool):
    """Dask map_blocks kernel: rows [coef (p) ; mean_y (1) ; best index (1) ; fold scores (K*A)]."""
    fs, idx, coef, my = _solve_block(xs, Yb, backend, single_alpha_index=single_alpha_index, with_coef=with_coef)
    vb = Yb.shape[1]
    parts = ([coef.astype(np.float64)] if with_coef else []) + [my[None, :], idx[None, :].astype(np.float64)]
    if fs is not None:
        parts.append(fs.reshape(-1, vb).astype(np.float64))
    return np.concatenate(parts, axis=0)


def solve_ridge_cv(X, Y, alphas, folds: Sequence[tuple[np.ndarray, np.ndarray]], *, fit_intercept: bool = True,
                   score: str = "r", single_alpha: bool = False, alpha_squared: bool = False,
                   voxel_block: int | None = 10_000, backend: str | Backend | None = None, device: str | None = None,
                   dtype: str = "float32", return_coef: bool = True, progress: bool | None = None) -> RidgeCVResult:
    """Cross-validated ridge with a per-voxel (or shared) alpha, in p-space.

    Parameters
    ----------
    X : (n_trs, n_features) array
        Design matrix (numpy; moved to the backend).
    Y : (n_trs, n_voxels) numpy, CuPy or torch array, or dask array chunked over voxels
        Responses. With dask, the per-block solve is mapped over the voxel chunks (the
        X-side quantities are one shared graph key), so a Dask cluster spreads voxels
        over its workers; ``voxel_block`` is then the chunk size if Y needs rechunking.
    alphas : (n_alphas,) array
        Penalties for ``alpha ||w||^2`` (himalaya's convention).
    folds : list of (train_idx, test_idx)
        See :mod:`scalenc.ridge.cv` for story-grouped, chunked and bootstrap splitters.
    fit_intercept : bool
        Unpenalised intercept (training means are removed within each fold).
    score : {"r", "r2"}
        Held-out metric used to choose alphas.
    single_alpha : bool
        One alpha for all voxels (best mean score over voxels) instead of one per voxel.
    alpha_squared : bool
        Square ``alphas`` first (HuthLab/LITcoder grids are in alpha^2 units).
    voxel_block : int or None
        Voxels solved at once; bounds memory to O(n * voxel_block). Results do not depend on it.
    backend, device
        ``"numpy"``, ``"cupy"`` or ``"torch"`` (``device="cuda"``); default: the enclosing
        :func:`~scalenc.ridge.backend.use_backend`, else numpy.
    dtype : {"float32", "float64"}
        Precision of the big products; eigen-decompositions are float64.
    return_coef : bool
        Also return the refitted weights (p x v; skip for very large problems).

    Returns
    -------
    RidgeCVResult
    """
    bk = get_backend(backend, device)
    alphas = np.asarray(alphas, dtype=np.float64).ravel()
    if alpha_squared:
        alphas = alphas ** 2
    n = np.shape(X)[0]
    if Y.ndim != 2 or Y.shape[0] != n:
        raise ValueError(f"Y must be 2-D with {n} rows like X, got shape {tuple(Y.shape)}")
    xs = prepare_x(X, folds, alphas, fit_intercept=fit_intercept, score=score, dtype=dtype)
    v = Y.shape[1]
    K, A = len(xs.folds), alphas.size
    p = xs.X.shape[1]
    kind = array_module_of(Y)

    if kind == "dask":
        return _solve_dask(xs, Y, bk, single_alpha=single_alpha, return_coef=return_coef, voxel_block=voxel_block)

    block = v if not voxel_block else max(1, min(int(voxel_block), v))
    starts = list(range(0, v, block))
    fold_scores = np.empty((K, A, v))
    intercept_my = np.empty(v)
    best = np.empty(v, np.int64)
    coef = np.empty((p, v), dtype=dtype) if return_coef else None
    # single alpha: scores of all voxels first, then the refit pass
    for s in tqdm(starts, desc="ridge voxel blocks", disable=progress is False if progress is not None else None,
                  leave=False):
        sl = slice(s, min(s + block, v))
        fs, idx, cb, my = _solve_block(xs, Y[:, sl], bk, single_alpha_index=None,
                                       with_coef=return_coef and not single_alpha)
        fold_scores[:, :, sl], best[sl], intercept_my[sl] = fs, idx, my
        if cb is not None:
            coef[:, sl] = cb
    cv_scores = fold_scores.mean(axis=0)
    if single_alpha:
        a = int(np.argmax(np.nanmean(cv_scores, axis=1)))
        best[:] = a
        if return_coef:
            for s in starts:
                sl = slice(s, min(s + block, v))
                _, _, cb, _ = _solve_block(xs, Y[:, sl], bk, single_alpha_index=a, with_coef=True)
                coef[:, sl] = cb
    return _finish(xs, coef, intercept_my, best, cv_scores, fold_scores)


def _finish(xs: XSide, coef, mean_y, best, cv_scores, fold_scores) -> RidgeCVResult:
    if xs.fit_intercept and coef is not None:
        intercept = mean_y - xs.mean_x @ coef.astype(np.float64)
    elif xs.fit_intercept:
        intercept = mean_y  # weights not computed: intercept of the centred model only
    else:
        intercept = np.zeros(best.size)
    return RidgeCVResult(coef=coef, intercept=intercept, best_alphas=xs.alphas[best], best_alpha_index=best,
                         cv_scores=cv_scores, fold_scores=fold_scores, alphas=xs.alphas)


def _solve_dask(xs: XSide, Y, bk: Backend, *, single_alpha: bool, return_coef: bool, voxel_block) -> RidgeCVResult:
    import dask
    import dask.array as da

    if len(Y.chunks[0]) > 1:
        Y = Y.rechunk({0: -1})
    if voxel_block and max(Y.chunks[1]) > voxel_block:
        Y = Y.rechunk({1: int(voxel_block)})
    K, A = len(xs.folds), xs.alphas.size
    p = xs.X.shape[1]
    xs_d = dask.delayed(xs, pure=True, traverse=False)

    def run(single_index, with_coef):
        rows = (p if with_coef else 0) + 2 + (K * A if single_index is None else 0)
        return da.map_blocks(_dask_block, Y, xs_d, bk, single_index, with_coef, dtype=np.float64,
                             chunks=((rows,), Y.chunks[1]), meta=np.empty((0, 0)))

    out = run(None, return_coef and not single_alpha)
    (res,) = _compute_with_progress(out)
    off = p if (return_coef and not single_alpha) else 0
    coef = res[:p].astype(xs.dtype) if off else None
    mean_y = res[off]
    best = res[off + 1].astype(np.int64)
    fold_scores = res[off + 2:].reshape(K, A, -1)
    cv_scores = fold_scores.mean(axis=0)
    if single_alpha:
        a = int(np.argmax(np.nanmean(cv_scores, axis=1)))
        best[:] = a
        if return_coef:
            (res2,) = _compute_with_progress(run(a, True))
            coef = res2[:p].astype(xs.dtype)
            mean_y = res2[p]
    return _finish(xs, coef, mean_y, best, cv_scores, fold_scores)


def _compute_with_progress(arr):
    """Compute a dask array with a progress bar: Dask's ``progress`` on a distributed
    client (its dashboard shows the same), ``dask.diagnostics.ProgressBar`` otherwise
    (both only on a terminal)."""
    import sys

    import dask

    try:
        from distributed import get_client, progress

        client = get_client()
    except (ImportError, ValueError):
        client = None
    interactive = sys.stderr.isatty()
    if client is not None:
        fut = client.compute(arr)
        if interactive:
            progress(fut)
        return (fut.result(),)
    if interactive:
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            return dask.compute(arr)
    return dask.compute(arr)


def ridge_closed_form(X, Y, alpha, *, fit_intercept: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Reference float64 solve ``(Xc^T Xc + alpha I) W = Xc^T Yc`` (for tests and benchmarks).

    Parameters
    ----------
    alpha : float or (n_voxels,) array

    Returns
    -------
    coef : (p, v), intercept : (v,)
    """
    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64)
    mx = X.mean(0) if fit_intercept else np.zeros(X.shape[1])
    my = Y.mean(0) if fit_intercept else np.zeros(Y.shape[1])
    Xc, Yc = X - mx, Y - my
    G = Xc.T @ Xc
    C = Xc.T @ Yc
    alpha = np.broadcast_to(np.asarray(alpha, np.float64), (Y.shape[1],))
    W = np.empty((X.shape[1], Y.shape[1]))
    for a in np.unique(alpha):
        sel = alpha == a
        W[:, sel] = np.linalg.solve(G + a * np.eye(G.shape[0]), C[:, sel])
    return W, my - mx @ W

