"""Features already on disk in the scaling-laws layout (modality ``"precomputed"``).

HuthLab's encoding-model-scaling-laws repository distributes its features, and its
``extract_speech_features.py`` writes them, as one folder per model::

    <model>/<story>.npz            key "features": (t, p), one row per window (final output)
    <model>/<story>_times.npz      key "times": (t, 2), each row's window [start, end] in s
    <model>/encoder.0/<story>.npz  key "features": (t, p), one folder per layer
    ...
    <model>/encoder.N/<story>.npz

:class:`PrecomputedExtractor` takes the model folder (``model_name``) and reads it:

- every layer folder (a subfolder holding ``<story>.npz`` files; the script's own
  ``stride_*`` and ``custom_stimuli`` subfolders are not layers) becomes a layer of one
  multi-layer FeatureSet, labelled with the folder's name, in numeric order
  (``encoder.2`` before ``encoder.10``); the model folder's own ``<story>.npz`` (the
  final output, a copy of the last layer for Whisper) is then not read. A folder with
  ``<story>.npz`` files and no layer folder is a single layer (label 0);
- the rows' times are the second column of ``<model>/<story>_times.npz`` (the first
  becomes ``time_start``); the assembly's downsampler then brings them to TRs, as for any
  feature;
- ``downsampled=True`` (the features hosted for download: one row per TR, no times
  file): each story's rows must number the story's TR grid (``assembly.tr_times``); the
  FeatureSet's times are that grid and its ``features`` carry ``attrs["downsampled"]``,
  which tells :func:`scalenc.align.align_story` to pass the rows through untouched.

Every layer folder must hold the same stories (checked when the extractor is made).
Errors name the story, the file or folder and the numbers. The cache identity is the
resolved folder and the layer names; each story's entry is keyed by the size and mtime of
the files it reads (:func:`~scalenc.features.base.path_identity`), and, with
``downsampled=True``, by the TR grid.

::

    ex = FeatureExtractorFactory.create_extractor(
        "precomputed", "features_cnk0.1_ctx16.0/whisper-tiny", {}, "cache")
"""
from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import xarray as xr

from .base import FeatureError, FeatureExtractor, make_feature_set, path_identity

logger = logging.getLogger(__name__)

__all__ = ["PrecomputedExtractor", "layer_folders"]

#: subfolders the reference script writes next to the layers that are not layers
_NOT_LAYERS = re.compile(r"^(stride_.*|custom_stimuli|\..*)$")


