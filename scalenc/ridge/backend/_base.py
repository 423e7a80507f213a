"""The interface every ridge backend module implements.

A backend is one array library on one device. The solver is written once against the
names below; each backend module (``numpy.py``, ``cupy.py``, ``torch.py``,
``torch_cuda.py``) subclasses :class:`Backend` with that library's own calls, so no
method branches on which library it runs on.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def host_array(x: Any) -> np.ndarray:
    """``x`` as a numpy array, copying from a torch tensor or a CuPy array when needed."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):  # torch (any device)
        return x.detach().cpu().numpy()
    if hasattr(x, "get") and hasattr(x, "__cuda_array_interface__"):  # cupy
        return x.get()
    return np.asarray(x)


class Backend:
    """Operations of the ridge solver over one array library and device.

    Subclasses set ``name`` and implement every method; instances compare equal when
    they are the same library on the same device, and pickle to their name and device
    (so a Dask worker rebuilds, and re-validates, its own).

    Attributes
    ----------
    name : str
        ``"numpy"``, ``"cupy"``, ``"torch"`` or ``"torch_cuda"``.
    device : str or None
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``; None for numpy (and the current CuPy device).
    xp : module
        The array library.
    """

    name: str = ""
    xp: Any = None

    def __init__(self, device: str | None = None):
        self.device = device

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Backend) and (self.name, self.device) == (other.name, other.device)

    def __hash__(self) -> int:
        return hash((self.name, self.device))

    def __reduce__(self):
        from . import get_backend

        return (get_backend, (self.name, self.device))

    # conversion -------------------------------------------------------------------------
    def asarray(self, x: Any, dtype: str | None = None) -> Any:
        """``x`` on this backend and device, in ``dtype`` (a no-op when already there)."""
        raise NotImplementedError

    def to_numpy(self, x: Any) -> np.ndarray:
        """A numpy copy (or view) of a backend array."""
        return host_array(x)

    # operations ---------------------------------------------------------------------------
    def sum(self, x, axis: int):
        return x.sum(axis)

    def coldot(self, a, b):
        """Column-wise dot products ``sum(a * b, axis=0)`` without the temporary."""
        return self.xp.einsum("ij,ij->j", a, b)

    def sqrt(self, x):
        return self.xp.sqrt(x)

    def argmax(self, x, axis: int):
        return x.argmax(axis)

    def maximum(self, x, value: float):
        """Element-wise ``max(x, value)`` for a scalar ``value``."""
        raise NotImplementedError

    def where(self, cond, a, b):
        return self.xp.where(cond, a, b)

    def stack(self, xs, axis: int = 0):
        raise NotImplementedError

    # X side (float64 linear algebra) ----------------------------------------------------------
    def eigh(self, a):
        """``(w, V)`` of a symmetric matrix, eigenvalues ascending."""
        return self.xp.linalg.eigh(a)

    def all_finite(self, x) -> bool:
        """Whether every element of ``x`` is finite (one host boolean)."""
        return bool(self.xp.isfinite(x).all())

    # device ------------------------------------------------------------------------------
    @property
    def on_gpu(self) -> bool:
        """Whether this backend's arrays live on a CUDA device."""
        return False

    def free_memory(self) -> int | None:
        """Free bytes on the device (None on the CPU: the solver then keeps its CPU block sizes)."""
        return None

    def synchronize(self) -> None:
        """Wait for the device's queued work (before reading a timer)."""
