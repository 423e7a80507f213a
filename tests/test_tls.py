"""TLS for the clusters scalenc starts (issue 22): only the owner's client gets in.

- a local cluster listens on tls:// only; plain tcp://, tls:// with another certificate and
  tls:// without one are refused; the owner's client computes the same ridge fit as an
  unsecured cluster; its dashboard listens on 127.0.0.1;
- a jobqueue cluster writes its certificate into a private directory (0700, key 0600) that
  its job scripts name and that is gone once the cluster closes;
- security=False logs one warning line; a security YAML (``--security``) is read and checked.
"""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from scalenc.distributed import client, jobqueue_cluster
from scalenc.distributed.cluster import dashboard_link
from scalenc.distributed.security import (KEY_FILE, RunCertificate, load_security, main as security_main,
                                          use_security)

pytest.importorskip("cryptography")


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def _connect(address, security) -> str:
    """'connected' if a client with ``security`` gets in (and computes), else the exception's
    name. Asynchronous clients on this thread: no extra IO loop thread per attempt."""
    import asyncio

    from distributed import Client

    async def attempt():
        try:
            async with Client(address, security=security, timeout="5s", asynchronous=True) as c:
                assert await c.submit(lambda x: x + 1, 1) == 2
                return "connected"
        except Exception as e:  # noqa: BLE001 - any refusal will do; which one is reported
            return type(e).__name__

    return asyncio.run(attempt())


def _refused(address, security) -> str:
    got = _connect(address, security)
    assert got != "connected", f"a client with security={security!r} connected to {address}"
    return got


def _dashboard_on_localhost_only(scheduler_address: str, port: int) -> None:
    """The dashboard answers on 127.0.0.1 and not on this host's network address."""
    import socket

    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    host = scheduler_address.split("://")[1].rsplit(":", 1)[0]
    if host in ("127.0.0.1", "localhost"):  # a LocalCluster: try the host's own address
        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError:
            return
    if host.startswith("127."):
        return
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=5).close()


def _ridge_on(c):
    import dask.array as da

    from scalenc.ridge.solver import solve_ridge_cv

    rng = np.random.default_rng(3)
    X = rng.standard_normal((60, 5))
    Y = X @ rng.standard_normal((5, 20)) + rng.standard_normal((60, 20))
    folds = [(np.setdiff1d(np.arange(60), np.arange(k, 60, 3)), np.arange(k, 60, 3)) for k in range(3)]
    with c.as_current():
        r = solve_ridge_cv(X, da.from_array(Y, chunks=(60, 10)), np.logspace(-1, 3, 5), folds, dtype="float64")
    assert len(c.scheduler_info()["workers"]) == 1
    return r


@pytest.mark.slow
# a refused asynchronous Client's __del__ tries to close on its finished event loop
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_local_cluster_refuses_foreign_clients_and_computes_like_an_unsecured_one(caplog):
    from distributed.security import Security

    from scalenc.distributed.cluster import close_quietly

    c = client(n_workers=1, threads_per_worker=1, processes=True)
    try:
        addr = c.scheduler.address
        assert addr.startswith("tls://127.0.0.1:")
        port = c.scheduler_info()["services"]["dashboard"]
        _dashboard_on_localhost_only(addr, port)
        assert dashboard_link(c).startswith(f"http://localhost:{port}/status (localhost only; from another "
                                            f"machine: ssh -L {port}:localhost:{port} ")
        port = addr.rsplit(":", 1)[1]
        assert _refused(f"tcp://127.0.0.1:{port}", None)            # plain tcp://
        assert _refused(addr, Security.temporary())                  # TLS, another certificate
        assert _refused(addr, None)                                  # TLS without a certificate
        assert _connect(addr, c.cluster.security) == "connected"   # the owner's certificate
        secured = _ridge_on(c)
    finally:
        close_quietly(c)
    with caplog.at_level(logging.WARNING, logger="scalenc.distributed.cluster"):
        plain = client(n_workers=1, threads_per_worker=1, processes=True, security=False)
    try:
        assert plain.scheduler.address.startswith("tcp://")
        off = [r for r in caplog.records if "TLS is off" in r.getMessage()]
        assert len(off) == 1 and "\n" not in off[0].getMessage()
        unsecured = _ridge_on(plain)
    finally:
        close_quietly(plain)
    np.testing.assert_array_equal(secured.best_alpha_index, unsecured.best_alpha_index)
    np.testing.assert_array_equal(secured.coef, unsecured.coef)
    np.testing.assert_array_equal(secured.cv_scores, unsecured.cv_scores)


