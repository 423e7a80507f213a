"""Assemblies: one subject's stories, responses and stimulus timing on zarr.

- :class:`Assembly` (lazy reader) and :func:`load_assembly` (``.zarr`` or LITcoder
  ``.pkl``) live in ``core.py``; :class:`AssemblyWriter` (atomic, story-by-story writer)
  in ``writer.py``, which imports no other reader (no import cycle);
- ``lebel.py`` builds an assembly from the OpenNeuro ds003020 tree;
- ``textgrid.py`` parses Praat TextGrids (test-data writers are in
  :mod:`scalenc.datasets.writers`);
- ``legacy.py`` imports LITcoder pickles without running pickled code.
"""
from .core import Assembly, AssemblyError, AssemblyWriter, StoryData, load_assembly

__all__ = ["Assembly", "AssemblyError", "AssemblyWriter", "StoryData", "load_assembly"]
