"""Cluster helpers: jobqueue scripts from deploy/, addresses, errors (no SLURM or GPU needed)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from scalenc.distributed import client, has_gpu_workers, jobqueue_cluster

ROOT = Path(__file__).resolve().parents[1]


def test_slurm_cluster_from_deploy_yaml_job_script(tmp_path):
    c = jobqueue_cluster("slurm", config=ROOT / "deploy/slurm/jobqueue.yaml", shared_temp_directory=str(tmp_path))
    try:
        script = c.job_script()
        (cert_dir,) = list(tmp_path.iterdir())
    finally:
        c.close()
    assert "#SBATCH -J scalenc-worker" in script
    assert "#SBATCH -p normal" in script and "#SBATCH --cpus-per-task=8" in script
    assert "#SBATCH --mem=32G" in script and "#SBATCH -t 04:00:00" in script
    assert "export HF_HUB_OFFLINE=1" in script
    assert "--nworkers 2" in script and "--nthreads 4" in script
    assert "--local-directory $TMPDIR" in script  # expanded on the node, not here
    assert f"--tls-key {cert_dir / 'dask.key'}" in script  # TLS by default


def test_pbs_cluster_and_overrides(tmp_path):
    c = jobqueue_cluster("pbs", config=ROOT / "deploy/pbs/jobqueue.yaml", queue="gpu", walltime="01:00:00",
                         shared_temp_directory=str(tmp_path))
    try:
        script = c.job_script()
    finally:
        c.close()
    assert "#PBS -q gpu" in script and "walltime=01:00:00" in script


def test_bad_cluster_arguments(tmp_path):
    with pytest.raises(ValueError, match="is not 'local', 'slurm'"):
        client("nonsense")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        client(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobqueue: {lsf: {cores: 1}}\n")
    with pytest.raises(ValueError, match="expected exactly one of"):
        client(str(bad))
    with pytest.raises(ValueError, match="unknown jobqueue kind"):
        jobqueue_cluster("sge")
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"scalenc\[gpu\]"):
            client("cuda")


@pytest.mark.slow
def test_local_cluster_and_scheduler_file(tmp_path):
    c = client(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
    try:
        assert c.submit(lambda x: x + 1, 1).result() == 2
        assert not has_gpu_workers(c)
        sched = tmp_path / "scheduler.json"
        import json

        json.dump({"address": c.scheduler.address, "type": "Scheduler"}, open(sched, "w"))
        with pytest.raises(ValueError, match=r"scheduler.json: the scheduler tls://.* uses TLS"):
            client(str(sched))  # the cluster's certificate is needed
        c2 = client(str(sched), security=c.cluster.security)
        assert c2.submit(lambda: 3).result() == 3
        c2.close()
    finally:
        c.cluster.close()
        c.close()


def test_sbatch_script_syntax():
    r = subprocess.run(["bash", "-n", str(ROOT / "deploy/slurm/scalenc.sbatch")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_close_quietly_silences_the_workers_shutdown_logs():
    """Before a cluster the trainer started is closed, its worker processes and scheduler log
    nothing below CRITICAL (a worker's last heartbeat to a closed scheduler is not an error of
    the run); with distributed logging asked for (-v) they keep their levels."""
    import logging

    from distributed import Client, LocalCluster

    from scalenc.distributed.cluster import close_quietly

    def levels():
        return tuple(logging.getLogger(n).getEffectiveLevel() for n in ("distributed", "distributed.worker"))

    log = logging.getLogger("distributed")
    before = log.level
    try:
        for parent_level, want in ((logging.WARNING, (logging.CRITICAL,) * 2), (logging.INFO, None)):
            log.setLevel(parent_level)
            cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None)
            c = Client(cluster)
            start = next(iter(c.run(levels).values()))
            assert max(start) < logging.CRITICAL
            seen = {}
            real_close = c.close

            def close_spy(*a, _c=c, _close=real_close, **k):
                seen["workers"] = next(iter(_c.run(levels).values()))
                return _close(*a, **k)

            c.close = close_spy
            close_quietly(c)
            del c.close  # Client.__del__ closes again: the real one
            assert seen["workers"] == (want or start)
            assert cluster.status.name == "closed"
            assert log.level == parent_level  # this process's level is restored
    finally:
        log.setLevel(before)
