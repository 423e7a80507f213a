"""Downsampling of event-rate features (one row per word, phone or audio window) to TRs.

Kernels are built as sparse (n_trs, n_events) matrices: memory is O(events x window),
never a dense TR x event matrix, and they are built without a Python loop over TRs or
events (sorted event times + ``searchsorted`` give each TR's range of events).
"""
from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)

__all__ = ["Downsampler", "lanczos_matrix", "lanczos_weights", "sinc_matrix", "bin_matrix", "METHODS"]


def lanczos_weights(u: np.ndarray, window: int = 3) -> np.ndarray:
    """Lanczos kernel ``L(u) = sinc(u) * sinc(u / window)`` for ``|u| < window``, else 0.

    ``sinc`` is the normalised sinc, ``sin(pi u) / (pi u)``; ``L(0) = 1``.
    """
    u = np.asarray(u, dtype=np.float64)
    w = np.sinc(u) * np.sinc(u / window)
    w[np.abs(u) >= window] = 0.0
    return w


def _sinc_weights(u: np.ndarray, window: int = 3) -> np.ndarray:
    """Truncated sinc ``sinc(u)`` for ``|u| < window``, else 0 (not renormalised)."""
    u = np.asarray(u, dtype=np.float64)
    w = np.sinc(u)
    w[np.abs(u) >= window] = 0.0
    return w


