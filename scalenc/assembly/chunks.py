"""Chunk-level integrity of assembly stores.

zarr reads a missing chunk file as the array's ``fill_value`` (NaN for responses), and a
truncated one fails deep inside the codec. Neither must reach a fit as data: a NaN-filled
chunk silently turns a run's scores into NaN. Here

- :class:`CheckedChunks` is the array that :meth:`Assembly.bold` wraps in dask: every read
  first checks that the chunk files it covers exist, then decodes them, and fails with one
  :class:`~scalenc.assembly.writer.AssemblyChunkError` line naming the store, the story
  and the chunk;
- :func:`check_store` verifies every chunk of every array of a store (``scalenc assembly
  check PATH``).

Stores written by :class:`~scalenc.assembly.writer.AssemblyWriter` hold every chunk
(``chunks_complete`` attribute), so a missing file is always damage. In older stores a
chunk equal to the fill value may legitimately be absent; :func:`check_store` then reports
missing chunks of response arrays only.
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import zarr

from .writer import AssemblyChunkError

#: Arrays whose missing chunks are always damage, whatever the store's age.
RESPONSE_ARRAYS = ("bold", "bold_repeats")


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


class CheckedChunks:
    """Array-like view of one zarr array whose reads refuse missing or corrupt chunks.

    Parameters
    ----------
    store : path-like
        The assembly's ``.zarr`` directory.
    story : str
        Story name (named in errors).
    name : str
        Array name inside ``stories/<story>`` (``"bold"`` or ``"bold_repeats"``).

    Notes
    -----
    Picklable (it keeps paths and reopens the array on first use), so dask workers of a
    distributed cluster read through it as well.
    """

    def __init__(self, store: str | os.PathLike, story: str, name: str):
        self.store = Path(store)
        self.story = story
        self.name = name
        arr = self._array()
        self.shape = tuple(arr.shape)
        self.dtype = arr.dtype
        self.ndim = len(self.shape)
        self.chunks = tuple(arr.chunks)

    def _array(self) -> zarr.Array:
        arr = getattr(self, "_arr", None)
        if arr is None:
            arr = zarr.open_array(str(self.store / "stories" / self.story / self.name), mode="r")
            self._arr = arr
        return arr

    def __getstate__(self):
        d = dict(self.__dict__)
        d.pop("_arr", None)
        return d

    def _where(self, coords: tuple[int, ...]) -> str:
        key = self._array().metadata.encode_chunk_key(coords)
        return f"{self.store}: story {self.story!r}: chunk {self.name}/{key}"

    def _chunk_coords(self, key) -> Iterator[tuple[int, ...]]:
        """Chunk grid coordinates covered by a basic-indexing ``key``."""
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        ranges = []
        for k, n, c in zip(key, self.shape, self.chunks):
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                if stop <= start:
                    return iter(())
                ranges.append(range(start // c, (stop - 1) // c + 1))
            elif isinstance(k, (int, np.integer)):
                i = int(k) % n if n else 0
                ranges.append(range(i // c, i // c + 1))
            else:  # fancy indexing: check the whole axis
                ranges.append(range(0, -(-n // c)))
        return itertools.product(*ranges)

    def _require(self, coords: tuple[int, ...]) -> None:
        arr = self._array()
        key = arr.metadata.encode_chunk_key(coords)
        if not (self.store / "stories" / self.story / self.name / key).is_file():
            raise AssemblyChunkError(f"{self._where(coords)} is missing (damaged store; run `scalenc assembly "
                                     f"check` and rebuild it)")

    def read_chunk(self, coords: tuple[int, ...]) -> np.ndarray:
        """Decode one chunk, refusing a missing or undecodable one."""
        self._require(coords)
        sel = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(coords, self.chunks, self.shape))
        try:
            return self._array()[sel]
        except Exception as e:  # noqa: BLE001 - codec errors come in many types
            raise AssemblyChunkError(f"{self._where(coords)} cannot be decoded ({_short(e)})") from None

    def __getitem__(self, key) -> np.ndarray:
        covered = list(self._chunk_coords(key))
        for c in covered:
            self._require(c)
        try:
            return np.asarray(self._array()[key])
        except AssemblyChunkError:
            raise
        except Exception as e:  # noqa: BLE001 - find and name the chunk that fails
            for c in covered:
                self.read_chunk(c)
            raise AssemblyChunkError(f"{self.store}: story {self.story!r}: {self.name}{key!r} cannot be read "
                                     f"({_short(e)})") from None


def check_store(path: str | os.PathLike) -> tuple[int, list[str]]:
    """Verify the metadata of every group and array the schema expects
    (:func:`check_metadata`), then every chunk of every array of an assembly store.

    Parameters
    ----------
    path : path-like
        A ``.zarr`` assembly.

    Returns
    -------
    n_chunks : int
        Chunks read and decoded.
    problems : list of str
        One line per missing or unreadable ``zarr.json`` (naming the file) and per missing or
        undecodable chunk (empty when the store is whole).
    """
    path = Path(path)
    problems, arrays = check_metadata(path)
    if not arrays:
        return 0, problems
    complete = bool(zarr.open_group(str(path), mode="r").attrs.get("chunks_complete", False))
    n = 0
    for name in sorted(arrays):
        try:
            arr = zarr.open_array(str(path / name), mode="r")
        except Exception as e:  # noqa: BLE001 - parsable JSON that zarr still refuses
            problems.append(f"{path / name / 'zarr.json'} is not readable zarr metadata ({_short(e)})")
            continue
        _check_array(path, name, arr, complete, problems)
        n += arr.nchunks
    return n, problems


def _check_array(store: Path, name: str, arr: zarr.Array, complete: bool, problems: list[str]) -> None:
    parts = name.split("/")
    story = parts[1] if len(parts) == 3 and parts[0] == "stories" else None
    where = f"{store}: " + (f"story {story!r}: chunk {parts[2]}" if story else f"chunk {name}")
    strict = complete or parts[-1] in RESPONSE_ARRAYS
    grid = [range(-(-s // c)) for s, c in zip(arr.shape, arr.chunks)]
    for coords in itertools.product(*grid):
        key = arr.metadata.encode_chunk_key(coords)
        if not (store / name / key).is_file():
            if strict:
                problems.append(f"{where}/{key} is missing")
            continue
        sel = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(coords, arr.chunks, arr.shape))
        try:
            arr[sel]
        except Exception as e:  # noqa: BLE001 - any codec failure is a damaged chunk
            problems.append(f"{where}/{key} cannot be decoded ({_short(e)})")


# --------------------------------------------------------------------------------------
# metadata: the zarr.json of every group and array the schema expects
#: Arrays every story group holds (``bold_repeats`` too when ``n_repeats > 1``).
STORY_ARRAYS = ("bold", "tr_time", "grid_time", "word", "word_start", "word_end")
#: Arrays the ``voxels`` group holds.
VOXEL_ARRAYS = ("voxel", "voxel_valid")


def _read_node(file: Path, kind: str, where: str, problems: list[str]) -> dict | None:
    """The parsed ``zarr.json`` of a ``kind`` ("group" or "array") node, or None after one
    problem line naming the file."""
    import json

    prefix = f"{where}{file}"
    if not file.is_file():
        gone = "" if file.parent.is_dir() else f" (the folder {file.parent.name} is gone)"
        problems.append(f"{prefix} is missing{gone}")
        return None
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        problems.append(f"{prefix} is not valid JSON ({_short(e)})")
        return None
    except OSError as e:
        problems.append(f"{prefix} cannot be read ({_short(e)})")
        return None
    if not isinstance(meta, dict) or meta.get("node_type") != kind:
        found = meta.get("node_type") if isinstance(meta, dict) else type(meta).__name__
        problems.append(f"{prefix} is not zarr {kind} metadata (node_type {found!r})")
        return None
    if kind == "array" and not (isinstance(meta.get("shape"), list) and isinstance(meta.get("chunk_grid"), dict)):
        problems.append(f"{prefix} is not zarr array metadata (no shape or chunk_grid)")
        return None
    return meta


def check_metadata(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Verify the ``zarr.json`` of every group and array the assembly schema expects.

    The root group, ``stories``, ``voxels`` (with ``voxel`` and ``voxel_valid``), and for
    each story of the root's ``stories`` attribute its group and its arrays
    (:data:`STORY_ARRAYS`, ``bold_repeats`` when repeated); any other sub-folder of these
    groups must be a node with readable metadata too (zarr would silently not see it).

    Parameters
    ----------
    path : path-like
        A ``.zarr`` assembly.

    Returns
    -------
    problems : list of str
        One line per missing, unparsable or wrong ``zarr.json``, naming the file (and the
        story); empty when the metadata are whole.
    arrays : list of str
        Paths (inside the store) of the arrays whose metadata are readable.
    """
    path = Path(path)
    problems: list[str] = []
    arrays: list[str] = []
    root = _read_node(path / "zarr.json", "group", "", problems)
    if root is None:
        return problems, arrays
    stories = (root.get("attributes") or {}).get("stories")
    if not isinstance(stories, list):
        problems.append(f"{path / 'zarr.json'}: no 'stories' attribute (not a scalenc assembly store)")
        return problems, arrays

    def group(rel: str, expected, where: str) -> None:
        meta = _read_node(path / rel / "zarr.json", "group", where, problems)
        if meta is None:
            return
        expected = tuple(expected(meta.get("attributes") or {}) if callable(expected) else expected)
        names = list(expected) + sorted(p.name for p in (path / rel).iterdir()
                                        if p.is_dir() and p.name not in expected)
        for name in names:
            if _read_node(path / rel / name / "zarr.json", "array", where, problems) is not None:
                arrays.append(f"{rel}/{name}")

    group("voxels", VOXEL_ARRAYS, "")
    if _read_node(path / "stories" / "zarr.json", "group", "", problems) is None:
        return problems, arrays
    for s in stories:
        group(f"stories/{s}", lambda attrs: STORY_ARRAYS + (("bold_repeats",) if attrs.get("n_repeats", 1) != 1
                                                           else ()), f"story {s!r}: ")
    return problems, arrays
