"""Array backends for the ridge solver: numpy, CuPy and torch (CPU or CUDA).

The solver is written once against the small :class:`Backend` interface below; a backend
is chosen explicitly, either by the ``backend=`` argument of the solver/estimator or for a
block of code with :func:`use_backend`::

    with use_backend("torch", device="cuda"):
        RidgeCV(alphas).fit(X, Y)

Outside such a block (and without an argument) the backend is numpy. The context
manager sets a :mod:`contextvars` variable, so it is scoped to the block and to the
thread/task that entered it: there is no module-level switch.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import numpy as np

_CURRENT: contextvars.ContextVar[Backend | None] = contextvars.ContextVar("scalenc_ridge_backend", default=None)

BACKENDS = ("numpy", "cupy", "torch")


class Backend:
    """Operations the solver needs, over one array library and device.

    Parameters
    ----------
    name : {"numpy", "cupy", "torch"}
    device : str, optional
        For torch: ``"cpu"`` (default), ``"cuda"`` or ``"cuda:N"``. For CuPy: ``"cuda:N"``
        selects the device (default: the current one). Ignored for numpy.
    """

    def __init__(self, name: str = "numpy", device: str | None = None):
        if name not in BACKENDS:
            raise ValueError(f"unknown ridge backend {name!r}; choose one of {BACKENDS}")
        self.name = name
        self.device = device
        if name == "numpy":
            self.xp = np
        elif name == "cupy":
            try:
                import cupy
            except ImportError as e:
                raise ImportError("backend 'cupy' needs CuPy: install scalenc[gpu]") from e
            try:
                available = cupy.cuda.is_available()
            except Exception:  # noqa: BLE001 - CUDA driver errors
                available = False
            if not available:
                raise RuntimeError("backend 'cupy' was asked for but no CUDA device is available")
            self.xp = cupy
            self._cupy_device = int(device.split(":")[1]) if device and ":" in device else None
        else:
            try:
                import torch
            except ImportError as e:
                raise ImportError("backend 'torch' needs torch: install scalenc[lm]") from e
            dev = device or "cpu"
            if dev.startswith("cuda") and not torch.cuda.is_available():
                raise RuntimeError(f"backend 'torch' with device {dev!r} was asked for but CUDA is not available")
            self.xp = torch
            self.device = dev
            self._torch = torch

    def __repr__(self) -> str:
        return f"Backend({self.name!r}" + (f", device={self.device!r})" if self.device else ")")

    def __eq__(self, other) -> bool:
        return isinstance(other, Backend) and (self.name, self.device) == (other.name, other.device)

    def __hash__(self) -> int:
        return hash((self.name, self.device))

    def __reduce__(self):  # rebuilt (and re-validated) on dask workers
        return (Backend, (self.name, self.device))

    # conversion -------------------------------------------------------------------------
    def _dtype(self, dtype):
        dtype = np.dtype(dtype)
        if self.name == "torch":
            return {np.dtype("float32"): self._torch.float32, np.dtype("float64"): self._torch.float64,
                    np.dtype("int64"): self._torch.int64, np.dtype("bool"): self._torch.bool}[dtype]
        return dtype

    def asarray(self, x, dtype=None):
        """Array on this backend (a no-op when it is already there with that dtype)."""
        if self.name == "numpy":
            if hasattr(x, "get") and not isinstance(x, np.ndarray):  # cupy -> host
                x = x.get()
            elif hasattr(x, "detach"):  # torch -> numpy
                x = x.detach().cpu().numpy()
            return np.asarray(x, dtype=dtype)
        if self.name == "cupy":
            with self._device_ctx():
                if hasattr(x, "detach"):
                    x = x.detach().cpu().numpy()
                return self.xp.asarray(x, dtype=dtype)
        torch = self._torch
        if isinstance(x, torch.Tensor):
            return x.to(device=self.device, dtype=self._dtype(dtype) if dtype is not None else x.dtype)
        if hasattr(x, "get") and not isinstance(x, np.ndarray):
            x = x.get()
        x = np.asarray(x)
        if dtype is not None:
            x = x.astype(dtype, copy=False)
        return torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

    def to_numpy(self, x) -> np.ndarray:
        if isinstance(x, np.ndarray):
            return x
        if self.name == "torch" or hasattr(x, "detach"):
            return x.detach().cpu().numpy()
        if hasattr(x, "get"):
            return x.get()
        return np.asarray(x)

    def _device_ctx(self):
        if self.name == "cupy" and self._cupy_device is not None:
            return self.xp.cuda.Device(self._cupy_device)
        return contextlib.nullcontext()

    # operations ---------------------------------------------------------------------------
    def zeros(self, shape, dtype="float64"):
        if self.name == "torch":
            return self._torch.zeros(shape, dtype=self._dtype(dtype), device=self.device)
        return self.xp.zeros(shape, dtype=dtype)

    def astype(self, x, dtype):
        if self.name == "torch":
            return x.to(self._dtype(dtype))
        return x.astype(dtype, copy=False)

    def eigh(self, a):
        """Eigen-decomposition of a symmetric matrix, ascending eigenvalues."""
        if self.name == "torch":
            return self._torch.linalg.eigh(a)
        return self.xp.linalg.eigh(a)

    def sum(self, x, axis=None):
        if self.name == "torch":
            return x.sum() if axis is None else x.sum(dim=axis)
        return x.sum(axis=axis)

    def coldot(self, a, b):
        """Column-wise dot products ``sum(a * b, axis=0)`` without the temporary."""
        return self.xp.einsum("ij,ij->j", a, b)

    def sqrt(self, x):
        return self.xp.sqrt(x)

    def argmax(self, x, axis=0):
        if self.name == "torch":
            return x.argmax(dim=axis)
        return x.argmax(axis=axis)

    def take(self, x, idx, axis=0):
        if self.name == "torch":
            return x.index_select(axis, self.asarray(idx).to(self._torch.int64))
        return self.xp.take(x, self.asarray(idx), axis=axis)

    def maximum(self, x, value: float):
        if self.name == "torch":
            return self._torch.clamp(x, min=value)
        return self.xp.maximum(x, value)

    def where(self, cond, a, b):
        return self.xp.where(cond, a, b)

    def arange(self, n):
        if self.name == "torch":
            return self._torch.arange(n, device=self.device)
        return self.xp.arange(n)

    def stack(self, xs, axis=0):
        if self.name == "torch":
            return self._torch.stack(list(xs), dim=axis)
        return self.xp.stack(list(xs), axis=axis)


def get_backend(backend: str | Backend | None = None, device: str | None = None) -> Backend:
    """Resolve the backend: the argument if given, else the enclosing :func:`use_backend`,
    else numpy."""
    if isinstance(backend, Backend):
        return backend
    if backend is not None:
        return Backend(backend, device)
    current = _CURRENT.get()
    return current if current is not None else Backend("numpy")


@contextlib.contextmanager
def use_backend(backend: str | Backend, device: str | None = None) -> Iterator[Backend]:
    """Use ``backend`` for ridge computations inside the ``with`` block."""
    b = get_backend(backend, device)
    token = _CURRENT.set(b)
    try:
        yield b
    finally:
        _CURRENT.reset(token)


def array_module_of(x: Any) -> str:
    """Name of the library that owns ``x``: "numpy", "cupy", "torch" or "dask"."""
    mod = type(x).__module__.split(".")[0]
    return {"cupy": "cupy", "torch": "torch", "dask": "dask"}.get(mod, "numpy")
