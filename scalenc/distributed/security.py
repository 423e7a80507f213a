"""TLS for the Dask clusters scalenc starts: a certificate made for each run.

A Dask client can run any code on the workers, so a scheduler that accepts any client lets
whoever reaches its port (another user of a login node on localhost; anyone on the cluster
network for a dask-jobqueue scheduler) run code as the owner of the run. Every cluster
:func:`scalenc.distributed.client` starts therefore uses TLS with mutual authentication
(``distributed.security.Security``): the scheduler, its workers and the owner's client hold
one self-signed certificate and key made for that run, and connections from anything else
are refused.

- Local and CUDA clusters: the certificate and key live only in memory
  (:meth:`Security.temporary`) and reach the worker processes with their start arguments.
- SLURM/PBS (dask-jobqueue): workers start on other nodes and read the certificate from
  files on a shared filesystem. :class:`RunCertificate` writes them (key file mode 0600) into
  a new private directory (mode 0700) under ``shared-temp-directory`` (the jobqueue YAML's or
  Dask's ``jobqueue.<kind>.shared-temp-directory``; default ``~/.cache/scalenc/tls``), and the
  directory is removed when the cluster closes.
- An existing scheduler (an address or a scheduler file) was started by someone else: the
  client takes the user's security settings: Dask's ``distributed.comm.tls`` configuration,
  or ``security=`` (a :class:`Security`, or a YAML file holding those settings:
  :func:`load_security`; ``scalenc run --security FILE``).

``security=False`` turns TLS off (one warning line says so).

The command line ``python -m scalenc.distributed.security DIR`` writes a run certificate and
a ``security.yaml`` for it into a new private directory under DIR and prints that
directory: ``deploy/slurm/scalenc.sbatch`` uses it for a scheduler and workers started by hand.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Where jobqueue clusters write their run certificate when no shared-temp-directory is set
#: (home directories are on the shared filesystem of most HPC sites).
DEFAULT_SHARED_DIR = "~/.cache/scalenc/tls"
KEY_FILE, CERT_FILE, CONFIG_FILE = "dask.key", "dask.crt", "security.yaml"

INSECURE_WARNING = ("TLS is off (security=False): any process that can reach the Dask scheduler can run code "
                    "on its workers as you")

_default: list[Any] = [None]  # the security client() uses when none is passed (use_security)


def temporary():
    """An in-memory :class:`Security` with a new self-signed certificate for every role."""
    from distributed.security import Security

    try:
        return Security.temporary()
    except ImportError as e:
        raise ImportError("TLS for Dask clusters needs the cryptography package: pip install cryptography "
                          "(or pass security=False to run without TLS)") from e


def insecure():
    """A :class:`Security` without TLS, whatever the Dask configuration says."""
    from distributed.security import Security

    fields = ("tls_ca_file", "tls_ciphers", "tls_client_key", "tls_client_cert", "tls_scheduler_key",
              "tls_scheduler_cert", "tls_worker_key", "tls_worker_cert")
    return Security(require_encryption=False, **dict.fromkeys(fields))


class RunCertificate:
    """A self-signed certificate and key for one run, as files in a new private directory.

    ``RunCertificate(parent)`` creates ``parent/scalenc-tls-XXXXXXXX`` (mode 0700) holding
    ``dask.key`` (mode 0600), ``dask.crt`` and ``security.yaml`` (Dask's
    ``distributed.comm.tls`` settings naming them, for :func:`load_security`).
    :meth:`security` is the :class:`Security` of every role, :meth:`remove` deletes the
    directory (also done when the object is garbage collected or the interpreter exits).
    """

    def __init__(self, parent: str | os.PathLike | None = None):
        mem = temporary()  # the key and certificate, PEM text
        parent_dir = Path(os.path.expandvars(str(parent if parent is not None else DEFAULT_SHARED_DIR))).expanduser()
        try:
            parent_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.directory = Path(tempfile.mkdtemp(prefix="scalenc-tls-", dir=parent_dir))  # mode 0700
        except OSError as e:
            raise OSError(f"cannot create a private directory for the run certificate in {parent_dir}: "
                          f"{e.strerror or e}") from e
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.directory), True)
        self.key = self.directory / KEY_FILE
        self.cert = self.directory / CERT_FILE
        self.config = self.directory / CONFIG_FILE
        _write_private(self.key, mem.tls_client_key)
        _write_private(self.cert, mem.tls_client_cert)
        role = {"cert": str(self.cert), "key": str(self.key)}
        import yaml

        _write_private(self.config, yaml.safe_dump({"distributed": {"comm": {
            "require-encryption": True,
            "tls": {"ca-file": str(self.cert), "client": role, "scheduler": role, "worker": role}}}}))
        logger.info("run certificate in %s", self.directory)

    def security(self):
        from distributed.security import Security

        c, k = str(self.cert), str(self.key)
        return Security(require_encryption=True, tls_ca_file=c, tls_client_cert=c, tls_client_key=k,
                        tls_scheduler_cert=c, tls_scheduler_key=k, tls_worker_cert=c, tls_worker_key=k)

    def remove(self) -> None:
        self._finalizer()

    @property
    def removed(self) -> bool:
        return not self._finalizer.alive


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def load_security(path: str | os.PathLike):
    """A :class:`Security` from a YAML file of Dask's ``distributed.comm`` settings::

        distributed:
          comm:
            require-encryption: true
            tls:
              ca-file: /path/ca.pem
              client: {cert: /path/client.pem, key: /path/client.key}

    Settings it does not give come from the Dask configuration.

    Raises
    ------
    FileNotFoundError, ValueError
        The message names the file (and the key or the certificate file that is missing).
    """
    import dask
    import yaml
    from distributed.security import Security

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"security file {p} not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from e
    comm = ((data or {}).get("distributed") or {}).get("comm") if isinstance(data, dict) else None
    if not isinstance(comm, dict) or not isinstance(comm.get("tls", {}), dict):
        raise ValueError(f"{p}: expected Dask's 'distributed: comm: tls: ...' settings")
    flat: dict[str, Any] = {}

    def walk(prefix: str, d: dict) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(f"{prefix}.{k}", v)
            else:
                flat[f"{prefix}.{k}"] = v

    walk("distributed.comm", comm)
    for key, v in flat.items():
        if key.rsplit(".", 1)[-1] in ("ca-file", "cert", "key") and v is not None:
            if not Path(os.path.expanduser(str(v))).is_file():
                raise FileNotFoundError(f"{p}: {key} names {v}, which does not exist")
            flat[key] = os.path.expanduser(str(v))
    with dask.config.set(flat):
        return Security()


def resolve(security: Any):
    """``security`` as given to :func:`scalenc.distributed.client`, else the :func:`use_security`
    default: None (a per-run certificate / the Dask configuration), False, a :class:`Security`,
    or a path to a security YAML (:func:`load_security`)."""
    if security is None:
        security = _default[0]
    if isinstance(security, (str, os.PathLike)):
        security = load_security(security)
    return security


@contextlib.contextmanager
def use_security(security: Any):
    """Within the block, :func:`scalenc.distributed.client` uses ``security`` when it is given
    none (``scalenc run --security``); None leaves the default."""
    before = _default[0]
    _default[0] = security if security is not None else before
    try:
        yield
    finally:
        _default[0] = before


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m scalenc.distributed.security PARENT_DIR  (prints the new private directory holding "
              f"{KEY_FILE}, {CERT_FILE} and {CONFIG_FILE})", file=sys.stderr)
        return 2
    cert = RunCertificate(argv[0])
    cert._finalizer.detach()  # the caller removes it
    print(cert.directory)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