def _ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten the index ranges ``lo[j] .. hi[j]-1`` of every row ``j``, without a loop.

    Returns ``(rows, pos)``: for each pair, the row ``j`` and the position in the range.
    """
    counts = np.maximum(hi - lo, 0)
    rows = np.repeat(np.arange(lo.size), counts)
    starts = np.repeat(lo - (np.cumsum(counts) - counts), counts)
    pos = starts + np.arange(rows.size)
    return rows, pos


def _default_tr(tau: np.ndarray, tr: float | None) -> float:
    if tr is not None:
        return float(tr)
    if tau.size < 2:
        raise ValueError("tr must be given when there are fewer than 2 TR times")
    return float(np.median(np.diff(tau)))


def _kernel_matrix(event_times, tr_times, tr, window, cutoff_mult, weights) -> sp.csr_matrix:
    t = np.asarray(event_times, dtype=np.float64)
    tau = np.asarray(tr_times, dtype=np.float64)
    tr = _default_tr(tau, tr)
    c = cutoff_mult / tr
    half = window / c
    order = np.argsort(t, kind="stable")
    ts = t[order]
    lo = np.searchsorted(ts, tau - half, side="left")
    hi = np.searchsorted(ts, tau + half, side="right")
    rows, pos = _ranges(lo, hi)
    vals = weights((tau[rows] - ts[pos]) * c, window)
    keep = vals != 0
    return sp.csr_matrix((vals[keep], (rows[keep], order[pos[keep]])), shape=(tau.size, t.size))


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
    return _kernel_matrix(event_times, tr_times, tr, window, cutoff_mult, lanczos_weights)


def sinc_matrix(event_times, tr_times, *, tr: float | None = None, window: int = 3,
                cutoff_mult: float = 1.0) -> sp.csr_matrix:
    """Sparse truncated-sinc interpolation matrix.

    Same ``u_ij = (tau_j - t_i) * cutoff_mult / tr`` as :func:`lanczos_matrix`;
    ``W_ji = sinc(u_ij)`` for ``|u_ij| < window``, else 0; not renormalised.

    Returns
    -------
    W : scipy.sparse.csr_matrix, (n_trs, n_events)
    """
    return _kernel_matrix(event_times, tr_times, tr, window, cutoff_mult, _sinc_weights)


def bin_matrix(event_times, tr_times, *, tr: float | None = None, how: str = "average") -> sp.csr_matrix:
    """Sparse matrix that pools the events falling inside each TR.

    Event ``i`` belongs to TR ``j`` when ``tau_j - tr/2 <= t_i < tau_j + tr/2`` (half-open:
    an event exactly on ``tau_j + tr/2`` goes to TR ``j + 1``). Boundaries of adjacent TRs
    that agree to 1e-9 TR are snapped together, so rounding never puts a boundary event in
    two TRs or in none. Events outside every TR are dropped (logged at debug level).

    Parameters
    ----------
    event_times : (n_events,) float
    tr_times : (n_trs,) float, strictly increasing
    tr : float, optional
        TR length; default the median spacing of ``tr_times``.
    how : {"average", "sum", "last"}
        ``average``: weight ``1 / count`` for each of the TR's events (mean); ``sum``:
        weight 1; ``last``: weight 1 on the TR's last event by time (ties: the later
        one in input order). Empty TRs are a row of zeros.

    Returns
    -------
    W : scipy.sparse.csr_matrix, (n_trs, n_events)
    """
    t = np.asarray(event_times, dtype=np.float64)
    tau = np.asarray(tr_times, dtype=np.float64)
    tr = _default_tr(tau, tr)
    left = tau - tr / 2
    right = tau + tr / 2
    if tau.size > 1:
        nxt = left[1:]
        snap = np.abs(right[:-1] - nxt) <= 1e-9 * tr
        right[:-1][snap] = nxt[snap]
    order = np.argsort(t, kind="stable")
    ts = t[order]
    lo = np.searchsorted(ts, left, side="left")
    hi = np.maximum(np.searchsorted(ts, right, side="left"), lo)
    counts = hi - lo
    if logger.isEnabledFor(logging.DEBUG) and t.size:
        cover = np.zeros(t.size + 1, dtype=np.int64)
        np.add.at(cover, lo, 1)
        np.add.at(cover, hi, -1)
        n_out = int(np.count_nonzero(np.cumsum(cover)[:-1] == 0))
        if n_out:
            logger.debug("%d of %d events fall outside the TR grid [%g, %g) and are dropped",
                         n_out, t.size, left[0] if tau.size else np.nan, right[-1] if tau.size else np.nan)
    if how == "last":
        rows = np.flatnonzero(counts > 0)
        cols = order[hi[rows] - 1]
        vals = np.ones(rows.size)
    elif how in ("average", "sum"):
        rows, pos = _ranges(lo, hi)
        cols = order[pos]
        vals = 1.0 / counts[rows] if how == "average" else np.ones(rows.size)
    else:
        raise ValueError(f"how must be one of 'average', 'sum', 'last', got {how!r}")
    return sp.csr_matrix((vals, (rows, cols)), shape=(tau.size, t.size))


# Accepted config keys and their defaults, per method.
METHODS: dict[str, dict[str, Any]] = {
    "lanczos": {"window": 3, "cutoff_mult": 1.0, "tr": None},
    "sinc": {"window": 3, "cutoff_mult": 1.0, "tr": None},
    "rect": {"tr": None},
    "average": {"tr": None},
    "sum": {"tr": None},
    "last": {"tr": None},
}
_EVENT_DIMS = ("time", "word", "event")


def _check_method(method) -> str:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"unknown downsampling method {method!r}; accepted methods: {', '.join(METHODS)}")
    return method


def _check_config(method: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``config`` for ``method``; return the full config (defaults filled in)."""
    accepted = METHODS[method]
    if "split_indices" in config:
        raise ValueError(
            "split_indices is not supported: scalenc assigns events to TRs by their times "
            "(event_times / data_times against tr_times, half-open [tau - tr/2, tau + tr/2)); "
            "drop split_indices and pass the event times instead")
    unknown = [k for k in config if k not in accepted]
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(map(repr, unknown))} for downsampling method "
                         f"{method!r}; accepted keys: {', '.join(accepted) or '(none)'}")
    out = dict(accepted)
    out.update(config)
    if "window" in out:
        w = out["window"]
        if isinstance(w, bool) or not isinstance(w, numbers.Integral) or w <= 0:
            raise ValueError(f"window must be a positive int, got {w!r}")
        out["window"] = int(w)
    if "cutoff_mult" in out:
        c = out["cutoff_mult"]
        if isinstance(c, bool) or not isinstance(c, numbers.Real) or not math.isfinite(c) or c <= 0:
            raise ValueError(f"cutoff_mult must be a finite number > 0, got {c!r}")
        out["cutoff_mult"] = float(c)
    tr = out.get("tr")
    if tr is not None:
        if isinstance(tr, bool) or not isinstance(tr, numbers.Real) or not math.isfinite(tr) or tr <= 0:
            raise ValueError(f"tr must be a finite number > 0 (seconds) or None, got {tr!r}")
        out["tr"] = float(tr)
    return out


