"""Feature extractors: the common protocol and the FeatureSet.

A **FeatureSet** is an :class:`xarray.Dataset` for one story::

    features  (layer, time, feature) float32
    time      (time)  float64 seconds: when each feature row happened (a word's midpoint,
                      a window's end...), so downsampling needs no other input
    layer     (layer) layer labels (ints for model layers, 0 for single-layer features)
    time_start (time) optional, the start of each row's window (speech)
    attrs:    extractor, model, story, feature_space

An extractor computes *all* its layers in one pass (:meth:`FeatureExtractor.compute`);
:meth:`FeatureExtractor.extract` goes through the zarr cache (``cache_dir``) keyed by the
extractor's config, the model's identity and a digest of the stimulus, and returns the
requested layers: read lazily from the cache on a hit; on a miss, as just computed and
stored (in memory up to :data:`IN_MEMORY_MAX_BYTES`, else read back lazily).
"""
from __future__ import annotations

import abc
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import xarray as xr

logger = logging.getLogger(__name__)

#: a FeatureSet computed on a cache miss is returned in memory up to this size (bytes of
#: ``features``); a bigger one is read back lazily from the entry just written
IN_MEMORY_MAX_BYTES = 16 << 20


class FeatureError(ValueError):
    """Bad extractor configuration or output; the message names the key/story."""


def make_feature_set(features, times, *, layers: Sequence | None = None, story: str = "", extractor: str = "",
                     model: str = "", feature_space: str | None = None, time_start=None,
                     feature_names: Sequence[str] | None = None,
                     attrs: Mapping[str, Any] | None = None) -> xr.Dataset:
    """Build and validate a FeatureSet.

    Parameters
    ----------
    features : (n_layers, n_times, n_features) or (n_times, n_features) array
    times : (n_times,) float
        Seconds, non-decreasing.
    layers : sequence, optional
        Labels of the layers (default ``range(n_layers)``).
    time_start : (n_times,) float, optional
        Window starts (speech features).
    feature_names : (n_features,) str, optional
        Names of the feature columns (a ``feature`` coordinate, kept by the cache).
    """
    F = np.asarray(features, dtype=np.float32)
    if F.ndim == 2:
        F = F[None]
    if F.ndim != 3:
        raise FeatureError(f"story {story!r}: features must be (layer, time, feature), got shape {F.shape}")
    t = np.asarray(times, dtype=np.float64)
    if t.shape != (F.shape[1],):
        raise FeatureError(f"story {story!r}: {F.shape[1]} feature rows but {t.size} times")
    if not np.all(np.isfinite(t)):
        raise FeatureError(f"story {story!r}: feature times contain NaN/inf")
    if t.size > 1 and np.any(np.diff(t) < 0):
        i = int(np.argmax(np.diff(t) < 0))
        raise FeatureError(f"story {story!r}: feature times go back in time at row {i + 1} ({t[i + 1]} < {t[i]})")
    if not np.all(np.isfinite(F)):
        raise FeatureError(f"story {story!r}: features of {extractor or 'extractor'} contain NaN/inf")
    layers = list(range(F.shape[0])) if layers is None else list(layers)
    if len(layers) != F.shape[0]:
        raise FeatureError(f"story {story!r}: {F.shape[0]} layers but {len(layers)} layer labels")
    coords: dict[str, Any] = {"time": ("time", t), "layer": ("layer", np.asarray(layers))}
    if time_start is not None:
        ts = np.asarray(time_start, dtype=np.float64)
        if ts.shape != t.shape:
            raise FeatureError(f"story {story!r}: time_start has {ts.size} values for {t.size} rows")
        coords["time_start"] = ("time", ts)
    if feature_names is not None:
        if len(feature_names) != F.shape[2]:
            raise FeatureError(f"story {story!r}: {len(feature_names)} feature names for {F.shape[2]} features")
        coords["feature"] = ("feature", [str(n) for n in feature_names])
    ds = xr.Dataset({"features": (("layer", "time", "feature"), F)}, coords=coords)
    ds.attrs.update(dict(extractor=extractor, model=model, story=story,
                         feature_space=feature_space or extractor, **dict(attrs or {})))
    return ds


