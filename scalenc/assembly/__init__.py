"""Assemblies: one subject's stories, responses and stimulus timing on zarr.

- :class:`Assembly` (lazy reader), :class:`AssemblyWriter` (atomic, story-by-story writer)
  and :func:`load_assembly` (``.zarr`` or LITcoder ``.pkl``) live in ``core.py``;
- ``lebel.py`` builds an assembly from the OpenNeuro ds003020 tree;
- ``textgrid.py`` parses Praat TextGrids;
- ``legacy.py`` imports LITcoder pickles without running pickled code.
"""
from .core import Assembly, AssemblyError, AssemblyWriter, StoryData, load_assembly

__all__ = ["Assembly", "AssemblyError", "AssemblyWriter", "StoryData", "load_assembly"]
