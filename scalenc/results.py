"""Per-voxel results as a labeled :class:`xarray.Dataset`, and a run's folder on disk.

The model (:meth:`scalenc.models.NestedCVModel.fit_dataset`) returns one Dataset over
``voxel``; the trainer stacks the fitted layers along ``layer`` and :func:`save` writes
it with ``to_zarr``. Variables (:data:`VARIABLES`):

    r             (layer, voxel)        test Pearson r (mean over outer folds without a test set)
    r2            (layer, voxel)        test R²
    alpha         (layer, voxel)        chosen ridge penalty (``alpha ||w||^2``)
    p, q          (layer, voxel)        p-value (method in ``attrs["pvalue_method"]``), BH q-value
    significant   (layer, voxel) bool   q <= ``attrs["alpha_fdr"]``
    r_fold        (layer, fold, voxel)  per outer fold r (outer-CV mode only)
    weights       (layer, feature, voxel) when saved; ``feature_space`` and ``delay`` coordinates
    intercept     (layer, voxel)        when the weights are saved
    noise_ceiling (voxel)               when known; its source in ``attrs["noise_ceiling_source"]``
    r_norm        (layer, voxel)        r / noise_ceiling (CC_norm), NaN below ``attrs["ceiling_threshold"]``
    solver outputs                      e.g. banded ``gamma, r2_split, r_split``; stacking
                                        ``stack_weight`` ... over (layer, space, voxel)

Settings and other scalars are attributes (``pvalue_method``, ``alpha_fdr``,
``feature_spaces`` as JSON, ``n_test``...). :func:`to_metrics` turns one layer into the
LITcoder tutorials' metrics dict.

Layout of ``<results_dir>/<run_name>/``::

    results.zarr     the Dataset above
    metrics.json     summary numbers per layer (median/mean r, n significant, ...)
    config.toml      the resolved configuration of the run
    report.png       r histogram; r vs noise ceiling; median r per layer; brain maps
    report.html      one self-contained interactive page: maps with a selector and threshold,
                     a voxel's values, per-layer curves, ROI table, config (scalenc.plot.report)
    maps/, export/   the maps as PNG, and as NIfTI / GIFTI / .npy with JSON sidecars

Everything is written to a temporary folder and renamed at the end, so a crash never
loses or half-writes results. This module is the data contract only: it imports nothing
above :mod:`scalenc.ridge.scoring`; the run engine (:func:`scalenc.engine.save_run`) draws
the report (``report.png``, ``report.html``, ``maps/``: :mod:`scalenc.plot.report`) after
the numbers are on disk, and prediction from saved weights is
:func:`scalenc.engine.predict`.
"""
from __future__ import annotations

import json
import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ._io import atomic_directory
from .ridge.scoring import fdr_bh

logger = logging.getLogger(__name__)

#: Dataset variable -> LITcoder metrics key
VARIABLES = {"r": "correlations", "r2": "r2_scores", "alpha": "best_alphas", "p": "p_values",
             "q": "corrected_p_values", "significant": "significant_mask", "r_fold": "fold_correlations",
             "noise_ceiling": "noise_ceiling", "r_norm": "normalized_correlations"}
PER_VOXEL = tuple(VARIABLES.values())


