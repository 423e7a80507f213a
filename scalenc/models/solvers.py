"""The solver registry under :class:`~scalenc.models.NestedCVModel` (as himalaya's
``ALL_SOLVERS`` under its estimators): each ``model_name`` is one :class:`Solver`, which
says how to fit the training rows with the chosen folds and which per-voxel outputs it
adds to the results. The model holds no per-solver branch; a new solver is one
:func:`register_solver` call (here, or in the module that defines it).

A solver's ``fit(model, X, Y, folds, feature_space=..., x_side=...)`` returns an object
with ``coef`` (feature, voxel), ``intercept`` (voxel) and ``best_alphas`` (voxel); its
``outputs(model, result, X_test, y_test)`` (optional) returns ``{name: (dims, values)}``
and coordinates for the results Dataset (averaged over outer folds without a test set).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from ..ridge.banded import predict_split, solve_banded_ridge_cv
from ..ridge.solver import prepare_x, solve_ridge_cv
from ..ridge.split import correlation_score_split, r2_score_split
from ..ridge.stacking import solve_stacking_cv, structured_variance_partitioning

__all__ = ["SOLVERS", "BandedSearch", "Solver", "SolverOptions", "register_solver"]


@dataclasses.dataclass
class SolverOptions:
    """Where and how every solver computes (the same for all ``model_name`` s).

    backend, device : the array backend (:mod:`scalenc.ridge.backend`) and its device
    dtype : dtype of the big products (p x p algebra stays float64)
    voxel_block : voxels solved at once; bounds the response-side memory, results do not
        depend on it
    """

    backend: str | None = None
    device: str | None = None
    dtype: str = "float32"
    voxel_block: int | None = 2_000


@dataclasses.dataclass
class BandedSearch:
    """The candidates of ``model_name="banded_ridge"``: explicit ``candidates`` (gammas, one
    row per candidate), else the one-space corners and ``n_iter`` Dirichlet draws of
    ``concentration``."""

    n_iter: int = 20
    concentration: Any = (0.1, 1.0)
    candidates: Any = None


@dataclasses.dataclass(frozen=True)
class Solver:
    """One ``model_name`` of :class:`~scalenc.models.NestedCVModel`.

    Attributes
    ----------
    name : str
    fit : callable ``(model, X, Y, folds, *, feature_space, x_side) -> result``
    prepare : callable ``(model, X, folds) -> x_side``, optional
        The X-side quantities that fits on the same design can share (the engine computes
        them once per training set); None: not shareable.
    outputs : callable ``(model, result, X_test, y_test) -> (variables, coords)``, optional
    needs_feature_space : bool
        The fit needs each column's feature space (read from the design's ``feature_space``).
    """

    name: str
    fit: Callable[..., Any]
    prepare: Callable[..., Any] | None = None
    outputs: Callable[..., Any] | None = None
    needs_feature_space: bool = False


SOLVERS: dict[str, Solver] = {}


def register_solver(solver: Solver) -> Solver:
    """Add (or replace) ``solver`` under its name."""
    SOLVERS[solver.name] = solver
    return solver


# ---- plain ridge ------------------------------------------------------------------------------
def _fit_ridge(model, X, Y, folds, *, feature_space=None, x_side=None):
    return solve_ridge_cv(X, Y, model.alphas, folds, score=model.score_name, single_alpha=model.single_alpha,
                          alpha_squared=model.alpha_squared, x_side=x_side, **model.solver_kwargs)


def _prepare_ridge(model, X, folds):
    return prepare_x(X, folds, model.penalties, score=model.score_name, dtype=model.dtype, backend=model.backend,
                     device=model.device)


register_solver(Solver("ridge_regression", _fit_ridge, prepare=_prepare_ridge))


# ---- banded ridge -----------------------------------------------------------------------------
def _fit_banded(model, X, Y, folds, *, feature_space=None, x_side=None):
    if model.single_alpha:
        raise ValueError("single_alpha is not available with model_name='banded_ridge'")
    return solve_banded_ridge_cv(X, Y, feature_space, model.penalties, folds, candidates=model.candidates,
                                 n_iter=model.n_iter, concentration=model.concentration, random_state=model.seed,
                                 score=model.score_name, **model.solver_kwargs)


def _banded_outputs(model, res, Xt, yt):
    """Per-space gammas and the test rows' split scores, dims (space, voxel)."""
    parts = predict_split(Xt, np.asarray(res.coef, dtype=np.float64), res.space_of_feature, len(res.spaces))
    variables = {"gamma": (("space", "voxel"), np.asarray(res.gammas, dtype=np.float64)),
                 "r2_split": (("space", "voxel"), np.asarray(r2_score_split(yt, parts, center=True), np.float64)),
                 "r_split": (("space", "voxel"), np.asarray(correlation_score_split(yt, parts), np.float64))}
    return variables, {"space": ("space", [str(s) for s in res.spaces])}


register_solver(Solver("banded_ridge", _fit_banded, outputs=_banded_outputs, needs_feature_space=True))


# ---- stacked ridge (one ridge per feature space, simplex weights per voxel) ---------------------
def _fit_stacking(model, X, Y, folds, *, feature_space=None, x_side=None):
    # best_alphas: the alpha of each voxel's highest-weight space (scalenc.ridge.stacking)
    return solve_stacking_cv(X, Y, feature_space, model.alphas, folds, score=model.score_name,
                             single_alpha=model.single_alpha, alpha_squared=model.alpha_squared,
                             **model.solver_kwargs)


def _stacking_outputs(model, res, Xt, yt):
    """Stacking weights and each space's alpha, the split of the stacked prediction over its
    weighted parts ``w_b X_b coef_b``, and the structured variance partitioning on the
    scored rows (:func:`~scalenc.ridge.stacking.structured_variance_partitioning`); dims
    (space, voxel)."""
    parts = predict_split(Xt, np.asarray(res.coef, dtype=np.float64), res.space_of_feature, len(res.spaces))
    variables = {"stack_weight": res.weights, "space_alpha": res.space_alphas,
                 "r2_split": r2_score_split(yt, parts, center=True), "r_split": correlation_score_split(yt, parts),
                 **structured_variance_partitioning(res, Xt, yt)}
    variables = {k: (("space", "voxel"), np.asarray(a, dtype=np.float64)) for k, a in variables.items()}
    return variables, {"space": ("space", [str(s) for s in res.spaces])}


register_solver(Solver("stacking", _fit_stacking, outputs=_stacking_outputs, needs_feature_space=True))