def test_jobqueue_certificate_is_private_named_by_the_job_script_and_removed_at_close(tmp_path):
    shared = tmp_path / "shared"
    c = jobqueue_cluster("slurm", cores=1, memory="1GiB", shared_temp_directory=str(shared))
    try:
        assert c.scheduler_address.startswith("tls://")
        _dashboard_on_localhost_only(c.scheduler_address, c.scheduler_info["services"]["dashboard"])
        (d,) = list(shared.iterdir())
        assert d.name.startswith("scalenc-tls-") and _mode(d) == 0o700
        assert _mode(d / KEY_FILE) == 0o600
        assert "PRIVATE KEY" in (d / KEY_FILE).read_text()
        script = c.job_script()
        assert f"--tls-key {d / KEY_FILE}" in script and f"--tls-ca-file {d / 'dask.crt'}" in script
        assert "PRIVATE KEY" not in script
    finally:
        c.close()
    assert list(shared.iterdir()) == []


def test_jobqueue_certificate_removed_when_the_workers_never_come(tmp_path, monkeypatch):
    """client(yaml) gives up waiting for workers: the cluster closes and its certificate goes."""
    import dask_jobqueue.slurm as js

    fake = tmp_path / "fake-sbatch"
    fake.write_text("#!/bin/sh\necho 'Submitted batch job 4243'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(js.SLURMJob, "submit_command", str(fake))
    monkeypatch.setattr(js.SLURMJob, "cancel_command", "true")
    shared = tmp_path / "shared"
    y = tmp_path / "q.yaml"
    y.write_text(f"jobqueue:\n  slurm:\n    cores: 1\n    memory: 1GiB\n    shared-temp-directory: {shared}\n"
                 f"    log-directory: {tmp_path}\nscalenc:\n  jobs: 1\n  wait-for-workers: 1\n  wait-timeout: 1\n")
    with pytest.raises(TimeoutError, match="0 of 1"):
        client(str(y))
    assert shared.is_dir() and list(shared.iterdir()) == []


def test_jobqueue_security_false_warns_once_and_runs_plain_tcp(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="scalenc.distributed.cluster"):
        c = jobqueue_cluster("slurm", cores=1, memory="1GiB", security=False, shared_temp_directory=str(tmp_path))
    try:
        assert c.scheduler_address.startswith("tcp://")
        assert "--tls" not in c.job_script()
    finally:
        c.close()
    assert [r.getMessage() for r in caplog.records].count(
        "TLS is off (security=False): any process that can reach the Dask scheduler can run code on its workers "
        "as you") == 1
    assert list(tmp_path.iterdir()) == []  # no certificate written


@pytest.mark.slow
def test_security_yaml_of_a_run_certificate_reaches_a_scheduler_started_with_it(tmp_path):
    """The sbatch path: a certificate written by `python -m scalenc.distributed.security`,
    a scheduler started with it, and a client given the YAML (``--security``)."""
    from distributed import LocalCluster

    assert security_main([str(tmp_path)]) == 0
    (d,) = list(tmp_path.iterdir())
    assert _mode(d) == 0o700 and _mode(d / KEY_FILE) == 0o600
    sec = load_security(d / "security.yaml")
    assert sec.require_encryption and sec.tls_client_key == str(d / KEY_FILE)
    with LocalCluster(n_workers=1, processes=False, security=sec, dashboard_address=None) as cluster:
        addr = cluster.scheduler_address
        assert addr.startswith("tls://")
        with pytest.raises(ValueError, match=r"uses TLS: give its certificate with --security FILE"):
            client(addr)
        with use_security(str(d / "security.yaml")):  # what `scalenc run --security FILE` sets
            c = client(addr)
        try:
            assert c.submit(lambda: 5).result() == 5
        finally:
            c.close()
        assert _refused(addr.replace("tls://", "tcp://"), None)


def test_load_security_errors_name_the_file_and_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"security file .*nope.yaml not found"):
        load_security(tmp_path / "nope.yaml")
    p = tmp_path / "s.yaml"
    p.write_text("distributed: {comm: {tls: {ca-file: /no/such/ca.pem}}}\n")
    with pytest.raises(FileNotFoundError, match=r"s.yaml: distributed.comm.tls.ca-file names /no/such/ca.pem"):
        load_security(p)
    p.write_text("tls: {}\n")
    with pytest.raises(ValueError, match=r"s.yaml: expected Dask's 'distributed: comm: tls: ...' settings"):
        load_security(p)
    p.write_text("distributed: [\n")
    with pytest.raises(ValueError, match=r"s.yaml: not valid YAML"):
        load_security(p)


