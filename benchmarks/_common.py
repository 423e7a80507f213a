"""Helpers shared by the benchmark scripts: the machine line and peak memory."""
from __future__ import annotations

import os
import platform
import resource
from pathlib import Path


def machine() -> str:
    """``host: N cores, M GiB, platform`` (what every recorded table names)."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node() or 'host'}: {os.cpu_count()} cores, {mem:.0f} GiB, {platform.platform()}"


def peak_rss_bytes(pid: int | str = "self") -> int:
    """Peak resident memory of a process (VmHWM). Not ``ru_maxrss``: on Linux that keeps
    the high-water mark of the parent across fork + exec."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def emit(table: str, record: bool) -> None:
    """Print a result table and, with ``record``, append it to ``benchmarks/RESULTS.md``."""
    print(table)
    if record:
        with open(Path(__file__).resolve().parent / "RESULTS.md", "a") as f:
            f.write("\n" + table)
