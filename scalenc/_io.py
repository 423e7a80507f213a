"""Small I/O helpers shared by every stage: atomic directory writes.

Every on-disk result of scalenc (assemblies, caches, results) is first written to a
temporary sibling path and renamed into place only when complete, so an interrupted or
failed write never leaves a half-written store that a later run could read.

The temporary is named ``.<name>.tmp-<hex>.<pid>.<host>``; a process killed mid-write
(``kill -9``) cannot remove it, so the next write of the same target removes the
temporaries whose process is gone on this host (and those of the older ``.tmp-<hex>``
form, which carry no owner).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

_HOST = socket.gethostname().replace("/", "_") or "localhost"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the leftovers of interrupted atomic writes of ``path``.

    A leftover ``.<name>.tmp-*`` / ``.<name>.old-*`` sibling is stale when the process that
    made it is gone (same host) or when it has the older owner-less name. Temporaries of
    live processes, and of other hosts (a shared file system), are left alone.

    Returns
    -------
    removed : list of Path
    """
    final = Path(path)
    if not final.parent.is_dir():
        return []
    pat = re.compile(r"^\." + re.escape(final.name) + r"\.(?:tmp|old)-[0-9a-f]{8}(?:\.(\d+)\.(.+))?$")
    removed = []
    for cand in final.parent.iterdir():
        m = pat.match(cand.name)
        if m is None:
            continue
        pid, host = m.group(1), m.group(2)
        if pid is not None and (host != _HOST or _pid_alive(int(pid))):
            continue
        shutil.rmtree(cand, ignore_errors=True)
        if not cand.exists():
            removed.append(cand)
    if removed:
        logger.warning("removed %d stale temporar%s of %s left by an interrupted write: %s", len(removed),
                       "y" if len(removed) == 1 else "ies", final, ", ".join(p.name for p in removed))
    return removed


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
    remove_stale_temporaries(final)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; pass overwrite=True to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}.{os.getpid()}.{_HOST}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}.{os.getpid()}.{_HOST}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    logger.debug("wrote %s", final)