def _json_ready(obj):
    if isinstance(obj, Mapping):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist() if obj.size <= 16 else f"<array {obj.shape} {obj.dtype}>"
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def voxel_dataset(r, p, *, alpha, r2=None, alpha_fdr: float = 0.05, r_fold=None, weights=None, intercept=None,
                  attrs: Mapping[str, Any] | None = None) -> xr.Dataset:
    """The per-voxel results Dataset of one fit.

    Parameters
    ----------
    r, p, alpha : (n_voxels,) arrays
        Test r, its p-value, the chosen penalty. ``q`` and ``significant`` are derived
        (Benjamini–Hochberg at ``alpha_fdr``).
    r2 : (n_voxels,) array, optional
    r_fold : (n_folds, n_voxels) array, optional
    weights : (n_features, n_voxels) array or DataArray (feature, voxel), optional
    intercept : (n_voxels,) array, optional
    attrs : mapping, optional
        Scalars (settings) stored as attributes.
    """
    r = np.asarray(r, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if r.shape != p.shape:
        raise ValueError(f"r and p must have the same length, got {r.size} and {p.size}")
    significant, q = fdr_bh(p, alpha=alpha_fdr)
    data = {"r": ("voxel", r), "p": ("voxel", p), "q": ("voxel", q), "significant": ("voxel", significant),
            "alpha": ("voxel", np.asarray(alpha, dtype=np.float64).ravel())}
    if r2 is not None:
        data["r2"] = ("voxel", np.asarray(r2, dtype=np.float64).ravel())
    if r_fold is not None:
        data["r_fold"] = (("fold", "voxel"), np.asarray(r_fold, dtype=np.float64))
    ds = xr.Dataset(data, attrs={"alpha_fdr": float(alpha_fdr), **dict(attrs or {})})
    if weights is not None:
        ds["weights"] = weights if isinstance(weights, xr.DataArray) else (("feature", "voxel"), np.asarray(weights))
    if intercept is not None:
        ds["intercept"] = ("voxel", np.broadcast_to(np.asarray(intercept, dtype=np.float64), r.shape).copy())
    return ds


def _stat(func, r: np.ndarray) -> float:
    return float("nan") if r.size == 0 or np.all(np.isnan(r)) else float(func(r))


def to_metrics(ds: xr.Dataset) -> dict[str, Any]:
    """The LITcoder tutorials' metrics dict of one layer's results.

    Keys: ``median_score, mean_score, std_score, min_score, max_score`` (NaN voxels
    ignored, std with ddof=0), ``correlations, p_values, corrected_p_values,
    significant_mask, n_significant, percent_significant, best_alphas`` and, when present,
    ``r2_scores, fold_correlations, noise_ceiling, noise_ceiling_source, pvalue_method``.
    """
    if "layer" in ds.dims:
        if ds.sizes["layer"] != 1:
            raise ValueError(f"to_metrics takes one layer; select one of {list(ds['layer'].values)}")
        ds = ds.isel(layer=0)
    r = np.asarray(ds["r"].values, dtype=np.float64)
    sig = np.asarray(ds["significant"].values, dtype=bool)
    out: dict[str, Any] = {
        "median_score": _stat(np.nanmedian, r), "mean_score": _stat(np.nanmean, r),
        "std_score": _stat(np.nanstd, r), "min_score": _stat(np.nanmin, r), "max_score": _stat(np.nanmax, r),
    }
    for var, key in VARIABLES.items():
        if var in ds:
            out[key] = np.asarray(ds[var].values)
    out["n_significant"] = int(sig.sum())
    out["percent_significant"] = 100.0 * out["n_significant"] / r.size if r.size else float("nan")
    for key in ("pvalue_method", "noise_ceiling_source"):
        if key in ds.attrs:
            out[key] = ds.attrs[key]
    return out


def from_metrics(metrics: Mapping[str, Any], weights=None, *, alpha_fdr: float = 0.05) -> xr.Dataset:
    """The results Dataset of a metrics dict (for models that only return LITcoder's dict)."""
    missing = [k for k in ("correlations", "p_values", "best_alphas") if k not in metrics]
    if missing:
        raise ValueError(f"the model's metrics lack {missing}")
    attrs = {k: metrics[k] for k in ("pvalue_method",) if k in metrics}
    ds = voxel_dataset(metrics["correlations"], metrics["p_values"], alpha=metrics["best_alphas"],
                       r2=metrics.get("r2_scores"), r_fold=metrics.get("fold_correlations"),
                       alpha_fdr=alpha_fdr, weights=weights, attrs=attrs)
    for key, var in (("corrected_p_values", "q"), ("significant_mask", "significant")):
        if key in metrics:  # keep the model's own correction
            ds[var] = ("voxel", np.asarray(metrics[key]))
    if metrics.get("noise_ceiling") is not None:
        ds["noise_ceiling"] = ("voxel", np.asarray(metrics["noise_ceiling"], dtype=np.float64))
    return ds


def summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Scalar part of a metrics dict (what goes to metrics.json and the loggers)."""
    out = {}
    for k, v in metrics.items():
        if k in PER_VOXEL:
            continue
        if isinstance(v, (int, float, np.integer, np.floating, str, bool)):
            out[k] = _json_ready(v)
    if metrics.get("noise_ceiling") is not None:
        out["median_noise_ceiling"] = float(np.nanmedian(np.asarray(metrics["noise_ceiling"], float)))
    if metrics.get("normalized_correlations") is not None:  # r / ceiling over the voxels with a ceiling
        rn = np.asarray(metrics["normalized_correlations"], float)
        out["median_r_norm"] = float(np.nanmedian(rn)) if np.isfinite(rn).any() else float("nan")
        out["n_ceiling_voxels"] = int(np.isfinite(rn).sum())
    return out


def layer_metrics(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """``{layer label: metrics dict}`` of a results Dataset with a ``layer`` dim."""
    return {str(lay): to_metrics(ds.sel(layer=[lay])) for lay in ds["layer"].values}


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def to_toml(config: Mapping[str, Any]) -> str:
    """Minimal TOML writer for the resolved configuration: scalars and lists, tables of
    them, arrays of tables (``[[extractors]]``, with a nested ``config`` table). ``None``
    values and empty tables are left out."""
    lines, tables = [], []
    for k, v in config.items():
        if isinstance(v, Mapping):
            tables.append((k, v))
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, Mapping) for x in v):
            tables.extend((f"[{k}]", x) for x in v)
        elif v is not None:
            lines.append(f"{k} = {_toml_value(v)}")
    for name, table in tables:
        plain = {k: v for k, v in table.items() if v is not None and not isinstance(v, Mapping)}
        nested = {k: v for k, v in table.items() if isinstance(v, Mapping)}
        if not plain and not nested and not name.startswith("["):
            continue
        lines += ["", f"[{name}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in plain.items()]
        for sub, vals in nested.items():
            vals = {k: v for k, v in vals.items() if v is not None}
            if vals:
                lines += [f"[{name.strip('[]')}.{sub}]"] + [f"{k} = {_toml_value(v)}" for k, v in vals.items()]
    return "\n".join(lines) + "\n"


def save(run_dir: str | os.PathLike, results: xr.Dataset, *, config: Mapping[str, Any] | None = None,
         overwrite: bool = True) -> Path:
    """Write a run's results atomically; return the run folder.

    Parameters
    ----------
    results : Dataset
        Per-voxel results with a ``layer`` dim (see the module docstring); a Dataset
        without one is saved as layer ``"0"``.
    config : mapping, optional
        The resolved configuration, written to ``config.toml``.
    overwrite : bool
        Replace an existing run folder.
    """
    run_dir = Path(run_dir)
    if "layer" not in results.dims:
        results = results.expand_dims(layer=["0"])
    results = results.assign_coords(layer=[str(x) for x in results["layer"].values])
    # strings as variable-length (zarr v3 has no fixed-length unicode type)
    results = results.assign_coords({k: c.astype(object) for k, c in results.coords.items() if c.dtype.kind == "U"})
    with atomic_directory(run_dir, overwrite=overwrite) as tmp:
        results.to_zarr(str(tmp / "results.zarr"), mode="w", consolidated=False)
        metrics_json = {"layers": {k: summary(m) for k, m in layer_metrics(results).items()},
                        "pvalue_method": results.attrs.get("pvalue_method")}
        (tmp / "metrics.json").write_text(json.dumps(_json_ready(metrics_json), indent=1))
        if config is not None:
            (tmp / "config.toml").write_text(to_toml(config))
    return run_dir


class Results:
    """A saved run, read back lazily (:func:`load`).

    Attributes
    ----------
    dataset : Dataset
        The per-voxel results (``layer``, ``voxel`` dims), dask-backed.
    metrics : dict
        ``metrics.json``.
    config : dict
        ``config.toml`` (empty when absent).
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir)
        z = self.path / "results.zarr"
        if not z.exists():
            raise FileNotFoundError(f"{z} not found: is {self.path} a scalenc run folder?")
        self.dataset = xr.open_zarr(str(z), consolidated=False)
        self.metrics = json.loads((self.path / "metrics.json").read_text())
        cfg = self.path / "config.toml"
        self.config = tomllib.loads(cfg.read_text()) if cfg.exists() else {}

    @property
    def layers(self) -> list[str]:
        return [str(x) for x in self.dataset["layer"].values]

    @property
    def feature_spaces(self) -> dict[str, tuple[int, int]]:
        return {k: tuple(v) for k, v in json.loads(self.dataset.attrs.get("feature_spaces", "{}")).items()}

    def layer(self, layer=None) -> xr.Dataset:
        """Per-voxel results of one layer (default: the first), without the ``layer`` dim."""
        name = self.layers[0] if layer is None else str(layer)
        if name not in self.layers:
            raise KeyError(f"layer {layer!r} not in results; layers: {self.layers}")
        return self.dataset.sel(layer=name, drop=True)

    @property
    def best_layer(self) -> str:
        """The layer with the highest median r (the one ``train()`` reports)."""
        meds = {k: v.get("median_score") for k, v in self.metrics.get("layers", {}).items()}
        meds = {k: (-np.inf if v is None else v) for k, v in meds.items()}
        return max(meds, key=meds.get) if meds else self.layers[0]

    def to_metrics(self, layer=None) -> dict[str, Any]:
        """The tutorials' metrics dict of one layer (default: the first)."""
        return to_metrics(self.layer(layer).load())

    @property
    def noise_ceiling(self) -> np.ndarray | None:
        return self.dataset["noise_ceiling"].values if "noise_ceiling" in self.dataset else None

    def __repr__(self) -> str:
        return f"<scalenc.Results {self.path} layers={self.layers}>"


def load(run_dir: str | os.PathLike) -> Results:
    """Read a run folder written by :func:`save` (or by the trainer)."""
    return Results(run_dir)
