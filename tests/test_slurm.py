"""A real SLURM: ``scalenc run CONFIG --cluster <jobqueue yaml>`` with 2 worker jobs (over TLS
with the run's certificate, removed at the end) equals an in-process run; the ``scalenc:`` scale section of jobqueue YAMLs; ``deploy/slurm/local-slurm.sh``'s
refusals.

The SLURM test needs a reachable SLURM (``sinfo`` answers with an idle or mixed partition):
``.ci/run`` starts a one-node one with ``deploy/slurm/local-slurm.sh`` where it can (root, apt);
elsewhere the test is skipped with the reason.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scalenc import results
from scalenc.cli import main
from scalenc.distributed import scale_settings

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "slurm" / "local-slurm.sh"


def _slurm_partition() -> tuple[str | None, str]:
    """(partition with a usable node, "") or (None, why not)."""
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%P %a %t"], capture_output=True, text=True, timeout=20)
    except FileNotFoundError:
        return None, "no SLURM here: sinfo not found (as root, deploy/slurm/local-slurm.sh starts one)"
    except subprocess.TimeoutExpired:
        return None, "no SLURM here: sinfo did not answer within 20 s"
    if r.returncode != 0:
        return None, f"no SLURM reachable: sinfo failed ({(r.stderr or r.stdout).strip()[:200]})"
    usable = [line.split() for line in r.stdout.splitlines() if len(line.split()) == 3]
    for part, avail, state in usable:
        if avail == "up" and state.rstrip("*~#") in ("idle", "mix"):
            return part.rstrip("*"), ""
    return None, f"SLURM answers but no partition has an idle node: {r.stdout.strip()[:200]!r}"


def _squeue(name: str) -> list[str]:
    r = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i %T"], capture_output=True, text=True, timeout=20)
    return [line for line in r.stdout.splitlines() if line.strip()]


CONFIG = """
run_name = "{name}"
results_dir = "out"
assembly = "{assembly}"
fir_delays = [1, 2, 3, 4]
logger_backend = "none"

[model]
alphas_logspace = [-1, 5, 7]
n_inner_folds = 3
dtype = "float64"
voxel_block = 16

[[extractors]]
modality = "wordrate"
cache_dir = "cache-{name}"
[extractors.config]
include_phonemes = false

[[extractors]]
modality = "embeddings"
model_name = "{embeddings}"
cache_dir = "cache-{name}"
"""


@pytest.mark.slow
def test_scalenc_run_on_slurm_with_two_worker_jobs_equals_in_process(tmp_path):
    partition, why = _slurm_partition()
    if partition is None:
        pytest.skip(why)
    from scalenc.synthetic import synthetic

    data = synthetic(tmp_path / "data", n_stories=5, words_per_story=220, n_voxels=48, embedding_dim=8,
                     n_test_repeats=2, audio=False, voxel_chunk=16, seed=5)
    job_name = f"scalenc-test-{os.getpid()}"
    logs = tmp_path / "slurm-logs"
    tls = tmp_path / "tls"  # the run certificate's parent directory (shared with the worker jobs)
    (tmp_path / "jobqueue.yaml").write_text(f"""
jobqueue:
  slurm:
    job-name: {job_name}
    queue: {partition}
    cores: 1
    processes: 1
    memory: 1GiB
    walltime: "00:10:00"
    python: {sys.executable}
    local-directory: {tmp_path / "worker-space"}
    log-directory: {logs}
    shared-temp-directory: {tls}
    death-timeout: 60
    job-script-prologue:
      - "export PYTHONPATH={ROOT} OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1"
      - "export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1"
      - "stat -c '%a %n' {tls}/scalenc-tls-* {tls}/scalenc-tls-*/* > {tmp_path}/tls-modes-$SLURM_JOB_ID"
      - "cp \\"$0\\" {tmp_path}/job-script-$SLURM_JOB_ID"
scalenc:
  jobs: 2
  wait-for-workers: 2
  wait-timeout: 120
