"""torch on a CUDA device: :class:`~scalenc.ridge.backend.torch.TorchBackend` whose
device defaults to ``"cuda"`` (himalaya's ``torch_cuda`` name)."""
from __future__ import annotations

from .torch import TorchBackend


class TorchCudaBackend(TorchBackend):
    name = "torch_cuda"
    default_device = "cuda"

    def __init__(self, device: str | None = None):
        if device is not None and not device.startswith("cuda"):
            raise ValueError(f"backend 'torch_cuda' runs on a CUDA device, got device {device!r}")
        super().__init__(device)
