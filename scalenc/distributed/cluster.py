"""Dask clusters for scalenc: local, an existing scheduler, SLURM/PBS (dask-jobqueue), CUDA.

:func:`client` returns a connected :class:`distributed.Client`::

    client()                         # LocalCluster sized to this machine
    client("tcp://10.0.0.5:8786")    # an existing scheduler
    client("slurm", jobs=4)          # dask-jobqueue SLURMCluster from the dask config
    client("deploy/slurm/jobqueue.yaml", jobs=4)  # ... from a jobqueue YAML
    client("cuda")                   # dask-cuda LocalCUDACluster: one worker per GPU
    client("scheduler.json")         # a scheduler started with --scheduler-file (deploy/slurm)

A jobqueue YAML holds dask's ``jobqueue: {slurm: {...}}`` settings and, optionally, a
``scalenc:`` section saying how many worker jobs to start (:data:`SCALE_KEYS`)::

    scalenc:
      jobs: 4               # worker jobs submitted at start (cluster.scale(jobs=4))
      adapt: [0, 20]        # or: adaptive between 0 and 20 jobs (instead of jobs)
      wait-for-workers: 1   # block until this many workers joined (0: don't wait)
      wait-timeout: 600     # seconds; then an error naming the queue state

Without it, ``jobs=`` passed to :func:`client` decides; with neither, nothing would run,
so one job is submitted.

Workers of GPU clusters declare a ``GPU`` resource (``resources={"GPU": 1}``), which
the feature-extraction tasks of neural models request.

Every cluster started here uses TLS with a certificate made for the run, so that only its
owner's client can connect (:mod:`scalenc.distributed.security`; ``security=False`` turns
it off), and its dashboard listens on localhost only (:data:`DASHBOARD`; reach it with
``ssh -L 8787:localhost:8787 HOST``; pass ``dashboard_address=`` or the jobqueue YAML's
``scheduler-options: {dashboard_address: ...}`` to change it).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

JOBQUEUE_KINDS = ("slurm", "pbs")
#: keys of the optional ``scalenc:`` section of a jobqueue YAML
SCALE_KEYS = ("jobs", "adapt", "wait-for-workers", "wait-timeout")
#: where the dashboards of the clusters scalenc starts listen unless told otherwise
DASHBOARD = "127.0.0.1:8787"


def _security_for_new_cluster(security):
    """The Security of a local/CUDA cluster scalenc starts: an in-memory per-run certificate
    by default, the user's if given, none (with a warning) for False."""
    from .security import INSECURE_WARNING, insecure, resolve, temporary

    security = resolve(security)
    if security is None:
        return temporary()
    if security is False:
        logger.warning(INSECURE_WARNING)
        return insecure()
    return security


def _machine() -> tuple[int, int]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return cores, mem


