"""Tutorial import path ``scalenc.downsample.downsampling``; see :mod:`scalenc.align.downsample`."""
from ..align import Downsampler

__all__ = ["Downsampler"]