""")
    for name in ("inproc", "slurm"):
        (tmp_path / f"{name}.toml").write_text(CONFIG.format(name=name, assembly=data.assembly_path,
                                                             embeddings=data.embeddings_path))

    assert main(["run", str(tmp_path / "inproc.toml")]) == 0

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "scalenc.cli", "run", str(tmp_path / "slurm.toml"),
                        "--cluster", str(tmp_path / "jobqueue.yaml")],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "run slurm: median r" in r.stdout

    ref = results.load(tmp_path / "out" / "inproc").layer()
    got = results.load(tmp_path / "out" / "slurm").layer()
    np.testing.assert_allclose(got["r"].values, ref["r"].values, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(got["alpha"].values, ref["alpha"].values)
    assert np.isfinite(ref["r"].values).all() and np.nanmedian(ref["r"].values) > 0.1

    # two worker jobs ran under SLURM (their logs), wrote the features, and were cancelled at exit
    outs = sorted(logs.glob(f"{job_name}-*.err")) + sorted(logs.glob(f"{job_name}-*.out"))
    assert len({p.stem for p in outs}) == 2, [p.name for p in outs]
    assert len(os.listdir(tmp_path / "cache-slurm")) == 2 * len(data.assembly().stories)

    # TLS: the workers connected to a tls:// scheduler with the run certificate, which they saw
    # in a private directory (0700, key 0600) and which is gone now that the cluster closed
    modes, scripts = sorted(tmp_path.glob("tls-modes-*")), sorted(tmp_path.glob("job-script-*"))
    assert len(modes) == len(scripts) == 2
    for m, js in zip(modes, scripts):
        seen = dict(line.split(" ", 1)[::-1] for line in m.read_text().splitlines())
        (d,) = [k for k in seen if k.rsplit("/", 1)[-1].startswith("scalenc-tls-")]
        assert seen[d] == "700" and seen[f"{d}/dask.key"] == "600", seen
        script = js.read_text()  # the worker's command: a tls:// scheduler, the run's key
        assert " tls://" in script and f"--tls-key {d}/dask.key" in script, script[-600:]
    assert tls.is_dir() and list(tls.iterdir()) == []
    for _ in range(30):
        if not _squeue(job_name):
            break
        time.sleep(1)
    assert _squeue(job_name) == []


@pytest.mark.slow
def test_sbatch_script_runs_scheduler_workers_and_client_over_tls(tmp_path):
    """deploy/slurm/scalenc.sbatch on one node (its #SBATCH sizes overridden): the scheduler
    listens on tls:// only, the run finishes, and the job's certificate is gone afterwards."""
    partition, why = _slurm_partition()
    if partition is None:
        pytest.skip(why)
    from scalenc.synthetic import synthetic

    data = synthetic(tmp_path / "data", n_stories=4, words_per_story=200, n_voxels=16, embedding_dim=8,
                     n_test_repeats=2, audio=False, voxel_chunk=16, seed=6)
    (tmp_path / "sb.toml").write_text(CONFIG.format(name="sb", assembly=data.assembly_path,
                                                    embeddings=data.embeddings_path))
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT), SCALENC_PYTHON=sys.executable, SCALENC_RUN_DIR=str(run_dir),
               DASK_LOGGING__DISTRIBUTED="info")  # the scheduler's log says where it listens
    r = subprocess.run(["sbatch", "--wait", "-p", partition, "--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=1",
                        "--mem=2G", "--time=00:10:00", f"--job-name=scalenc-sb-{os.getpid()}",
                        f"--output={tmp_path / 'job.out'}", str(ROOT / "deploy/slurm/scalenc.sbatch"),
                        str(tmp_path / "sb.toml")], capture_output=True, text=True, timeout=400, env=env,
                       cwd=tmp_path)
    out = (tmp_path / "job.out").read_text() if (tmp_path / "job.out").exists() else ""
    assert r.returncode == 0, (r.stderr + out)[-3000:]
    assert "run sb: median r" in out
    log = (run_dir / "scheduler.log").read_text()
    assert re.search(r"Scheduler at:\s+tls://", log) and "Register worker addr: tls://" in log, log[-2000:]
    assert not list(run_dir.glob("scalenc-tls-*"))  # the job's certificate was removed at the end
    assert np.isfinite(results.load(tmp_path / "out" / "sb").layer()["r"].values).all()


