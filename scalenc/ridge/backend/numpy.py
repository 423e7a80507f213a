"""numpy backend (the default): CPU, any BLAS numpy was built with."""
from __future__ import annotations

import numpy as np

from ._base import Backend, host_array


class NumpyBackend(Backend):
    name = "numpy"
    xp = np

    def __init__(self, device: str | None = None):
        super().__init__(None)

    def asarray(self, x, dtype=None):
        return np.asarray(host_array(x), dtype=dtype)

    def to_numpy(self, x):
        return np.asarray(x)

    def maximum(self, x, value):
        return np.maximum(x, value)

    def stack(self, xs, axis=0):
        return np.stack(list(xs), axis=axis)