def word_table(assembly, story: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(word, start, end)`` arrays of ``story``: :meth:`Assembly.word_table
    <scalenc.assembly.Assembly.word_table>` (words read once per assembly) where the
    assembly has it, else from its ``words(story)`` Dataset (any object with ``words``)."""
    fn = getattr(assembly, "word_table", None)
    if fn is not None:
        return fn(story)
    w = assembly.words(story)
    return (np.asarray([str(x) for x in w["word"].values], dtype=object), np.asarray(w["start"].values),
            np.asarray(w["end"].values))


def stimulus_digest(assembly, story: str, *, audio: bool = False) -> str:
    """sha256 of what an extractor sees of a story: the words and their times, or the
    bytes of the audio file."""
    h = hashlib.sha256()
    if audio:
        path = assembly.audio_path(story)
        if path is None:
            raise FeatureError(f"story {story!r} has no audio_path (set assembly.story_data[{story!r}].audio_path)")
        p = Path(path)
        if not p.exists():
            raise FeatureError(f"story {story!r}: audio file {p} not found")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return "audio:" + h.hexdigest()
    word, start, end = word_table(assembly, story)
    h.update("\x1f".join(str(x) for x in word).encode("utf-8"))
    h.update(np.ascontiguousarray(start, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(end, dtype="<f8").tobytes())
    return "words:" + h.hexdigest()


def path_identity(path: str | os.PathLike, *, content: bool = False) -> dict[str, Any]:
    """Identity of model files: the resolved path and, for every file below it, its
    relative name, size and mtime (``content=True``: a sha256 of the bytes instead).

    Any change of weights (a new checkpoint saved to the same folder) changes it."""
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise FeatureError(f"model path {p} does not exist")
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        if content:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        else:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return {"path": str(p), "files": len(files), "digest": h.hexdigest()}


def _canonical(obj) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (Path, os.PathLike)):
        return str(obj)
    return obj


def cache_key(identity: Mapping[str, Any], stimulus: str) -> str:
    """Hex key of a cache entry: sha256 of the canonical JSON of the identity + stimulus digest."""
    blob = json.dumps({"identity": _canonical(identity), "stimulus": stimulus}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class FeatureExtractor(abc.ABC):
    """Base class of all extractors.

    Subclasses set ``modality``, ``defaults`` (every accepted config key with its default)
    and implement :meth:`compute` (all layers of one story) and :meth:`identity`.

    Parameters
    ----------
    model_name : str, optional
        Model path or name, where the modality has a model.
    config : dict, optional
        Extractor settings; unknown keys are an error listing the accepted ones.
    cache_dir : path-like, optional
        Root of the feature cache; without it nothing is cached.
    """

    modality: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    #: accepted types per key where the default's type is not enough (e.g. int | list | "all")
    types: ClassVar[dict[str, tuple[type, ...]]] = {}
    uses_audio: ClassVar[bool] = False
    needs_gpu: ClassVar[bool] = False

    def __init__(self, model_name: str | None = None, config: Mapping[str, Any] | None = None,
                 cache_dir: str | os.PathLike | None = None):
        self.model_name = model_name
        self.config = self.validate_config(dict(config or {}))
        self.cache_dir = None if cache_dir is None else Path(cache_dir)

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Fill defaults; refuse unknown keys and values of the wrong type."""
        unknown = sorted(set(config) - set(cls.defaults))
        if unknown:
            raise FeatureError(f"{cls.modality} extractor: unknown config key(s) {unknown}; "
                               f"accepted: {sorted(cls.defaults)}")
        out = dict(cls.defaults)
        for k, v in config.items():
            ok = cls.types.get(k) or _accepted_types(cls.defaults[k])
            if ok is not None and v is not None and (not isinstance(v, ok) or (isinstance(v, bool)
                                                                               and bool not in ok)):
                raise FeatureError(f"{cls.modality} extractor: config key {k!r} must be "
                                   f"{' or '.join(t.__name__ for t in ok)}, got {type(v).__name__} ({v!r})")
            out[k] = v
        return out

    @abc.abstractmethod
    def compute(self, assembly, story: str) -> xr.Dataset:
        """All layers of ``story`` as a FeatureSet (no cache)."""

    def identity(self) -> dict[str, Any]:
        """What determines the output besides the stimulus: class, modality, config, model."""
        return {"extractor": type(self).__name__, "modality": self.modality, "model": self.model_name,
                "config": {k: v for k, v in self.config.items() if k not in self.no_cache_keys()}}

    def no_cache_keys(self) -> set[str]:
        """Config keys that do not change the output (batch size, device, layer choice)."""
        return {"batch_size", "device", "strict_device", "layer_idx", "layer"}

    def stimulus(self, assembly, story: str) -> str:
        return stimulus_digest(assembly, story, audio=self.uses_audio)

    def layer_labels(self, selection, available=None) -> list | None:
        """FeatureSet layer labels of a layer selection given in the tutorial API (the
        config's ``layer_idx``/``layer``, the trainer's ``layer_idx``); None: all.

        Here the selection is the labels themselves; the speech extractor maps LITcoder's
        numbering (:func:`scalenc.features.speech.litcoder_layer_labels`).
        ``available``: the FeatureSet's labels, where known."""
        if selection is None or (isinstance(selection, str) and selection == "all"):
            return None
        return list(selection) if isinstance(selection, (list, tuple)) else [selection]

    def selected_layers(self, available=None) -> list | None:
        """Layers returned by :meth:`extract` (None: all)."""
        return self.layer_labels(self.config.get("layer_idx", self.config.get("layer")), available)

    def extract(self, assembly, story: str, *, layers=None, rebuild: bool = False) -> xr.Dataset:
        """FeatureSet of ``story`` (through the cache when ``cache_dir`` is set).

        Parameters
        ----------
        layers : label or list, optional
            Layers to return (default: the config's ``layer_idx``/``layer``, else all).
        rebuild : bool
            Recompute even if cached (and replace the entry).
        """
        layers = self.selected_layers() if layers is None else (
            list(layers) if isinstance(layers, (list, tuple)) else [layers])
        if self.cache_dir is None:
            fs = self.compute(assembly, story)
        else:
            from .cache import FeatureCache

            cache = FeatureCache(self.cache_dir)
            identity = self.identity()
            key = cache_key(identity, self.stimulus(assembly, story))
            fs = None if rebuild else cache.load(key)
            if fs is None:
                fs = self.compute(assembly, story)
                cache.store(key, fs, meta={"identity": identity, "story": story})
                # a small result is returned as computed (what a load would give, in memory);
                # a big one (many layers) is read back lazily so that memory stays bounded
                fs = cache.stored(key, fs) if fs["features"].nbytes <= IN_MEMORY_MAX_BYTES else cache.load(key)
            else:
                logger.info("%s: story %s read from cache %s", self.modality, story, key)
        return select_layers(fs, layers)


def select_layers(fs: xr.Dataset, layers) -> xr.Dataset:
    """The FeatureSet restricted to ``layers`` (labels; negative ints count from the end)."""
    if layers is None:
        return fs
    labels = list(fs["layer"].values)
    idx = []
    for lay in layers:
        if lay in labels:
            idx.append(labels.index(lay))
        elif isinstance(lay, (int, np.integer)) and -len(labels) <= lay < 0:
            idx.append(len(labels) + int(lay))
        else:
            raise FeatureError(f"layer {lay!r} not available; layers: {labels}")
    return fs.isel(layer=idx)


def _accepted_types(default) -> tuple[type, ...] | None:
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, int):
        return (int, np.integer)
    if isinstance(default, float):
        return (int, float, np.integer, np.floating)
    if isinstance(default, str):
        return (str,)
    return None
