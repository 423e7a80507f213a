"""p-space cross-validated ridge regression (DESIGN.md, "Ridge: the p-space algorithm").

Penalty convention: the loss is ``||Y - X W||^2 + alpha ||W||^2`` (himalaya's). HuthLab and
LITcoder grids are in ``alpha^2`` units; pass ``alpha_squared=True`` to square a grid given
in those units (their ``logspace(1, 3, 10)`` becomes ``logspace(2, 6, 10)`` here).

With n TRs, p features, v voxels, A alphas and K folds:

1. X side, once (float64): ``G = X^T X``; per fold the training Gram is the downdate
   ``G - X_te^T X_te`` (centred with the training means when ``fit_intercept``). For each
   *candidate* scaling ``s`` of the features (one all-ones candidate for plain ridge;
   one per gamma for banded ridge, :mod:`scalenc.ridge.banded`) the scaled Gram
   ``diag(s) G diag(s)`` is decomposed, ``Q diag(lambda) Q^T``, and ``diag(s) Q`` kept, so
   the Y side never sees the scaling. When a training set has fewer rows than features,
   the training kernel is decomposed instead and turned into the same ``(Q, lambda)`` on
   the row space (the ridge solution lies there).
2. Y side, per voxel block: ``C = X^T Y`` and per fold ``C_te = X_te^T Y_te``; the
   training cross-product is ``C - C_te`` (shared by all candidates); ``Z = Q^T C_train``.
3. Per candidate and alpha: ``W = Q diag(1 / (lambda + alpha)) Z``. Held-out scores come
   from sufficient statistics (``Q^T X_te^T X_te Q``, ``Q^T X_te^T Y_te``, sums) when the
   test fold has more rows than the decomposition's rank, else from predictions; neither
   an ``n_te x n_tr`` nor a per-alpha ``p x n`` matrix is ever formed.
4. Best (candidate, alpha) per voxel (or one shared alpha) from the mean score over
   folds; refit on all rows with each voxel's own choice.

Steps 2-4 are one block function, :func:`cv_block`, which returns named outputs (a dict
of arrays with the voxel axis last). :func:`map_voxel_blocks` runs it over voxel blocks in
memory, or over the chunks of a voxel-chunked dask array (one task per chunk; each
output gathered into its own dask array), with the X side one shared graph key. Big
products run in ``dtype`` (float32 by default); the p x p algebra is float64.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import operator
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .backend import Backend, array_module_of, get_backend, host_array

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
@dataclasses.dataclass(frozen=True, kw_only=True)
class FoldRows:
    """Rows of one fold and what every candidate shares about them."""

    train: np.ndarray         # (n_train,) int64
    test: np.ndarray          # (n_te,) int64
    complement: bool          # train == all rows minus test
    n_train: int
    mx: np.ndarray            # (p,) training mean of X (zeros without intercept)
    sx: np.ndarray            # (p,) training sum of X
    Xte: np.ndarray           # (n_te, p) rows of the (globally centred) X, in dtype


@dataclasses.dataclass(frozen=True, kw_only=True)
class Eigenbasis:
    """Eigen-decomposition of a scaled, centred training Gram ``S G S = V diag(lam) V^T``,
    kept as ``Q = S V`` so that ``Q^T C`` and ``Q diag(.) Q^T C`` work on unscaled
    cross-products."""

    Q: np.ndarray             # (p, r) in dtype
    lam: np.ndarray           # (r,) float64


@dataclasses.dataclass(frozen=True, kw_only=True)
class StatsTest:
    """Held-out sums from sufficient statistics (test fold longer than the rank)."""

    H: np.ndarray             # (r, r) Q^T Xc_te^T Xc_te Q
    u: np.ndarray             # (r,) Q^T sum(Xc_te)

    def prepare(self, Q, Cte_c, bk: Backend):
        return bk.asarray(self.H), bk.asarray(self.u), Q.T @ Cte_c

    @staticmethod
    def moments(prep, Za, Yte, bk: Backend):
        """(sum e, sum e^2, sum y e) of the centred prediction e for weights ``Q Za``."""
        H, u, R = prep
        return u @ Za, bk.coldot(Za, H @ Za), bk.coldot(R, Za)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PredTest:
    """Held-out sums from the predictions (short test fold)."""

    XQ: np.ndarray            # (n_te, r) Xc_te Q, in dtype

    def prepare(self, Q, Cte_c, bk: Backend):
        return bk.asarray(self.XQ)

    @staticmethod
    def moments(XQ, Za, Yte, bk: Backend):
        E = XQ @ Za
        return bk.sum(E, 0), bk.coldot(E, E), bk.coldot(Yte, E)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FoldBasis:
    basis: Eigenbasis
    test: StatsTest | PredTest


@dataclasses.dataclass(frozen=True, kw_only=True)
class CandidateSide:
    """X side of one candidate feature scaling: a basis per fold, and the refit basis."""

    folds: tuple[FoldBasis, ...]
    full: Eigenbasis


@dataclasses.dataclass(frozen=True, kw_only=True)
class FoldGram:
    """float64 quantities of one fold from which a candidate's decompositions are built
    (p x p: no n x p work per candidate, except the n < p kernel form)."""

    Gc: np.ndarray            # (p, p) centred training Gram
    Gte: np.ndarray           # (p, p) Xc_te^T Xc_te
    ute: np.ndarray           # (p,) sum of the rows of Xc_te
    Xc_tr: np.ndarray | None  # (n_train, p) centred training rows when n_train < p
    n_te: int
    Xc_te: np.ndarray | None  # (n_te, p) test rows centred with the training mean, when n_te <= p


@dataclasses.dataclass(frozen=True, kw_only=True)
class Grams:
    """Everything the candidate decompositions need (see :func:`candidate_side`)."""

    folds: tuple[FoldGram, ...]
    G: np.ndarray             # (p, p) Gram of the globally centred X
    X: np.ndarray | None      # (n, p) globally centred X when n < p (kernel form of the refit)
    dtype: str
    backend: Backend = dataclasses.field(default_factory=lambda: get_backend("numpy"))  # where the arrays live


@dataclasses.dataclass(frozen=True, kw_only=True)
class XSide:
    """Everything of the problem that does not depend on Y (computed once, shared by all
    voxel blocks and sent once to each Dask worker)."""

    X: np.ndarray             # (n, p) globally centred when fit_intercept, in dtype
    mean_x: np.ndarray        # (p,) global mean (zeros without intercept)
    folds: tuple[FoldRows, ...]
    candidates: tuple[CandidateSide, ...]
    alphas: np.ndarray
    fit_intercept: bool
    score: str
    dtype: str
    partition: bool           # the test folds partition the rows: C = sum of C_te


def _decompose(Xc_train, G_train_c, bk: Backend, rtol: float = 1e-10):
    """(V, lambda) of the centred training Gram, in the cheaper of p- or n-space (float64,
    on ``bk``'s device). With ``Xc_train`` (n_train < p) the n x n kernel is decomposed and
    its eigenvectors mapped back to the row space of the features (the kernel form)."""
    if Xc_train is not None:
        K = Xc_train @ Xc_train.T
        mu, U = bk.eigh(K)
        keep = mu > rtol * max(float(mu.max()) if mu.shape[0] else 0.0, 1e-300)
        mu, U = mu[keep], U[:, keep]
        return (Xc_train.T @ U) / bk.sqrt(mu)[None, :], mu
    lam, V = bk.eigh(G_train_c)
    return V, bk.maximum(lam, 0.0)


def _scaled_basis(G, Xrows, s, bk: Backend):
    """float64 ``(S V, lambda)`` of ``S G S`` (``S = diag(s)``; identity when ``s`` is None)."""
    if s is None:
        return _decompose(Xrows, G, bk)
    V, lam = _decompose(None if Xrows is None else Xrows * s[None, :], G * (s[:, None] * s[None, :]), bk)
    return s[:, None] * V, lam


def candidate_side(grams: Grams, scale: np.ndarray | None = None, backend: str | Backend | None = None,
                   device: str | None = None) -> CandidateSide:
    """Decompositions of one candidate: every fold's and the refit's, for features
    multiplied by ``scale`` ((p,) array; None: unscaled).

    They run in float64 on ``backend`` (default: the one ``grams`` were computed on; a Dask
    worker passes its own), and come back as numpy arrays."""
    return _host(_candidate_side(grams, scale, grams.backend if backend is None else get_backend(backend, device)))


def _candidate_side(grams: Grams, scale, bk: Backend) -> CandidateSide:
    """:func:`candidate_side` with its arrays left on ``bk``'s device."""
    dtype = grams.dtype
    g64 = _on(grams, bk, dtype=None)
    s = None if scale is None else bk.asarray(scale, dtype="float64")
    folds = []
    for g in g64.folds:
        Q, lam = _scaled_basis(g.Gc, g.Xc_tr, s, bk)
        if g.n_te > lam.shape[0]:  # (always when n_te > p, where Xc_te is not kept)
            test: StatsTest | PredTest = StatsTest(H=bk.asarray(Q.T @ g.Gte @ Q, dtype), u=bk.asarray(g.ute @ Q, dtype))
        else:
            test = PredTest(XQ=bk.asarray(g.Xc_te @ Q, dtype))
        folds.append(FoldBasis(basis=Eigenbasis(Q=bk.asarray(Q, dtype), lam=lam), test=test))
    Q, lam = _scaled_basis(g64.G, g64.X, s, bk)
    return CandidateSide(folds=tuple(folds), full=Eigenbasis(Q=bk.asarray(Q, dtype), lam=lam))


# Arrays of the X side on a device --------------------------------------------------------
_HOST_ONLY = frozenset({"alphas", "backend", "dtype"})   # fields that stay as they are


def _map_arrays(obj, fn):
    """``obj`` (an X-side dataclass, or a tuple of them) with ``fn`` applied to every array."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: _map_arrays(getattr(obj, f.name), fn)
                                           for f in dataclasses.fields(obj) if f.name not in _HOST_ONLY})
    if isinstance(obj, (tuple, list)):
        return tuple(_map_arrays(o, fn) for o in obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return fn(obj)


def _host(obj):
    """The numpy form of an X-side object (what is pickled, shared and returned)."""
    return _map_arrays(obj, host_array)


def _on(obj, bk: Backend, dtype=None):
    return _map_arrays(obj, lambda a: bk.asarray(a, dtype)) if bk.name != "numpy" else obj


_DEVICE_LOCK = threading.Lock()
_DEVICE_COPIES: dict[tuple[int, Backend], tuple[weakref.ref, Any]] = {}


def _remember(host, bk: Backend, dev) -> None:
    key = (id(host), bk)
    with _DEVICE_LOCK:
        _DEVICE_COPIES[key] = (weakref.ref(host), dev)
    weakref.finalize(host, _forget, key)


def _forget(key) -> None:
    with _DEVICE_LOCK:
        _DEVICE_COPIES.pop(key, None)


def on_backend(xs: XSide, bk: Backend) -> XSide:
    """``xs`` with its arrays on ``bk``'s device, sent there once per (X side, backend) and
    kept while ``xs`` lives: every voxel block, the nested folds and the sweep's subjects
    that share ``xs`` reuse the device copy. numpy: ``xs`` itself."""
    if bk.name == "numpy":
        return xs
    key = (id(xs), bk)
    with _DEVICE_LOCK:
        hit = _DEVICE_COPIES.get(key)
    if hit is not None and hit[0]() is xs:
        return hit[1]
    dev = _on(xs, bk)
    _remember(xs, bk, dev)
    return dev


def _check_alphas(alphas) -> np.ndarray:
    alphas = np.asarray(alphas, dtype=np.float64).ravel()
    if alphas.size == 0 or np.any(alphas <= 0) or not np.all(np.isfinite(alphas)):
        raise ValueError(f"alphas must be positive and finite, got {alphas}")
    return alphas


def prepare_grams(X, folds: Sequence[tuple[np.ndarray, np.ndarray]], alphas, *, fit_intercept: bool = True,
                  score: str = "r", dtype: str = "float32", backend: str | Backend | None = None,
                  device: str | None = None) -> tuple[XSide, Grams]:
    """The X side without candidates, and the Grams each candidate is decomposed from.

    Parameters as :func:`prepare_x`. Returns ``(xside, grams)`` with
    ``xside.candidates == ()``; add them with :func:`candidate_side` (in memory, or as
    one Dask task per candidate). The Grams stay on the backend's device (float64)."""
    xs, grams = _prepare_grams(X, folds, alphas, fit_intercept=fit_intercept, score=score, dtype=dtype,
                               bk=get_backend(backend, device))
    host = _host(xs)
    if grams.backend.name != "numpy":
        _remember(host, grams.backend, xs)
    return host, grams


def _prepare_grams(X, folds, alphas, *, fit_intercept, score, dtype, bk: Backend) -> tuple[XSide, Grams]:
    """:func:`prepare_grams` with every array on ``bk``'s device: G = X^T X, the fold
    downdates and centring run there in float64."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    dtype = str(np.dtype(dtype))
    if np.ndim(X) != 2:
        raise ValueError(f"X must be 2-D (n_trs, n_features), got shape {np.shape(X)}")
    alphas = _check_alphas(alphas)
    X64 = bk.asarray(X, dtype="float64")
    if not bk.all_finite(X64):
        raise ValueError("X contains NaN or infinite values")
    n, p = X64.shape
    zeros = 0.0 * X64[0]
    mean_x = bk.sum(X64, 0) / n if fit_intercept else zeros
    X64 = X64 - mean_x[None, :]
    G = X64.T @ X64
    sx_all = bk.sum(X64, 0)
    covered = np.zeros(n, int)
    rows, grams = [], []
    for k, (train, test) in enumerate(folds):
        train = np.asarray(train, dtype=np.int64)
        test = np.asarray(test, dtype=np.int64)
        if train.size == 0 or test.size == 0:
            raise ValueError(f"fold {k}: empty train or test set")
        covered[test] += 1
        complement = train.size + test.size == n and not np.intersect1d(train, test).size
        Xte = X64[bk.asarray(test)]
        if complement:
            Gtr = G - Xte.T @ Xte
            sx = sx_all - bk.sum(Xte, 0)
        else:
            Xtr = X64[bk.asarray(train)]
            Gtr = Xtr.T @ Xtr
            sx = bk.sum(Xtr, 0)
        ntr = train.size
        mx = sx / ntr if fit_intercept else zeros
        Xc_te = Xte - mx[None, :]
        grams.append(FoldGram(Gc=Gtr - ntr * (mx[:, None] * mx[None, :]) if fit_intercept else Gtr,
                              Gte=Xc_te.T @ Xc_te, ute=bk.sum(Xc_te, 0),
                              Xc_tr=(X64[bk.asarray(train)] - mx[None, :]) if ntr < p else None,
                              n_te=test.size, Xc_te=Xc_te if test.size <= p else None))
        rows.append(FoldRows(train=train, test=test, complement=complement, n_train=ntr, mx=mx, sx=sx,
                             Xte=bk.asarray(Xte, dtype)))
    partition = bool(np.all(covered == 1)) and all(f.complement for f in rows)
    xs = XSide(X=bk.asarray(X64, dtype), mean_x=mean_x, folds=tuple(rows), candidates=(), alphas=alphas,
               fit_intercept=fit_intercept, score=score, dtype=dtype, partition=partition)
    return xs, Grams(folds=tuple(grams), G=G, X=X64 if n < p else None, dtype=dtype, backend=bk)


def prepare_x(X, folds: Sequence[tuple[np.ndarray, np.ndarray]], alphas, *, fit_intercept: bool = True,
              score: str = "r", dtype: str = "float32", scales=None, backend: str | Backend | None = None,
              device: str | None = None) -> XSide:
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
    scales : (n_candidates, n_features) array, optional
        Per-feature multipliers of each candidate (banded ridge: ``sqrt(gamma)`` of the
        feature's space). Default: one unscaled candidate (plain ridge).
    backend, device
        Where the X side is computed: G = X^T X, the fold downdates and the
        eigendecompositions run in float64 there (default: the enclosing
        :func:`~scalenc.ridge.backend.use_backend`, else numpy). The returned X side holds
        numpy arrays; its device copy is kept for the voxel blocks (:func:`on_backend`).
    """
    bk = get_backend(backend, device)
    xs, grams = _prepare_grams(X, folds, alphas, fit_intercept=fit_intercept, score=score, dtype=dtype, bk=bk)
    cands = [None] if scales is None else list(np.asarray(scales, dtype=np.float64))
    dev = dataclasses.replace(xs, candidates=tuple(_candidate_side(grams, s, bk) for s in cands))
    host = _host(dev)
    if bk.name != "numpy":
        _remember(host, bk, dev)
    return host


def xside_for(Y, X, folds, alphas, *, scales=None, backend: Backend | None = None, **kwargs):
    """The X side to solve ``Y`` with: computed here (:func:`prepare_x`) for an in-memory
    ``Y``; for a dask ``Y``, a ``dask.delayed`` in which each candidate's decompositions
    are one task (run on the cluster once, shared by every voxel-block task).

    Returns ``(xside, xside_or_delayed)``: the first without candidates when delayed
    (enough for shapes and the intercept), the second what the block function gets.
    ``backend``: where the X side runs (in memory: here; dask: the Grams here in numpy,
    the decompositions on the workers' ``backend``)."""
    if array_module_of(Y) != "dask":
        xs = prepare_x(X, folds, alphas, scales=scales, backend=backend, **kwargs)
        return xs, xs
    import dask

    xs, grams = prepare_grams(X, folds, alphas, backend="numpy", **kwargs)
    token = uuid.uuid4().hex[:12]
    grams_d = dask.delayed(grams, name=f"ridge-grams-{token}", traverse=False)
    cands = [None] if scales is None else list(np.asarray(scales, dtype=np.float64))
    sides = [dask.delayed(candidate_side, pure=False)(grams_d, s, backend,
                                                      dask_key_name=f"ridge-candidate-{token}-{c}")
             for c, s in enumerate(cands)]
    return xs, dask.delayed(dataclasses.replace, pure=False)(xs, candidates=sides,
                                                              dask_key_name=f"ridge-xside-{token}")


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


@dataclasses.dataclass(frozen=True, kw_only=True)
class _FoldY:
    """Y-side quantities of one fold, shared by all candidates."""

    Cc: Any                   # (p, vb) centred training cross-product
    Cte_c: Any                # (p, vb) Xc_te^T Y_te
    Yte: Any                  # (n_te, vb)
    sy: Any                   # (vb,) sum of Y_te
    syy: Any                  # (vb,) sum of Y_te^2
    my: Any                   # (vb,) training mean of Y (zeros without intercept)


def _cross_products(xs: XSide, Y, bk: Backend):
    """``C = X^T Y`` and every fold's :class:`_FoldY` for a (centred) voxel block."""
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
    out = []
    for f, C_te, Yte in zip(xs.folds, Cte, Ytes):
        sy = bk.sum(Yte, 0)
        if f.complement:
            Ctr, sy_tr = C - C_te, sy_all - sy
        else:
            tr = bk.asarray(f.train)
            Ctr, sy_tr = X[tr].T @ Y[tr], bk.sum(Y[tr], 0)
        my = sy_tr / f.n_train if xs.fit_intercept else 0.0 * sy_tr
        sx = bk.asarray(f.sx, dtype=xs.dtype)
        mx = bk.asarray(f.mx, dtype=xs.dtype)
        out.append(_FoldY(Cc=Ctr - sx[:, None] * my[None, :] if xs.fit_intercept else Ctr,
                          Cte_c=C_te - mx[:, None] * sy[None, :], Yte=Yte, sy=sy, syy=bk.coldot(Yte, Yte), my=my))
    return C, out


def _candidate_scores(xs: XSide, cand: CandidateSide, fys: list[_FoldY], bk: Backend) -> np.ndarray:
    """(n_folds, n_alphas, vb) held-out scores of one candidate."""
    out = []
    for f, fb, fy in zip(xs.folds, cand.folds, fys):
        Q = bk.asarray(fb.basis.Q)
        lam = bk.asarray(fb.basis.lam, dtype=xs.dtype)
        Z = Q.T @ fy.Cc                                           # (r, vb)
        prep = fb.test.prepare(Q, fy.Cte_c, bk)
        per_alpha = []
        for a in xs.alphas:  # float(a): a numpy float64 scalar would promote the GEMMs to float64
            se, see, sye = fb.test.moments(prep, Z * (1.0 / (lam + float(a)))[:, None], fy.Yte, bk)
            per_alpha.append(_scores_from_stats(se, see, sye, fy.sy, fy.syy, f.test.shape[0], fy.my, xs.score, bk))
        out.append(bk.stack(per_alpha, 0))
    return bk.to_numpy(bk.stack(out, 0)).astype(np.float64)


def _refit(xs: XSide, C, candidate: np.ndarray, alpha_index: np.ndarray, bk: Backend) -> np.ndarray:
    """(p, vb) weights refitted on all rows, each voxel with its own candidate and alpha."""
    coef = np.empty((C.shape[0], candidate.size), dtype=xs.dtype)
    for c in np.unique(candidate):
        cols = np.flatnonzero(candidate == c)
        Cs = C if cols.size == candidate.size else C[:, bk.asarray(cols)]
        full = xs.candidates[int(c)].full
        Q = bk.asarray(full.Q)
        lam = bk.asarray(full.lam, dtype=xs.dtype)
        a = bk.asarray(xs.alphas[alpha_index[cols]], dtype=xs.dtype)
        coef[:, cols] = bk.to_numpy(Q @ ((Q.T @ Cs) / (lam[:, None] + a[None, :])))
    return coef


def select(cv_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best (candidate, alpha) per voxel from mean held-out scores.

    Parameters
    ----------
    cv_scores : (n_candidates, n_alphas, v) array

    Returns
    -------
    candidate, alpha_index : (v,) int64
        The first maximum over alphas, then over candidates (ties go to the earlier one).
    best_scores : (n_candidates, v)
        Each candidate's score at its best alpha.
    """
    a_best = np.argmax(cv_scores, axis=1)                         # (C, v)
    best_scores = np.take_along_axis(cv_scores, a_best[:, None, :], axis=1)[:, 0]
    candidate = np.argmax(best_scores, axis=0)
    return candidate.astype(np.int64), np.take_along_axis(a_best, candidate[None], 0)[0].astype(np.int64), best_scores


def cv_block(Y_block, xs: XSide, bk: Backend, *, fixed: tuple[int, int] | None = None,
             with_coef: bool = True) -> dict[str, np.ndarray]:
    """The whole Y side of one voxel block, as named numpy outputs (voxel axis last).

    Parameters
    ----------
    Y_block : (n, vb) array (numpy, CuPy, torch)
    xs : XSide
    bk : Backend
    fixed : (candidate, alpha_index), optional
        Skip the cross-validation and refit every voxel with this choice.
    with_coef : bool
        Also refit the weights.

    Returns
    -------
    dict
        ``mean_y`` (vb,); ``candidate``, ``alpha_index`` (vb,) int64; without ``fixed``
        also ``fold_scores`` (n_candidates, n_folds, n_alphas, vb) and ``cv_scores``
        (n_candidates, n_alphas, vb); with ``with_coef`` also ``coef`` (p, vb).
    """
    xs = on_backend(xs, bk)
    Y = bk.asarray(Y_block, dtype=xs.dtype)
    vb = Y.shape[1]
    out: dict[str, np.ndarray] = {}
    if xs.fit_intercept:
        mean_y = bk.sum(Y, 0) / Y.shape[0]
        Y = Y - mean_y[None, :]
        out["mean_y"] = bk.to_numpy(mean_y).astype(np.float64)
    else:
        out["mean_y"] = np.zeros(vb)
    if fixed is None:
        C, fys = _cross_products(xs, Y, bk)
        fs = np.stack([_candidate_scores(xs, cand, fys, bk) for cand in xs.candidates])
        out["fold_scores"] = fs
        out["cv_scores"] = fs.mean(axis=1)
        out["candidate"], out["alpha_index"], _ = select(out["cv_scores"])
    else:
        C = bk.asarray(xs.X).T @ Y
        out["candidate"] = np.full(vb, fixed[0], np.int64)
        out["alpha_index"] = np.full(vb, fixed[1], np.int64)
    if with_coef:
        out["coef"] = _refit(xs, C, out["candidate"], out["alpha_index"], bk)
    return out


# --------------------------------------------------------------------------------------
# mapping a block function over voxels
@dataclasses.dataclass(frozen=True)
class Output:
    """Shape (without the voxel axis, which is last) and dtype of one named output."""

    lead: tuple[int, ...]
    dtype: str


def map_voxel_blocks(block_fn: Callable[..., dict[str, np.ndarray]], Y, outputs: dict[str, Output], *,
                     voxel_block: int | None, progress: bool | None = None, shared: dict[str, Any] | None = None,
                     **kwargs) -> dict[str, np.ndarray]:
    """Run ``block_fn(Y[:, block], **shared, **kwargs)`` over voxel blocks and gather the
    named ``outputs`` (each a numpy array of shape ``lead + (v,)``).

    ``Y`` in memory (numpy, CuPy, torch) or stacked story responses
    (:class:`~scalenc.assembly.stacked.StackedResponses`, read block by block, blocks aligned
    to its chunks): blocks of ``voxel_block`` voxels; with the numpy backend one block per
    core at a time, each with single-threaded BLAS (``bk`` in ``kwargs`` names the backend),
    else one after the other. ``Y`` a dask array: one task per voxel chunk (rows rechunked to one chunk,
    voxels to at most ``voxel_block``); each ``shared`` value (e.g. the X side, or a
    ``dask.delayed`` that computes it) is one graph key, sent once to each worker, and
    each output becomes its own dask array, all computed together.
    """
    shared = shared or {}
    Y = solver_targets(Y)
    if array_module_of(Y) == "dask":
        return _map_dask(block_fn, Y, outputs, voxel_block, shared, kwargs)
    return _map_local(block_fn, Y, outputs, voxel_block, progress, shared, kwargs)


#: fraction of the free device memory a GPU voxel block may take
DEVICE_MEMORY_FRACTION = 0.5


def device_voxel_block(voxel_block: int | None, bk: Backend, n: int, p: int, n_folds: int, v: int) -> int | None:
    """Voxels per block: ``voxel_block`` on the CPU; on a GPU backend as many as fit in half
    the free device memory (never fewer than ``voxel_block``), so that one block keeps the
    device busy. Per voxel a block holds about ``3 n + (3 K + 6) p`` numbers (Y and its test
    rows, the cross-products per fold, the projections, the weights), counted at 8 bytes
    (float64, or float32 with room for the temporaries)."""
    if not bk.on_gpu:
        return voxel_block
    free = bk.free_memory()
    if not free:
        return voxel_block
    per_voxel = 8 * (3 * n + (3 * n_folds + 6) * p)
    fit = max(1, int(DEVICE_MEMORY_FRACTION * free // per_voxel))
    width = min(v, max(fit, int(voxel_block or 0)))
    logger.info("GPU voxel blocks of %d voxels (%.1f GiB free on %s)", width, free / 2 ** 30, bk)
    return width


def local_workers(n_blocks: int, bk=None) -> int:
    """Voxel blocks solved at once in this process: one per core for the numpy backend (its
    products are small, so threads over blocks, each with single-threaded BLAS, beat a
    multi-threaded BLAS on one block); one at a time on other backends (a GPU)."""
    if getattr(bk, "name", "numpy") != "numpy" or n_blocks < 2:
        return 1
    return max(1, min(n_blocks, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else (os.cpu_count() or 1)))


def _map_local(block_fn, Y, outputs, voxel_block, progress, shared, kwargs) -> dict[str, np.ndarray]:
    """Blocks of an in-memory ``Y`` or of stacked story responses (read block by block: a
    worker reads its block, then solves it). With several workers BLAS is limited to one
    thread per worker for the duration; at most ``workers`` blocks are in memory at once."""
    v = Y.shape[1]
    stacked = hasattr(Y, "iter_blocks")
    if stacked:
        width = Y.block_width(voxel_block)
        if Y.chunk_width > width:
            logger.info("responses stored in chunks of %d voxels, wider than the voxel blocks of %d: each chunk "
                        "is decoded %d times (Assembly.save(path, voxel_chunk=%d) rewrites the store for faster fits)",
                        Y.chunk_width, width, -(-Y.chunk_width // width), width)
    else:
        width = v if not voxel_block else max(1, min(int(voxel_block), v))
    spans = [slice(a, min(a + width, v)) for a in range(0, v, width)]
    res = {k: np.empty(o.lead + (v,), dtype=o.dtype) for k, o in outputs.items()}
    bar = tqdm(total=len(spans), desc="ridge voxel blocks", leave=False,
               disable=progress is False if progress is not None else None)

    def store(sl, part):
        for k in outputs:
            res[k][..., sl] = part[k]
        bar.update(1)

    workers = local_workers(len(spans), kwargs.get("bk"))
    try:
        if workers == 1 and stacked:  # one at a time: the next block is read meanwhile
            for sl, block in Y.iter_blocks(width):
                part = block_fn(block, **shared, **kwargs)
                del block
                store(sl, part)
            return res

        def run(sl):
            return block_fn(Y.read(sl.start, sl.stop) if stacked else Y[:, sl], **shared, **kwargs)

        run_blocks(run, spans, store, workers=workers)
        return res
    finally:
        bar.close()


def run_blocks(fn: Callable[[slice], Any], spans: Sequence[slice], store: Callable[[slice, Any], None], *,
               workers: int) -> None:
    """``store(span, fn(span))`` for every span, in order; with ``workers > 1`` the calls run
    in that many threads with BLAS limited to one thread each (numpy releases the GIL in its
    products and ufuncs), at most ``workers`` results pending at once (memory bounded)."""
    if workers <= 1:
        for sl in spans:
            store(sl, fn(sl))
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"), \
            concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="scalenc-block") as pool:
        pending: collections.deque = collections.deque()
        for sl in spans:
            if len(pending) >= workers:
                done, fut = pending.popleft()
                store(done, fut.result())
            pending.append((sl, pool.submit(fn, sl)))
        while pending:
            done, fut = pending.popleft()
            store(done, fut.result())


def solver_targets(Y):
    """``Y`` as the solvers take it: stacked story responses
    (:class:`~scalenc.assembly.stacked.StackedResponses`) stay as they are in-process (read
    a voxel block at a time) and become a dask array when a distributed client is active (its
    workers read the chunks)."""
    if hasattr(Y, "iter_blocks") and hasattr(Y, "to_dask") and _distributed_client() is not None:
        return Y.to_dask()
    return Y


def _distributed_client():
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def _map_dask(block_fn, Y, outputs, voxel_block, shared, kwargs) -> dict[str, np.ndarray]:
    import dask
    import dask.array as da
    from dask.delayed import Delayed

    if len(Y.chunks[0]) > 1:
        Y = Y.rechunk({0: -1})
    if voxel_block and max(Y.chunks[1]) > voxel_block:
        Y = Y.rechunk({1: int(voxel_block)})
    token = uuid.uuid4().hex[:12]
    shared_d = {k: val if isinstance(val, Delayed) else dask.delayed(val, name=f"ridge-{k}-{token}", traverse=False)
                for k, val in shared.items()}
    fn = dask.delayed(block_fn, pure=False)
    parts = [fn(b, **shared_d, **kwargs, dask_key_name=f"ridge-block-{token}-{j}")
             for j, b in enumerate(Y.to_delayed().ravel())]
    arrays = {k: da.concatenate([da.from_delayed(dask.delayed(operator.getitem)(part, k), shape=o.lead + (w,),
                                                 dtype=o.dtype) for part, w in zip(parts, Y.chunks[1])], axis=-1)
              for k, o in outputs.items()}
    return dict(zip(arrays, _compute_with_progress(*arrays.values())))


def _compute_with_progress(*arrays):
    """Compute dask collections with a progress bar: Dask's ``progress`` on a distributed
    client (its dashboard shows the same), ``dask.diagnostics.ProgressBar`` otherwise
    (both only on a terminal)."""
    import sys

    import dask

    client = _distributed_client()
    interactive = sys.stderr.isatty()
    if client is not None:
        futs = client.compute(list(arrays))
        if interactive:
            from distributed import progress

            progress(*futs)
        return client.gather(futs)
    if interactive:
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            return dask.compute(*arrays)
    return dask.compute(*arrays)


# --------------------------------------------------------------------------------------
def solve_ridge_cv(X, Y, alphas, folds: Sequence[tuple[np.ndarray, np.ndarray]], *, fit_intercept: bool = True,
                   score: str = "r", single_alpha: bool = False, alpha_squared: bool = False,
                   voxel_block: int | None = 10_000, backend: str | Backend | None = None, device: str | None = None,
                   dtype: str = "float32", return_coef: bool = True, progress: bool | None = None,
                   x_side: XSide | None = None) -> RidgeCVResult:
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
        ``"numpy"``, ``"cupy"``, ``"torch"`` (``device="cuda"``) or ``"torch_cuda"``;
        default: the enclosing :func:`~scalenc.ridge.backend.use_backend`, else numpy.
    dtype : {"float32", "float64"}
        Precision of the big products; eigen-decompositions are float64.
    return_coef : bool
        Also return the refitted weights (p x v; skip for very large problems).
    progress : bool, optional
        Progress bar over voxel blocks (default: on a terminal).
    x_side : XSide, optional
        :func:`prepare_x` of this ``X``, ``folds``, (squared) ``alphas``, ``score`` and
        ``dtype``, computed once and shared by several fits (e.g. subjects with the same
        stimuli, :func:`scalenc.sweep`); default: computed here.

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
    Y = solver_targets(Y)
    if x_side is not None:
        xs = xs_run = x_side
    else:
        xs, xs_run = xside_for(Y, X, folds, alphas, fit_intercept=fit_intercept, score=score, dtype=dtype,
                               backend=bk)
    K, A, p = len(xs.folds), alphas.size, xs.X.shape[1]
    voxel_block = device_voxel_block(voxel_block, bk, n, p, K, Y.shape[1])
    coef_out = {"coef": Output((p,), xs.dtype)}
    outputs = {"fold_scores": Output((1, K, A), "float64"), "alpha_index": Output((), "int64"),
               "mean_y": Output((), "float64"), **(coef_out if return_coef and not single_alpha else {})}
    run = dict(voxel_block=voxel_block, progress=progress, shared={"xs": xs_run}, bk=bk)
    res = map_voxel_blocks(cv_block, Y, outputs, **run, with_coef=return_coef and not single_alpha)
    fold_scores = res["fold_scores"][0]
    cv_scores = fold_scores.mean(axis=0)
    best, coef = res["alpha_index"], res.get("coef")
    if single_alpha:
        a = int(np.argmax(np.nanmean(cv_scores, axis=1)))
        best[:] = a
        if return_coef:
            coef = map_voxel_blocks(cv_block, Y, coef_out, **run, fixed=(0, a))["coef"]
    return RidgeCVResult(coef=coef, intercept=intercept(xs, coef, res["mean_y"]), best_alphas=xs.alphas[best],
                         best_alpha_index=best, cv_scores=cv_scores, fold_scores=fold_scores, alphas=xs.alphas)


def intercept(xs: XSide, coef: np.ndarray | None, mean_y: np.ndarray) -> np.ndarray:
    """Intercept of the uncentred model (without weights: of the centred one only)."""
    if not xs.fit_intercept:
        return np.zeros(mean_y.size)
    if coef is None:
        return mean_y
    return mean_y - xs.mean_x @ coef.astype(np.float64)


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


def predict_linear(X, coef, intercept=0.0, *, backend: str | Backend | None = None, device: str | None = None,
                   dtype: str | None = None) -> np.ndarray:
    """Predicted responses ``X @ coef + intercept`` of a fitted linear model, as float64
    numpy: the one prediction every estimator, model and the engine use. Without
    ``backend`` the product is float64 numpy; with one, it runs there in ``dtype`` (the
    fit's) and only the result comes back."""
    if backend is None:
        X = np.asarray(X)
        coef = np.asarray(coef)
        if X.shape[-1] != coef.shape[0]:
            raise ValueError(f"X has {X.shape[-1]} features but the coefficients have {coef.shape[0]}")
        return X.astype(np.float64, copy=False) @ coef.astype(np.float64, copy=False) + intercept
    bk = get_backend(backend, device)
    P = bk.asarray(X, dtype=dtype) @ bk.asarray(coef, dtype=dtype)
    return bk.to_numpy(P).astype(np.float64) + intercept