def _natural_key(name: str) -> list:
    """``encoder.10`` after ``encoder.9``: digit runs compare as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part]


def _stories(folder: Path) -> set[str]:
    return {f.name[:-4] for f in folder.iterdir()
            if f.is_file() and f.name.endswith(".npz") and not f.name.endswith("_times.npz")
            and not f.name.startswith(".")}


def layer_folders(root: Path) -> list[Path]:
    """The layer folders of a model folder, in numeric order (empty: a single-layer folder)."""
    dirs = [d for d in root.iterdir() if d.is_dir() and not _NOT_LAYERS.match(d.name) and _stories(d)]
    return sorted(dirs, key=lambda d: _natural_key(d.name))


def _head(names, k: int = 5) -> str:
    names = sorted(names)
    return ", ".join(names[:k]) + (f" ... ({len(names)} in all)" if len(names) > k else "")


def _read_npz(path: Path, key: str, story: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            if key not in z.files:
                raise FeatureError(f"precomputed features of story {story!r}: {path} has no key {key!r} "
                                   f"(keys: {sorted(z.files)})")
            return z[key]
    except FeatureError:
        raise
    except Exception as e:  # noqa: BLE001  (a truncated or foreign file)
        raise FeatureError(f"precomputed features of story {story!r}: cannot read {path} as .npz "
                           f"({type(e).__name__}: {e})") from e


def _checked(F: np.ndarray, path: Path, story: str) -> np.ndarray:
    if not np.issubdtype(F.dtype, np.number):
        raise FeatureError(f"precomputed features of story {story!r}: {path} holds {F.dtype}, not numbers")
    F = F.astype(np.float32, copy=False)
    bad = ~np.isfinite(F)
    if bad.any():
        raise FeatureError(f"precomputed features of story {story!r}: {path} has {int(bad.sum())} NaN/inf values "
                           f"(first at row {int(np.argwhere(bad)[0][0])})")
    return F


def _checked_times(t: np.ndarray, where, story: str) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    bad = ~np.isfinite(t)
    if bad.any():
        raise FeatureError(f"precomputed features of story {story!r}: {where} has {int(bad.sum())} NaN/inf times")
    back = np.diff(t) < 0
    if back.any():
        i = int(np.argmax(back)) + 1
        raise FeatureError(f"precomputed features of story {story!r}: times in {where} go backwards at row {i} "
                           f"({t[i]!r} after {t[i - 1]!r})")
    return t


class PrecomputedExtractor(FeatureExtractor):
    """Features read from a scaling-laws model folder; see the module docstring.

    Parameters
    ----------
    model_name : path-like
        The model folder (e.g. ``features_cnk0.1_ctx16.0/whisper-tiny``).
    config : dict
        ``downsampled`` (bool, default False): one row per TR, no times file;
        ``name`` (str, default the folder's name): the FeatureSet's ``feature_space``;
        ``layer`` (label, position or list, default "all"): the layers :meth:`extract`
        returns; an int that is not a label counts layer folders in order
        (``layer=3`` is ``encoder.3`` in the reference layout).
    cache_dir : path-like, optional

    Output
    ------
    FeatureSet ``features`` (layer, time, feature) float32, ``layer`` the folder names
    (0 for a single-layer folder), ``time`` each row's time (the TR grid when
    ``downsampled``), ``time_start`` the window starts where the times file has them.
    """

    modality: ClassVar[str] = "precomputed"
    defaults: ClassVar[dict[str, Any]] = {"downsampled": False, "name": None, "layer": "all"}
    types: ClassVar[dict[str, tuple[type, ...]]] = {"name": (str,), "layer": (int, np.integer, str, list, tuple)}

    def __init__(self, model_name=None, config=None, cache_dir=None):
        super().__init__(model_name, config, cache_dir)
        if model_name is None:
            raise FeatureError("precomputed extractor: model_name must be the model folder "
                               "(e.g. features_cnk0.1_ctx16.0/whisper-tiny)")
        root = Path(model_name).expanduser()
        if not root.is_dir():
            raise FeatureError(f"precomputed extractor: folder {root} not found")
        self.root = root.resolve()
        dirs = layer_folders(self.root)
        if dirs:
            sets = {d: _stories(d) for d in dirs}
            first = dirs[0]
            for d in dirs[1:]:
                if sets[d] != sets[first]:
                    lacks, extra = sets[first] - sets[d], sets[d] - sets[first]
                    what = (f"lacks {_head(lacks)} (in {first.name})" if lacks else "") + \
                        ("; " if lacks and extra else "") + (f"has {_head(extra)} (not in {first.name})" if extra else "")
                    raise FeatureError(f"precomputed features in {self.root}: layer folder {d.name} {what}; "
                                       "every layer folder must hold the same stories")
            self.layer_dirs, self.layers = dirs, [d.name for d in dirs]
            self.stories = sorted(sets[first])
        else:
            stories = _stories(self.root)
            if not stories:
                raise FeatureError(f"precomputed extractor: {self.root} holds neither <story>.npz files nor layer "
                                   "folders of them")
            self.layer_dirs, self.layers, self.stories = [self.root], [0], sorted(stories)

    # ----------------------------------------------------------------- identity
    def identity(self) -> dict[str, Any]:
        return {"extractor": type(self).__name__, "modality": self.modality, "model": str(self.root),
                "layers": [str(x) for x in self.layers],
                "config": {"downsampled": bool(self.config["downsampled"]), "name": self.config["name"]}}

    def _files(self, story: str) -> list[Path]:
        files = [d / f"{story}.npz" for d in self.layer_dirs]
        for f in files:
            if not f.is_file():
                raise FeatureError(f"precomputed features of story {story!r}: file {f} not found (the folder has "
                                   f"{len(self.stories)} stories: {_head(self.stories)})")
        return files

    def _times_file(self, story: str) -> Path:
        tf = self.root / f"{story}_times.npz"
        if not tf.is_file():
            raise FeatureError(f"precomputed features of story {story!r}: times file {tf} not found "
                               "(features with one row per TR: set downsampled=True)")
        return tf

    @staticmethod
    def _grid(assembly, story: str) -> np.ndarray:
        grid = assembly.tr_times(story)
        return np.asarray(getattr(grid, "values", grid), dtype=np.float64)

    def stimulus(self, assembly, story: str) -> str:
        """The files this story reads (path, size, mtime), and the TR grid when downsampled."""
        h = hashlib.sha256()
        files = self._files(story)
        if self.config["downsampled"]:
            h.update(b"grid:" + np.ascontiguousarray(self._grid(assembly, story), dtype="<f8").tobytes())
        else:
            files.append(self._times_file(story))
        for f in files:
            pid = path_identity(f)
            h.update(f"{pid['path']}:{pid['digest']}\n".encode())
        return "precomputed:" + h.hexdigest()

    def layer_labels(self, selection, available=None) -> list | None:
        labels = list(available) if available is not None else list(self.layers)
        sel = super().layer_labels(selection, available)
        if sel is None:
            return None
        return [labels[int(s)] if isinstance(s, (int, np.integer)) and s not in labels
                and -len(labels) <= s < len(labels) else s for s in sel]

    # ----------------------------------------------------------------- compute
    def compute(self, assembly, story: str) -> xr.Dataset:
        files = self._files(story)
        down = bool(self.config["downsampled"])
        times = time_start = None
        tf = None
        if down:
            times = self._grid(assembly, story)
        else:
            tf = self._times_file(story)
            raw = np.asarray(_read_npz(tf, "times", story))
            if raw.ndim == 2 and raw.shape[1] >= 2:
                times, time_start = raw[:, 1], raw[:, 0]
            elif raw.ndim == 1:
                times = raw
            else:
                raise FeatureError(f"precomputed features of story {story!r}: {tf} key 'times' must be (t, 2) "
                                   f"(window start, end) or (t,), got shape {raw.shape}")
        blocks = []
        for f in files:
            F = np.asarray(_read_npz(f, "features", story))
            if F.ndim != 2:
                raise FeatureError(f"precomputed features of story {story!r}: {f} key 'features' must be (rows, "
                                   f"features), got shape {F.shape}")
            if blocks and F.shape != blocks[0].shape:
                raise FeatureError(f"precomputed features of story {story!r}: {f} has shape {F.shape} but "
                                   f"{files[0]} has {blocks[0].shape}; every layer needs the same rows and width")
            if down and F.shape[0] != times.size:
                raise FeatureError(f"precomputed features of story {story!r}: {f} has {F.shape[0]} rows but the "
                                   f"story's TR grid has {times.size} TRs (downsampled=True: one row per TR)")
            if not down and F.shape[0] != times.size:
                raise FeatureError(f"precomputed features of story {story!r}: times file {tf} has {times.size} "
                                   f"times but {f} has {F.shape[0]} rows")
            blocks.append(_checked(F, f, story))
        times_checked = _checked_times(times, tf if tf is not None else "the TR grid", story)
        stack = np.stack(blocks) if len(blocks) > 1 else blocks[0][None]
        fs = make_feature_set(stack, times_checked, layers=self.layers, story=story, extractor=type(self).__name__,
                              model=str(self.root), feature_space=self.config["name"] or self.root.name,
                              time_start=time_start, attrs={"source": str(self.root), "downsampled": int(down)})
        if down:
            fs["features"].attrs["downsampled"] = 1
        logger.debug("precomputed: story %s, %d layers x %d rows from %s", story, len(files), stack.shape[1], self.root)
        return fs
