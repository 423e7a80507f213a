"""The benchmark scripts run end to end at a scaled-down size (numbers are not asserted
as timings; the recorded full-size tables live in benchmarks/RESULTS.md)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_assembly_build_benchmark_small(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "assembly_build.py"), "--stories", "3",
                        "--voxels", "3000", "--rows", "60", "--test-repeats", "2", "--workdir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = re.findall(r"^\| (h5py read \+ zarr write \(I/O floor\)|scalenc lebel.build) \| ([\d.]+) \| (\d+) \| (\d+) \|$",
                      r.stdout, re.M)
    assert [x[0] for x in rows] == ["h5py read + zarr write (I/O floor)", "scalenc lebel.build"]
    peak_mib = int(rows[1][3])
    assert 0 < peak_mib < 1024  # streaming: a few stories of 3,000 voxels need far less than 1 GiB
    assert "scalenc / floor time ratio" in r.stdout
