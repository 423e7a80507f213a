"""Trimming of per-story design matrices and responses, and per-story z-scoring (the
whole per-story alignment is :func:`scalenc.align.story.align_story`).

Trimming follows the LITcoder tutorials' ``trimming_config``: for each split (``train``,
``test``) a feature slice (rows of the TR grid the features were downsampled to) and a
target slice (rows of the responses). Values follow Python slicing: a start of ``None``
means 0, an end of ``None`` means "to the end", a negative end ``-5`` drops the last 5
rows. With the LeBel release (features on N - 5 grid times, responses N - 20 rows, see
REFERENCE.md) the tutorial values are train features ``[10:-5]``, train targets ``[0:]``,
test features ``[50:-5]``, test targets ``[40:]`` (:meth:`TrimmingConfig.lebel`).
"""
from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["TRIM_KEYS", "TrimmingConfig", "trim_story", "zscore"]

TRIM_KEYS = ("train_features_start", "train_features_end", "train_targets_start", "train_targets_end",
             "test_features_start", "test_features_end", "test_targets_start", "test_targets_end")
SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class TrimmingConfig:
    """Rows to keep per split, as Python slices (LITcoder's ``trimming_config``).

    Every field is an ``int`` or ``None``. ``*_start=None`` means 0; ``*_end=None`` means
    to the end; negative values count from the end as in Python slicing (``end=-5``
    drops the last 5 rows). The default (all ``None``) keeps every row.
    """

    train_features_start: int | None = None
    train_features_end: int | None = None
    train_targets_start: int | None = None
    train_targets_end: int | None = None
    test_features_start: int | None = None
    test_features_end: int | None = None
    test_targets_start: int | None = None
    test_targets_end: int | None = None

    def __post_init__(self) -> None:
        for key in TRIM_KEYS:
            v = getattr(self, key)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise TypeError(f"trimming config key {key!r} must be an int or None, "
                                f"got {type(v).__name__} {v!r}")
            object.__setattr__(self, key, int(v))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> TrimmingConfig:
        """Build from a mapping with keys among :data:`TRIM_KEYS` (missing keys: ``None``).

        Raises ``ValueError`` naming unknown keys, ``TypeError`` naming a key whose value
        is not an int or ``None``.
        """
        if d is None:
            return cls()
        if isinstance(d, TrimmingConfig):
            return d
        if not isinstance(d, Mapping):
            raise TypeError(f"trimming config must be a mapping, got {type(d).__name__}")
        unknown = [k for k in d if k not in TRIM_KEYS]
        if unknown:
            raise ValueError(f"unknown trimming config key(s) {', '.join(map(repr, unknown))}; "
                             f"accepted keys: {', '.join(TRIM_KEYS)}")
        return cls(**dict(d))

    @classmethod
    def lebel(cls) -> TrimmingConfig:
        """The LITcoder tutorials' values for the LeBel dataset.

        Train features ``[10:-5]``, train targets ``[0:]``, test features ``[50:-5]``,
        test targets ``[40:]``.
        """
        return cls(train_features_start=10, train_features_end=-5, train_targets_start=0, train_targets_end=None,
                   test_features_start=50, test_features_end=-5, test_targets_start=40, test_targets_end=None)

    def to_dict(self) -> dict[str, int | None]:
        """The 8 keys of :data:`TRIM_KEYS` and their values."""
        return {k: getattr(self, k) for k in TRIM_KEYS}

    def slices(self, split: str) -> tuple[slice, slice]:
        """``(feature_slice, target_slice)`` for ``split`` (``"train"`` or ``"test"``)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")

        def sl(kind: str) -> slice:
            start = getattr(self, f"{split}_{kind}_start")
            return slice(0 if start is None else start, getattr(self, f"{split}_{kind}_end"))

        return sl("features"), sl("targets")


def _as_config(config) -> TrimmingConfig:
    if isinstance(config, TrimmingConfig):
        return config
    return TrimmingConfig.from_dict(config)


def _fmt(s: slice) -> str:
    return f"[{'' if s.start is None else s.start}:{'' if s.stop is None else s.stop}]"


def _is_dataarray(x) -> bool:
    try:
        import xarray as xr
    except ImportError:  # pragma: no cover
        return False
    return isinstance(x, xr.DataArray)


def _slice_rows(x, s: slice, what: str):
    """Slice ``x`` along its ``tr`` dim (DataArray) or its first axis (array)."""
    if _is_dataarray(x):
        if "tr" not in x.dims:
            raise ValueError(f"{what} DataArray needs a 'tr' dim, got dims {x.dims}")
        return x.isel(tr=s), x.sizes["tr"]
    if getattr(x, "ndim", None) is None:
        x = np.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"{what} must have at least one dim (rows = TRs), got a scalar")
    return x[s], x.shape[0]


def _n_rows(x) -> int:
    return x.sizes["tr"] if _is_dataarray(x) else x.shape[0]


def trim_story(features, targets, config, split: str, story: str | None = None):
    """Trim one story's features and targets and check that their row counts match.

    Parameters
    ----------
    features : (n_grid, p) array, or DataArray with a ``tr`` dim
        Features on the story's TR grid (after downsampling / delays).
    targets : (n_tr, v) array (numpy or dask), or DataArray with a ``tr`` dim
        Responses.
    config : TrimmingConfig, mapping with keys among :data:`TRIM_KEYS`, or None (no trim)
    split : {"train", "test"}
    story : str, optional
        Named in error messages.

    Returns
    -------
    (features_trimmed, targets_trimmed) : same types as the inputs, same row count.

    Raises
    ------
    ValueError
        When the trimmed row counts differ (names the story, both counts and the slices)
        or trimming leaves no rows.
    """
    cfg = _as_config(config)
    fs, ts = cfg.slices(split)
    X, n_grid = _slice_rows(features, fs, "features")
    Y, n_tr = _slice_rows(targets, ts, "targets")
    nx, ny = _n_rows(X), _n_rows(Y)
    where = f"story {story!r}" if story is not None else "story"
    if nx != ny:
        raise ValueError(f"{where} ({split}): trimmed features have {nx} rows (features{_fmt(fs)} of {n_grid} "
                         f"grid rows) but trimmed targets have {ny} rows (targets{_fmt(ts)} of {n_tr} rows)")
    if nx == 0:
        raise ValueError(f"{where} ({split}): trimming leaves no rows (features{_fmt(fs)} of {n_grid} grid rows, "
                         f"targets{_fmt(ts)} of {n_tr} rows)")
    return X, Y


def zscore(X, axis: int = 0):
    """Z-score ``X`` along ``axis`` (per story): ``(x - mean) / std`` with the population
    std (``ddof=0``).

    Constant columns become 0 (not NaN). Statistics are accumulated in float64; the result
    keeps a floating dtype of the input (float32 stays float32), integers become float64.

    Parameters
    ----------
    X : array (numpy or dask), or DataArray
        A dask array stays lazy. For a DataArray the statistics are taken over its ``tr`` dim (``axis`` is ignored);
        dims, coords and attrs are kept, and dask-backed data stays lazy.
    axis : int
        Axis of the rows (TRs) for arrays.

    Returns
    -------
    Z : same shape and type as ``X``
    """
    if _is_dataarray(X):
        import xarray as xr

        if "tr" not in X.dims:
            raise ValueError(f"zscore of a DataArray needs a 'tr' dim, got dims {X.dims}")
        dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.dtype(np.float64)
        Xf = X.astype(dtype)
        mean = X.astype(np.float64).mean("tr")
        centred = Xf - mean.astype(dtype)
        std = np.sqrt((centred.astype(np.float64) ** 2).mean("tr"))
        const = X.max("tr") == X.min("tr")
        std = xr.where(const | (std == 0), 1.0, std)
        out = xr.where(const, 0, centred / std.astype(dtype)).astype(dtype)
        out = out.transpose(*X.dims)
        out.attrs = dict(X.attrs)
        out.name = X.name
        return out

    if hasattr(X, "dask"):  # a dask array stays lazy (responses read from zarr by the workers)
        import dask.array as da

        dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.dtype(np.float64)
        mean = X.astype(np.float64).mean(axis=axis, keepdims=True)
        centred = X.astype(dtype) - mean.astype(dtype)
        std = da.sqrt((centred.astype(np.float64) ** 2).mean(axis=axis, keepdims=True))
        const = X.max(axis=axis, keepdims=True) == X.min(axis=axis, keepdims=True)
        std = da.where(const | (std == 0), 1.0, std)
        return da.where(const, np.zeros((), dtype=dtype), centred / std.astype(dtype)).astype(dtype)
    X = np.asarray(X)
    dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.dtype(np.float64)
    if X.shape[axis] == 0:
        return X.astype(dtype)
    mean = X.mean(axis=axis, dtype=np.float64, keepdims=True)
    centred = X.astype(dtype, copy=False) - mean.astype(dtype)
    std = np.sqrt(np.mean(np.square(centred, dtype=np.float64), axis=axis, keepdims=True))
    const = X.max(axis=axis, keepdims=True) == X.min(axis=axis, keepdims=True)
    std[const | (std == 0)] = 1.0
    out = centred / std.astype(dtype)
    out = np.where(const, np.zeros((), dtype=dtype), out).astype(dtype, copy=False)
    return out
