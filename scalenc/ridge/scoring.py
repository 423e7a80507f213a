"""Per-voxel scores and statistics: Pearson r, R², p-values, FDR, noise ceiling.

All functions work on ``(n_trs, n_voxels)`` arrays and are vectorised over voxels; long
arrays are processed in blocks of voxels, each converted to float64, so float32 inputs
are accumulated in float64 without copying the whole array at once. Inputs may be numpy
arrays or arrays of any ridge backend (torch, CuPy): they are copied to the host once;
results are numpy.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import logging
import math

import numpy as np
from scipy import special

from .backend import host_array
from .cv import contiguous_chunks

__all__ = [
    "autocorrelation",
    "block_permutation_pvalues",
    "choose_block_length",
    "degenerate_voxels",
    "distinct_block_orderings",
    "effective_dof_pvalues",
    "normalized_correlation",
    "significance",
    "fdr_bh",
    "noise_ceiling",
    "pearson_pvalues",
    "pearson_r",
    "r2_score",
    "score_summary",
]

logger = logging.getLogger(__name__)

#: Fewest distinct block orderings for which :func:`significance` keeps the permutation test.
MIN_ORDERINGS = 100

# Elements of float64 work space per voxel block (about 64 MiB).
_BLOCK_ELEMENTS = 1 << 23


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _pair(y_true: Any, y_pred: Any, name: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate two arrays of equal shape; 1-D inputs become one column."""
    a = host_array(y_true)
    b = host_array(y_pred)
    if a.shape != b.shape:
        raise ValueError(f"{name}: y_true and y_pred must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim not in (1, 2):
        raise ValueError(f"{name}: expected (n_trs, n_voxels) arrays, got shape {a.shape}")
    vector = a.ndim == 1
    if vector:
        a, b = a[:, None], b[:, None]
    if a.shape[0] < 2:
        raise ValueError(f"{name}: need at least 2 samples (rows), got {a.shape[0]}")
    return a, b, vector


def _blocks(n_rows: int, n_cols: int, per_col: int = 1) -> Iterator[slice]:
    """Column slices whose float64 work space stays near ``_BLOCK_ELEMENTS``."""
    width = max(1, _BLOCK_ELEMENTS // max(1, n_rows * per_col))
    for start in range(0, n_cols, width):
        yield slice(start, min(start + width, n_cols))


def _centred(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float64 column-centred copy and a mask of exactly constant columns."""
    x = np.asarray(block, dtype=np.float64)
    constant = np.all(x == x[:1], axis=0)
    return x - x.mean(axis=0), constant


def _standardise(block: np.ndarray) -> np.ndarray:
    """Float64 columns centred and scaled to unit norm (constant columns -> 0).

    With ``z = _standardise`` the Pearson r of two columns is ``sum(z_a * z_b)``.
    """
    x, constant = _centred(block)
    norm = np.sqrt(np.einsum("ij,ij->j", x, x))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = x / norm
    z[:, constant | (norm == 0)] = 0.0
    return z


# --------------------------------------------------------------------------------------
# scores
# --------------------------------------------------------------------------------------
def _ratio_by_blocks(y_true: Any, y_pred: Any, name: str, block: Any) -> np.ndarray:
    """``num / den`` per column from ``block(a, b) -> (num, den, degenerate)`` over voxel
    blocks; degenerate columns (and zero denominators) give 0, NaN stays NaN."""
    a, b, _ = _pair(y_true, y_pred, name)
    out = np.empty(a.shape[1], dtype=np.float64)
    for sl in _blocks(a.shape[0], a.shape[1], per_col=2):
        num, den, degenerate = block(a[:, sl], b[:, sl])
        with np.errstate(divide="ignore", invalid="ignore"):
            ob = num / den
        ob[(degenerate | (den == 0)) & ~np.isnan(den)] = 0.0
        out[sl] = ob
    return out


def pearson_r(y_true: Any, y_pred: Any) -> np.ndarray:
    """Column-wise Pearson correlation.

    Parameters
    ----------
    y_true, y_pred : (n_trs, n_voxels) arrays
        A 1-D pair is treated as one voxel (result of shape ``(1,)``).

    Returns
    -------
    r : (n_voxels,) float64 array
        Clipped to [-1, 1]. A column that is constant in either input gives 0 (not NaN);
        NaN in a column gives NaN for that column. Accumulated in float64.
    """
    def block(a, b):
        xa, ca = _centred(a)
        xb, cb = _centred(b)
        num = np.einsum("ij,ij->j", xa, xb)
        den = np.sqrt(np.einsum("ij,ij->j", xa, xa) * np.einsum("ij,ij->j", xb, xb))
        return num, den, ca | cb

    return np.clip(_ratio_by_blocks(y_true, y_pred, "pearson_r", block), -1.0, 1.0)


def r2_score(y_true: Any, y_pred: Any) -> np.ndarray:
    """Column-wise coefficient of determination ``1 - SSE / SST``.

    Parameters
    ----------
    y_true, y_pred : (n_trs, n_voxels) arrays
        A 1-D pair is treated as one voxel (result of shape ``(1,)``).

    Returns
    -------
    r2 : (n_voxels,) float64 array
        ``SSE = sum((y_true - y_pred)**2)``, ``SST = sum((y_true - mean(y_true))**2)``
        per column; may be negative. A constant ``y_true`` column gives 0.
    """
    def block(a, b):
        xa, ca = _centred(a)
        resid = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
        sst = np.einsum("ij,ij->j", xa, xa)
        return sst - np.einsum("ij,ij->j", resid, resid), sst, ca

    return _ratio_by_blocks(y_true, y_pred, "r2_score", block)


# --------------------------------------------------------------------------------------
# p-values
# --------------------------------------------------------------------------------------
def pearson_pvalues(
    r: Any,
    n: Any,
    alternative: Literal["two-sided", "greater", "less"] = "greater",
) -> np.ndarray:
    """Analytic p-values of Pearson correlations under independent Gaussian samples.

    ``t = r * sqrt((n - 2) / (1 - r**2))`` follows Student's t with ``n - 2`` degrees
    of freedom under the null of zero correlation; this is the test behind
    ``scipy.stats.pearsonr`` (two-sided there), which LITcoder reports.

    These p-values assume independent samples. BOLD time series are strongly
    autocorrelated, so they are far too small (many false positives); they are given
    for comparison with LITcoder. Use :func:`block_permutation_pvalues` for inference.

    Parameters
    ----------
    r : array-like, any shape
        Correlations in [-1, 1]; NaN gives NaN.
    n : int or array-like broadcastable to ``r``
        Number of samples each r was computed from (> 2).
    alternative : {"greater", "two-sided", "less"}, default "greater"
        "greater" tests r > 0 (what an encoding model claims), "two-sided" matches
        ``scipy.stats.pearsonr``.

    Returns
    -------
    p : float64 array, shape of ``r`` broadcast with ``n``
    """
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}")
    r = np.asarray(r, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if np.any(n <= 2):
        raise ValueError(f"pearson_pvalues needs n > 2 samples, got min n = {n.min()}")
    if np.any(np.abs(r[~np.isnan(r)]) > 1 + 1e-12):
        raise ValueError("pearson_pvalues: correlations must lie in [-1, 1]")
    r = np.clip(r, -1.0, 1.0)
    df = n - 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = r * np.sqrt(df / ((1.0 - r) * (1.0 + r)))
    t = np.where(np.abs(r) == 1.0, np.copysign(np.inf, r), t)
    if alternative == "greater":
        p = special.stdtr(df, -t)
    elif alternative == "less":
        p = special.stdtr(df, t)
    else:
        p = np.minimum(2.0 * special.stdtr(df, -np.abs(t)), 1.0)
    return np.asarray(p, dtype=np.float64)


def _block_layout(n_samples: int, block_length: int, stories: Any) -> tuple[np.ndarray, np.ndarray]:
    starts, stops = contiguous_chunks(n_samples, block_length, stories)
    return starts, stops - starts


def _block_permutations(
    lengths: np.ndarray, n_permutations: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Random permutations of the blocks, within classes of equal block length.

    Returns
    -------
    perms : (n_permutations, n_blocks) int64
        ``perms[p, j]`` is the block whose predictor values go to slot ``j``.
    classes : list of (n_blocks_c,) int64 arrays
        Block indices of each length class (ascending length).
    """
    n_blocks = lengths.size
    perms = np.broadcast_to(np.arange(n_blocks, dtype=np.int64), (n_permutations, n_blocks)).copy()
    classes = [np.flatnonzero(lengths == L) for L in np.unique(lengths)]
    for members in classes:
        if members.size > 1:
            tiled = np.broadcast_to(members, (n_permutations, members.size)).copy()
            perms[:, members] = rng.permuted(tiled, axis=1)
    return perms, classes


def _null_by_gather(zt: np.ndarray, zp: np.ndarray, perms: np.ndarray, starts: np.ndarray,
                    lengths: np.ndarray) -> np.ndarray:
    """Null r (n_perm, v) by permuting predictor rows: O(n_perm * n * v)."""
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    slot_of_row = np.repeat(np.arange(lengths.size), lengths)
    null = np.empty((perms.shape[0], zt.shape[1]), dtype=np.float64)
    for k, perm in enumerate(perms):  # loop over permutations; each is vectorised over voxels
        rows = starts[perm][slot_of_row] + offsets
        null[k] = np.einsum("ij,ij->j", zt, zp[rows])
    return null


def _null_by_blocks(zt: np.ndarray, zp: np.ndarray, perms: np.ndarray, starts: np.ndarray,
                    lengths: np.ndarray, classes: list[np.ndarray]) -> np.ndarray:
    """Null r (n_perm, v) from block cross-products: O(n * B * v + n_perm * B * v).

    For the blocks of one length class, ``M[v, j, k] = sum_l zt[block j, l] zp[block k, l]``
    (a batched matrix product); a permutation's r is ``sum_j M[v, j, perm[j]]``: for all
    permutations at once, one matrix product of ``M`` (v, B_c^2) with the permutations'
    (B_c^2, n_perm) 0/1 selection matrix.
    """
    v = zt.shape[1]
    n_perm = perms.shape[0]
    null = np.zeros((v, n_perm), dtype=np.float64)
    for members in classes:
        B, L = members.size, int(lengths[members[0]])
        rows = (starts[members][:, None] + np.arange(L)[None, :]).ravel()
        bt = zt[rows].reshape(B, L, v).transpose(2, 0, 1)  # (v, B_c, L)
        bp = zp[rows].reshape(B, L, v).transpose(2, 1, 0)  # (v, L, B_c)
        M = np.matmul(bt, bp).reshape(v, B * B)  # (v, B_c^2): entry j * B_c + k
        # position of each member block within its class
        local = np.searchsorted(members, perms[:, members])  # (n_perm, B_c)
        pick = np.zeros((B * B, n_perm))
        pick[np.arange(B)[None, :] * B + local, np.arange(n_perm)[:, None]] = 1.0
        null += M @ pick
    return null.T


def block_permutation_pvalues(
    y_true: Any,
    y_pred: Any,
    *,
    block_length: int = 10,
    n_permutations: int = 1000,
    seed: int | None = 0,
    stories: Any = None,
    return_null: bool = False,
    method: Literal["auto", "gather", "blocks"] = "auto",
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """One-sided permutation p-values of Pearson r that respect autocorrelation.

    The time axis is cut into contiguous blocks of ``block_length`` TRs (within each
    story when ``stories`` is given; a story's last block may be shorter). Each
    permutation shuffles the blocks of ``y_pred`` (blocks of equal length trade places,
    so a story's short last block only trades with other short blocks) and recomputes r
    for every voxel with the same permutation. Autocorrelation within a block is kept,
    so the null distribution is not too narrow, as the analytic one
    (:func:`pearson_pvalues`) is for autocorrelated BOLD data.

    ``p = (1 + #{null >= observed}) / (1 + n_permutations)`` per voxel, so the smallest
    possible p is ``1 / (1 + n_permutations)``.

    Parameters
    ----------
    y_true, y_pred : (n_trs, n_voxels) arrays
        A 1-D pair is treated as one voxel (result of shape ``(1,)``).
    block_length : int, default 10
        Block length in TRs; choose it longer than the autocorrelation time of the data.
    n_permutations : int, default 1000
    seed : int or None, default 0
        Seed of ``np.random.default_rng``; the same seed gives the same permutations.
    stories : (n_trs,) array-like, optional
        Story label of each TR; blocks never straddle a story boundary.
    return_null : bool, default False
        Also return the null correlations.
    method : {"auto", "gather", "blocks"}, default "auto"
        How null correlations are computed (same result): "gather" permutes rows,
        costing ``n_permutations * n_trs`` per voxel; "blocks" forms the block
        cross-product matrix per voxel (batched matrix product) and sums its entries,
        costing ``n_trs * n_blocks + n_permutations * n_blocks`` per voxel. "auto"
        picks the cheaper one. Voxels are processed in blocks to bound memory.

    Returns
    -------
    p : (n_voxels,) float64 array
        A voxel constant in either input gets p = 1.
    null : (n_permutations, n_voxels) float64 array
        Only when ``return_null``.
    """
    a, b, vector = _pair(y_true, y_pred, "block_permutation_pvalues")
    n, v = a.shape
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, (int, np.integer)) or n_permutations < 1:
        raise ValueError(f"n_permutations must be a positive int, got {n_permutations!r}")
    if method not in ("auto", "gather", "blocks"):
        raise ValueError(f"method must be 'auto', 'gather' or 'blocks', got {method!r}")
    starts, lengths = _block_layout(n, block_length, stories)
    rng = np.random.default_rng(seed)
    perms, classes = _block_permutations(lengths, int(n_permutations), rng)
    if not any(c.size > 1 for c in classes):
        raise ValueError(
            f"block_permutation_pvalues: {n} samples in blocks of {block_length} TRs leave no two blocks "
            f"of equal length to permute ({lengths.size} blocks)"
        )
    n_blocks = lengths.size
    sq = sum(c.size ** 2 for c in classes)
    if method == "auto":
        cost_blocks = n * n_blocks + n_permutations * n_blocks
        cost_gather = n_permutations * n
        method = "blocks" if (cost_blocks < cost_gather and sq <= _BLOCK_ELEMENTS) else "gather"
    per_col = 2 * n + (sq + n_permutations * max(c.size for c in classes) if method == "blocks" else n)
    observed = np.empty(v, dtype=np.float64)
    null = np.empty((int(n_permutations), v), dtype=np.float64)
    for sl in _blocks(1, v, per_col=per_col):
        zt = _standardise(a[:, sl])
        zp = _standardise(b[:, sl])
        observed[sl] = np.einsum("ij,ij->j", zt, zp)
        if method == "blocks":
            null[:, sl] = _null_by_blocks(zt, zp, perms, starts, lengths, classes)
        else:
            null[:, sl] = _null_by_gather(zt, zp, perms, starts, lengths)
    # ties count as exceeding (conservative); the slack absorbs rounding differences
    exceed = np.count_nonzero(null >= observed[None, :] - 1e-12, axis=0)
    p = (1.0 + exceed) / (1.0 + n_permutations)
    p[np.isnan(observed)] = np.nan
    if return_null:
        return p, null
    return p


# --------------------------------------------------------------------------------------
# autocorrelation-aware significance: block length, short test sets, degenerate voxels
# --------------------------------------------------------------------------------------
def _segments_of(n: int, stories: Any) -> list[slice]:
    if stories is None:
        return [slice(0, n)]
    g = np.asarray(stories)
    if g.shape != (n,):
        raise ValueError(f"stories must have one label per row ({n}), got shape {g.shape}")
    cut = np.flatnonzero(g[1:] != g[:-1]) + 1
    bounds = np.concatenate([[0], cut, [n]])
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def autocorrelation(x: Any, max_lag: int, stories: Any = None) -> np.ndarray:
    """Sample autocorrelation of each column at lags ``1 .. max_lag``.

    The usual (biased) estimator ``sum_t x_t x_{t+k} / sum_t x_t^2`` of the mean-removed
    series; with ``stories`` each story's mean is removed and only pairs within a story
    count (sums pooled over stories). Constant columns give 0; NaN gives NaN.

    Returns
    -------
    (max_lag, n_columns) float64 array
    """
    a = host_array(x)
    if a.ndim == 1:
        a = a[:, None]
    n, v = a.shape
    max_lag = int(max_lag)
    num = np.zeros((max_lag, v))
    den = np.zeros(v)
    for seg in _segments_of(n, stories):
        xs = np.asarray(a[seg], dtype=np.float64)
        xs = xs - xs.mean(axis=0)
        den += np.einsum("ij,ij->j", xs, xs)
        for k in range(1, min(max_lag, xs.shape[0] - 1) + 1):
            num[k - 1] += np.einsum("ij,ij->j", xs[k:], xs[:-k])
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return np.where(np.isnan(den), np.nan, out)


def distinct_block_orderings(n_samples: int, block_length: int, stories: Any = None, cap: int = 10**9) -> int:
    """Distinct orderings the block permutation test can produce: the product over
    classes of equal-length blocks of (blocks in the class)!, capped at ``cap``."""
    starts, lengths = _block_layout(n_samples, int(block_length), stories)
    total = 1
    for L in np.unique(lengths):
        total *= math.factorial(min(int(np.count_nonzero(lengths == L)), 20))
        if total >= cap:
            return int(cap)
    return int(total)


def _spread(mask: np.ndarray, k: int) -> np.ndarray:
    """``k`` of the True entries of ``mask``, evenly spaced (a mask of the same shape)."""
    idx = np.flatnonzero(mask)
    keep = np.zeros_like(mask)
    keep[idx[np.unique(np.linspace(0, idx.size - 1, k).round().astype(np.int64))]] = True
    return keep


def choose_block_length(y_true: Any, y_pred: Any = None, *, stories: Any = None, threshold: float = 0.1,
                        min_length: int = 10, max_loss: float = 0.05, max_lag: int | None = None,
                        max_voxels: int | None = 4096) -> int:
    """Block length (TRs) of the block permutation test from the data's autocorrelation.

    Let ``c_y(d)`` and ``c_p(d)`` be the autocorrelations at lag ``d`` of ``y_true`` and
    ``y_pred`` averaged over voxels (:func:`autocorrelation`). Under the null the variance
    of r is ``(1 / n) sum_d c_y(d) c_p(d)`` (Bartlett); shuffling blocks of ``L`` TRs keeps
    the products within a block and loses those across block boundaries, about
    ``sum_d 2 min(d, L) c_y(d) c_p(d) / L`` of it, so the permutation null is too narrow
    (too many false positives) unless ``L`` is long enough. The length returned is the
    largest of ``min_length``, the first lag at which ``c_y`` falls below ``threshold``, and
    the shortest ``L`` that loses at most ``max_loss`` of the null variance (without
    ``y_pred``: ``c_p = c_y``), the sums running up to the first lag where ``c_y`` or ``c_p``
    falls below ``threshold`` (beyond it the products are sampling noise).

    Parameters
    ----------
    y_true, y_pred : (n_trs, n_voxels) arrays
    stories : (n_trs,) array-like, optional
        Story of each row (autocorrelations within stories).
    threshold, min_length, max_loss : see above
    max_lag : int, optional
        Lags considered (default ``n_trs // 4``).
    max_voxels : int or None
        The voxel averages use at most this many voxels, evenly spaced over the finite ones
        (a mean over thousands of voxels is stable; the choice stays deterministic). None: all.

    Returns
    -------
    int
    """
    a = host_array(y_true)
    if a.ndim == 1:
        a = a[:, None]
    n = a.shape[0]
    max_lag = max(1, min(int(max_lag or n // 4), n - 2))
    ok = np.all(np.isfinite(a), axis=0)
    if y_pred is not None:
        b = host_array(y_pred)
        b = b[:, None] if b.ndim == 1 else b
        okp = ok & np.all(np.isfinite(b), axis=0)
        if max_voxels is not None and okp.sum() > max_voxels:
            okp = _spread(okp, max_voxels)
    if max_voxels is not None and ok.sum() > max_voxels:
        ok = _spread(ok, max_voxels)
    cy = np.nanmean(autocorrelation(a[:, ok], max_lag, stories), axis=1) if ok.any() else np.zeros(max_lag)
    if y_pred is not None:
        cp = np.nanmean(autocorrelation(b[:, okp], max_lag, stories), axis=1) if okp.any() else np.zeros(max_lag)
    else:
        cp = cy
    below = np.flatnonzero(cy < threshold)
    lag_y = int(below[0]) + 1 if below.size else max_lag + 1
    # products only up to the first lag where either autocorrelation falls below the threshold:
    # past it they are sampling noise, which is positive when the prediction follows the
    # responses (a good model), not autocorrelation
    either = np.flatnonzero(np.minimum(cy, cp) < threshold)
    c = np.clip(cy * cp, 0.0, None)
    if either.size:
        c[int(either[0]):] = 0.0
    d = np.arange(1, max_lag + 1)
    total = 1.0 + 2.0 * c.sum()
    length = max(int(min_length), lag_y)
    while length < n and np.sum(2.0 * np.minimum(d, length) * c) / (length * total) > max_loss:
        length += 1
    return int(length)


def effective_dof_pvalues(y_true: Any, y_pred: Any, *, stories: Any = None, max_lag: int | None = None,
                          alternative: Literal["greater", "two-sided"] = "greater") -> np.ndarray:
    """Student-t p-values of Pearson r with degrees of freedom corrected for autocorrelation.

    Per voxel, the effective sample size of the correlation of two autocorrelated series
    (Bartlett 1935; Bayley & Hammersley 1946; in the form of Pyper & Peterman 1998)::

        1 / n_eff = (1 / n) [1 + 2 sum_{k=1..M} ((n - k) / n) rho_y(k) rho_p(k)]

    with the sample autocorrelations of the observed and predicted series at lags up to
    ``M = n // 5`` (Pyper & Peterman's choice), each raised by ``1 / n`` (the leading bias of
    the sample autocorrelation of a mean-removed series), and ``n_eff`` clipped to
    ``[3, n]``; then ``t = r sqrt((n_eff - 2) / (1 - r^2))`` with ``n_eff - 2`` degrees of
    freedom. Unlike the block permutation test it reaches any p on a short test set (a few
    dozen TRs); its false-positive rate on AR(1) nulls of 30 rows is near the nominal level
    (``tests/test_significance.py``).

    Returns
    -------
    p : (n_voxels,) float64 array
        NaN where either input has NaN; a constant voxel gets p = 1.
    """
    a, b, _ = _pair(y_true, y_pred, "effective_dof_pvalues")
    n = a.shape[0]
    M = max(1, int(max_lag if max_lag is not None else n // 5))
    M = min(M, n - 2) if n > 2 else 1
    r = pearson_r(a, b)
    ry = autocorrelation(a, M, stories) + 1.0 / n
    rp = autocorrelation(b, M, stories) + 1.0 / n
    k = np.arange(1, M + 1)[:, None]
    factor = 1.0 + 2.0 * np.sum((n - k) / n * ry * rp, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff = np.clip(n / np.maximum(factor, 1e-12), 3.0, float(n))
        t = r * np.sqrt((n_eff - 2.0) / np.maximum(1.0 - r * r, 1e-300))
    if alternative == "greater":
        p = special.stdtr(n_eff - 2.0, -t)
    elif alternative == "two-sided":
        p = np.minimum(2.0 * special.stdtr(n_eff - 2.0, -np.abs(t)), 1.0)
    else:
        raise ValueError(f"alternative must be 'greater' or 'two-sided', got {alternative!r}")
    p = np.asarray(p, dtype=np.float64)
    constant = np.all(a == a[:1], axis=0) | np.all(b == b[:1], axis=0)
    p[constant & ~np.isnan(p)] = 1.0
    p[np.isnan(r)] = np.nan
    return p


def degenerate_voxels(*arrays: Any) -> np.ndarray:
    """Voxels that cannot be scored: in any of the ``(n_trs, n_voxels)`` arrays the
    column is constant or holds a NaN or infinite value. Returns a bool mask."""
    mask = None
    for x in arrays:
        a = host_array(x)
        a = a[:, None] if a.ndim == 1 else a
        bad = np.zeros(a.shape[1], dtype=bool)
        for sl in _blocks(a.shape[0], a.shape[1]):
            blk = np.asarray(a[:, sl])
            bad[sl] = ~np.all(np.isfinite(blk), axis=0) | np.all(blk == blk[:1], axis=0)
        mask = bad if mask is None else (mask | bad)
    if mask is None:
        raise ValueError("degenerate_voxels needs at least one array")
    return mask


def usable_voxels(targets: Any, y_test: Any = None) -> np.ndarray | None:
    """Indices of the voxels to fit when some in-memory (numpy) responses are degenerate
    (:func:`degenerate_voxels` of the training and test responses); None when every voxel
    is usable or the responses are not in memory (stacked or dask: degenerate voxels are
    then caught at scoring, their predictions being NaN or constant).

    Raises
    ------
    ValueError
        When every voxel is degenerate (one line).
    """
    arrays = [x for x in (targets, y_test) if isinstance(x, np.ndarray)]
    if not arrays or (y_test is not None and not isinstance(targets, np.ndarray)):
        return None
    bad = degenerate_voxels(*arrays)
    if bad.all():
        raise ValueError(f"all {bad.size} voxels are degenerate (constant, NaN or infinite in the responses): "
                         "nothing to fit")
    return np.flatnonzero(~bad) if bad.any() else None


def scatter_voxels(ds: Any, keep: np.ndarray, n_voxels: int) -> Any:
    """A results Dataset of the voxels ``keep`` spread back over all ``n_voxels``: the
    others get NaN (False for booleans) and ``p = 1``; ``attrs["n_degenerate"]`` counts them."""
    import xarray as xr

    keep = np.asarray(keep)
    n = int(n_voxels)
    out = {}
    for name, var in ds.data_vars.items():
        if "voxel" not in var.dims:
            out[name] = var
            continue
        shape = tuple(n if d == "voxel" else ds.sizes[d] for d in var.dims)
        if var.dtype == bool:
            full = np.zeros(shape, dtype=bool)
        else:
            full = np.full(shape, 1.0 if name == "p" else np.nan,
                           dtype=var.dtype if np.issubdtype(var.dtype, np.floating) else np.float64)
        ax = var.dims.index("voxel")
        idx = [slice(None)] * len(shape)
        idx[ax] = keep
        full[tuple(idx)] = var.values
        out[name] = (var.dims, full)
    coords = {k: v for k, v in ds.coords.items() if "voxel" not in v.dims}
    res = xr.Dataset(out, coords=coords, attrs=dict(ds.attrs))
    res.attrs["n_degenerate"] = int(n - keep.size)
    return res


def significance(y_true: Any, y_pred: Any, *, method: str = "permutation", block_length: int | str = "auto",
                 n_permutations: int = 1000, seed: int | None = 0, stories: Any = None,
                 min_orderings: int | None = None, voxel_block: int | None = 2000,
                 workers: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """One-sided p-values of each voxel's test correlation, with the method chosen for the data.

    - ``method="permutation"``: the block permutation test
      (:func:`block_permutation_pvalues`), blocks of ``block_length`` TRs
      (``"auto"``: :func:`choose_block_length` from the test rows). When the test rows
      allow fewer than ``min_orderings`` distinct block orderings (default
      ``n_permutations``: the test could not reach its nominal resolution
      ``1 / (n_permutations + 1)``; a 30-row test set in blocks of 10 TRs has 6), the
      effective-degrees-of-freedom t-test (:func:`effective_dof_pvalues`) is used instead,
      with a warning, and the method says so.
    - ``method="effective_dof"``: that test directly.
    - ``method="analytic"``: LITcoder's Student t with ``n - 2`` degrees of freedom
      (:func:`pearson_pvalues`), which assumes independent rows.

    Degenerate voxels (:func:`degenerate_voxels` of either input) get ``p = 1``.

    Returns
    -------
    p : (n_voxels,) float64 array
    info : dict
        ``pvalue_method`` (the method used: "permutation", "effective_dof" or "analytic")
        and, for the permutation test, ``permutation_block`` and ``n_permutations``.

    Raises
    ------
    ValueError
        When every voxel is degenerate (one line).
    """
    if method not in ("permutation", "effective_dof", "analytic"):
        raise ValueError(f"unknown p-value method {method!r}; accepted: permutation, effective_dof, analytic")
    a, b, _ = _pair(y_true, y_pred, "significance")
    n, v = a.shape
    bad = degenerate_voxels(a, b)
    if bad.all():
        raise ValueError(f"all {v} voxels are degenerate (constant, NaN or infinite in the test responses or "
                         "predictions): nothing to score")
    # every column is computed (degenerate ones then set to 1): a voxel's p never depends on
    # which other voxels are degenerate
    good = np.flatnonzero(~bad)
    info: dict[str, Any] = {}
    used = method
    if method == "permutation":
        if isinstance(block_length, str):
            if block_length != "auto":
                raise ValueError(f"block_length must be an int or 'auto', got {block_length!r}")
            L = choose_block_length(a[:, good], b[:, good], stories=stories) if n >= 4 else max(1, n)
        else:
            L = int(block_length)
        need = int(min(MIN_ORDERINGS, n_permutations) if min_orderings is None else min_orderings)
        orderings = distinct_block_orderings(n, L, stories, cap=max(need, 2))
        if orderings < max(need, 2):
            logger.warning("%d test rows in blocks of %d TRs allow only %d distinct block orderings (fewer than %d): "
                           "p-values from the effective-degrees-of-freedom t-test instead of the permutation test",
                           n, L, orderings, need)
            used = "effective_dof"
        else:
            info.update(permutation_block=int(L), n_permutations=int(n_permutations))
    if used == "permutation":
        from .solver import local_workers, run_blocks

        vg = a.shape[1]
        step = max(1, min(vg, voxel_block or vg, 2000))
        spans = [slice(s, min(s + step, vg)) for s in range(0, vg, step)]
        pg = np.empty(vg)

        def one(sl):
            return block_permutation_pvalues(a[:, sl], b[:, sl], block_length=info["permutation_block"],
                                             n_permutations=int(n_permutations), seed=seed, stories=stories)

        run_blocks(one, spans, pg.__setitem__, workers=local_workers(len(spans)) if workers is None else workers)
    elif used == "effective_dof":
        pg = effective_dof_pvalues(a, b, stories=stories)
    else:
        pg = pearson_pvalues(pearson_r(a, b), n)
    p = np.where(bad, 1.0, pg)
    info["pvalue_method"] = used
    if bad.any():
        info["n_degenerate"] = int(bad.sum())
    return p, info


def normalized_correlation(r: Any, ceiling: Any, threshold: float = 0.1) -> tuple[np.ndarray, int]:
    """Correlation normalised by the noise ceiling, ``CC_norm = r / CC_max`` (Schoppe,
    Harper, Willmore, King & Schnupp 2016; Hsu, Borst & Theunissen 2004).

    Voxels whose ceiling is below ``threshold`` (or NaN) have too little repeatable signal
    for the ratio to mean anything (it explodes as the ceiling goes to 0): they get NaN
    and are counted. ``r`` may have leading dims (e.g. layer) over the voxel axis (last).

    Returns
    -------
    r_norm : float64 array, shape of ``r``
    n_excluded : int
        Voxels left out (ceiling below the threshold or NaN).
    """
    r = np.asarray(r, dtype=np.float64)
    c = np.asarray(ceiling, dtype=np.float64).ravel()
    if r.shape[-1] != c.size:
        raise ValueError(f"normalized_correlation: r has {r.shape[-1]} voxels, the ceiling {c.size}")
    if not 0 <= threshold <= 1:
        raise ValueError(f"normalized_correlation: threshold must be in [0, 1], got {threshold}")
    keep = np.isfinite(c) & (c >= threshold) & (c > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(keep, r / np.where(keep, c, 1.0), np.nan)
    return out, int(np.count_nonzero(~keep))


#: Default ceiling below which a voxel's normalised correlation is left out (NaN).
CEILING_THRESHOLD = 0.1


def add_normalized_correlation(ds: Any, threshold: float = CEILING_THRESHOLD) -> Any:
    """Add ``r_norm`` (dims of ``r``) = :func:`normalized_correlation` of ``ds["r"]`` and
    ``ds["noise_ceiling"]`` to a results Dataset (in place; returned), with attrs
    ``ceiling_threshold`` and ``n_below_ceiling_threshold``; no-op without a ceiling."""
    if "noise_ceiling" not in ds or "r" not in ds:
        return ds
    r = ds["r"]
    ceiling = ds["noise_ceiling"].broadcast_like(r.isel({d: 0 for d in r.dims if d != "voxel"}, drop=True))
    r_norm, n_out = normalized_correlation(r.transpose(..., "voxel").values, ceiling.values, threshold)
    ds["r_norm"] = (r.transpose(..., "voxel").dims, r_norm)
    ds["r_norm"].attrs.update(ceiling_threshold=float(threshold), n_below_ceiling_threshold=int(n_out),
                              description="r / noise ceiling (CC_norm); NaN where the ceiling is below the threshold")
    return ds


def fdr_bh(pvalues: Any, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini–Hochberg false discovery rate control.

    ``q_(i) = min_{j >= i} m p_(j) / j`` over the ``m`` non-NaN p-values sorted
    ascending, clipped at 1; a test is significant when ``q <= alpha`` (the same
    decisions as the BH step-up rule). Return order follows statsmodels'
    ``fdrcorrection``: ``(reject, pvals_corrected)``.

    Parameters
    ----------
    pvalues : array-like, any shape
        p-values in [0, 1]; NaN entries are left out of ``m``.
    alpha : float, default 0.05
        Target false discovery rate, in (0, 1).

    Returns
    -------
    significant_mask : bool array, shape of ``pvalues``
        False where p is NaN.
    qvalues : float64 array, shape of ``pvalues``
        NaN where p is NaN.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"fdr_bh: alpha must be in (0, 1), got {alpha}")
    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.ravel()
    ok = ~np.isnan(flat)
    vals = flat[ok]
    if np.any((vals < 0) | (vals > 1)):
        raise ValueError(f"fdr_bh: p-values must lie in [0, 1], found range [{vals.min()}, {vals.max()}]")
    q = np.full(flat.shape, np.nan)
    m = vals.size
    if m:
        order = np.argsort(vals, kind="stable")
        scaled = vals[order] * m / np.arange(1, m + 1)
        qs = np.minimum.accumulate(scaled[::-1])[::-1]
        qv = np.empty(m)
        qv[order] = np.minimum(qs, 1.0)
        q[ok] = qv
    q = q.reshape(p.shape)
    with np.errstate(invalid="ignore"):
        reject = np.where(np.isnan(q), False, q <= alpha)
    return reject.astype(bool), q


# --------------------------------------------------------------------------------------
# noise ceiling
# --------------------------------------------------------------------------------------
def noise_ceiling(repeats: Any) -> dict[str, np.ndarray]:
    """Noise ceiling of each voxel from repeated presentations of the same stimulus.

    Let ``y_1 .. y_k`` be the ``k`` repeats of a voxel (time series of ``n`` TRs), and
    ``Var`` the sample variance over time (ddof=1). Model each repeat as a common signal
    plus independent noise, ``y_i = s + e_i``.

    - Signal power (Sahani & Linden 2003; Hsu, Borst & Theunissen 2004)::

          SP = (Var(sum_i y_i) - sum_i Var(y_i)) / (k (k - 1))

      the mean covariance between distinct repeats, an unbiased estimate of ``Var(s)``.
    - Total power ``TP = mean_i Var(y_i)``, an estimate of ``Var(s) + Var(e)``.
    - ``explainable_variance = SP / TP``: fraction of a single repeat's variance that is
      stimulus-driven (may be slightly negative by chance when there is no signal).
    - ``cc_max = sqrt(SP / Var(mean_i y_i))`` (Schoppe, Harper, Willmore, King &
      Schnupp 2016): the largest correlation any model can reach with the repeat-mean
      response, since ``Var(mean) = Var(s) + Var(e) / k``; clipped to [0, 1].
    - ``split_half_r``: Pearson r between the mean of the even repeats (0, 2, ...) and
      the mean of the odd repeats (1, 3, ...), Spearman–Brown corrected to the full
      set, ``2 r / (1 + r)``, clipped to [-1, 1] (the correction assumes equal halves;
      with odd ``k`` it is approximate). Deterministic: no random splits.

    Constant voxels get 0 for every score; NaN inputs give NaN for that voxel.

    Parameters
    ----------
    repeats : (k, n_trs, n_voxels) array
        ``k >= 2`` responses to the same stimulus, aligned in time.

    Returns
    -------
    dict of (n_voxels,) float64 arrays
        ``explainable_variance``, ``cc_max``, ``split_half_r``, ``signal_power``,
        ``total_power``.
    """
    y = host_array(repeats)
    if y.ndim != 3:
        raise ValueError(f"noise_ceiling expects repeats of shape (k, n_trs, n_voxels), got shape {y.shape}")
    k, n, v = y.shape
    if k < 2:
        raise ValueError(f"noise_ceiling needs at least 2 repeats, got {k}")
    if n < 2:
        raise ValueError(f"noise_ceiling needs at least 2 TRs per repeat, got {n}")
    sp = np.empty(v)
    tp = np.empty(v)
    var_mean = np.empty(v)
    for sl in _blocks(k * n, v, per_col=2):
        x = np.asarray(y[:, :, sl], dtype=np.float64)
        var_each = x.var(axis=1, ddof=1)  # (k, vb)
        total = x.sum(axis=0)
        var_sum = total.var(axis=0, ddof=1)
        sp[sl] = (var_sum - var_each.sum(axis=0)) / (k * (k - 1))
        tp[sl] = var_each.mean(axis=0)
        var_mean[sl] = var_sum / k**2
    with np.errstate(divide="ignore", invalid="ignore"):
        ev = np.where(tp > 0, sp / tp, 0.0)
        cc = np.where(var_mean > 0, np.sqrt(np.clip(sp, 0.0, None) / var_mean), 0.0)
    ev = np.where(np.isnan(tp) | np.isnan(sp), np.nan, ev)
    cc = np.where(np.isnan(var_mean) | np.isnan(sp), np.nan, np.clip(cc, 0.0, 1.0))
    even = y[0::2].mean(axis=0, dtype=np.float64)
    odd = y[1::2].mean(axis=0, dtype=np.float64)
    r = pearson_r(even, odd)
    with np.errstate(divide="ignore", invalid="ignore"):
        sb = np.where(r > -1.0, 2.0 * r / (1.0 + r), -1.0)
    sb = np.where(np.isnan(r), np.nan, np.clip(sb, -1.0, 1.0))
    return {
        "explainable_variance": ev,
        "cc_max": cc,
        "split_half_r": sb,
        "signal_power": sp,
        "total_power": tp,
    }


# --------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------
def _nanstat(func: Any, x: np.ndarray) -> float:
    if x.size == 0 or np.all(np.isnan(x)):
        return float("nan")
    return float(func(x))


def score_summary(r: Any, pvalues: Any, alpha: float = 0.05) -> dict[str, Any]:
    """Summary of per-voxel scores with LITcoder's metric keys.

    Parameters
    ----------
    r : (n_voxels,) array
        Per-voxel scores (usually Pearson r).
    pvalues : (n_voxels,) array
        Per-voxel p-values; FDR-corrected with :func:`fdr_bh`.
    alpha : float, default 0.05
        FDR level.

    Returns
    -------
    dict
        ``median_score, mean_score, std_score, min_score, max_score`` (floats, NaN
        voxels ignored, std with ddof=0), ``correlations`` (r, float64 array),
        ``p_values``, ``corrected_p_values`` (BH q-values), ``significant_mask`` (bool
        array), ``n_significant`` (int), ``percent_significant`` (float, 100 *
        n_significant / n_voxels, all voxels in the denominator).
    """
    r = np.asarray(r, dtype=np.float64).ravel()
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    if r.shape != p.shape:
        raise ValueError(f"score_summary: r and pvalues must have the same length, got {r.size} and {p.size}")
    reject, q = fdr_bh(p, alpha=alpha)
    n_sig = int(np.count_nonzero(reject))
    return {
        "median_score": _nanstat(np.nanmedian, r),
        "mean_score": _nanstat(np.nanmean, r),
        "std_score": _nanstat(np.nanstd, r),
        "min_score": _nanstat(np.nanmin, r),
        "max_score": _nanstat(np.nanmax, r),
        "correlations": r,
        "p_values": p,
        "corrected_p_values": q,
        "significant_mask": reject,
        "n_significant": n_sig,
        "percent_significant": 100.0 * n_sig / r.size if r.size else float("nan"),
    }
