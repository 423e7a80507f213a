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


@pytest.mark.slow
def test_pipeline_tutorial_child_runs_the_litcoder_comparison_code_with_scalenc(tmp_path):
    """The scalenc side of `pipeline.py --litcoder`: the tutorials' code (LeBel trimming, last
    story held out) on a small synthetic set prints its stage times and recovers the signal."""
    import json
    import os

    from scalenc.synthetic import synthetic

    ds = synthetic(tmp_path / "data", n_stories=4, words_per_story=600, n_voxels=120, audio=False, seed=3)
    env = {**os.environ, "WANDB_MODE": "disabled"}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pipeline.py"), "--child", "--tutorial",
                        "--package", "scalenc", "--assembly", str(ds.assembly_path), "--work", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"imports", "extract", "align", "fit", "write", "peak"} <= set(out)
    assert out["median_r"] > 0.4  # measured 0.62: 80 % of the synthetic voxels are driven
    assert (tmp_path / "r-scalenc.npy").is_file() and (tmp_path / "results-scalenc").is_dir()


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_with_quick_sizes(tmp_path):
    """`benchmarks/gpu.py --device cpu --quick`: every section gives its row, no section fails,
    and the numbers are sane (float32 ridge on every CPU backend chooses float64's alphas, the
    trainer's two runs agree, bfloat16 features are close to float32)."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--quick",
                        "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = dict(re.findall(r"^\| ([^|]+?) \| [^|]+ \| ([^|]+) \|$", r.stdout, re.M))  # no | inside a cell
    assert [k for k in rows if k not in ("check", "---")] == [
        "GPU tests", "ridge CV (numpy)", "ridge CV (torch)", "trainer CPU vs device", "speech (whisper)",
        "speech (hubert)", "LM extractor", "dask-cuda"], rows
    assert "FAILED" not in r.stdout
    assert re.search(r"0 failed, \d+ skipped", rows["GPU tests"])
    for b in ("numpy", "torch"):
        same = float(re.search(r"same alpha as float64 on ([\d.]+) %", rows[f"ridge CV ({b})"]).group(1))
        assert same >= 99.0
        assert float(re.search(r"max CV-score diff ([\d.e+-]+)", rows[f"ridge CV ({b})"]).group(1)) < 1e-4
    assert float(re.search(r"largest r difference ([\d.e+-]+)", rows["trainer CPU vs device"]).group(1)) < 1e-3
    for name in ("speech (whisper)", "speech (hubert)", "LM extractor"):
        rel = float(re.search(r"bfloat16 vs float32: largest difference / largest value ([\d.e+-]+)",
                              rows[name]).group(1))
        assert 0 < rel < 0.1
    assert float(rows["LM extractor"].split(" words/s")[0].replace(",", "")) > 0
    assert rows["dask-cuda"].startswith("skipped: no CUDA device")
