"""Cross-validated ridge regression in p-space, on numpy, CuPy or torch, over voxel blocks."""
from .backend import Backend, get_backend, use_backend
from .solver import RidgeCVResult, prepare_x, ridge_closed_form, solve_ridge_cv

__all__ = ["Backend", "RidgeCVResult", "get_backend", "prepare_x", "ridge_closed_form", "solve_ridge_cv",
           "use_backend"]
