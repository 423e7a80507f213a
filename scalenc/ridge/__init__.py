"""Cross-validated ridge regression in p-space, on numpy, CuPy or torch, over voxel blocks.

- ``backend/``: one module per array library (``numpy.py``, ``cupy.py``, ``torch.py``,
  ``torch_cuda.py``) behind :func:`get_backend` / :func:`use_backend`;
- ``solver.py``: :func:`solve_ridge_cv`, the p-space algorithm (DESIGN.md): X side with
  typed per-fold classes, one block function :func:`~scalenc.ridge.solver.cv_block` with
  named outputs, mapped over voxel blocks in memory or over Dask chunks;
- ``banded.py``: :func:`solve_banded_ridge_cv` and :class:`BandedRidgeCV`, one penalty per
  feature space and voxel (himalaya's parametrisation) on the same solver;
- ``stacking.py``: :func:`solve_stacking_cv` and :class:`StackingCV`, one ridge per feature
  space combined per voxel with simplex weights fitted on out-of-fold predictions, and
  structured variance partitioning;
- ``split.py``: per-space split of R² and r, variance partitioning;
- ``cv.py``: story-grouped K-fold, chunked K-fold and bootstrap splitters;
- ``scoring.py``: Pearson r, R², p-values (block permutation, effective degrees of freedom,
  analytic; :func:`significance` chooses), FDR, noise ceiling, CC_norm, degenerate voxels;
- ``estimator.py``: :class:`RidgeCV`, a scikit-learn style estimator.
"""
from .backend import Backend, get_backend, use_backend
from .banded import BandedRidgeCV, BandedRidgeCVResult, banded_candidates, solve_banded_ridge_cv
from .cv import Bootstrap, ChunkKFold, StoryKFold, check_cv
from .estimator import RidgeCV
from .scoring import block_permutation_pvalues, fdr_bh, noise_ceiling, pearson_pvalues, pearson_r, r2_score
from .scoring import effective_dof_pvalues, normalized_correlation, significance
from .solver import RidgeCVResult, prepare_x, ridge_closed_form, solve_ridge_cv
from .stacking import StackingCV, StackingCVResult, simplex_least_squares, solve_stacking_cv, structured_variance_partitioning
from .split import correlation_score_split, r2_score_split, variance_partitioning

__all__ = ["Backend", "BandedRidgeCV", "BandedRidgeCVResult", "Bootstrap", "ChunkKFold", "RidgeCV", "RidgeCVResult", "StackingCV", "StackingCVResult", "StoryKFold", "banded_candidates",
           "block_permutation_pvalues", "check_cv", "correlation_score_split", "fdr_bh", "get_backend", "noise_ceiling", "pearson_pvalues", "pearson_r", "prepare_x",
           "r2_score", "r2_score_split", "ridge_closed_form", "simplex_least_squares", "solve_banded_ridge_cv",
           "solve_ridge_cv", "solve_stacking_cv", "structured_variance_partitioning", "use_backend",
           "variance_partitioning", "effective_dof_pvalues", "normalized_correlation", "significance"]
