"""CuPy backend: one CUDA device (``device="cuda:N"``, default the current one)."""
from __future__ import annotations

import contextlib

import numpy as np

from ._base import Backend


class CupyBackend(Backend):
    name = "cupy"

    def __init__(self, device: str | None = None):
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
        super().__init__(device)
        self.xp = cupy
        self._index = int(device.split(":")[1]) if device and ":" in device else None

    def _device(self):
        return contextlib.nullcontext() if self._index is None else self.xp.cuda.Device(self._index)

    def asarray(self, x, dtype=None):
        if hasattr(x, "detach"):  # torch tensor: through the host
            x = x.detach().cpu().numpy()
        with self._device():
            return self.xp.asarray(x, dtype=dtype)

    def to_numpy(self, x):
        return x.get() if hasattr(x, "get") and not isinstance(x, np.ndarray) else np.asarray(x)

    def maximum(self, x, value):
        return self.xp.maximum(x, value)

    def stack(self, xs, axis=0):
        return self.xp.stack(list(xs), axis=axis)

    def eigh(self, a):
        with self._device():
            return self.xp.linalg.eigh(a)

    @property
    def on_gpu(self):
        return True

    def free_memory(self):
        with self._device():
            return int(self.xp.cuda.Device().mem_info[0])

    def synchronize(self):
        with self._device():
            self.xp.cuda.Device().synchronize()