def test_run_certificate_remove_and_cli_option(tmp_path, capsys):
    from scalenc.cli import main

    cert = RunCertificate(tmp_path / "p")
    d = cert.directory
    assert Path(cert.config).exists() and not cert.removed
    cert.remove()
    assert cert.removed and not d.exists()
    # --security: a missing file is a one-line error naming it, before the config is read
    assert main(["run", str(tmp_path / "none.toml"), "--security", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml not found" in capsys.readouterr().err


def test_cuda_cluster_gets_the_run_certificate_and_a_local_dashboard(monkeypatch):
    """client("cuda") (dask-cuda's LocalCUDACluster, a LocalCluster subclass; faked here where
    dask-cuda is absent) is started with TLS and a localhost dashboard."""
    import sys
    import types

    from distributed import LocalCluster

    from scalenc.distributed import has_gpu_workers
    from scalenc.distributed.cluster import close_quietly

    seen = {}

    def fake_cuda_cluster(**kwargs):
        seen.update(kwargs)
        return LocalCluster(n_workers=1, threads_per_worker=1, processes=False, **kwargs)

    monkeypatch.setitem(sys.modules, "dask_cuda", types.SimpleNamespace(LocalCUDACluster=fake_cuda_cluster))
    c = client("cuda")
    try:
        assert seen["security"].require_encryption and "PRIVATE KEY" in seen["security"].tls_worker_key
        assert seen["dashboard_address"] == "127.0.0.1:8787"
        assert c.scheduler.address.startswith("tls://") and has_gpu_workers(c)
        assert _refused(c.scheduler.address.replace("tls://", "tcp://"), None)
    finally:
        close_quietly(c)


def test_cli_security_option_sets_the_default_of_client(tmp_path, monkeypatch):
    """`scalenc run --security off|FILE`: what scalenc.distributed.client uses when the trainer
    or the sweep calls it without security=."""
    import scalenc.cli as cli
    from scalenc.distributed.security import resolve

    seen = []
    monkeypatch.setattr(cli, "_cmd_run_secured", lambda args: seen.append(resolve(None)) or 0)
    cert = RunCertificate(tmp_path)
    for opt, check in ((["--security", "off"], lambda s: s is False),
                       (["--security", str(cert.config)], lambda s: s.tls_client_key == str(cert.key)),
                       ([], lambda s: s is None)):
        assert cli.main(["run", "c.toml", *opt]) == 0
        assert check(seen.pop()), opt
    assert resolve(None) is None  # the default is restored after the run
