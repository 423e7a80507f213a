"""Training responses of several stories, stacked along rows and read a voxel block at a time.

A run's training targets are the kept rows of every training story (trimmed as the
alignment trims them, z-scored per story), side by side in time: the largest array of
the pipeline (a LeBel subject: ~9,000 rows x ~90,000 voxels, 3 GB of float32).
:class:`StackedResponses` never holds it whole: :meth:`~StackedResponses.read` assembles
the rows of one block of voxels straight from the stories' zarr chunks (through
:class:`~scalenc.assembly.chunks.CheckedChunks`, so a missing or corrupt chunk is a
one-line error naming the story and chunk), trims and z-scores each story's part, and
:meth:`~StackedResponses.iter_blocks` reads the next block in a background thread while
the caller works on the current one. Blocks follow the store's voxel chunks, so every
chunk is decoded once. Peak memory: two blocks of (rows x block width) float32.

For a distributed cluster, :meth:`~StackedResponses.to_dask` gives the same values as a
dask array (one task per story chunk; workers read the chunks themselves).
"""
from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..align.trim import zscore as _zscore
from .chunks import CheckedChunks


class StackedResponses:
    """Rows ``rows[i]`` of each story's ``(tr, voxel)`` responses, stacked in story order.

    Parameters
    ----------
    sources : sequence of CheckedChunks (or 2-D arrays)
        Each story's stored responses.
    rows : sequence of slice
        The rows of each story that are kept (the alignment's target slice).
    zscore : bool
        Z-score each story's kept rows per voxel (as :func:`scalenc.align.align_story`).
    voxel_index : (v,) int array, optional
        Columns of the sources that are the voxels (an assembly's voxel selection).
    names : sequence of str, optional
        Story names (for errors and the dask graph's keys).
    row_index : (n,) int array, optional
        Rows of the stacked array that this view keeps (e.g. an outer fold's training rows);
        the z-scoring statistics are still those of each whole story part.
    dtype : numpy dtype
        dtype of the blocks (float32).
    """

    ndim = 2

    def __init__(self, sources: Sequence[Any], rows: Sequence[slice], *, zscore: bool = True,
                 voxel_index: np.ndarray | None = None, names: Sequence[str] | None = None,
                 row_index: np.ndarray | None = None, dtype=np.float32):
        if len(sources) != len(rows) or not sources:
            raise ValueError("StackedResponses needs one row slice per source, and at least one source")
        self.sources = list(sources)
        self.rows = [slice(*r.indices(s.shape[0])) for r, s in zip(rows, self.sources)]
        self.zscore = bool(zscore)
        self.names = list(names) if names is not None else [f"part {i}" for i in range(len(sources))]
        self.dtype = np.dtype(dtype)
        n_src = {int(s.shape[1]) for s in self.sources}
        if len(n_src) != 1:
            raise ValueError(f"the stories have different voxel counts: {sorted(n_src)}")
        self.voxel_index = None if voxel_index is None else np.asarray(voxel_index, dtype=np.int64)
        self._counts = [len(range(*r.indices(s.shape[0]))) for r, s in zip(self.rows, self.sources)]
        n_all = int(sum(self._counts))
        self.row_index = None if row_index is None else np.asarray(row_index, dtype=np.int64)
        n = n_all if self.row_index is None else self.row_index.size
        v = n_src.pop() if self.voxel_index is None else self.voxel_index.size
        self.shape = (n, int(v))

    # ------------------------------------------------------------------ views
    def __repr__(self) -> str:
        return (f"StackedResponses({len(self.sources)} stories, shape={self.shape}, zscore={self.zscore}, "
                f"chunk width {self.chunk_width})")

    def __len__(self) -> int:
        return self.shape[0]

    def take_rows(self, idx) -> StackedResponses:
        """The rows ``idx`` of this view (same sources, z-scored by whole story parts)."""
        idx = np.arange(self.shape[0])[np.asarray(idx)]
        base = idx if self.row_index is None else self.row_index[idx]
        return StackedResponses(self.sources, self.rows, zscore=self.zscore, voxel_index=self.voxel_index,
                                names=self.names, row_index=base, dtype=self.dtype)

    def __getitem__(self, key):
        """``Y[rows]`` (a view) or ``Y[rows, voxels]`` (read, numpy)."""
        if not isinstance(key, tuple):
            return self.take_rows(key)
        r, c = key
        view = self if (isinstance(r, slice) and r == slice(None)) else self.take_rows(r)
        if isinstance(c, slice):
            a, b, step = c.indices(view.shape[1])
            if step == 1:
                return view.read(a, b)
        cols = np.arange(view.shape[1])[c]
        return np.asarray(view)[:, cols]

    @property
    def chunk_width(self) -> int:
        """Voxels per stored chunk (reading a block aligned to it decodes each chunk once)."""
        ch = getattr(self.sources[0], "chunks", None)
        if ch is None or self.voxel_index is not None:
            return 1
        return int(ch[1])

    def block_width(self, voxel_block: int | None) -> int:
        """Voxels per block: ``voxel_block`` rounded to whole stored chunks when a chunk is
        at most ``voxel_block`` wide (each chunk decoded once); else ``voxel_block`` itself
        (memory stays bounded; each chunk is then decoded once per block it feeds)."""
        from ..ridge.solver import voxel_block_width  # the one rule, shared with the dask path

        return voxel_block_width(self.shape[1], voxel_block, self.chunk_width)

    # ------------------------------------------------------------------ reading
    def _columns(self, a: int, b: int):
        """(source key along voxels, positions to take from what it returns or None)."""
        if self.voxel_index is None:
            return slice(a, b), None
        cols = self.voxel_index[a:b]
        if cols.size == 0:
            return slice(0, 0), None
        lo, hi = int(cols.min()), int(cols.max()) + 1
        if hi - lo == cols.size and np.all(np.diff(cols) == 1):
            return slice(lo, hi), None
        return slice(lo, hi), cols - lo

    def read(self, a: int, b: int) -> np.ndarray:
        """The stacked rows of voxels ``a:b`` as a C-contiguous (n, b - a) array."""
        a, b = max(0, int(a)), min(self.shape[1], int(b))
        key, take = self._columns(a, b)
        n_all = int(sum(self._counts))
        out = np.empty((n_all, max(b - a, 0)), dtype=self.dtype)
        at = 0
        for src, r, k in zip(self.sources, self.rows, self._counts):
            part = np.asarray(src[r, key])
            if take is not None:
                part = part[:, take]
            part = part.astype(self.dtype, copy=False)
            out[at:at + k] = _zscore(part) if self.zscore else part
            at += k
        return out if self.row_index is None else out[self.row_index]

    def iter_blocks(self, width: int, *, prefetch: bool = True) -> Iterator[tuple[slice, np.ndarray]]:
        """``(voxel slice, block)`` for consecutive blocks of ``width`` voxels; with
        ``prefetch`` the next block is read in a background thread meanwhile."""
        v = self.shape[1]
        spans = [(s, min(s + width, v)) for s in range(0, v, max(1, int(width)))]
        if not prefetch or len(spans) < 2:
            for a, b in spans:
                yield slice(a, b), self.read(a, b)
            return
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="scalenc-read") as pool:
            nxt = pool.submit(self.read, *spans[0])
            for i, (a, b) in enumerate(spans):
                block = nxt.result()
                nxt = pool.submit(self.read, *spans[i + 1]) if i + 1 < len(spans) else None
                yield slice(a, b), block
                del block

    def __array__(self, dtype=None, copy=None):
        out = self.read(0, self.shape[1])
        return out if dtype is None else out.astype(dtype, copy=False)

    def to_dask(self):
        """The same values as a dask array (rows in one chunk per story, voxels in the
        stored chunks), for a distributed cluster whose workers read the chunks."""
        import dask.array as da
        from dask.base import tokenize

        parts = []
        for src, r, name in zip(self.sources, self.rows, self.names):
            if isinstance(src, CheckedChunks):
                arr = da.from_array(src, chunks=src.chunks, asarray=False, lock=False,
                                    name=f"stacked-{tokenize(str(src.store), src.story, src.name)}",
                                    meta=np.empty((0, 0), src.dtype))
            else:
                arr = da.asarray(src)
            arr = arr[r]
            if self.voxel_index is not None:
                arr = arr[:, self.voxel_index]
            arr = arr.astype(self.dtype)
            if self.zscore:  # each story's rows in one chunk, z-scored by the same numpy code as read()
                arr = arr.rechunk({0: -1}).map_blocks(_zscore, dtype=self.dtype)
            parts.append(arr)
        out = da.concatenate(parts, axis=0)
        return out if self.row_index is None else out[self.row_index]


def is_stacked(Y) -> bool:
    return isinstance(Y, StackedResponses)


__all__ = ["StackedResponses", "is_stacked"]
