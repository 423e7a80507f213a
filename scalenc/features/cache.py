"""Multi-layer zarr cache of FeatureSets.

One entry per (extractor identity, stimulus digest) (:func:`~scalenc.features.base.cache_key`)::

    <cache_dir>/<key>.zarr
      attrs: scalenc_cache (format version), complete, meta (identity JSON, story),
             layers (labels), attrs of the FeatureSet
      time (time) [, time_start (time)]
      layers/<i>/features (time, feature) float32     one group per layer

Layers are separate arrays and read lazily: asking for one layer of a 48-layer model
reads one group. An entry is written to a temporary directory and renamed into place
when complete, so an interrupted write never leaves an entry a later run would read;
a temporary leftover from a killed process is ignored (and removed by :meth:`clean`).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from .._io import atomic_directory

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1


class FeatureCache:
    """A folder of cached FeatureSets.

    Parameters
    ----------
    root : path-like
        The cache folder (created on first write).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.zarr"

    def __contains__(self, key: str) -> bool:
        return self._complete(self.path(key))

    def _complete(self, p: Path) -> bool:
        if not p.is_dir():
            return False
        try:
            attrs = zarr.open_group(str(p), mode="r").attrs
        except Exception:  # noqa: BLE001 - unreadable entry: treat as a miss
            return False
        return attrs.get("scalenc_cache") == CACHE_FORMAT and attrs.get("complete") is True

    def keys(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.zarr") if self._complete(p))

    def store(self, key: str, fs: xr.Dataset, *, meta: Mapping[str, Any] | None = None) -> Path:
        """Write ``fs`` under ``key`` atomically (replacing an existing entry)."""
        self.root.mkdir(parents=True, exist_ok=True)
        F = fs["features"]
        with atomic_directory(self.path(key), overwrite=True) as tmp:
            g = zarr.open_group(str(tmp), mode="w", zarr_format=3)
            t = g.create_array("time", shape=(fs.sizes["time"],), dtype="f8", dimension_names=["time"],
                               chunks=(max(1, fs.sizes["time"]),))
            t[...] = fs["time"].values
            if "time_start" in fs.coords:
                ts = g.create_array("time_start", shape=(fs.sizes["time"],), dtype="f8",
                                    dimension_names=["time"], chunks=(max(1, fs.sizes["time"]),))
                ts[...] = fs["time_start"].values
            lg = g.create_group("layers")
            for i in range(F.sizes["layer"]):
                a = np.asarray(F.isel(layer=i).values, dtype=np.float32)
                arr = lg.create_group(str(i)).create_array(
                    "features", shape=a.shape, dtype="f4", dimension_names=["time", "feature"],
                    chunks=tuple(max(1, n) for n in a.shape))
                arr[...] = a
            labels = [v.item() if hasattr(v, "item") else v for v in fs["layer"].values]
            names = [str(x) for x in fs["feature"].values] if "feature" in fs.coords else None
            g.attrs.update(dict(scalenc_cache=CACHE_FORMAT, layers=labels, feature_names=names,
                                meta=json.loads(json.dumps(dict(meta or {}), default=str)),
                                fs_attrs=json.loads(json.dumps(dict(fs.attrs), default=str))))
            g.attrs["complete"] = True  # last: an entry without it is never read
        logger.debug("cached %s", self.path(key))
        return self.path(key)

    def load(self, key: str, layers: list | None = None) -> xr.Dataset | None:
        """The cached FeatureSet (lazy dask arrays), or None on a miss."""
        p = self.path(key)
        if not self._complete(p):
            return None
        import dask.array as da

        g = zarr.open_group(str(p), mode="r")
        labels = list(g.attrs["layers"])
        pick = range(len(labels)) if layers is None else [labels.index(lay) for lay in layers]
        stack = da.stack([da.from_zarr(g[f"layers/{i}/features"]) for i in pick])
        coords: dict[str, Any] = {"time": ("time", g["time"][...]), "layer": ("layer", [labels[i] for i in pick])}
        if "time_start" in g:
            coords["time_start"] = ("time", g["time_start"][...])
        if g.attrs.get("feature_names") is not None:
            coords["feature"] = ("feature", list(g.attrs["feature_names"]))
        ds = xr.Dataset({"features": (("layer", "time", "feature"), stack)}, coords=coords)
        ds.attrs.update(g.attrs.get("fs_attrs", {}))
        ds.attrs["cache_key"] = key
        return ds

    def meta(self, key: str) -> dict[str, Any]:
        return dict(zarr.open_group(str(self.path(key)), mode="r").attrs.get("meta", {}))

    def clean(self) -> int:
        """Remove leftovers of interrupted writes and incomplete entries; return how many."""
        n = 0
        for p in list(self.root.glob(".*.tmp-*")) + [q for q in self.root.glob("*.zarr") if not self._complete(q)]:
            shutil.rmtree(p, ignore_errors=True)
            n += 1
        return n