# ---- the scalenc: section of jobqueue YAMLs (no SLURM needed) ------------------------------
def test_scale_settings_of_deploy_yamls_and_errors(tmp_path):
    assert scale_settings(ROOT / "deploy/slurm/jobqueue.yaml") == {"jobs": 4, "wait_for_workers": 1,
                                                                   "wait_timeout": 1800}
    assert scale_settings(ROOT / "deploy/pbs/jobqueue.yaml")["jobs"] == 4
    p = tmp_path / "q.yaml"
    p.write_text("jobqueue: {slurm: {cores: 1}}\nscalenc: {adapt: [0, 8]}\n")
    assert scale_settings(p) == {"adapt": (0, 8)}
    p.write_text("jobqueue: {slurm: {cores: 1}}\n")
    assert scale_settings(p) == {}
    for text, match in [("scalenc: {workers: 2}", r"q.yaml: unknown key\(s\) \['workers'\] in 'scalenc'"),
                        ("scalenc: {jobs: -1}", r"scalenc.jobs must be a number >= 0"),
                        ("scalenc: {adapt: [4, 2]}", r"scalenc.adapt must be \[minimum_jobs, maximum_jobs\]"),
                        ("scalenc: [1]", "'scalenc' must be a mapping")]:
        p.write_text("jobqueue: {slurm: {cores: 1}}\n" + text + "\n")
        with pytest.raises(ValueError, match=match):
            scale_settings(p)


def test_yaml_jobs_are_submitted_through_the_scheduler_command(tmp_path, monkeypatch):
    """`client(yaml)` submits the section's job count with the configured submit command."""
    from scalenc.distributed import client

    record = tmp_path / "submitted"
    fake = tmp_path / "fake-sbatch"
    # a stand-in sbatch that records the job script and answers like SLURM; jobs never start
    fake.write_text(f"#!/bin/sh\ncat \"$1\" >> {record}\necho 'Submitted batch job 4242'\n")
    fake.chmod(0o755)
    cancel = tmp_path / "fake-scancel"
    cancel.write_text(f"#!/bin/sh\necho cancel \"$@\" >> {tmp_path / 'cancelled'}\n")
    cancel.chmod(0o755)
    y = tmp_path / "q.yaml"
    y.write_text(f"jobqueue:\n  slurm:\n    cores: 1\n    memory: 1GiB\n    log-directory: {tmp_path}\n"
                 f"    shared-temp-directory: {tmp_path / 'tls'}\n"
                 f"scalenc:\n  jobs: 3\n  wait-for-workers: 1\n  wait-timeout: 1\n")
    import dask_jobqueue.slurm as js

    monkeypatch.setattr(js.SLURMJob, "submit_command", str(fake))
    monkeypatch.setattr(js.SLURMJob, "cancel_command", str(cancel))
    with pytest.raises(TimeoutError, match=r"q.yaml: 0 of 1 Dask worker\(s\) joined within 1 s"):
        client(str(y), scheduler_options={"dashboard_address": None})
    assert record.read_text().count("#!/usr/bin/env bash") == 3  # three job scripts submitted
    assert (tmp_path / "cancelled").read_text().count("4242") >= 1  # and cancelled on the timeout


# ---- local-slurm.sh refusals (no root/apt needed) ------------------------------------------
def _fake_path(tmp_path, uid: int) -> dict:
    b = tmp_path / "bin"
    b.mkdir()
    for tool in ("hostname", "head", "tr"):
        src = next((Path(d) / tool for d in ("/usr/bin", "/bin") if (Path(d) / tool).exists()), None)
        if src is not None:
            (b / tool).symlink_to(src)
    (b / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (b / "id").chmod(0o755)
    return {"PATH": str(b), "HOME": str(tmp_path)}


def test_local_slurm_script_refuses_without_root(tmp_path):
    r = subprocess.run(["/bin/bash", str(SCRIPT)], capture_output=True, text=True, env=_fake_path(tmp_path, 1000),
                       timeout=30)
    assert r.returncode != 0
    assert "local-slurm.sh: must run as root" in r.stderr


def test_local_slurm_script_refuses_without_apt(tmp_path):
    r = subprocess.run(["/bin/bash", str(SCRIPT)], capture_output=True, text=True, env=_fake_path(tmp_path, 0),
                       timeout=30)
    assert r.returncode != 0
    assert "there is no apt-get to install them" in r.stderr


def test_local_slurm_script_syntax():
    r = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
