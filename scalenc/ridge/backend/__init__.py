"""Array backends of the ridge solver: one module per library, chosen by name.

- ``numpy.py``: :class:`NumpyBackend` (default);
- ``cupy.py``: :class:`CupyBackend` (``device="cuda:N"``);
- ``torch.py``: :class:`TorchBackend` (``device="cpu"`` by default, or ``"cuda[:N]"``);
- ``torch_cuda.py``: :class:`TorchCudaBackend`, torch with ``device="cuda"`` by default.

Each exposes the same names (:class:`~scalenc.ridge.backend._base.Backend`). A backend is
chosen explicitly, by the ``backend=`` argument of the solver/estimator or for a block
of code with :func:`use_backend`::

    with use_backend("torch", device="cuda"):
        RidgeCV(alphas).fit(X, Y)

Outside such a block (and without an argument) the backend is numpy. The context
manager sets a :mod:`contextvars` variable, so it is scoped to the block and to the
thread/task that entered it: there is no module-level switch. A backend module is
imported only when asked for, so CuPy and torch stay optional.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
from collections.abc import Iterator
from typing import Any

from ._base import Backend, host_array

#: backend name -> (module, class, needs a CUDA device): the one list of backends (the
#: test suite's ``backend`` fixture and the benchmarks are derived from it)
_MODULES = {"numpy": ("numpy", "NumpyBackend", False), "cupy": ("cupy", "CupyBackend", True),
            "torch": ("torch", "TorchBackend", False), "torch_cuda": ("torch_cuda", "TorchCudaBackend", True)}
BACKENDS = tuple(_MODULES)
#: the backends that run on a CUDA device
GPU_BACKENDS = tuple(name for name, (_, _, gpu) in _MODULES.items() if gpu)

_CURRENT: contextvars.ContextVar[Backend | None] = contextvars.ContextVar("scalenc_ridge_backend", default=None)


def get_backend(backend: str | Backend | None = None, device: str | None = None) -> Backend:
    """Resolve the backend: the argument if given, else the enclosing :func:`use_backend`,
    else numpy.

    Parameters
    ----------
    backend : {"numpy", "cupy", "torch", "torch_cuda"}, Backend or None
    device : str, optional
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (torch, CuPy); ignored by numpy.
    """
    if isinstance(backend, Backend):
        return backend
    if backend is None:
        current = _CURRENT.get()
        if current is not None:
            return current
        backend = "numpy"
    if backend not in _MODULES:
        raise ValueError(f"unknown ridge backend {backend!r}; choose one of {BACKENDS}")
    module, cls, _ = _MODULES[backend]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(device)


@contextlib.contextmanager
def use_backend(backend: str | Backend, device: str | None = None) -> Iterator[Backend]:
    """Use ``backend`` for ridge computations inside the ``with`` block."""
    b = get_backend(backend, device)
    token = _CURRENT.set(b)
    try:
        yield b
    finally:
        _CURRENT.reset(token)


#: (backend, device) pairs a test suite or benchmark tries: every backend at its default device.
CHECKED = tuple((name, None) for name in _MODULES)


def unavailable(backend: str, device: str | None = None) -> str | None:
    """Why ``backend`` on ``device`` cannot be used here (None when it can)."""
    try:
        get_backend(backend, device)
    except (ImportError, RuntimeError) as e:
        return str(e)
    return None


def array_module_of(x: Any) -> str:
    """Name of the library that owns ``x``: "numpy", "cupy", "torch" or "dask"."""
    mod = type(x).__module__.split(".")[0]
    return {"cupy": "cupy", "torch": "torch", "dask": "dask"}.get(mod, "numpy")


__all__ = ["BACKENDS", "CHECKED", "GPU_BACKENDS", "Backend", "array_module_of", "get_backend", "host_array",
           "unavailable", "use_backend"]
