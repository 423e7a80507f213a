"""One story's design matrix and responses: downsample -> FIR delays -> trim -> z-score.

:func:`align_story` is the single place where stimulus features meet the responses; the
trainer calls it for every (story, layer) and the tests call it directly. Its design
matrix is a labeled ``(tr, feature)`` DataArray whose ``feature_space`` and ``delay``
coordinates say where every column came from (:func:`feature_space_slices` turns them
back into column ranges).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from .downsample import Downsampler
from .fir import fir, validate_delays
from .trim import TrimmingConfig, trim_story, zscore

__all__ = ["align_story", "check_delays", "feature_space_slices", "kept_rows", "target_slice"]


def _as_space(name: str, value, event_times) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(values (n_events, p) float64, event times, feature names or None) of one space."""
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"feature space {name!r}: a tuple must be (values, event_times)")
        value, event_times = value
    names = None
    if isinstance(value, xr.DataArray):
        if "layer" in value.dims:
            if value.sizes["layer"] != 1:
                raise ValueError(f"feature space {name!r} has {value.sizes['layer']} layers: select one first, "
                                 "e.g. values.sel(layer=...)")
            value = value.isel(layer=0)
        dim = next((d for d in ("time", "word", "event") if d in value.dims), None)
        if dim is None or value.ndim > 2:
            raise ValueError(f"feature space {name!r} needs dims (time[, feature]); got {value.dims}")
        if event_times is None:
            if dim not in value.coords:
                raise ValueError(f"feature space {name!r}: event_times is required (no {dim!r} coordinate)")
            event_times = value[dim].values
        value = value.transpose(dim, ...)
        other = [d for d in value.dims if d != dim]
        if other and other[0] in value.coords:
            names = np.asarray(value[other[0]].values)
        value = value.values
    vals = np.asarray(value, dtype=np.float64)
    if vals.ndim == 1:
        vals = vals[:, None]
    if vals.ndim != 2:
        raise ValueError(f"feature space {name!r} must be (n_events,) or (n_events, p), got shape {vals.shape}")
    if event_times is None:
        raise ValueError(f"feature space {name!r}: event_times is required")
    return vals, np.asarray(event_times, dtype=np.float64), names


def _split_is_unset(trimming: TrimmingConfig, split: str) -> bool:
    return all(getattr(trimming, f"{split}_{kind}_{end}") is None
               for kind in ("features", "targets") for end in ("start", "end"))


def target_slice(trimming, split: str) -> slice:
    """Rows of a story's responses that :func:`align_story` keeps for ``split``."""
    if trimming is None:
        return slice(None)
    trim = trimming if isinstance(trimming, TrimmingConfig) else TrimmingConfig.from_dict(trimming)
    return slice(None) if _split_is_unset(trim, split) else trim.slices(split)[1]


def kept_rows(n_grid: int, n_tr: int, trimming, split: str, grid_offset: int = 0) -> np.ndarray:
    """Grid rows of a story (``n_grid`` grid rows, ``n_tr`` response rows) that
    :func:`align_story` keeps for ``split``."""
    trim = None if trimming is None else (trimming if isinstance(trimming, TrimmingConfig)
                                          else TrimmingConfig.from_dict(trimming))
    rows = np.arange(int(n_grid))
    if trim is None or _split_is_unset(trim, split):
        return rows[int(grid_offset):int(grid_offset) + int(n_tr)]
    return rows[trim.slices(split)[0]]


def check_delays(delays, assembly, stories: Sequence[str], trimming=None,
                 test_stories: Sequence[str] = ()) -> list[int]:
    """:func:`~scalenc.align.fir.validate_delays` against every story of a run before any
    work: each delay must leave stimulus in the kept rows of the shortest story (test
    stories trimmed as ``"test"``, the others as ``"train"``). Returns the delays as ints."""
    out = validate_delays(delays)
    for s in stories:
        n_tr = int(assembly.bold_data(s).shape[0]) if hasattr(assembly, "bold_data") else assembly.bold(s).shape[0]
        n_grid = len(assembly.tr_times(s))
        split = "test" if s in test_stories else "train"
        validate_delays(out, kept=kept_rows(n_grid, n_tr, trimming, split, assembly.grid_offset(s)),
                        n_rows=n_grid, story=s)
    return out


