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

Writing is atomic (a temporary store renamed at the end) and streams story by story;
reading is lazy: responses come back as voxel-chunked dask arrays.
"""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from .._io import atomic_directory

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_VOXEL_CHUNK = 8192


class AssemblyError(ValueError):
    """An assembly input or store is inconsistent; the message names the story/file."""


def _codecs():
    """Compression for float32 responses: blosc-lz4 with byte shuffle (fast, ~lossless ratio
    of fMRI float32 data is modest; speed matters more than size)."""
    from zarr.codecs import BloscCodec

    return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]


def _write_array(group: zarr.Group, name: str, data, dims: Sequence[str], *,
                 chunks=None, attrs: Mapping[str, Any] | None = None, dtype=None):
    """Write one array with xarray-readable dimension names; return the zarr array."""
    data = np.asarray(data) if dtype is None else np.asarray(data, dtype=dtype)
    chunks = chunks or tuple(max(1, n) for n in data.shape) or None
    if data.dtype.kind in "UO":
        arr = group.create_array(name, shape=data.shape, dtype=str, dimension_names=list(dims), chunks=chunks)
        if data.size:
            arr[...] = data.astype(object)
    else:
        fill = np.nan if data.dtype.kind == "f" else 0
        arr = group.create_array(name, shape=data.shape, dtype=data.dtype, dimension_names=list(dims),
                                 chunks=chunks, fill_value=fill,
                                 compressors=_codecs() if data.dtype.kind == "f" else "auto")
        if data.size:
            arr[...] = data
    if attrs:
        arr.attrs.update(dict(attrs))
    return arr


def _check_times(story: str, what: str, t: np.ndarray, *, strictly: bool) -> None:
    if t.ndim != 1:
        raise AssemblyError(f"story {story!r}: {what} must be 1-D, got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise AssemblyError(f"story {story!r}: {what} has {int((~np.isfinite(t)).sum())} non-finite values")
    d = np.diff(t)
    bad = (d <= 0) if strictly else (d < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise AssemblyError(
            f"story {story!r}: {what} is not {'strictly ' if strictly else ''}increasing "
            f"(element {i + 1}: {t[i + 1]!r} after {t[i]!r})")


class AssemblyWriter:
    """Write an assembly story by story, atomically.

    Use as a context manager; the store appears at ``path`` only when the block exits
    without error (a failed build leaves nothing behind)::

        with AssemblyWriter("s01.zarr", dataset="lebel", subject="UTS01", tr_seconds=2.0,
                            n_voxels=v) as w:
            w.add_story("alternateithicatom", bold, tr_time=..., words=..., ...)

    Parameters
    ----------
    path : path-like
        Output ``.zarr`` directory.
    dataset, subject : str
        Recorded in the root attributes.
    tr_seconds : float
        Repetition time; every story's ``tr_time`` spacing is checked against it.
    n_voxels : int
        Number of voxels every story must have.
    test_stories : sequence of str
        Stories held out for testing; the others are training stories.
    voxel_chunk : int
        Voxels per zarr chunk of ``bold`` (chunks span all TRs of a story).
    mask_indices : (n_voxels,) int array, optional
        Flat index of each voxel in the original volume.
    roi : (n_voxels,) str array, optional
        ROI label of each voxel.
    timing : dict, optional
        The reader's timing parameters, stored for provenance.
    overwrite : bool
        Replace an existing store at ``path``.
    """

    def __init__(self, path: str | os.PathLike, *, dataset: str, subject: str, tr_seconds: float,
                 n_voxels: int, test_stories: Iterable[str] = (), voxel_chunk: int = DEFAULT_VOXEL_CHUNK,
                 mask_indices=None, roi=None, timing: Mapping[str, Any] | None = None,
                 attrs: Mapping[str, Any] | None = None, overwrite: bool = False):
        self.path = Path(path)
        if tr_seconds <= 0:
            raise AssemblyError(f"tr_seconds must be > 0, got {tr_seconds}")
        self.n_voxels = int(n_voxels)
        self.tr_seconds = float(tr_seconds)
        self.voxel_chunk = int(min(max(1, voxel_chunk), max(1, self.n_voxels)))
        self.test_stories = list(test_stories)
        self._meta = dict(dataset=dataset, subject=subject, tr_seconds=self.tr_seconds,
                          timing=dict(timing or {}), voxel_chunk=self.voxel_chunk, **dict(attrs or {}))
        self._mask_indices = None if mask_indices is None else np.asarray(mask_indices)
        self._roi = None if roi is None else np.asarray(roi)
        for nm, a in (("mask_indices", self._mask_indices), ("roi", self._roi)):
            if a is not None and a.shape != (self.n_voxels,):
                raise AssemblyError(f"{nm} has shape {a.shape}, expected ({self.n_voxels},)")
        self._overwrite = overwrite
        self._stories: list[str] = []
        self._has_nan = np.zeros(self.n_voxels, bool)
        self._constant = np.zeros(self.n_voxels, bool)
        self._ctx = None
        self.root: zarr.Group | None = None

    # context management -------------------------------------------------------------
    def __enter__(self) -> AssemblyWriter:
        self._ctx = atomic_directory(self.path, overwrite=self._overwrite)
        tmp = self._ctx.__enter__()
        self.root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        self.root.create_group("stories")
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._finish()
        except BaseException as e:  # the store must not appear half-written
            self._ctx.__exit__(type(e), e, e.__traceback__)
            raise
        return self._ctx.__exit__(exc_type, exc, tb)

    def _finish(self) -> None:
        if not self._stories:
            raise AssemblyError(f"{self.path}: no story was written")
        missing = [s for s in self.test_stories if s not in self._stories]
        if missing:
            raise AssemblyError(f"{self.path}: test stories {missing} are not among the written stories")
        vox = self.root.create_group("voxels")
        valid = ~(self._has_nan | self._constant)
        _write_array(vox, "voxel", np.arange(self.n_voxels, dtype=np.int64), ["voxel"])
        _write_array(vox, "voxel_valid", valid, ["voxel"],
                     attrs={"description": "False where a voxel has NaN or is constant in any story"})
        _write_array(vox, "voxel_has_nan", self._has_nan, ["voxel"])
        _write_array(vox, "voxel_constant", self._constant, ["voxel"])
        if self._mask_indices is not None:
            _write_array(vox, "mask_indices", self._mask_indices.astype(np.int64), ["voxel"])
        if self._roi is not None:
            _write_array(vox, "roi", self._roi.astype(str), ["voxel"])
        train = [s for s in self._stories if s not in self.test_stories]
        self.root.attrs.update(dict(schema_version=SCHEMA_VERSION, stories=list(self._stories),
                                    train_stories=train, test_stories=list(self.test_stories),
                                    **self._meta))
        n_bad = int((~valid).sum())
        if n_bad:
            logger.warning("%s: %d of %d voxels flagged invalid (NaN: %d, constant: %d); kept, see voxel_valid",
                           self.path, n_bad, self.n_voxels, int(self._has_nan.sum()), int(self._constant.sum()))

    # stories ------------------------------------------------------------------------
    def add_story(self, name: str, bold, *, tr_time, words: Sequence[str], word_start, word_end,
                  grid_time=None, grid_offset: int = 0, audio_path: str | None = None,
                  phones: tuple[Sequence[str], Any, Any] | None = None,
                  extra: Mapping[str, tuple[Sequence[str], Any]] | None = None,
                  source: str | None = None) -> None:
        """Validate and write one story.

        Parameters
        ----------
        name : str
            Story name (a zarr group name: no ``/``).
        bold : (n_tr, n_voxels) or (n_repeats, n_tr, n_voxels) array-like
            Responses. Anything sliceable with ``.shape`` works (an ``h5py.Dataset`` is
            read one repeat at a time). With repeats, ``bold`` stores their mean and
            ``bold_repeats`` each repeat.
        tr_time : (n_tr,) float
            Centre of each response row, seconds on the stimulus clock.
        words : (n_words,) str
        word_start, word_end : (n_words,) float
            Word intervals, seconds, sorted by start.
        grid_time : (n_grid,) float, optional
            TR grid for the features; defaults to ``tr_time``.
        grid_offset : int
            Grid index of response row 0.
        audio_path : str, optional
            Stimulus audio file.
        phones : (labels, start, end), optional
            Phone intervals (for phoneme rate).
        extra : dict name -> (dims, array), optional
            Further per-story arrays (e.g. ``word_rate`` imported from LITcoder).
        source : str, optional
            File the responses came from; named in warnings.
        """
        if self.root is None:
            raise RuntimeError("AssemblyWriter must be used as a context manager")
        if not name or "/" in name or name in self._stories:
            raise AssemblyError(f"invalid or duplicate story name {name!r}")
        where = f"story {name!r}" + (f" ({source})" if source else "")
        shape = tuple(bold.shape)
        if len(shape) not in (2, 3):
            raise AssemblyError(f"{where}: responses must be 2-D (tr, voxel) or 3-D (repeat, tr, voxel), "
                                f"got shape {shape}")
        n_tr, n_vox = shape[-2:]
        if n_vox != self.n_voxels:
            raise AssemblyError(f"{where}: has {n_vox} voxels, the assembly has {self.n_voxels}")
        tr_time = np.asarray(tr_time, dtype=np.float64)
        if tr_time.shape != (n_tr,):
            raise AssemblyError(f"{where}: {n_tr} response rows but {tr_time.size} TR times")
        _check_times(name, "tr_time", tr_time, strictly=True)
        if n_tr > 1:
            step = np.diff(tr_time)
            if not np.allclose(step, self.tr_seconds, rtol=1e-6, atol=1e-6):
                raise AssemblyError(f"{where}: TR spacing {float(np.median(step))!r} s disagrees with "
                                    f"the assembly's tr_seconds={self.tr_seconds}")
        grid = tr_time if grid_time is None else np.asarray(grid_time, dtype=np.float64)
        _check_times(name, "grid_time", grid, strictly=True)
        if not (0 <= grid_offset and grid_offset + n_tr <= grid.size):
            raise AssemblyError(f"{where}: grid_offset {grid_offset} + {n_tr} rows exceeds the "
                                f"{grid.size}-point TR grid")
        if not np.allclose(grid[grid_offset:grid_offset + n_tr], tr_time, atol=1e-6):
            raise AssemblyError(f"{where}: tr_time does not match grid_time[{grid_offset}:{grid_offset + n_tr}]")
        words = np.asarray([str(w) for w in words], dtype=object)
        ws = np.asarray(word_start, dtype=np.float64)
        we = np.asarray(word_end, dtype=np.float64)
        if not (ws.shape == we.shape == words.shape):
            raise AssemblyError(f"{where}: {words.size} words but {ws.size} start and {we.size} end times")
        _check_times(name, "word_start", ws, strictly=False)
        if (we < ws).any():
            i = int(np.argmax(we < ws))
            raise AssemblyError(f"{where}: word {i} ({words[i]!r}) ends at {we[i]} before it starts at {ws[i]}")

        g = self.root.create_group(f"stories/{name}")
        chunks2 = (max(1, n_tr), self.voxel_chunk)
        if len(shape) == 3:
            n_rep = shape[0]
            reps = g.create_array("bold_repeats", shape=shape, dtype="f4", chunks=(1, *chunks2),
                                  dimension_names=["repeat", "tr", "voxel"], fill_value=np.nan,
                                  compressors=_codecs())
            total = np.zeros((n_tr, n_vox), np.float64)
            for r in range(n_rep):
                block = np.asarray(bold[r], dtype=np.float32)
                self._flag(block, name, source)
                reps[r] = block
                total += block
            mean = (total / n_rep).astype(np.float32)
            del total
        else:
            n_rep = 1
            mean = _read_float32(bold)
            self._flag(mean, name, source)
        arr = g.create_array("bold", shape=(n_tr, n_vox), dtype="f4", chunks=chunks2,
                             dimension_names=["tr", "voxel"], fill_value=np.nan, compressors=_codecs())
        arr[...] = mean
        del mean
        _write_array(g, "tr_time", tr_time, ["tr"], attrs={"units": "s"})
        _write_array(g, "grid_time", grid, ["tr_grid"], attrs={"units": "s"})
        _write_array(g, "word", words, ["word"])
        _write_array(g, "word_start", ws, ["word"], attrs={"units": "s"})
        _write_array(g, "word_end", we, ["word"], attrs={"units": "s"})
        if phones is not None:
            pl, ps, pe = phones
            _write_array(g, "phone", np.asarray([str(p) for p in pl], dtype=object), ["phone"])
            _write_array(g, "phone_start", np.asarray(ps, np.float64), ["phone"])
            _write_array(g, "phone_end", np.asarray(pe, np.float64), ["phone"])
        for key, (dims, values) in (extra or {}).items():
            _write_array(g, key, values, dims)
        g.attrs.update(dict(grid_offset=int(grid_offset), n_repeats=int(n_rep),
                            audio_path=None if audio_path is None else str(audio_path),
                            source=source))
        self._stories.append(name)
        logger.info("wrote story %s: %d TRs x %d voxels%s", name, n_tr, n_vox,
                    f" ({n_rep} repeats)" if n_rep > 1 else "")

    def _flag(self, block: np.ndarray, story: str, source: str | None) -> None:
        nan = np.isnan(block).any(axis=0)
        const = np.zeros_like(nan) if block.shape[0] < 2 else (np.nanmax(block, axis=0) == np.nanmin(block, axis=0)) \
            if nan.any() else (block.max(axis=0) == block.min(axis=0))
        const &= ~nan
        if nan.any() or const.any():
            msg = (f"story {story!r}{f' ({source})' if source else ''}: {int(nan.sum())} voxels contain NaN and "
                   f"{int(const.sum())} are constant; they are kept and flagged in voxel_valid")
            warnings.warn(msg, stacklevel=3)
            logger.warning(msg)
        self._has_nan |= nan
        self._constant |= const


def _read_float32(a) -> np.ndarray:
    """Read a 2-D array-like (numpy, h5py, dask) into float32 without a float64 copy."""
    astype = getattr(a, "astype", None)
    if hasattr(a, "id") and astype is not None:  # h5py: convert while reading
        return a.astype("f4")[()]
    if hasattr(a, "compute"):
        a = a.compute()
    return np.asarray(a, dtype=np.float32)


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

    def __init__(self, path: str | os.PathLike, *, _stories: Sequence[str] | None = None, _voxels=None):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"assembly store not found: {self.path}")
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
        ds = self.tree["voxels"].to_dataset().set_coords(
            [k for k in ("voxel_valid", "voxel_has_nan", "voxel_constant", "mask_indices", "roi") if k in self.tree["voxels"]])
        ds = ds.assign_coords(voxel=ds["voxel"].values)
        if self._voxel_index is not None:
            ds = ds.isel(voxel=self._voxel_index)
        self._voxels_cache = ds.load()
        return self._voxels_cache

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
    def bold(self, story: str) -> xr.DataArray:
        """Responses of ``story`` as a lazy (tr, voxel) float32 DataArray (repeat mean for
        repeated stories), with ``tr_time`` and voxel coordinates."""
        ds = self._story_group(story)
        da = ds["bold"]
        if self._voxel_index is not None:
            da = da.isel(voxel=self._voxel_index)
        vox = {k: v for k, v in self.voxels.coords.items() if k in ("voxel", "voxel_valid", "mask_indices", "roi")}
        return da.assign_coords(tr_time=("tr", ds["tr_time"].values), **vox).rename(story)

    def bold_repeats(self, story: str) -> xr.DataArray | None:
        """(repeat, tr, voxel) responses of a repeated story, else None."""
        ds = self._story_group(story)
        if "bold_repeats" not in ds:
            return None
        da = ds["bold_repeats"]
        if self._voxel_index is not None:
            da = da.isel(voxel=self._voxel_index)
        return da.assign_coords(tr_time=("tr", ds["tr_time"].values))

    def n_repeats(self, story: str) -> int:
        return int(self.tree[f"stories/{story}"].attrs.get("n_repeats", 1))

    def words(self, story: str) -> xr.Dataset:
        """Words of ``story``: ``word`` (word) str with ``start`` and ``end`` seconds."""
        ds = self._story_group(story)
        return xr.Dataset({"start": ("word", ds["word_start"].values), "end": ("word", ds["word_end"].values)},
                          coords={"word": ("word", np.asarray([str(w) for w in ds["word"].values], dtype=object))})

    def word_times(self, story: str) -> np.ndarray:
        """(n_words,) word-interval midpoints, seconds (the public loader's word time)."""
        w = self.words(story)
        return (w["start"].values + w["end"].values) / 2

    def phones(self, story: str) -> xr.Dataset | None:
        """Phones of ``story`` (``phone``, ``start``, ``end``) when the source had a phone tier."""
        ds = self._story_group(story)
        if "phone" not in ds:
            return None
        return xr.Dataset({"start": ("phone", ds["phone_start"].values), "end": ("phone", ds["phone_end"].values)},
                          coords={"phone": ("phone", np.asarray([str(p) for p in ds["phone"].values], dtype=object))})

    def tr_times(self, story: str) -> xr.DataArray:
        """The TR grid the features of ``story`` are computed on, seconds (dim ``tr``).

        For LeBel this grid is longer than the responses: see :meth:`grid_offset`."""
        ds = self._story_group(story)
        return xr.DataArray(ds["grid_time"].values, dims="tr", name="tr_time", attrs={"units": "s"})

    def grid_offset(self, story: str) -> int:
        """Index in ``tr_times(story)`` of the first response row."""
        self._check_story(story)
        return int(self.tree[f"stories/{story}"].attrs.get("grid_offset", 0))

    def audio_path(self, story: str) -> str | None:
        self._check_story(story)
        if story in self._pending_audio:
            return self._pending_audio[story]
        return self.tree[f"stories/{story}"].attrs.get("audio_path")

    def set_audio_path(self, story: str, path: str | os.PathLike | None) -> None:
        """Set the audio file of ``story``; ``save()`` persists it."""
        self._check_story(story)
        self._pending_audio[story] = None if path is None else str(path)

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
        sub = Assembly(self.path, _stories=list(stories) if stories is not None else self._stories,
                       _voxels=None if voxels is None and self._voxel_index is None else base[idx])
        sub._pending_audio = {k: v for k, v in self._pending_audio.items() if k in sub._stories}
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
            for s, p in self._pending_audio.items():
                root[f"stories/{s}"].attrs["audio_path"] = p
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


def load_assembly(path: str | os.PathLike, *, import_to: str | os.PathLike | None = None) -> Assembly:
    """Open an assembly: a scalenc ``.zarr`` store or a LITcoder ``.pkl``.

    A pickle is imported once, through a restricted unpickler that runs no pickled code,
    to ``import_to`` (default: ``<name>.zarr`` next to it), and re-imported when the
    pickle is newer than that store.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"assembly not found: {p}")
    if p.suffix in (".pkl", ".pickle"):
        from .legacy import import_pickle

        out = Path(import_to) if import_to is not None else p.with_suffix(".zarr")
        if not out.exists() or out.stat().st_mtime < p.stat().st_mtime:
            logger.info("importing LITcoder pickle %s to %s", p, out)
            import_pickle(p, out, overwrite=out.exists())
        return Assembly(out)
    return Assembly(p)
