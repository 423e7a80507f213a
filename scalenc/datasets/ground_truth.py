"""Ground truth of the synthetic dataset, read back for scoring.

:func:`scalenc.datasets.synthetic` writes ``ground_truth.zarr`` next to the assembly
(noise-free signal per story under ``/stories/<story>/signal``) and records its path in
the assembly's ``ground_truth`` attribute. The trainer asks :func:`ground_truth_ceiling`
for the exact ceiling r of the test story; any other assembly has no ground truth and
gets ``None``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from ..ridge.scoring import pearson_r

__all__ = ["ground_truth_ceiling"]


def ground_truth_ceiling(assembly, story: str, y_test, rows: slice = slice(None)) -> np.ndarray | None:
    """The ceiling r of every voxel on ``story``: r between the responses and the noise-free signal.

    Parameters
    ----------
    assembly : Assembly
        Its ``attrs["ground_truth"]`` names the ground-truth store (synthetic data only).
    story : str
    y_test : (n, n_voxels) array
        The responses the model is scored on (e.g. the repeat mean, trimmed).
    rows : slice
        Rows of the story's responses that ``y_test`` holds (the test target trimming).

    Returns
    -------
    (n_voxels,) float64 array, or None when there is no ground truth or it does not line
    up with ``y_test``.
    """
    gt = assembly.attrs.get("ground_truth")
    if not gt or not Path(gt).exists():
        return None
    tree = xr.open_datatree(gt, engine="zarr", consolidated=False)
    try:
        sig = tree[f"stories/{story}"]["signal"].values[rows]
    except KeyError:
        return None
    y = np.asarray(y_test)
    if sig.shape != y.shape:
        return None
    return pearson_r(y, sig)