def _check_times(event_times, tr_times) -> tuple[np.ndarray, np.ndarray]:
    if event_times is None:
        raise ValueError("event_times (data_times) is required")
    if tr_times is None:
        raise ValueError("tr_times is required")
    t = np.asarray(event_times, dtype=np.float64)
    tau = np.asarray(tr_times, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"event_times must be 1-D (n_events,), got shape {t.shape}")
    if tau.ndim != 1:
        raise ValueError(f"tr_times must be 1-D (n_trs,), got shape {tau.shape}")
    if not np.all(np.isfinite(t)):
        bad = np.flatnonzero(~np.isfinite(t))
        raise ValueError(f"event_times must be finite; {bad.size} non-finite value(s), first at index {bad[0]}")
    if not np.all(np.isfinite(tau)):
        bad = np.flatnonzero(~np.isfinite(tau))
        raise ValueError(f"tr_times must be finite; {bad.size} non-finite value(s), first at index {bad[0]}")
    if tau.size > 1:
        d = np.diff(tau)
        if not np.all(d > 0):
            i = int(np.flatnonzero(d <= 0)[0])
            raise ValueError(f"tr_times must be strictly increasing; tr_times[{i}]={tau[i]!r} >= "
                             f"tr_times[{i + 1}]={tau[i + 1]!r}")
    return t, tau