def local_cluster(n_workers: int | None = None, threads_per_worker: int | None = None, *,
                  processes: bool = True, memory_limit: str | int | None = None, security: Any = None,
                  **kwargs):
    """A LocalCluster sized to the machine: one single-threaded worker per core by default
    (BLAS threads are pinned to 1 per worker so workers do not oversubscribe cores), the
    memory split evenly between workers. TLS with an in-memory certificate made for it
    (``security=``: a ``Security``, a security YAML, or False for none); the dashboard on
    localhost (``dashboard_address=``)."""
    from distributed import LocalCluster

    kwargs["security"] = _security_for_new_cluster(security)
    kwargs.setdefault("dashboard_address", DASHBOARD)

    cores, mem = _machine()
    n_workers = n_workers or cores
    threads_per_worker = threads_per_worker or max(1, cores // n_workers)
    env = {k: str(threads_per_worker) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(kwargs.pop("env", {}) or {})
    if processes:  # worker processes (nannies) take the BLAS thread settings
        kwargs["env"] = env
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=processes,
                           memory_limit=memory_limit or int(0.9 * mem / n_workers), **kwargs)
    cluster._scalenc_dashboard = kwargs["dashboard_address"]
    return cluster


def jobqueue_cluster(kind: str, *, config: str | os.PathLike | None = None, jobs: int = 0,
                     adapt: tuple[int, int] | None = None, **kwargs):
    """A dask-jobqueue cluster (``kind`` "slurm" or "pbs").

    Parameters
    ----------
    config : path-like, optional
        A YAML in dask's config format (``jobqueue: {slurm: {...}}``), e.g.
        ``deploy/slurm/jobqueue.yaml``; its values are defaults that ``kwargs`` override.
    jobs : int
        Jobs to submit right away (``cluster.scale(jobs=...)``); 0 submits nothing.
    adapt : (int, int), optional
        Adaptive scaling between (minimum, maximum) jobs instead of a fixed number.
    security : None, False, Security or path, optional
        None: TLS with a certificate made for this cluster, written (key mode 0600) into a new
        private directory under ``shared_temp_directory`` (default
        :data:`scalenc.distributed.security.DEFAULT_SHARED_DIR`, which the worker nodes must
        see) and removed when the cluster closes. A ``Security`` (or a security YAML): the
        user's certificates. False: no TLS (a warning).
    """
    try:
        import dask_jobqueue
    except ImportError as e:
        raise ImportError(f"cluster={kind!r} needs dask-jobqueue: install scalenc[hpc]") from e
    import yaml

    if kind not in JOBQUEUE_KINDS:
        raise ValueError(f"unknown jobqueue kind {kind!r}; accepted: {JOBQUEUE_KINDS}")
    settings: dict[str, Any] = {}
    if config is not None:
        p = Path(config)
        if not p.exists():
            raise FileNotFoundError(f"jobqueue config {p} not found")
        data = yaml.safe_load(p.read_text()) or {}
        try:
            settings = dict(data["jobqueue"][kind])
        except (KeyError, TypeError) as e:
            raise ValueError(f"{p}: expected a 'jobqueue: {kind}: ...' section") from e
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[kind]
    # YAML keys use dask's dashed config names; the constructor takes underscores
    args = {k.replace("-", "_"): v for k, v in settings.items() if v is not None}
    args.update(kwargs)
    import dask

    from .security import INSECURE_WARNING, RunCertificate, resolve

    opts = args.get("scheduler_options")
    opts = dict(dask.config.get(f"jobqueue.{kind}.scheduler-options", None) or {} if opts is None else opts)
    opts.setdefault("dashboard_address", DASHBOARD)
    args["scheduler_options"] = opts
    security = resolve(args.pop("security", None))
    cert = None
    if security is None:
        shared = args.get("shared_temp_directory") or dask.config.get(f"jobqueue.{kind}.shared-temp-directory", None)
        cert = RunCertificate(shared)
        security = cert.security()
    elif security is False:
        logger.warning(INSECURE_WARNING)
        security = None  # dask-jobqueue: plain tcp://
    try:
        cluster = cls(security=security, **args)
    except BaseException:
        if cert is not None:
            cert.remove()
        raise
    if cert is not None:
        _remove_on_close(cluster, cert)
    cluster._scalenc_dashboard = opts["dashboard_address"]
    if adapt is not None:
        lo, hi = (int(a) for a in adapt)
        cluster.adapt(minimum_jobs=lo, maximum_jobs=hi)
    elif jobs:
        cluster.scale(jobs=jobs)
    return cluster


def _remove_on_close(cluster, cert) -> None:
    """Delete the run certificate when ``cluster`` closes (or is garbage collected)."""
    close = cluster.close

    def close_and_remove(*args, **kwargs):
        try:
            return close(*args, **kwargs)
        finally:
            cert.remove()

    cluster.close = close_and_remove
    cluster.scalenc_certificate = cert  # lives as long as the cluster


def scale_settings(path: str | os.PathLike) -> dict[str, Any]:
    """The ``scalenc:`` section of a jobqueue YAML, validated (keys with underscores).

    Raises
    ------
    ValueError
        For an unknown key or a value of the wrong type; the message names the file and key.
    """
    import yaml

    p = Path(path)
    data = yaml.safe_load(p.read_text()) or {}
    sec = data.get("scalenc") or {}
    if not isinstance(sec, dict):
        raise ValueError(f"{p}: 'scalenc' must be a mapping with keys {SCALE_KEYS}")
    unknown = sorted(set(sec) - set(SCALE_KEYS))
    if unknown:
        raise ValueError(f"{p}: unknown key(s) {unknown} in 'scalenc'; accepted: {list(SCALE_KEYS)}")
    out: dict[str, Any] = {}
    for key in ("jobs", "wait-for-workers", "wait-timeout"):
        if key in sec:
            v = sec[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"{p}: scalenc.{key} must be a number >= 0, got {v!r}")
            out[key.replace("-", "_")] = v
    if "adapt" in sec:
        a = sec["adapt"]
        if not (isinstance(a, list) and len(a) == 2 and all(isinstance(x, int) and x >= 0 for x in a) and a[0] <= a[1]):
            raise ValueError(f"{p}: scalenc.adapt must be [minimum_jobs, maximum_jobs], got {a!r}")
        out["adapt"] = tuple(a)
    return out


def _quiet_shutdown_logs() -> None:
    """In a worker or the scheduler: no distributed log lines below CRITICAL from now on."""
    for name in ["distributed", *list(logging.root.manager.loggerDict)]:
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def close_quietly(c) -> None:
    """Close a client and the cluster it started. Unless distributed logging was asked for
    (``-v``: level below WARNING), the workers and the scheduler are first told to stop
    logging, so that the shutdown's own races (a worker's last heartbeat reaching a closed
    scheduler, a nanny killing a slow worker) print nothing; errors of the run itself were
    already reported."""
    cluster = getattr(c, "cluster", None)
    dask_log = logging.getLogger("distributed")
    level = dask_log.level
    quiet = dask_log.getEffectiveLevel() >= logging.WARNING
    if quiet:
        for call in (c.run, c.run_on_scheduler):
            try:
                call(_quiet_shutdown_logs)
            except Exception:  # noqa: BLE001 - a worker already gone: nothing to quiet
                pass
        dask_log.setLevel(logging.CRITICAL)
    try:
        c.close()
        if cluster is not None:
            cluster.close()
    finally:
        dask_log.setLevel(level)


def _wait_for_workers(c, n: int, timeout: float, where: str) -> None:
    try:
        c.wait_for_workers(n, timeout=timeout)
    except TimeoutError as e:
        have = len(c.scheduler_info().get("workers", {}))
        cluster = c.cluster
        c.close()
        if cluster is not None:  # cancel the submitted jobs
            cluster.close()
        raise TimeoutError(f"{where}: {have} of {n} Dask worker(s) joined within {timeout:g} s; the worker jobs "
                           "may be pending or failing (check squeue/qstat and the jobqueue log-directory)") from e


def cuda_cluster(*, security: Any = None, **kwargs):
    """dask-cuda's LocalCUDACluster: one worker per visible GPU, each with ``GPU: 1``; TLS and
    the dashboard as :func:`local_cluster`."""
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError as e:
        raise ImportError("cluster='cuda' needs dask-cuda: install scalenc[gpu] on a GPU node") from e
    kwargs.setdefault("resources", {"GPU": 1})
    kwargs["security"] = _security_for_new_cluster(security)
    kwargs.setdefault("dashboard_address", DASHBOARD)
    cluster = LocalCUDACluster(**kwargs)
    cluster._scalenc_dashboard = kwargs["dashboard_address"]
    return cluster


def client(cluster: Any = None, *, security: Any = None, **kwargs):
    """A Dask client for ``cluster``.

    Parameters
    ----------
    cluster : None, "local", "slurm", "pbs", "cuda", a scheduler address, a path to a
        jobqueue YAML, or a Cluster object
        None and "local" start a :func:`local_cluster` (keyword arguments go to it).
    security : None, False, distributed.security.Security, or a path to a security YAML
        None: a cluster started here uses TLS with a certificate made for it; an existing
        scheduler (an address, a scheduler file) is reached with the Dask configuration's
        ``distributed.comm.tls`` settings. A ``Security`` or a security YAML
        (:func:`scalenc.distributed.security.load_security`): those certificates. False: no
        TLS (a warning). :func:`scalenc.distributed.security.use_security` sets the default.
    **kwargs
        Passed to the cluster constructor (``jobs=`` for jobqueue clusters).

    Returns
    -------
    distributed.Client
        Its ``dashboard_link`` is logged.
    """
    from distributed import Client

    from .security import INSECURE_WARNING, insecure, resolve

    if cluster is None or cluster == "local":
        c = Client(local_cluster(security=security, **kwargs))
    elif isinstance(cluster, str) and cluster in JOBQUEUE_KINDS:
        if "jobs" not in kwargs and "adapt" not in kwargs:
            kwargs["jobs"] = 1  # without jobs nothing would ever run
        c = Client(jobqueue_cluster(cluster, security=security, **kwargs))
    elif cluster == "cuda":
        c = Client(cuda_cluster(security=security, **kwargs))
    elif isinstance(cluster, (str, os.PathLike)) and str(cluster).endswith((".yaml", ".yml")):
        import yaml

        p = Path(cluster)
        if not p.exists():
            raise FileNotFoundError(f"jobqueue config {p} not found")
        kinds = [k for k in ((yaml.safe_load(p.read_text()) or {}).get("jobqueue") or {}) if k in JOBQUEUE_KINDS]
        if len(kinds) != 1:
            raise ValueError(f"{p}: expected exactly one of {JOBQUEUE_KINDS} under 'jobqueue', found {kinds}")
        sc = scale_settings(p)
        wait_n = int(kwargs.pop("wait_for_workers", sc.get("wait_for_workers", 0)))
        timeout = float(kwargs.pop("wait_timeout", sc.get("wait_timeout", 600)))
        if "jobs" not in kwargs and "adapt" not in kwargs:
            if "adapt" in sc:
                kwargs["adapt"] = sc["adapt"]
            else:
                kwargs["jobs"] = int(sc.get("jobs", 1))
        c = Client(jobqueue_cluster(kinds[0], config=p, security=security, **kwargs))
        if wait_n:
            _wait_for_workers(c, wait_n, timeout, str(p))
    elif isinstance(cluster, (str, os.PathLike)) and (str(cluster).endswith(".json")
                                                      or (isinstance(cluster, str) and ":" in cluster)):
        # an existing scheduler: the user's security settings
        security = resolve(security)
        if security is False:
            logger.warning(INSECURE_WARNING)
            security = insecure()
        if str(cluster).endswith(".json"):
            if not Path(cluster).exists():
                raise FileNotFoundError(f"scheduler file {cluster} not found")
            import json

            try:
                address = json.loads(Path(cluster).read_text()).get("address", "")
            except (ValueError, AttributeError) as e:
                raise ValueError(f"{cluster}: not a Dask scheduler file (JSON with an 'address')") from e
            _check_tls_address(address, security, str(cluster))
            c = Client(scheduler_file=str(cluster), security=security, **kwargs)
        else:
            _check_tls_address(str(cluster), security, str(cluster))
            c = Client(str(cluster), security=security, **kwargs)
    elif isinstance(cluster, str):
        raise ValueError(f"cluster={cluster!r} is not 'local', 'slurm', 'pbs', 'cuda', a scheduler address "
                         "(tls://host:port) or a jobqueue .yaml")
    else:  # a Cluster object: its own security
        c = Client(cluster, **kwargs)
    logger.warning("Dask dashboard: %s", dashboard_link(c))
    return c


def dashboard_link(c) -> str:
    """The dashboard address of client ``c``'s cluster. Dask names the scheduler's host, but
    a cluster started here serves its dashboard on localhost only: then the link says so,
    with the ``ssh -L`` that reaches it from another machine."""
    cluster = getattr(c, "cluster", None)
    opts = getattr(cluster, "_scalenc_dashboard", None)
    if not opts or not str(opts).startswith(("127.0.0.1:", "localhost:")):
        return c.dashboard_link
    port = (c.scheduler_info().get("services") or {}).get("dashboard")
    if port is None:
        return c.dashboard_link
    import socket

    return (f"http://localhost:{port}/status (localhost only; from another machine: "
            f"ssh -L {port}:localhost:{port} {socket.gethostname()})")


def _check_tls_address(address: str, security, where: str) -> None:
    """A one-line error for a tls:// scheduler without a client certificate."""
    import dask

    if not address.startswith("tls://") or (security is None and dask.config.get(
            "distributed.client.security-loader", None)):  # Dask's own loader decides
        return
    if security is None:
        from distributed.security import Security

        security = Security()  # the Dask configuration
    if not (security.tls_client_cert and security.tls_ca_file):
        raise ValueError(f"{where}: the scheduler {address} uses TLS: give its certificate with --security FILE / "
                         "security= or Dask's distributed.comm.tls settings")


def has_gpu_workers(c) -> bool:
    """Whether any worker of client ``c`` declares a ``GPU`` resource."""
    info = c.scheduler_info()
    return any((w.get("resources") or {}).get("GPU", 0) > 0 for w in info.get("workers", {}).values())
