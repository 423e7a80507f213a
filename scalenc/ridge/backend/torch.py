"""torch backend on the CPU (``device="cpu"``) or a CUDA device (``device="cuda[:N]"``)."""
from __future__ import annotations

import numpy as np

from ._base import Backend, host_array


class TorchBackend(Backend):
    name = "torch"
    default_device = "cpu"

    def __init__(self, device: str | None = None):
        try:
            import torch
        except ImportError as e:
            raise ImportError(f"backend {self.name!r} needs torch: install scalenc[lm]") from e
        dev = device or self.default_device
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"backend {self.name!r} with device {dev!r} was asked for but CUDA is not available")
        super().__init__(dev)
        self.xp = torch
        self._dtypes = {np.dtype("float32"): torch.float32, np.dtype("float64"): torch.float64,
                        np.dtype("int64"): torch.int64, np.dtype("bool"): torch.bool}

    def asarray(self, x, dtype=None):
        torch = self.xp
        tdtype = None if dtype is None else self._dtypes[np.dtype(dtype)]
        if isinstance(x, torch.Tensor):
            return x.to(device=self.device, dtype=tdtype or x.dtype)
        x = np.ascontiguousarray(host_array(x), dtype=dtype)
        return torch.from_numpy(x).to(self.device)

    def sum(self, x, axis):
        return x.sum(dim=axis)

    def argmax(self, x, axis):
        return x.argmax(dim=axis)

    def maximum(self, x, value):
        return self.xp.clamp(x, min=value)

    def stack(self, xs, axis=0):
        return self.xp.stack(list(xs), dim=axis)

    @property
    def on_gpu(self):
        return self.device.startswith("cuda")

    def free_memory(self):
        return int(self.xp.cuda.mem_get_info(self.xp.device(self.device))[0]) if self.on_gpu else None

    def synchronize(self):
        if self.on_gpu:
            self.xp.cuda.synchronize(self.xp.device(self.device))