class Downsampler:
    """Downsample event-rate features (words, phones, audio windows) onto TR times.

    ``Downsampler()`` with no argument uses the ``lanczos`` method (window 3, cutoff 1),
    the HuthLab / LeBel et al. convention. Note: LITcoder's ``Downsampler`` with an empty
    ``downsample_config`` fell back to ``rect``; pass ``Downsampler("rect")`` (or
    ``method="rect"``) to reproduce that.

    Every method is a sparse (n_trs, n_events) matrix ``W`` (see :meth:`matrix`) with
    O(n_events x window) memory, and ``downsample`` returns ``W @ values``. Notation:
    events at times ``t_i`` (seconds, any order), TR centres ``tau_j`` (strictly
    increasing), ``tr`` the TR length (config ``tr``; default the median spacing of
    ``tr_times``).

    Methods and their config keys (defaults)
    ----------------------------------------
    ``lanczos`` (``window=3, cutoff_mult=1.0, tr=None``)
        ``u_ij = (tau_j - t_i) * cutoff_mult / tr``; ``W_ji = sinc(u) * sinc(u / window)``
        for ``|u| < window``, else 0, with ``sinc(x) = sin(pi x) / (pi x)``, ``sinc(0) = 1``.
        Not renormalised: one event per TR, sitting on the TR centres, with value ``x``
        gives exactly ``x`` per interior TR (``L(0) = 1``, ``L(k) = 0`` at other integers).
        Support ``+- window * tr / cutoff_mult`` seconds (``+- 6 s`` at TR 2 s).
    ``sinc`` (``window=3, cutoff_mult=1.0, tr=None``)
        Same ``u``; ``W_ji = sinc(u)`` for ``|u| < window``, else 0 (plain truncated sinc,
        not renormalised).
    ``rect`` (``tr=None``)
        Boxcar over each TR: the mean of the events with ``tau_j - tr/2 <= t_i < tau_j + tr/2``
        (identical to ``average``); a TR with no event is 0.
    ``average``, ``sum``, ``last`` (``tr=None``)
        Events are assigned to TRs by their times, same half-open interval
        ``[tau_j - tr/2, tau_j + tr/2)`` (an event exactly on ``tau_j + tr/2`` belongs to TR
        ``j + 1``). ``average``: mean of the TR's events; ``sum``: their sum; ``last``: the
        value of the TR's last event by time (ties: later in input order). Empty TRs are 0;
        events outside every TR are dropped (logged at debug level). LITcoder's
        ``split_indices`` is not supported (a ``ValueError`` says so): times are used.

    Parameters
    ----------
    method : str
        One of ``lanczos`` (default), ``sinc``, ``rect``, ``average``, ``sum``, ``last``.
    **config
        The method's config keys above; anything else raises ``ValueError``.

    Attributes
    ----------
    method : str
    config : dict
        The full config of ``method``, defaults filled in.

    Examples
    --------
    >>> ds = Downsampler("lanczos", window=3)
    >>> X_tr = ds.downsample(word_vectors, word_times, tr_times)          # doctest: +SKIP
    >>> # LITcoder call style
    >>> Downsampler().downsample(data=word_vectors, data_times=word_times, # doctest: +SKIP
    ...                          tr_times=tr_times, method="lanczos", window=3, cutoff_mult=1.0)
    """

    METHODS = tuple(METHODS)

    def __init__(self, method: str = "lanczos", **config: Any) -> None:
        self.method = _check_method(method)
        self.config = _check_config(self.method, config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"Downsampler(method={self.method!r}" + (f", {args})" if args else ")")

    def _resolve(self, method: str | None, overrides: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """Method and full config for one call: overrides on top of this instance's config.

        With a ``method`` override, this instance's config keys that the new method also
        accepts (e.g. ``tr``, or ``window`` from ``lanczos`` to ``sinc``) carry over.
        """
        m = self.method if method is None else _check_method(method)
        if "split_indices" in overrides:
            _check_config(m, overrides)  # raises the split_indices message
        base = {k: v for k, v in self.config.items() if k in METHODS[m]}
        unknown = [k for k in overrides if k not in METHODS[m]]
        if unknown:
            _check_config(m, overrides)  # raises, naming the keys
        base.update(overrides)
        return m, _check_config(m, base)

    def matrix(self, event_times, tr_times, *, method: str | None = None, **overrides: Any) -> sp.csr_matrix:
        """The sparse downsampling matrix of this method.

        Parameters
        ----------
        event_times : (n_events,) float
            Seconds, any order, finite.
        tr_times : (n_trs,) float
            TR centres, seconds, finite, strictly increasing.
        method, **overrides
            Optional per-call method and config overrides.

        Returns
        -------
        W : scipy.sparse.csr_matrix, (n_trs, n_events), float64
            ``values_tr = W @ values_events``.
        """
        m, cfg = self._resolve(method, overrides)
        t, tau = _check_times(event_times, tr_times)
        if m == "lanczos":
            return lanczos_matrix(t, tau, tr=cfg["tr"], window=cfg["window"], cutoff_mult=cfg["cutoff_mult"])
        if m == "sinc":
            return sinc_matrix(t, tau, tr=cfg["tr"], window=cfg["window"], cutoff_mult=cfg["cutoff_mult"])
        return bin_matrix(t, tau, tr=cfg["tr"], how="average" if m == "rect" else m)

    def downsample(self, values=None, event_times=None, tr_times=None, *, data=None, data_times=None,
                   method: str | None = None, **overrides: Any):
        """Downsample ``values`` at ``event_times`` onto ``tr_times``.

        Parameters
        ----------
        values : (n_events,) or (n_events, n_features) array, or xarray.DataArray
            A DataArray has an event dim named ``time`` (or ``word`` / ``event``), e.g.
            dims ``(time, feature)`` or ``(layer, time, feature)``; other dims are kept.
            ``data`` is an alias (LITcoder call style).
        event_times : (n_events,) float
            Seconds. ``data_times`` is an alias. For a DataArray, defaults to the numeric
            coordinate of its event dim when there is one.
        tr_times : (n_trs,) float
            TR centres, strictly increasing.
        method : str, optional
            Per-call method override (LITcoder's ``method=``).
        **overrides
            Per-call config overrides (e.g. ``window=3, cutoff_mult=1.0``).

        Returns
        -------
        numpy array (n_trs,) for 1-D values, (n_trs, n_features) for 2-D values; for a
        DataArray, a DataArray with the event dim replaced by ``tr`` (dims e.g.
        ``(layer, tr, feature)``) and a ``tr_time`` coordinate on ``tr``. float32 values
        stay float32; anything else comes back float64.
        """
        if data is not None:
            if values is not None:
                raise ValueError("pass either values or data (its LITcoder alias), not both")
            values = data
        if data_times is not None:
            if event_times is not None:
                raise ValueError("pass either event_times or data_times (its LITcoder alias), not both")
            event_times = data_times
        if values is None:
            raise ValueError("values (data) is required")

        try:
            import xarray as xr
        except ImportError:  # pragma: no cover - xarray is a dependency
            xr = None
        if xr is not None and isinstance(values, xr.DataArray):
            return self._downsample_dataarray(values, event_times, tr_times, method, overrides)

        arr = np.asarray(values)
        if arr.ndim not in (1, 2):
            raise ValueError(f"values must be 1-D (n_events,) or 2-D (n_events, n_features), got shape {arr.shape}; "
                             "use a DataArray for more dims")
        W = self._checked_matrix(arr.shape[0], event_times, tr_times, method, overrides)
        return _apply(W, arr, axis=0)

    def _checked_matrix(self, n_rows, event_times, tr_times, method, overrides) -> sp.csr_matrix:
        n_events = np.shape(event_times)[0] if event_times is not None and np.ndim(event_times) else None
        if n_events is not None and n_rows != n_events:
            raise ValueError(f"values have {n_rows} rows (events) but event_times has {n_events} entries")
        return self.matrix(event_times, tr_times, method=method, **overrides)

    def _downsample_dataarray(self, da, event_times, tr_times, method, overrides):
        import xarray as xr

        dim = next((d for d in _EVENT_DIMS if d in da.dims), None)
        if dim is None:
            raise ValueError(f"DataArray values need an event dim named one of {_EVENT_DIMS}, got dims {da.dims}")
        if "tr" in da.dims:
            raise ValueError(f"DataArray values already have a 'tr' dim (dims {da.dims})")
        if event_times is None:
            if dim in da.coords and np.issubdtype(da[dim].dtype, np.number):
                event_times = da[dim].values
            else:
                raise ValueError(f"event_times is required: the DataArray has no numeric {dim!r} coordinate")
        axis = da.dims.index(dim)
        W = self._checked_matrix(da.shape[axis], event_times, tr_times, method, overrides)
        out = _apply(W, np.asarray(da.values), axis=axis)
        dims = tuple("tr" if d == dim else d for d in da.dims)
        coords = {k: c for k, c in da.coords.items() if dim not in c.dims}
        coords["tr_time"] = ("tr", np.asarray(tr_times, dtype=np.float64))
        return xr.DataArray(out, dims=dims, coords=coords, name=da.name, attrs=dict(da.attrs))


def _apply(W: sp.csr_matrix, arr: np.ndarray, axis: int) -> np.ndarray:
    """``W`` applied along ``axis`` of ``arr``; float32 stays float32, else float64."""
    dtype = np.float32 if arr.dtype == np.float32 else np.float64
    a = np.moveaxis(arr.astype(dtype, copy=False), axis, 0)
    flat = a.reshape(a.shape[0], -1)
    out = np.asarray(W.astype(dtype) @ flat).reshape((W.shape[0],) + a.shape[1:])
    return np.moveaxis(out, 0, axis)
