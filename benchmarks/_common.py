"""Helpers shared by the benchmark scripts: the machine line and peak memory."""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
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


def drop_caches() -> bool:
    """Drop the page cache (root only) so that a stage reads from disk; whether it worked."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def run_child(script: str, stage: str, root: Path, out: Path) -> dict:
    """Run ``script --child STAGE --root ROOT --out OUT`` in a fresh process (cold caches, its own
    peak memory) and return the JSON dict its last output line prints."""
    dropped = drop_caches()
    cmd = [sys.executable, script, "--child", stage, "--root", str(root), "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"stage {stage} failed:\n{res.stderr}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    r["cache_dropped"] = dropped
    return r
