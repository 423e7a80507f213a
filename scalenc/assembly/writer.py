"""Writing assemblies: :class:`AssemblyWriter` (atomic, story by story) and the store's
schema constants. The layout is described in :mod:`scalenc.assembly.core`.

This module imports nothing else from :mod:`scalenc.assembly`, so readers (``lebel``,
``legacy``, ``bids``...) and the reader class in ``core`` all build on it without an
import cycle.
"""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from .._io import atomic_directory

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_VOXEL_CHUNK = 2048


#: Root attribute ``audio_paths`` of stores whose relative audio paths count from the store
#: folder (older stores kept them as given, relative to the builder's working directory).
AUDIO_RELATIVE_TO_STORE = "relative to the store"


def stored_audio_path(audio: str | os.PathLike, store: str | os.PathLike) -> str:
    """How an audio path is stored: relative to the ``store`` folder when the file lies
    next to the store (under the folder that holds it: the store and its data move
    together), absolute otherwise (the store moves alone). A relative ``audio`` counts
    from the working directory."""
    a = Path(os.path.normpath(Path(audio).expanduser().absolute()))
    s = Path(os.path.normpath(Path(store).expanduser().absolute()))
    if a.is_relative_to(s.parent):
        return Path(os.path.relpath(a, s)).as_posix()
    return str(a)


def resolve_audio_path(stored: str | None, store: str | os.PathLike, *, legacy: bool = False) -> str | None:
    """The file a stored audio path names: absolute as is, relative from the ``store``
    folder (``legacy`` stores: from the working directory when that file exists)."""
    if stored is None:
        return None
    p = Path(stored).expanduser()
    if p.is_absolute():
        return str(p)
    if legacy and p.exists():
        return str(p.absolute())
    return os.path.normpath(Path(store).expanduser().absolute() / p)


#: Every chunk is written, even one equal to the fill value, so that a missing chunk file
#: always means a damaged store (readers refuse it instead of reading the fill value).
_DENSE = {"write_empty_chunks": True}


class AssemblyError(ValueError):
    """An assembly input or store is inconsistent; the message names the story/file."""


class AssemblyChunkError(AssemblyError):
    """A chunk of an assembly store is missing or cannot be decoded; the message names the
    store, the story and the chunk."""


def _codecs():
    """Compression for float32 responses: blosc-lz4 with byte shuffle (fast; the ratio on
    fMRI float32 data is modest, speed matters more than size), then a CRC32C checksum of
    the compressed bytes, so that a truncated or altered chunk fails to decode (blosc alone
    decodes some truncated chunks into garbage without an error)."""
    return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), Crc32cCodec()]