def align_story(features, tr_times, targets, *, event_times=None, downsampler: Downsampler | str | None = None,
                downsample_config: Mapping[str, Any] | None = None, delays: Sequence[int] = (1, 2, 3, 4),
                trimming=None, grid_offset: int = 0, split: str = "train", story: str | None = None,
                zscore_features: bool = True, zscore_targets: bool = True, dtype="float32"):
    """One story's design matrix and responses.

    Steps: each feature space is downsampled onto ``tr_times``; the spaces are put side by
    side and FIR-delayed on the whole grid (so the first kept rows see the real preceding
    stimulus and nothing leaks across stories); rows are trimmed (features and targets);
    the design matrix is cast to ``dtype`` and z-scored per column, the responses
    optionally z-scored per voxel (both population std, constant columns -> 0).

    Parameters
    ----------
    features : mapping name -> space, or one space (named ``"features"``)
        A space is a DataArray with dims ``(time[, feature])`` (a ``layer`` dim of size 1
        is dropped) whose ``time`` coordinate holds the event times (a FeatureSet's
        ``features.sel(layer=...)``), or a tuple ``(values, event_times)``, or an array
        ``(n_events[, p])`` with ``event_times`` given. A DataArray with
        ``attrs["downsampled"]`` set (``precomputed`` features with ``downsampled=True``)
        is already one row per TR: it skips the downsampler (its times must be ``tr_times``).
    tr_times : (n_grid,) float
        The TR grid the features are computed on (the assembly's ``tr_times(story)``).
    targets : (n_tr, v) array (numpy or dask), or DataArray with a ``tr`` dim
        Responses of the story.
    event_times : (n_events,) float, optional
        Event times of a single array space.
    downsampler : Downsampler or method name, optional
        Default ``Downsampler()`` (lanczos).
    downsample_config : mapping, optional
        Per-call overrides of the downsampler (e.g. ``{"window": 3}``).
    delays : sequence of int
        FIR delays in TRs (:func:`scalenc.align.fir.fir`).
    trimming : TrimmingConfig, mapping or None
        Rows kept per split (LITcoder's ``trimming_config``). ``None``, or a config that
        sets none of ``split``'s four keys, aligns by the grid offset instead: features
        ``[grid_offset : grid_offset + n_tr]`` of the grid, targets whole.
    grid_offset : int
        Index in ``tr_times`` of the first response row (the assembly's ``grid_offset``).
    split : {"train", "test"}
    story : str, optional
        Named in error messages.
    zscore_features, zscore_targets : bool
        Z-score the trimmed design matrix / responses per column.
    dtype : str or numpy dtype
        dtype of the design matrix (cast before z-scoring).

    Returns
    -------
    X : DataArray (tr, feature)
        Delay-major columns as :func:`fir`; coordinates ``feature_space`` and ``delay``
        (on ``feature``), ``feature_name`` when the spaces name their columns, and
        ``tr_time`` (on ``tr``, the grid times of the kept rows).
    Y : (n, v), the trimmed (and optionally z-scored) ``targets``, same type as given.

    Raises
    ------
    ValueError
        Names the story and the row counts when features and targets do not line up.
    """
    if downsampler is None:
        downsampler = Downsampler()
    elif isinstance(downsampler, str):
        downsampler = Downsampler(downsampler)
    elif not isinstance(downsampler, Downsampler):
        raise TypeError(f"downsampler must be a Downsampler or a method name, got {type(downsampler).__name__}")
    if not isinstance(features, Mapping):
        features = {"features": features}
    grid = np.asarray(tr_times, dtype=np.float64)
    delays = validate_delays(delays)
    blocks, space_of_col, name_of_col, named = [], [], [], False
    for name, value in features.items():
        vals, times, names = _as_space(str(name), value, event_times)
        if isinstance(value, xr.DataArray) and value.attrs.get("downsampled"):  # already one row per TR
            if vals.shape[0] != len(grid) or not np.allclose(times, grid, rtol=0, atol=1e-6):
                raise ValueError(f"story {story!r}: feature space {name!r} is already downsampled but its "
                                 f"{vals.shape[0]} rows are not the {len(grid)}-row TR grid")
            ds = vals
        else:
            ds = np.asarray(downsampler.downsample(vals, times, grid, **dict(downsample_config or {})))
        ds = ds.reshape(len(grid), -1)
        blocks.append(ds)
        space_of_col += [str(name)] * ds.shape[1]
        named |= names is not None
        name_of_col += [str(x) for x in names] if names is not None else [f"{name}_{j}" for j in range(ds.shape[1])]
    Xs = fir(np.concatenate(blocks, axis=1), delays)
    rows = np.arange(len(grid))
    trim = None if trimming is None else (trimming if isinstance(trimming, TrimmingConfig)
                                          else TrimmingConfig.from_dict(trimming))
    if trim is None or _split_is_unset(trim, split):
        n = targets.sizes["tr"] if isinstance(targets, xr.DataArray) else targets.shape[0]
        off = int(grid_offset)
        if off < 0 or off + n > len(grid):
            where = f"story {story!r}" if story is not None else "story"
            raise ValueError(f"{where} ({split}): {n} response rows from grid row {off} do not fit the "
                             f"{len(grid)}-row feature grid; set the trimming config")
        X, Y, kept = Xs[off:off + n], targets, rows[off:off + n]
    else:
        X, Y = trim_story(Xs, targets, trim, split, story=story)
        kept = rows[trim.slices(split)[0]]
    validate_delays(delays, kept=kept, n_rows=len(grid), story=story)
    X = np.asarray(X).astype(dtype)
    if zscore_features:
        X = zscore(X)
    if zscore_targets:
        Y = zscore(Y)
    p = len(space_of_col)
    coords = {"feature_space": ("feature", np.tile(space_of_col, len(delays))),
              "delay": ("feature", np.repeat(np.asarray(delays, dtype=np.int64), p)),
              "tr_time": ("tr", grid[kept])}
    if named:
        coords["feature_name"] = ("feature", np.tile(name_of_col, len(delays)))
    return xr.DataArray(X, dims=("tr", "feature"), coords=coords, name="X"), Y


def feature_space_slices(X: xr.DataArray) -> dict[str, tuple[int, int]]:
    """Column range ``(start, stop)`` of each feature space within one delay block of ``X``
    (the layout before FIR delays; delay ``k`` occupies columns ``k * p + start ...``)."""
    first = X["delay"].values == X["delay"].values[0]
    spaces = list(X["feature_space"].values[first])
    out: dict[str, tuple[int, int]] = {}
    for j, name in enumerate(spaces):
        start = out.get(name, (j, j))[0]
        out[name] = (start, j + 1)
    return out
