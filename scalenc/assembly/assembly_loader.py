"""Tutorial import path ``scalenc.assembly.assembly_loader``; see :mod:`scalenc.assembly.core`."""
from .core import load_assembly

__all__ = ["load_assembly"]