def _write_array(group: zarr.Group, name: str, data, dims: Sequence[str], *,
                 chunks=None, attrs: Mapping[str, Any] | None = None, dtype=None):
    """Write one array with xarray-readable dimension names; return the zarr array."""
    data = np.asarray(data) if dtype is None else np.asarray(data, dtype=dtype)
    chunks = chunks or tuple(max(1, n) for n in data.shape) or None
    if data.dtype.kind in "UO":
        arr = group.create_array(name, shape=data.shape, dtype=str, dimension_names=list(dims), chunks=chunks,
                                 config=_DENSE)
        if data.size:
            arr[...] = data.astype(object)
    else:
        fill = np.nan if data.dtype.kind == "f" else 0
        arr = group.create_array(name, shape=data.shape, dtype=data.dtype, dimension_names=list(dims),
                                 chunks=chunks, fill_value=fill, config=_DENSE,
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
    voxel_coords : dict name -> (n_voxels,) array, optional
        Further per-voxel coordinates (e.g. ``hemi`` and ``vertex`` of surface data).
    voxel_space : dict, optional
        Where the voxels live, for brain maps (JSON-serialisable), stored as the root
        attribute ``voxel_space``: ``{"kind": "volume", "shape": [x, y, z], "affine": 4x4,
        "order": "C"}`` (``mask_indices`` are C-order flat indices into ``shape``) or
        ``{"kind": "surface", "mesh": "fsaverage5", "hemispheres": ["left", "right"]}``.
    overwrite : bool
        Replace an existing store at ``path``.
    """

    def __init__(self, path: str | os.PathLike, *, dataset: str, subject: str, tr_seconds: float,
                 n_voxels: int, test_stories: Iterable[str] = (), voxel_chunk: int = DEFAULT_VOXEL_CHUNK,
                 mask_indices=None, roi=None, timing: Mapping[str, Any] | None = None,
                 attrs: Mapping[str, Any] | None = None, voxel_coords: Mapping[str, Any] | None = None,
                 voxel_space: Mapping[str, Any] | None = None, overwrite: bool = False):
        self.path = Path(path)
        if tr_seconds <= 0:
            raise AssemblyError(f"tr_seconds must be > 0, got {tr_seconds}")
        self.n_voxels = int(n_voxels)
        self.tr_seconds = float(tr_seconds)
        self.voxel_chunk = int(min(max(1, voxel_chunk), max(1, self.n_voxels)))
        self.test_stories = list(test_stories)
        self._meta = dict(dataset=dataset, subject=subject, tr_seconds=self.tr_seconds,
                          timing=dict(timing or {}), voxel_chunk=self.voxel_chunk,
                          audio_paths=AUDIO_RELATIVE_TO_STORE, **dict(attrs or {}))
        self._mask_indices = None if mask_indices is None else np.asarray(mask_indices)
        self._roi = None if roi is None else np.asarray(roi)
        self._voxel_coords = {k: np.asarray(v) for k, v in dict(voxel_coords or {}).items()}
        reserved = {"voxel", "voxel_valid", "voxel_has_nan", "voxel_constant", "mask_indices", "roi"}
        if reserved & set(self._voxel_coords):
            raise AssemblyError(f"voxel_coords may not use the reserved names {sorted(reserved & set(self._voxel_coords))}")
        for nm, a in (("mask_indices", self._mask_indices), ("roi", self._roi), *self._voxel_coords.items()):
            if a is not None and a.shape != (self.n_voxels,):
                raise AssemblyError(f"{nm} has shape {a.shape}, expected ({self.n_voxels},)")
        if voxel_space is not None:
            self._meta["voxel_space"] = dict(voxel_space)
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
        for k, a in self._voxel_coords.items():
            _write_array(vox, k, a.astype(str) if a.dtype.kind in "UO" else a, ["voxel"])
        vox.attrs["coords"] = ["voxel_valid", "voxel_has_nan", "voxel_constant",
                               *(["mask_indices"] if self._mask_indices is not None else []),
                               *(["roi"] if self._roi is not None else []), *self._voxel_coords]
        train = [s for s in self._stories if s not in self.test_stories]
        self.root.attrs.update(dict(schema_version=SCHEMA_VERSION, chunks_complete=True, stories=list(self._stories),
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
                                  dimension_names=["repeat", "tr", "voxel"], fill_value=np.nan, config=_DENSE,
                                  compressors=_codecs())
            total = np.zeros((n_tr, n_vox), np.float64)
            for r in range(n_rep):
                block = np.asarray(bold[r], dtype=np.float32)
                self._flag(block, name, source)
                _write_by_chunk(reps, block, self.voxel_chunk, lead=(r,))
                total += block
            mean = (total / n_rep).astype(np.float32)
            del total
        else:
            n_rep = 1
            mean = _read_float32(bold)
            self._flag(mean, name, source)
        arr = g.create_array("bold", shape=(n_tr, n_vox), dtype="f4", chunks=chunks2,
                             dimension_names=["tr", "voxel"], fill_value=np.nan, compressors=_codecs(),
                             config=_DENSE)
        _write_by_chunk(arr, mean, self.voxel_chunk)
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
                            audio_path=None if audio_path is None else stored_audio_path(audio_path, self.path),
                            source=source))
        self._stories.append(name)
        logger.info("wrote story %s: %d TRs x %d voxels%s", name, n_tr, n_vox,
                    f" ({n_rep} repeats)" if n_rep > 1 else "")

    def _flag(self, block: np.ndarray, story: str, source: str | None) -> None:
        nan = np.isnan(block).any(axis=0)
        with warnings.catch_warnings():  # all-NaN voxels are reported below, not as numpy warnings
            warnings.simplefilter("ignore", RuntimeWarning)
            const = np.zeros_like(nan) if block.shape[0] < 2 else \
                (np.nanmax(block, axis=0) == np.nanmin(block, axis=0)) if nan.any() else \
                (block.max(axis=0) == block.min(axis=0))
        const &= ~nan
        if nan.any() or const.any():
            msg = (f"story {story!r}{f' ({source})' if source else ''}: {int(nan.sum())} voxels contain NaN and "
                   f"{int(const.sum())} are constant; they are kept and flagged in voxel_valid")
            warnings.warn(msg, stacklevel=3)  # once: the command line shows warnings as log lines
        self._has_nan |= nan
        self._constant |= const


def _write_by_chunk(arr: zarr.Array, data: np.ndarray, voxel_chunk: int, lead: tuple = ()) -> None:
    """Write a (tr, voxel) block one voxel chunk at a time: zarr encodes the chunks of one
    assignment concurrently, each with copies, which for a whole story would hold several
    times the story in memory; this keeps it to about one chunk."""
    for c0 in range(0, data.shape[-1], voxel_chunk):
        arr[(*lead, slice(None), slice(c0, c0 + voxel_chunk))] = data[..., c0:c0 + voxel_chunk]


def _read_float32(a) -> np.ndarray:
    """Read a 2-D array-like (numpy, h5py, dask) into float32 without a float64 copy."""
    astype = getattr(a, "astype", None)
    if hasattr(a, "id") and astype is not None:  # h5py: convert while reading
        return a.astype("f4")[()]
    if hasattr(a, "compute"):
        a = a.compute()
    return np.asarray(a, dtype=np.float32)
