"""The LITcoder tutorials' module path for the downsampler (``encoding.downsample``).

The real home is :mod:`scalenc.align.downsample`; this package only re-exports it so that
the tutorials' imports work with ``encoding`` replaced by ``scalenc``.
"""
from ..align import Downsampler

__all__ = ["Downsampler"]
