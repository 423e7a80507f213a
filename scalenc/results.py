"""Results of a run on disk: ``results.zarr``, ``metrics.json``, ``config.toml``, ``report.png``.

Layout of ``<results_dir>/<run_name>/``::

    results.zarr     per layer (group ``layer_<label>``): correlation, r2, alpha, p_value,
                     q_value, significant (voxel) and, when saved, weights (feature, voxel);
                     noise_ceiling (voxel) at the root when known; attrs: feature spaces
    metrics.json     summary numbers per layer (median/mean r, n significant, ...)
    config.toml      the resolved configuration of the run
    report.png       r histogram; r vs noise ceiling; median r per layer; brain maps
    report.html      all figures (maps/*.png) and summary numbers (scalenc.plot.report)

Everything is written to a temporary folder and renamed at the end, so a crash (a
plotting error included) never loses or half-writes results: the report is drawn after
the numbers are safely on disk, and a plotting failure is logged, not raised.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ._io import atomic_directory

logger = logging.getLogger(__name__)

PER_VOXEL = ("correlations", "r2_scores", "best_alphas", "p_values", "corrected_p_values", "significant_mask")
_ZARR_NAMES = {"correlations": "correlation", "r2_scores": "r2", "best_alphas": "alpha", "p_values": "p_value",
               "corrected_p_values": "q_value", "significant_mask": "significant"}


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


def summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Scalar part of a metrics dict (what goes to metrics.json and the loggers)."""
    out = {}
    for k, v in metrics.items():
        if k in PER_VOXEL or k in ("noise_ceiling", "fold_correlations"):
            continue
        if isinstance(v, (int, float, np.integer, np.floating, str, bool)):
            out[k] = _json_ready(v)
    if "noise_ceiling" in metrics and metrics["noise_ceiling"] is not None:
        nc = np.asarray(metrics["noise_ceiling"], float)
        out["median_noise_ceiling"] = float(np.nanmedian(nc))
    return out


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
    """Minimal TOML writer for the resolved configuration (tables of scalars and lists;
    ``None`` values are left out)."""
    lines, tables = [], []
    for k, v in config.items():
        if isinstance(v, Mapping):
            tables.append((k, v))
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, Mapping) for x in v):
            tables.extend((f"[{k}]", x) for x in v)
        elif v is not None:
            lines.append(f"{k} = {_toml_value(v)}")
    for name, table in tables:
        head = f"[{name}]" if not name.startswith("[") else f"[{name}]"
        lines += ["", head]
        for k, v in table.items():
            if v is not None and not isinstance(v, Mapping):
                lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def save(run_dir: str | os.PathLike, layer_metrics: Mapping[Any, Mapping[str, Any]], *,
         config: Mapping[str, Any] | None = None, weights: Mapping[Any, np.ndarray] | None = None,
         feature_spaces: Mapping[str, tuple[int, int]] | None = None, noise_ceiling=None,
         voxel_coords: Mapping[str, np.ndarray] | None = None, overwrite: bool = True) -> Path:
    """Write a run's results atomically; return the run folder.

    Parameters
    ----------
    layer_metrics : dict layer -> metrics
        As returned by the model's ``fit_predict`` (one entry per fitted layer).
    weights : dict layer -> (n_features, n_voxels), optional
    feature_spaces : dict name -> (first column, end column), optional
    noise_ceiling : (n_voxels,) array, optional
    voxel_coords : dict name -> (n_voxels,) array, optional (e.g. voxel index, mask_indices)
    """
    run_dir = Path(run_dir)
    with atomic_directory(run_dir, overwrite=overwrite) as tmp:
        tree = {}
        for layer, m in layer_metrics.items():
            data = {}
            for key, name in _ZARR_NAMES.items():
                if key in m and m[key] is not None:
                    data[name] = ("voxel", np.asarray(m[key]))
            if weights is not None and layer in weights and weights[layer] is not None:
                data["weights"] = (("feature", "voxel"), np.asarray(weights[layer], np.float32))
            tree[f"layer_{layer}"] = xr.Dataset(data, attrs={"layer": str(layer)})
        root = xr.Dataset(coords={k: ("voxel", np.asarray(v)) for k, v in (voxel_coords or {}).items()})
        if noise_ceiling is not None:
            root["noise_ceiling"] = ("voxel", np.asarray(noise_ceiling, float))
        root.attrs["layers"] = [str(k) for k in layer_metrics]
        root.attrs["feature_spaces"] = json.dumps({k: list(v) for k, v in (feature_spaces or {}).items()})
        dt = xr.DataTree.from_dict({"/": root, **{k: v for k, v in tree.items()}})
        dt.to_zarr(str(tmp / "results.zarr"), mode="w", consolidated=False)
        metrics_json = {"layers": {str(k): summary(m) for k, m in layer_metrics.items()}}
        (tmp / "metrics.json").write_text(json.dumps(_json_ready(metrics_json), indent=1))
        if config is not None:
            (tmp / "config.toml").write_text(to_toml(config))
    try:
        report(run_dir)
    except Exception as e:  # noqa: BLE001 - results are saved; a plot must not lose them
        logger.warning("could not draw %s/report.png (%s); results are saved", run_dir, e)
    return run_dir


class Results:
    """A saved run, read back lazily (:func:`load`)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir)
        z = self.path / "results.zarr"
        if not z.exists():
            raise FileNotFoundError(f"{z} not found: is {self.path} a scalenc run folder?")
        self.tree = xr.open_datatree(str(z), engine="zarr", consolidated=False, chunks={})
        self.metrics = json.loads((self.path / "metrics.json").read_text())
        cfg = self.path / "config.toml"
        if cfg.exists():
            import tomllib

            self.config = tomllib.loads(cfg.read_text())
        else:
            self.config = {}

    @property
    def layers(self) -> list[str]:
        return list(self.tree.attrs.get("layers", []))

    @property
    def feature_spaces(self) -> dict[str, tuple[int, int]]:
        return {k: tuple(v) for k, v in json.loads(self.tree.attrs.get("feature_spaces", "{}")).items()}

    def layer(self, layer=None) -> xr.Dataset:
        """Per-voxel results of one layer (default: the first)."""
        name = self.layers[0] if layer is None else str(layer)
        if name not in self.layers:
            raise KeyError(f"layer {layer!r} not in results; layers: {self.layers}")
        return self.tree[f"layer_{name}"].to_dataset()

    @property
    def noise_ceiling(self) -> np.ndarray | None:
        root = self.tree.to_dataset()
        return root["noise_ceiling"].values if "noise_ceiling" in root else None

    def __repr__(self) -> str:
        return f"<scalenc.Results {self.path} layers={self.layers}>"


def load(run_dir: str | os.PathLike) -> Results:
    """Read a run folder written by :func:`save` (or by the trainer)."""
    return Results(run_dir)


def report(run_dir: str | os.PathLike) -> Path:
    """Draw the run's report (``report.png``: r histogram, r vs ceiling, median r per layer,
    ROI medians and brain maps; ``maps/``, ``report.html``): see :mod:`scalenc.plot.report`."""
    from .plot.report import report as draw_report

    return draw_report(run_dir)
