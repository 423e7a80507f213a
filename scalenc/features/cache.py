"""Multi-layer zarr cache of FeatureSets.

One entry per (extractor identity, stimulus digest) (:func:`~scalenc.features.base.cache_key`)::

    <cache_dir>/<key>.zarr
      attrs: scalenc_cache (format version), complete, meta (identity JSON, story),
             layers (labels), attrs of the FeatureSet and of its ``features``
      time (time) [, time_start (time)]
      layers/<i>/features (time, feature) float32     one group per layer

Layers are separate arrays and read lazily: asking for one layer of a 48-layer model
reads one group. Entries are written with plain file writes (each array one uncompressed
chunk, :func:`_write_array`), read back through zarr; hit or miss is a JSON read of the
root ``zarr.json``. An entry is written to a temporary directory and renamed into place
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
        return self._root_attrs(p) is not None

    @staticmethod
    def _root_attrs(p: Path) -> dict[str, Any] | None:
        """The attributes of a complete entry at ``p``, else None (a plain JSON read of the
        root ``zarr.json``: no zarr round trip to tell a hit from a miss)."""
        try:
            with open(p / "zarr.json", "rb") as f:
                meta = json.loads(f.read())
        except (OSError, ValueError):  # no entry, or an unreadable one: a miss
            return None
        attrs = meta.get("attributes") if isinstance(meta, dict) and meta.get("node_type") == "group" else None
        ok = isinstance(attrs, dict) and attrs.get("scalenc_cache") == CACHE_FORMAT and attrs.get("complete") is True
        return attrs if ok else None

    def keys(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.zarr") if self._complete(p))

    def store(self, key: str, fs: xr.Dataset, *, meta: Mapping[str, Any] | None = None) -> Path:
        """Write ``fs`` under ``key`` atomically (replacing an existing entry).

        The entry is a zarr v3 group written with plain file writes (one uncompressed
        chunk per array, see :func:`_write_array`): a few small files, no zarr round
        trips. Any zarr v3 reader reads it; :meth:`load` reads it through zarr."""
        self.root.mkdir(parents=True, exist_ok=True)
        F = fs["features"]
        with atomic_directory(self.path(key), overwrite=True) as tmp:
            _write_array(tmp / "time", np.asarray(fs["time"].values, dtype="<f8"), ["time"])
            if "time_start" in fs.coords:
                _write_array(tmp / "time_start", np.asarray(fs["time_start"].values, dtype="<f8"), ["time"])
            _write_group(tmp / "layers", {})
            values = F.values
            for i in range(F.sizes["layer"]):
                _write_group(tmp / "layers" / str(i), {})
                _write_array(tmp / "layers" / str(i) / "features", np.asarray(values[i], dtype="<f4"),
                             ["time", "feature"])
            labels = [v.item() if hasattr(v, "item") else v for v in fs["layer"].values]
            names = [str(x) for x in fs["feature"].values] if "feature" in fs.coords else None
            # the root's attributes last, with complete=True: an entry without it is never read
            _write_group(tmp, dict(scalenc_cache=CACHE_FORMAT, layers=labels, feature_names=names,
                                   meta=json.loads(json.dumps(dict(meta or {}), default=str)),
                                   fs_attrs=json.loads(json.dumps(dict(fs.attrs), default=str)),
                                   features_attrs=json.loads(json.dumps(dict(F.attrs), default=str)), complete=True))
        logger.debug("cached %s", self.path(key))
        return self.path(key)

    def stored(self, key: str, fs: xr.Dataset) -> xr.Dataset:
        """``fs`` as :meth:`load` returns it once stored under ``key`` (same coordinates,
        labels and attrs, after the JSON round trip of the attrs), but with the in-memory
        numpy arrays: what :meth:`FeatureExtractor.extract` returns after computing."""
        labels = json.loads(json.dumps([v.item() if hasattr(v, "item") else v for v in fs["layer"].values],
                                       default=str))
        names = [str(x) for x in fs["feature"].values] if "feature" in fs.coords else None
        return _feature_set(np.asarray(fs["features"].values, dtype=np.float32),
                            np.asarray(fs["time"].values, dtype=np.float64),
                            None if "time_start" not in fs.coords else np.asarray(fs["time_start"].values,
                                                                                    dtype=np.float64),
                            labels, names, json.loads(json.dumps(dict(fs.attrs), default=str)), key,
                            json.loads(json.dumps(dict(fs["features"].attrs), default=str)))

    def load(self, key: str, layers: list | None = None) -> xr.Dataset | None:
        """The cached FeatureSet (lazy dask arrays), or None on a miss."""
        p = self.path(key)
        attrs = self._root_attrs(p)
        if attrs is None:
            return None
        import dask.array as da

        g = zarr.open_group(str(p), mode="r")
        labels = list(attrs["layers"])
        pick = range(len(labels)) if layers is None else [labels.index(lay) for lay in layers]
        stack = da.stack([da.from_zarr(g[f"layers/{i}/features"]) for i in pick])
        time_start = g["time_start"][...] if "time_start" in g else None
        return _feature_set(stack, g["time"][...], time_start, [labels[i] for i in pick],
                            attrs.get("feature_names"), attrs.get("fs_attrs", {}), key, attrs.get("features_attrs", {}))

    def meta(self, key: str) -> dict[str, Any]:
        attrs = self._root_attrs(self.path(key))
        if attrs is None:
            return dict(zarr.open_group(str(self.path(key)), mode="r").attrs.get("meta", {}))
        return dict(attrs.get("meta", {}))

    def clean(self) -> int:
        """Remove leftovers of interrupted writes and incomplete entries; return how many."""
        n = 0
        for p in list(self.root.glob(".*.tmp-*")) + [q for q in self.root.glob("*.zarr") if not self._complete(q)]:
            shutil.rmtree(p, ignore_errors=True)
            n += 1
        return n


def _feature_set(features, time, time_start, labels: list, feature_names, fs_attrs: Mapping[str, Any],
                 key: str, features_attrs: Mapping[str, Any] | None = None) -> xr.Dataset:
    """The FeatureSet of a cache entry (from the entry's arrays, or from memory)."""
    coords: dict[str, Any] = {"time": ("time", time), "layer": ("layer", labels)}
    if time_start is not None:
        coords["time_start"] = ("time", time_start)
    if feature_names is not None:
        coords["feature"] = ("feature", list(feature_names))
    ds = xr.Dataset({"features": (("layer", "time", "feature"), features, dict(features_attrs or {}))},
                    coords=coords)
    ds.attrs.update(fs_attrs)
    ds.attrs["cache_key"] = key
    return ds


def _write_json(path: Path, obj: Mapping[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=2))


def _write_group(path: Path, attributes: Mapping[str, Any]) -> None:
    """A zarr v3 group node at ``path`` (its ``zarr.json``)."""
    path.mkdir(exist_ok=True)
    _write_json(path / "zarr.json", {"attributes": dict(attributes), "zarr_format": 3, "node_type": "group"})


def _write_array(path: Path, a: np.ndarray, dims: list[str]) -> None:
    """A zarr v3 array node at ``path``: one chunk holding the whole array, little-endian,
    uncompressed (the ``bytes`` codec alone), chunk key ``c/0[/0...]``; an empty array
    has no chunk."""
    dtype = {np.dtype("<f4"): "float32", np.dtype("<f8"): "float64"}[a.dtype]
    path.mkdir()
    _write_json(path / "zarr.json", {
        "shape": list(a.shape), "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [max(1, n) for n in a.shape]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0, "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": {}, "dimension_names": list(dims), "zarr_format": 3, "node_type": "array",
        "storage_transformers": []})
    if a.size:
        chunk = path.joinpath("c", *["0"] * (a.ndim - 1))
        chunk.mkdir(parents=True)
        with open(chunk / "0", "wb") as f:
            np.ascontiguousarray(a).tofile(f)
