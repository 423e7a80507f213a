"""Generated data for the demo and the tests: synthetic datasets with known ground truth,
written in the layouts the readers read, test-data writers and tiny models. Nothing here
is used by a run on real data (the engine only asks an assembly for its ``known_signal``,
which a synthetic store points to).

- ``synthetic.py``: the LeBel-like dataset (demo, tests);
- ``bids_synthetic.py``: small Narratives / Le Petit Prince BIDS trees (NIfTI + mask,
  GIFTI, events, confounds, alignments, audio) for the BIDS readers;
- ``writers.py``: file writers for test data (``write_textgrid``, ``write_story_files``,
  ``write_precomputed``);
- ``layout.py``: MNI / fsaverage5 voxel placement; ``hub_cache.py``, ``tiny_lm.py``: tiny models in
  a Hub-layout cache; ``litcoder_pickle.py``: LITcoder-style pickles of an assembly.
"""
from .synthetic import SyntheticDataset, synthetic

__all__ = ["SyntheticDataset", "synthetic"]
