"""Cross-validated ridge regression in p-space, on numpy, CuPy or torch, over voxel blocks.

- ``backend/``: one module per array library (``numpy.py``, ``cupy.py``, ``torch.py``,
  ``torch_cuda.py``) behind :func:`get_backend` / :func:`use_backend`;
- ``solver.py``: :func:`solve_ridge_cv`, the p-space algorithm (DESIGN.md): X side with
  typed per-fold classes, one block function :func:`~scalenc.ridge.solver.cv_block` with
  named outputs, mapped over voxel blocks in memory or over Dask chunks;
- ``cv.py``: story-grouped K-fold, chunked K-fold and bootstrap splitters;
- ``scoring.py``: Pearson r, R², p-values (analytic, block permutation), FDR, noise ceiling;
- ``estimator.py``: :class:`RidgeCV`, a scikit-learn style estimator.
"""
from .backend import Backend, get_backend, use_backend
from .cv import Bootstrap, ChunkKFold, StoryKFold, check_cv
from .estimator import RidgeCV
from .scoring import block_permutation_pvalues, fdr_bh, noise_ceiling, pearson_pvalues, pearson_r, r2_score
from .solver import RidgeCVResult, prepare_x, ridge_closed_form, solve_ridge_cv

__all__ = ["Backend", "Bootstrap", "ChunkKFold", "RidgeCV", "RidgeCVResult", "StoryKFold", "block_permutation_pvalues",
           "check_cv", "fdr_bh", "get_backend", "noise_ceiling", "pearson_pvalues", "pearson_r", "prepare_x",
           "r2_score", "ridge_closed_form", "solve_ridge_cv", "use_backend"]
