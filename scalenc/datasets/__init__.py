"""Datasets with known ground truth, written in the layouts the readers read.

- ``synthetic.py``: the LeBel-like dataset (demo, tests);
- ``bids_synthetic.py``: small Narratives / Le Petit Prince BIDS trees (NIfTI + mask,
  GIFTI, events, confounds, alignments, audio) for the BIDS readers;
- ``writers.py``: file writers for test data (``write_textgrid``, ``write_story_files``,
  ``write_precomputed``).
"""
from .synthetic import SyntheticDataset, synthetic

__all__ = ["SyntheticDataset", "synthetic"]
