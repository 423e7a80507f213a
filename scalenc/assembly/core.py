"""The Assembly: one subject's stories, responses and stimulus timing on a zarr store.

Layout (``schema_version`` 1; see DESIGN.md "Assembly schema")::

    <name>.zarr
      attrs: schema_version, dataset, subject, tr_seconds, stories, train_stories,
             test_stories, timing (the reader's timing parameters), voxel_chunk
      /voxels        voxel_valid (voxel) bool; optional mask_indices (voxel), roi (voxel)
      /stories/<s>   bold (tr, voxel) float32, chunked over voxel
                     bold_repeats (repeat, tr, voxel) float32, only for repeated stories
                     tr_time (tr) float64: centre of each response row, seconds
                     grid_time (tr_grid) float64: the TR grid the features are computed on
                     word (word) str, word_start (word), word_end (word) float64 seconds
                     optional phone (phone) str, phone_start, phone_end
                     attrs: grid_offset, n_repeats, audio_path, source

Why two time axes. In the LeBel release the features are computed on a longer grid of
simulated TR triggers than the responses cover (N - 5 grid points, responses are grid
rows ``[10:-5]``, see REFERENCE.md). ``grid_time`` is that grid, ``tr_time`` the centres of
the response rows, and ``grid_offset`` the grid index of response row 0, so that
``tr_time == grid_time[grid_offset : grid_offset + n_tr]``. The tutorials'
``trimming_config`` (features ``[10:-5]``, targets ``[0:]``) trims exactly that.

Writing is atomic (a temporary store renamed at the end) and streams story by story; it
lives in :mod:`scalenc.assembly.writer` (:class:`AssemblyWriter`, re-exported here).
Reading is lazy: responses come back as voxel-chunked dask arrays.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array
import dask.base
import numpy as np
import xarray as xr
import zarr

from .chunks import CheckedChunks, check_metadata, check_store
from .legacy import import_pickle, pickle_provenance
from .stacked import StackedResponses
from .writer import (AUDIO_RELATIVE_TO_STORE, DEFAULT_VOXEL_CHUNK, SCHEMA_VERSION,  # noqa: F401 (re-exported)
                     AssemblyChunkError, AssemblyError, AssemblyWriter, _codecs, resolve_audio_path,
                     stored_audio_path)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------
class StoryData:
    """LITcoder-style view of one story (``assembly.story_data[name]``).

    Attributes mirror LITcoder's ``StoryData``: ``name``, ``brain_data`` (tr, voxel)
    numpy array, ``words``, ``data_times`` (word midpoints, s), ``tr_times`` (the feature
    TR grid, s), ``split_indices``, ``word_rates``, ``mask_indices`` and a settable
    ``audio_path`` (persisted by ``assembly.save()``).
    """

    def __init__(self, assembly: Assembly, name: str):
        self._assembly = assembly
        self.name = name

    @property
    def brain_data(self) -> np.ndarray:
        return self._assembly.bold(self.name).values

    @property
    def words(self) -> list[str]:
        return [str(w) for w in self._assembly.words(self.name)["word"].values]

    stimuli = words

    @property
    def data_times(self) -> np.ndarray:
        return self._assembly.word_times(self.name)

    @property
    def tr_times(self) -> np.ndarray:
        return self._assembly.tr_times(self.name).values

    @property
    def split_indices(self) -> np.ndarray:
        """Index of the first word in each TR of the grid (``searchsorted`` of the word
        midpoints on the TR boundaries ``tr_times + TR/2``), LITcoder's convention for
        splitting the word sequence into TRs."""
        ds = self._assembly._story_group(self.name)
        if "split_indices" in ds:
            return ds["split_indices"].values
        edges = self.tr_times + self._assembly.tr_seconds / 2
        return np.searchsorted(self.data_times, edges[:-1], side="left")

    @property
    def word_rates(self) -> np.ndarray | None:
        ds = self._assembly._story_group(self.name)
        return ds["word_rate"].values if "word_rate" in ds else None

    @property
    def mask_indices(self) -> np.ndarray | None:
        v = self._assembly.voxels
        return v["mask_indices"].values if "mask_indices" in v else None

    @property
    def audio_path(self) -> str | None:
        return self._assembly.audio_path(self.name)

    @audio_path.setter
    def audio_path(self, value: str | os.PathLike | None) -> None:
        self._assembly.set_audio_path(self.name, value)

    def __repr__(self) -> str:
        return f"<StoryData {self.name!r} bold {tuple(self._assembly.bold(self.name).shape)}>"


class _StoryDataMap(Mapping):
    def __init__(self, assembly: Assembly):
        self._a = assembly

    def __getitem__(self, key: str) -> StoryData:
        self._a._check_story(key)
        return StoryData(self._a, key)

    def __iter__(self):
        return iter(self._a.stories)

    def __len__(self) -> int:
        return len(self._a.stories)


class Assembly:
    """One subject's stories on a zarr store, read lazily.

    Parameters
    ----------
    path : path-like
        A ``.zarr`` directory written by :class:`AssemblyWriter` (or ``save``).

    Notes
    -----
    ``bold(story)`` returns a (tr, voxel) dask-backed DataArray chunked over voxels;
    nothing is read until ``.values``/``.compute()``. Selections made with ``subset``
    are views on the same store until ``save(path)`` writes them out.
    """

    def __init__(self, path: str | os.PathLike, *, audio_root: str | os.PathLike | None = None,
                 _stories: Sequence[str] | None = None, _voxels=None):
        self.path = Path(path)
        self.audio_root = None if audio_root is None else Path(audio_root)
        if not self.path.exists():
            raise FileNotFoundError(f"assembly store not found: {self.path}")
        if _stories is None and _voxels is None:  # a subset's source was checked already
            _require_metadata(self.path)
        try:
            self._root = zarr.open_group(str(self.path), mode="r")
        except Exception as e:  # noqa: BLE001 - re-raised with the path
            raise AssemblyError(f"{self.path}: not a zarr assembly store ({e})") from e
        attrs = dict(self._root.attrs)
        if attrs.get("schema_version") != SCHEMA_VERSION:
            raise AssemblyError(f"{self.path}: schema_version {attrs.get('schema_version')!r}, "
                                f"this scalenc reads {SCHEMA_VERSION}")
        self.attrs = attrs
        all_stories = list(attrs["stories"])
        self._stories = list(all_stories if _stories is None else _stories)
        for s in self._stories:
            if s not in all_stories:
                raise KeyError(f"story {s!r} is not in {self.path}; stories: {all_stories}")
        self._voxel_index = _voxels
        self._pending_audio: dict[str, str | None] = {}
        self._tree: xr.DataTree | None = None
        self._voxels_cache: xr.Dataset | None = None
        # (word, start, end) per story, read once (all stories in one go): the store's
        # story data are never rewritten in place, so this view never goes stale
        self._word_tables: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._grids: dict[str, tuple[np.ndarray, int]] = {}

    # metadata -------------------------------------------------------------------------
    @property
    def tree(self) -> xr.DataTree:
        """The whole store as a lazy :class:`xarray.DataTree`."""
        if self._tree is None:
            self._tree = xr.open_datatree(str(self.path), engine="zarr", chunks={}, consolidated=False)
        return self._tree

    @property
    def stories(self) -> list[str]:
        return list(self._stories)

    @property
    def train_stories(self) -> list[str]:
        return [s for s in self._stories if s not in self.attrs["test_stories"]]

    @property
    def test_stories(self) -> list[str]:
        return [s for s in self._stories if s in self.attrs["test_stories"]]

    @property
    def tr_seconds(self) -> float:
        return float(self.attrs["tr_seconds"])

    @property
    def subject(self) -> str:
        return str(self.attrs.get("subject", ""))

    @property
    def dataset(self) -> str:
        return str(self.attrs.get("dataset", ""))

    @property
    def voxels(self) -> xr.Dataset:
        """Per-voxel coordinates: ``voxel``, ``voxel_valid`` (with its reasons ``voxel_has_nan``,
        ``voxel_constant``) and optional ``mask_indices``, ``roi``."""
        if self._voxels_cache is not None:
            return self._voxels_cache
        if self._tree is not None:
            node = self._tree["voxels"].to_dataset()
        else:  # the voxels group alone: opening the whole tree reads every story's metadata
            node = xr.open_dataset(str(self.path), group="voxels", engine="zarr", consolidated=False, chunks=None)
        ds = node.set_coords([k for k in ("voxel_valid", "voxel_has_nan", "voxel_constant",
                                          "mask_indices", "roi", *node.attrs.get("coords", ()))
                              if k in node and k != "voxel"])
        ds = ds.assign_coords(voxel=ds["voxel"].values)
        if self._voxel_index is not None:
            ds = ds.isel(voxel=self._voxel_index)
        self._voxels_cache = ds.load()
        return self._voxels_cache

    @property
    def voxel_space(self) -> dict[str, Any] | None:
        """Where the voxels live, for brain maps: ``{"kind": "volume", "shape", "affine",
        "order"}`` (with ``voxels["mask_indices"]`` as C-order flat indices into ``shape``),
        ``{"kind": "surface", "mesh", "hemispheres"}`` (with ``voxels["hemi"]`` and
        ``voxels["vertex"]``), or None when the reader did not know."""
        vs = self.attrs.get("voxel_space")
        return None if vs is None else dict(vs)

    @property
    def n_voxels(self) -> int:
        return int(self.voxels.sizes["voxel"])

    @property
    def story_data(self) -> Mapping[str, StoryData]:
        """LITcoder-compatible mapping ``name -> StoryData``."""
        return _StoryDataMap(self)

    def _check_story(self, story: str) -> None:
        if story not in self._stories:
            raise KeyError(f"story {story!r} is not in assembly {self.path.name}; stories: {self._stories}")

    def _story_group(self, story: str) -> xr.Dataset:
        self._check_story(story)
        return self.tree[f"stories/{story}"].to_dataset(inherit=False)

    # data -----------------------------------------------------------------------------
    def stacked_bold(self, stories: Sequence[str], rows: Sequence[slice] | None = None, *,
                     zscore: bool = True) -> StackedResponses:
        """The responses of ``stories`` stacked along rows, each story's ``rows`` kept (default
        all) and z-scored per voxel: a :class:`~scalenc.assembly.stacked.StackedResponses` read a
        voxel block at a time (the training targets of a run)."""
        stories = list(stories)
        for s in stories:
            self._check_story(s)  # unknown story: one line naming it
        rows = [slice(None)] * len(stories) if rows is None else list(rows)
        sources = [CheckedChunks(self.path, s, "bold") for s in stories]
        index = None if self._voxel_index is None else np.arange(sources[0].shape[1])[self._voxel_index]
        return StackedResponses(sources, rows, zscore=zscore, voxel_index=index, names=stories)

    def bold(self, story: str) -> xr.DataArray:
        """Responses of ``story`` as a lazy (tr, voxel) float32 DataArray (repeat mean for
        repeated stories), with ``tr_time`` and voxel coordinates."""
        ds = self._story_group(story)
        da = self._checked(story, "bold", ds["bold"])
        if self._voxel_index is not None:
            da = da.isel(voxel=self._voxel_index)
        vox = {k: ("voxel", v.values) for k, v in self.voxels.coords.items()
               if k not in ("voxel_has_nan", "voxel_constant")}
        return da.assign_coords(tr_time=("tr", ds["tr_time"].values), **vox).rename(story)

    def read_ahead(self, stories: Sequence[str], *, max_fraction: float = 0.25) -> int:
        """Ask the kernel to start reading the stored responses of ``stories`` into the page
        cache now (``posix_fadvise(WILLNEED)``, asynchronous), so that a later read (the fit)
        finds them there while other work (feature extraction) runs meanwhile. Skipped when
        they exceed ``max_fraction`` of the available memory (they would evict each other)
        or the platform has no ``posix_fadvise``. Returns the number of bytes hinted."""
        if not hasattr(os, "posix_fadvise"):
            return 0
        files = []
        for s in stories:
            self._check_story(s)
            d = self.path / "stories" / s / "bold"
            files += [f for f in d.rglob("*") if f.is_file() and f.name != "zarr.json"]
        total = sum(f.stat().st_size for f in files)
        if total > max_fraction * _available_memory():
            return 0
        for f in files:
            try:
                fd = os.open(f, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
            finally:
                os.close(fd)
        return total

    def bold_data(self, story: str) -> dask.array.Array:
        """``bold(story).data`` without building the DataArray: the lazy (tr, voxel) dask array."""
        self._check_story(story)
        data = self._checked_data(story, "bold")
        return data if self._voxel_index is None else data[:, self._voxel_index]

    def _checked_data(self, story: str, name: str) -> dask.array.Array:
        """A dask array over ``stories/<story>/<name>`` whose every read refuses a missing or
        corrupt chunk (:class:`~scalenc.assembly.chunks.CheckedChunks`)."""
        src = CheckedChunks(self.path, story, name)
        stamp = (self.path / "stories" / story / name / "zarr.json").stat().st_mtime_ns
        return dask.array.from_array(src, chunks=src.chunks, asarray=False, lock=False,
                                     name=f"{name}-{dask.base.tokenize(str(self.path.resolve()), story, name, stamp)}",
                                     meta=np.empty((0,) * src.ndim, src.dtype))

    def _checked(self, story: str, name: str, like: xr.DataArray) -> xr.DataArray:
        """``like`` (an array of the story group) re-backed by :meth:`_checked_data`."""
        return xr.DataArray(self._checked_data(story, name), dims=like.dims, attrs=dict(like.attrs), name=like.name)

    def bold_repeats(self, story: str) -> xr.DataArray | None:
        """(repeat, tr, voxel) responses of a repeated story, else None."""
        ds = self._story_group(story)
        if "bold_repeats" not in ds:
            return None
        da = self._checked(story, "bold_repeats", ds["bold_repeats"])
        if self._voxel_index is not None:
            da = da.isel(voxel=self._voxel_index)
        return da.assign_coords(tr_time=("tr", ds["tr_time"].values))

    def known_signal(self, story: str) -> np.ndarray | None:
        """The noise-free signal ``(tr, voxel)`` of ``story`` when the assembly records one,
        else None. Only simulated data knows it: its ``ground_truth`` attribute names a store
        with ``/stories/<story>/signal`` (absolute, or relative to the assembly's folder).
        The engine scores the ceiling of a test story against it."""
        path = self.attrs.get("ground_truth")
        if not path:
            return None
        p = Path(path) if Path(path).is_absolute() else Path(self.path).parent / path
        if not p.exists():
            return None
        tree = xr.open_datatree(str(p), engine="zarr", consolidated=False)
        try:
            sig = tree[f"stories/{story}"]["signal"]
        except KeyError:
            return None
        if self._voxel_index is not None:
            sig = sig.isel(voxel=self._voxel_index)
        return np.asarray(sig.values)

    def n_repeats(self, story: str) -> int:
        return int(self.tree[f"stories/{story}"].attrs.get("n_repeats", 1))

    def word_table(self, story: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(word, start, end)`` of ``story`` as read-only numpy arrays (object str,
        float64 seconds, float64 seconds): :meth:`words` without the Dataset.

        Tables are read once and kept (the feature extractors ask for the words of each
        story several times): the first call reads its story's (a worker's assembly is
        often asked for one story only), the next call for another story reads all the
        remaining stories of this view in one concurrent zarr read."""
        self._check_story(story)
        if story not in self._word_tables:
            todo = [s for s in self._stories if s not in self._word_tables] if self._word_tables else [story]
            self._word_tables.update(_read_word_tables(self.path, todo))
        return self._word_tables[story]

    def words(self, story: str) -> xr.Dataset:
        """Words of ``story``: ``word`` (word) str with ``start`` and ``end`` seconds."""
        word, start, end = self.word_table(story)
        return xr.Dataset({"start": ("word", start.copy()), "end": ("word", end.copy())},
                          coords={"word": ("word", word.copy())})

    def word_times(self, story: str) -> np.ndarray:
        """(n_words,) word-interval midpoints, seconds (the public loader's word time)."""
        _, start, end = self.word_table(story)
        return (start + end) / 2

    def phones(self, story: str) -> xr.Dataset | None:
        """Phones of ``story`` (``phone``, ``start``, ``end``) when the source had a phone tier."""
        ds = self._story_group(story)
        if "phone" not in ds:
            return None
        return xr.Dataset({"start": ("phone", ds["phone_start"].values), "end": ("phone", ds["phone_end"].values)},
                          coords={"phone": ("phone", np.asarray([str(p) for p in ds["phone"].values], dtype=object))})

    def tr_times(self, story: str) -> xr.DataArray:
        """The TR grid the features of ``story`` are computed on, seconds.

        Returns
        -------
        grid_time : (tr_grid,) float64 DataArray
            Its own dim ``tr_grid``, not ``bold``'s ``tr``: for LeBel this grid is longer
            than the responses (``tr_time == grid_time[grid_offset : grid_offset + n_tr]``,
            see :meth:`grid_offset`). The name is the tutorials'."""
        grid, _ = self._grid(story)
        return xr.DataArray(grid.copy(), dims="tr_grid", name="grid_time", attrs={"units": "s"})

    def grid_offset(self, story: str) -> int:
        """Index in ``tr_times(story)`` of the first response row."""
        return self._grid(story)[1]

    def _grid(self, story: str) -> tuple[np.ndarray, int]:
        """``(grid_time, grid_offset)`` of ``story``, read once for all stories of this view
        (as :meth:`word_table`: the alignment asks for every story's grid)."""
        self._check_story(story)
        if story not in self._grids:
            todo = [s for s in self._stories if s not in self._grids] if self._grids else [story]
            self._grids.update(_read_grids(self.path, todo))
        return self._grids[story]

    def audio_path(self, story: str) -> str | None:
        """The audio file of ``story`` (absolute), or None.

        Stored paths count from the store folder (or are absolute), so a store read from
        another working directory, or moved with its data, finds its audio. With
        ``audio_root`` (``load_assembly(..., audio_root=NEWDIR)``) the file of the same
        name in that folder is used instead (data moved; ``scalenc assembly relocate``
        writes it into the store)."""
        self._check_story(story)
        if story in self._pending_audio:
            return self._pending_audio[story]
        stored = self.tree[f"stories/{story}"].attrs.get("audio_path")
        if self.audio_root is not None:
            name = Path(stored).name if stored else f"{story}.wav"
            if stored or (self.audio_root / name).is_file():
                return str((self.audio_root / name).absolute())
        return resolve_audio_path(stored, self.path, legacy=self.attrs.get("audio_paths") != AUDIO_RELATIVE_TO_STORE)

    def set_audio_path(self, story: str, path: str | os.PathLike | None) -> None:
        """Set the audio file of ``story`` (a relative path counts from the working
        directory); ``save()`` persists it (relative to the store when it lies next to it)."""
        self._check_story(story)
        self._pending_audio[story] = None if path is None else (
            str(path) if Path(path).is_absolute() else str(Path(path).absolute()))

    def has_unsaved_changes(self) -> bool:
        """Whether :meth:`save` has changes (audio paths) to write that other processes cannot see yet."""
        return bool(self._pending_audio)

    # selections and writing ---------------------------------------------------------------
    def subset(self, stories: Sequence[str] | None = None, voxels=None) -> Assembly:
        """A lazy view on some stories and/or voxels.

        Parameters
        ----------
        stories : sequence of str, optional
        voxels : slice, int array, or (n_voxels,) bool mask, optional
            Positions among this assembly's voxels.
        """
        if stories is not None:
            for s in stories:
                self._check_story(s)
        idx = np.arange(self.n_voxels) if voxels is None else np.arange(self.n_voxels)[_voxel_indexer(voxels, self.n_voxels)]
        base = np.arange(int(self._root["voxels/voxel"].shape[0]))
        if self._voxel_index is not None:
            base = base[self._voxel_index]
        sub = Assembly(self.path, audio_root=self.audio_root, _stories=list(stories) if stories is not None else self._stories,
                       _voxels=None if voxels is None and self._voxel_index is None else base[idx])
        sub._pending_audio = {k: v for k, v in self._pending_audio.items() if k in sub._stories}
        sub._word_tables = {k: v for k, v in self._word_tables.items() if k in sub._stories}
        sub._grids = {k: v for k, v in self._grids.items() if k in sub._stories}
        return sub

    def save(self, path: str | os.PathLike | None = None, *, overwrite: bool = False,
             voxel_chunk: int | None = None) -> Path:
        """Persist the assembly.

        ``save()`` (or ``save`` to its own path) writes pending changes (``audio_path``)
        into the store in place; story data are not rewritten. ``save(other)`` writes a
        new store with this view's stories and voxels, story by story, atomically.
        """
        if path is None or Path(path).resolve() == self.path.resolve():
            if self._voxel_index is not None or self._stories != list(self.attrs["stories"]):
                raise AssemblyError("a subset cannot be saved onto its source store; give a new path")
            root = zarr.open_group(str(self.path), mode="r+")
            if self._pending_audio and self.attrs.get("audio_paths") != AUDIO_RELATIVE_TO_STORE:
                for s in self._stories:  # an older store: its other paths are rewritten in the new convention
                    self._pending_audio.setdefault(s, self.audio_path(s))
            for s, p in self._pending_audio.items():
                root[f"stories/{s}"].attrs["audio_path"] = None if p is None else stored_audio_path(p, self.path)
            if self._pending_audio:
                root.attrs["audio_paths"] = self.attrs["audio_paths"] = AUDIO_RELATIVE_TO_STORE
            self._pending_audio.clear()
            self._tree = None
            return self.path
        return self._copy_to(Path(path), overwrite=overwrite, voxel_chunk=voxel_chunk)

    def _copy_to(self, path: Path, *, overwrite: bool, voxel_chunk: int | None) -> Path:
        vox = self.voxels
        a = self.attrs
        with AssemblyWriter(path, dataset=a.get("dataset", ""), subject=a.get("subject", ""),
                            tr_seconds=self.tr_seconds, n_voxels=self.n_voxels,
                            test_stories=self.test_stories,
                            voxel_chunk=voxel_chunk or int(a.get("voxel_chunk", DEFAULT_VOXEL_CHUNK)),
                            mask_indices=vox["mask_indices"].values if "mask_indices" in vox else None,
                            roi=vox["roi"].values if "roi" in vox else None,
                            voxel_coords={k: vox[k].values for k in self._root["voxels"].attrs.get("coords", ())
                                          if k in vox and k not in ("voxel_valid", "voxel_has_nan", "voxel_constant",
                                                                    "mask_indices", "roi")},
                            voxel_space=self.voxel_space,
                            timing=a.get("timing"), overwrite=overwrite) as w:
            for s in self._stories:
                ds = self._story_group(s)
                reps = self.bold_repeats(s)
                data = self.bold(s).data if reps is None else reps.data
                phones = self.phones(s)
                known = {"bold", "bold_repeats", "tr_time", "grid_time", "word", "word_start", "word_end",
                         "phone", "phone_start", "phone_end"}
                extra = {k: (v.dims, v.values) for k, v in ds.data_vars.items() if k not in known}
                w.add_story(s, _DaskRepeats(data) if reps is not None else data,
                            tr_time=ds["tr_time"].values, grid_time=ds["grid_time"].values,
                            grid_offset=self.grid_offset(s),
                            words=[str(x) for x in ds["word"].values], word_start=ds["word_start"].values,
                            word_end=ds["word_end"].values, audio_path=self.audio_path(s),
                            phones=None if phones is None else (phones["phone"].values, phones["start"].values,
                                                                phones["end"].values),
                            extra=extra, source=str(self.path))
            # carry the voxel flags of the source rather than re-deriving them from fewer stories
            if "voxel_has_nan" in vox:
                w._has_nan |= vox["voxel_has_nan"].values
                w._constant |= vox["voxel_constant"].values
        return path

    # reporting --------------------------------------------------------------------------
    def check(self) -> tuple[int, list[str]]:
        """Read and decode every chunk of the store; return ``(n_chunks, problems)``, one
        line per missing or undecodable chunk (see :func:`scalenc.assembly.chunks.check_store`)."""
        return check_store(self.path)

    def info(self) -> dict[str, Any]:
        """Summary: stories with TR counts, voxels, test stories, stored bytes."""
        rows = []
        for s in self._stories:
            b = self._root[f"stories/{s}/bold"]
            rows.append(dict(story=s, n_tr=int(b.shape[0]), n_words=int(self._root[f"stories/{s}/word"].shape[0]),
                             n_repeats=self.n_repeats(s), test=s in self.attrs["test_stories"]))
        stored = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        n_vox = self.n_voxels
        return dict(path=str(self.path), dataset=self.dataset, subject=self.subject, tr_seconds=self.tr_seconds,
                    n_stories=len(rows), n_trs=sum(r["n_tr"] for r in rows), n_voxels=n_vox,
                    n_valid_voxels=int(self.voxels["voxel_valid"].values.sum()),
                    train_stories=self.train_stories, test_stories=self.test_stories,
                    stored_bytes=int(stored), bold_bytes=int(sum(r["n_tr"] for r in rows) * n_vox * 4),
                    stories=rows)

    def __repr__(self) -> str:
        return (f"<scalenc.Assembly {self.dataset}/{self.subject}: {len(self._stories)} stories, "
                f"{self.n_voxels} voxels, TR {self.tr_seconds} s, test {self.test_stories}>")


def _require_metadata(path: Path) -> None:
    """One :class:`AssemblyError` line naming the first missing or unreadable ``zarr.json``
    of the groups and arrays the schema expects (a deleted story folder, a corrupt file)."""
    if not path.is_dir() or not (path / "zarr.json").is_file() and not any(path.iterdir()):
        raise AssemblyError(f"{path}: not a zarr assembly store ({'empty folder' if path.is_dir() else 'a file'})")
    problems, _ = check_metadata(path)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise AssemblyError(f"{problems[0]}{more}; damaged store: see `scalenc assembly check {path}`")


class _DaskRepeats:
    """Adapter: index a (repeat, tr, voxel) dask array one repeat at a time."""

    def __init__(self, data):
        self._d = data
        self.shape = tuple(data.shape)

    def __getitem__(self, r):
        return np.asarray(self._d[r])


def _voxel_indexer(voxels, n: int):
    if isinstance(voxels, slice):
        return voxels
    v = np.asarray(voxels)
    if v.dtype == bool:
        if v.shape != (n,):
            raise AssemblyError(f"voxel mask has shape {v.shape}, expected ({n},)")
        return np.flatnonzero(v)
    if v.dtype.kind not in "iu":
        raise AssemblyError(f"voxels must be a slice, integer indices or a boolean mask, got dtype {v.dtype}")
    if v.size and (v.min() < -n or v.max() >= n):
        raise AssemblyError(f"voxel indices out of range for {n} voxels")
    return v


def _read_word_tables(path: Path, stories: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{story: (word, start, end)}`` read with one concurrent zarr call (not through the
    xarray tree and dask: ~30 small arrays cost one round trip instead of ~30 x 3)."""
    import asyncio

    import zarr.api.asynchronous as zasync
    from zarr.core.sync import sync

    names = ("word", "word_start", "word_end")

    async def read_all():
        root = await zasync.open_group(store=str(path), mode="r")

        async def one(story, name):
            arr = await root.getitem(f"stories/{story}/{name}")
            return await arr.getitem(slice(None))

        return await asyncio.gather(*(one(s, n) for s in stories for n in names))

    values = sync(read_all()) if stories else []
    out = {}
    for k, s in enumerate(stories):
        word, start, end = values[3 * k: 3 * k + 3]
        word = np.asarray([str(w) for w in np.asarray(word).tolist()], dtype=object)
        start, end = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
        for a in (word, start, end):
            a.flags.writeable = False
        out[s] = (word, start, end)
    return out


def _available_memory() -> int:
    """Available memory in bytes (``MemAvailable``), or 0 when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _read_grids(path: Path, stories: Sequence[str]) -> dict[str, tuple[np.ndarray, int]]:
    """``{story: (grid_time, grid_offset)}`` read with one concurrent zarr call."""
    import asyncio

    import zarr.api.asynchronous as zasync
    from zarr.core.sync import sync

    async def read_all():
        root = await zasync.open_group(store=str(path), mode="r")

        async def one(story):
            group = await root.getitem(f"stories/{story}")
            arr = await group.getitem("grid_time")
            return await arr.getitem(slice(None)), int(group.attrs.get("grid_offset", 0))

        return await asyncio.gather(*(one(s) for s in stories))

    out = {}
    for s, (grid, offset) in zip(stories, sync(read_all()) if stories else []):
        grid = np.asarray(grid, dtype=np.float64)
        grid.flags.writeable = False
        out[s] = (grid, offset)
    return out


def relocate(path: str | os.PathLike, audio_root: str | os.PathLike) -> dict[str, str]:
    """Re-point the audio files of a store to ``audio_root`` (the data moved): each story's
    audio becomes the file of the same name in ``audio_root`` (a story without audio gets
    ``<story>.wav`` when that file is there). Nothing is written unless every story that
    had audio finds its file. Returns ``{story: new absolute path}``."""
    asm = Assembly(path)
    root = Path(audio_root)
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder not found: {root}")
    new = {}
    for s in asm.stories:
        old = asm.audio_path(s)
        cand = root / (Path(old).name if old else f"{s}.wav")
        if cand.is_file():
            new[s] = str(cand.absolute())
        elif old:
            raise FileNotFoundError(f"{asm.path}: story {s!r}: {cand.name} not found in {root} "
                                    f"(was {old}); nothing was changed")
    if not new:
        raise FileNotFoundError(f"{asm.path}: no story's audio file is in {root}; nothing was changed")
    for s, p in new.items():
        asm.set_audio_path(s, p)
    asm.save()
    return new


def load_assembly(path: str | os.PathLike, *, import_to: str | os.PathLike | None = None,
                  audio_root: str | os.PathLike | None = None) -> Assembly:
    """Open an assembly: a scalenc ``.zarr`` store or a LITcoder ``.pkl``.

    ``audio_root``: read each story's audio from the file of the same name in this folder
    (the data moved since the store was built; :func:`relocate` writes it into the store).

    A pickle is imported once, through a restricted unpickler that runs no pickled code,
    to ``import_to`` (default: ``<name>.zarr`` next to the pickle). The store records the
    pickle's path and SHA-256; it is reused while they match, re-imported when the pickle's
    content changed, and never replaced when it was not imported from this pickle (e.g. a
    store built by ``lebel.build`` that happens to share the name): that is an error.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"assembly not found: {p}")
    if p.suffix in (".pkl", ".pickle"):
        out = Path(import_to) if import_to is not None else p.with_suffix(".zarr")
        if not out.exists():
            logger.info("importing LITcoder pickle %s to %s", p, out)
            import_pickle(p, out)
        elif _imported_from(out, p) == "changed":
            logger.info("%s changed since it was imported; re-importing to %s", p, out)
            import_pickle(p, out, overwrite=True)
        return Assembly(out, audio_root=audio_root)
    return Assembly(p, audio_root=audio_root)


def _imported_from(store: Path, pickle_path: Path) -> str:
    """``"same"`` when ``store`` was imported from this pickle and its content is unchanged,
    ``"changed"`` when imported from it but the pickle's bytes differ; raise otherwise."""
    try:
        src = dict(zarr.open_group(str(store), mode="r").attrs).get("source_pickle")
    except Exception:  # noqa: BLE001 - not a zarr store at all
        src = None
    me = pickle_path.resolve()
    if not isinstance(src, dict) or src.get("path") != str(me):
        origin = f"imported from {src.get('path')}" if isinstance(src, dict) else "not imported from a pickle"
        raise AssemblyError(f"{store} exists and was {origin}, not from {me}; refusing to replace it "
                            f"(remove it, or pass import_to= another path)")
    st = me.stat()
    if src.get("size") == st.st_size and src.get("mtime_ns") == st.st_mtime_ns:
        return "same"
    return "same" if pickle_provenance(me)["sha256"] == src.get("sha256") else "changed"
