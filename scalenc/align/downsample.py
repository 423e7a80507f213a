"""Downsampling of event-rate features (one row per word, phone or audio window) to TRs.

Kernels are built as sparse (n_trs, n_events) matrices: memory is O(events x window),
never a dense TR x event matrix.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def lanczos_weights(u: np.ndarray, window: int = 3) -> np.ndarray:
    """Lanczos kernel ``L(u) = sinc(u) * sinc(u / window)`` for ``|u| < window``, else 0.

    ``sinc`` is the normalised sinc, ``sin(pi u) / (pi u)``; ``L(0) = 1``.
    """
    u = np.asarray(u, dtype=np.float64)
    w = np.sinc(u) * np.sinc(u / window)
    w[np.abs(u) >= window] = 0.0
    return w


def lanczos_matrix(event_times, tr_times, *, tr: float | None = None, window: int = 3,
                   cutoff_mult: float = 1.0) -> sp.csr_matrix:
    """Sparse Lanczos interpolation matrix (HuthLab convention).

    For events at ``t_i`` and TR centres ``tau_j``: cutoff ``c = cutoff_mult / tr``,
    ``u_ij = (tau_j - t_i) * c`` and ``W_ji = L(u_ij)``. Weights are not renormalised: a
    steady stream of one event per TR maps to about 1 per TR.

    Parameters
    ----------
    event_times : (n_events,) float
        Seconds; any order.
    tr_times : (n_trs,) float
        TR centres, seconds, increasing.
    tr : float, optional
        Repetition time; default the median spacing of ``tr_times``.
    window : int
        Lobes ``a`` of the kernel (support ``+- a / c`` seconds).
    cutoff_mult : float
        Cutoff frequency in multiples of the TR's Nyquist-rate ``1 / tr``.

    Returns
    -------
    W : scipy.sparse.csr_matrix, (n_trs, n_events)
        ``features_tr = W @ features_events``.
    """
    t = np.asarray(event_times, dtype=np.float64)
    tau = np.asarray(tr_times, dtype=np.float64)
    if tr is None:
        if tau.size < 2:
            raise ValueError("tr must be given when there are fewer than 2 TR times")
        tr = float(np.median(np.diff(tau)))
    c = cutoff_mult / tr
    half = window / c
    order = np.argsort(t, kind="stable")
    ts = t[order]
    lo = np.searchsorted(ts, tau - half, side="left")
    hi = np.searchsorted(ts, tau + half, side="right")
    counts = hi - lo
    rows = np.repeat(np.arange(tau.size), counts)
    # positions lo[j] .. hi[j]-1 for every row j, without a Python loop
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    pos = starts + np.arange(rows.size)
    vals = lanczos_weights((tau[rows] - ts[pos]) * c, window)
    keep = vals != 0
    return sp.csr_matrix((vals[keep], (rows[keep], order[pos[keep]])), shape=(tau.size, t.size))
