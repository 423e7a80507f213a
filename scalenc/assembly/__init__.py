"""Assemblies: one subject's stories, responses and stimulus timing on zarr.

- :class:`Assembly` (lazy reader) and :func:`load_assembly` (``.zarr`` or LITcoder
  ``.pkl``) live in ``core.py``; :class:`AssemblyWriter` (atomic, story-by-story writer)
  in ``writer.py``, which imports no other reader (no import cycle);
- ``lebel.py`` builds an assembly from the OpenNeuro ds003020 tree;
- ``textgrid.py`` parses Praat TextGrids (test-data writers are in
  :mod:`scalenc.synthetic.writers`);
- ``legacy.py`` imports LITcoder pickles without running pickled code;
- stored audio paths count from the store folder (or are absolute); :func:`relocate`
  (``scalenc assembly relocate``) re-points them when the data moved;
- ``chunks.py`` refuses missing / corrupt chunks on read and checks whole stores
  (``scalenc assembly check``);
- ``bids.py`` builds an assembly from BIDS / fMRIPrep runs (NIfTI + mask or GIFTI,
  sidecar TR, events onsets, TextGrid / CSV / Gentle words, nilearn confound cleaning,
  fsaverage projection); ``narratives.py`` (ds002345) and ``lpp.py`` (ds003643) name
  those datasets' files and timing conventions (nibabel / nilearn: ``scalenc[bids]``).
"""
from .core import Assembly, AssemblyChunkError, AssemblyError, AssemblyWriter, StoryData, load_assembly, relocate

__all__ = ["Assembly", "AssemblyChunkError", "AssemblyError", "AssemblyWriter", "StoryData", "load_assembly",
           "relocate"]
