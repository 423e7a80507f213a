"""Small I/O helpers shared by every stage: atomic directory writes.

Every on-disk result of scalenc (assemblies, caches, results) is first written to a
temporary sibling path and renamed into place only when complete, so an interrupted or
failed write never leaves a half-written store that a later run could read.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` when the block succeeds.

    Parameters
    ----------
    path : path-like
        Final location of the directory (e.g. ``subject.zarr``).
    overwrite : bool
        Replace an existing ``path``. Without it an existing ``path`` is an error,
        raised before anything is written.

    Yields
    ------
    tmp : Path
        An empty directory next to ``path`` (same file system, so the final rename
        is atomic). If the block raises, ``tmp`` is removed and ``path`` is untouched.
    """
    final = Path(path)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; pass overwrite=True to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    logger.debug("wrote %s", final)
