"""Banded ridge: one penalty per feature space and voxel, chosen by cross-validation.

With feature spaces ``b`` (column groups ``X_b``), banded ridge minimises::

    ||Y - sum_b X_b W_b||^2 + sum_b (alpha / gamma_b) ||W_b||^2

with ``gamma`` on the simplex (himalaya's parametrisation). Equivalently it is ridge with
penalty ``alpha`` on the design whose block ``b`` is scaled by ``sqrt(gamma_b)``: the
weights on the original features are ``W_b = sqrt(gamma_b) W'_b``. A random search tries
``n_candidates`` gammas (the one-space corners and Dirichlet draws, or an explicit
array) times an alpha grid, and keeps the best pair per voxel by held-out score.

The solver is the p-space ridge of :mod:`scalenc.ridge.solver`, one candidate per gamma:
the Gram of the scaled design is the Gram with blocks scaled, ``diag(s) G diag(s)``, so
each (fold, candidate) costs one p x p eigendecomposition and no n x p work; the voxel
side (``X^T Y`` and the fold cross-products) is computed once per voxel block and shared
by every candidate. With a dask ``Y`` each candidate's decompositions are one task and
each voxel block another (:func:`~scalenc.ridge.solver.xside_for`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from .backend import Backend, get_backend
from ._params import EstimatorParams
from .cv import check_cv
from .scoring import pearson_r, r2_score
from .solver import (Output, cv_block, device_voxel_block, intercept, map_voxel_blocks, predict_linear,
                     solver_targets, xside_for)
from .split import correlation_score_split, r2_score_split

__all__ = ["BandedRidgeCV", "BandedRidgeCVResult", "banded_candidates", "feature_spaces", "solve_banded_ridge_cv"]


def feature_spaces(feature_space: Any, n_features: int | None = None) -> tuple[list, np.ndarray]:
    """Space labels in order of first appearance, and the space index of each column.

    Parameters
    ----------
    feature_space : (n_features,) array-like
        The feature space of each column (ints, strings, ...).
    n_features : int, optional
        Checked against ``len(feature_space)``.
    """
    g = np.asarray(feature_space)
    if g.ndim != 1 or (n_features is not None and g.size != n_features):
        raise ValueError(f"feature_space must give one feature-space label per column of X ({n_features}), "
                         f"got shape {g.shape}")
    _, first, inverse = np.unique(g, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return g[first[order]].tolist(), rank[inverse.reshape(-1)].astype(np.int64)


def banded_candidates(n_spaces: int, n_iter: int = 20, concentration: float | Sequence[float] = (0.1, 1.0), *,
                      corners: bool = True, random_state: int | None = 0) -> np.ndarray:
    """Candidate gammas of the random search: one-space corners, then Dirichlet draws.

    Parameters
    ----------
    n_spaces : int
    n_iter : int
        Number of Dirichlet draws.
    concentration : float or sequence of floats
        Dirichlet concentration; with several, draw ``i`` uses ``concentration[i % k]``
        (small values favour gammas near the corners, 1 is uniform on the simplex).
    corners : bool
        Put the ``n_spaces`` one-space gammas (``e_b``: only space b is used) first.
    random_state : int or None
        Seed of ``np.random.default_rng``.

    Returns
    -------
    gammas : (n_candidates, n_spaces) float64
        Rows on the simplex, duplicates removed (first kept).
    """
    if n_spaces < 1 or n_iter < 0:
        raise ValueError(f"banded_candidates needs n_spaces >= 1 and n_iter >= 0, got {n_spaces}, {n_iter}")
    conc = np.atleast_1d(np.asarray(concentration, dtype=np.float64))
    if np.any(conc <= 0):
        raise ValueError(f"concentration must be positive, got {conc}")
    rng = np.random.default_rng(random_state)
    rows = list(np.eye(n_spaces)) if corners else []
    rows += [rng.dirichlet(np.full(n_spaces, conc[i % conc.size])) for i in range(n_iter)]
    if not rows:
        raise ValueError("banded_candidates: no candidates (n_iter=0 and corners=False)")
    g = np.asarray(rows)
    _, keep = np.unique(np.round(g, 12), axis=0, return_index=True)
    return g[np.sort(keep)]


def _check_candidates(candidates: Any, n_spaces: int) -> np.ndarray:
    c = np.asarray(candidates, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != n_spaces or c.shape[0] == 0:
        raise ValueError(f"candidates must be an (n_candidates, {n_spaces}) array of gammas, got shape {c.shape}")
    if np.any(c < 0) or not np.all(np.isfinite(c)) or np.any(c.sum(1) <= 0):
        raise ValueError("candidates: gammas must be finite, >= 0 and not all zero in a row")
    return c


@dataclasses.dataclass
class BandedRidgeCVResult:
    """Output of :func:`solve_banded_ridge_cv`.

    Attributes
    ----------
    coef : (n_features, n_voxels) ndarray or None
        Weights on the original (unscaled) features.
    intercept : (n_voxels,) ndarray
    best_candidate : (n_voxels,) int ndarray
        Row of ``candidates`` chosen per voxel.
    gammas : (n_spaces, n_voxels) ndarray
        The chosen gamma of each voxel (a column of ``candidates.T``).
    best_alphas : (n_voxels,) ndarray
    best_alpha_index : (n_voxels,) int ndarray
    cv_scores : (n_candidates, n_alphas, n_voxels) ndarray
        Mean held-out score over folds.
    candidates : (n_candidates, n_spaces) ndarray
    alphas : (n_alphas,) ndarray
    spaces : list
        Feature-space labels, in the order of the ``n_spaces`` axes.
    space_of_feature : (n_features,) int ndarray
    """

    coef: np.ndarray | None
    intercept: np.ndarray
    best_candidate: np.ndarray
    gammas: np.ndarray
    best_alphas: np.ndarray
    best_alpha_index: np.ndarray
    cv_scores: np.ndarray
    candidates: np.ndarray
    alphas: np.ndarray
    spaces: list
    space_of_feature: np.ndarray

    @property
    def penalties(self) -> np.ndarray:
        """(n_spaces, n_voxels) effective penalty ``alpha / gamma_b`` of each space (inf
        where gamma_b = 0: the space is left out)."""
        with np.errstate(divide="ignore"):
            return self.best_alphas[None, :] / self.gammas


def solve_banded_ridge_cv(X, Y, feature_space, alphas, folds: Sequence[tuple[np.ndarray, np.ndarray]], *,
                          candidates=None, n_iter: int = 20, concentration: float | Sequence[float] = (0.1, 1.0),
                          random_state: int | None = 0, fit_intercept: bool = True, score: str = "r",
                          voxel_block: int | None = 10_000, backend: str | Backend | None = None,
                          device: str | None = None, dtype: str = "float32", return_coef: bool = True,
                          progress: bool | None = None) -> BandedRidgeCVResult:
    """Cross-validated banded ridge: per voxel, the best (gamma, alpha) of a random search.

    Parameters
    ----------
    X : (n_trs, n_features) array
    Y : (n_trs, n_voxels) numpy, CuPy or torch array, or dask array chunked over voxels
    feature_space : (n_features,) array-like
        Feature-space label of each column (himalaya calls them ``groups``).
    alphas : (n_alphas,) array
        Penalty grid, ``alpha ||w||^2`` convention, applied to the scaled design.
    folds : list of (train_idx, test_idx)
    candidates : (n_candidates, n_spaces) array, optional
        Gammas to try (rows need not sum to 1; they are used as given). Default:
        :func:`banded_candidates` ``(n_spaces, n_iter, concentration,
        random_state=random_state)``: the corners, then Dirichlet draws.
    n_iter, concentration, random_state
        The default candidates' random search.
    fit_intercept : bool
    score : {"r", "r2"}
        Held-out metric used to choose.
    voxel_block, backend, device, dtype, return_coef, progress
        As :func:`~scalenc.ridge.solver.solve_ridge_cv`.

    Returns
    -------
    BandedRidgeCVResult
        Ties go to the earlier alpha of the grid, then to the earlier candidate.
    """
    bk = get_backend(backend, device)
    n, p = np.shape(X)
    if Y.ndim != 2 or Y.shape[0] != n:
        raise ValueError(f"Y must be 2-D with {n} rows like X, got shape {tuple(Y.shape)}")
    Y = solver_targets(Y)
    spaces, space_of = feature_spaces(feature_space, p)
    if candidates is None:
        candidates = banded_candidates(len(spaces), n_iter, concentration, random_state=random_state)
    candidates = _check_candidates(candidates, len(spaces))
    scales = np.sqrt(candidates)[:, space_of]                     # (n_candidates, p)
    xs, xs_run = xside_for(Y, X, folds, alphas, scales=scales, fit_intercept=fit_intercept, score=score,
                           dtype=dtype, backend=bk)
    voxel_block = device_voxel_block(voxel_block, bk, n, p, len(xs.folds), Y.shape[1])
    n_cand, A = candidates.shape[0], xs.alphas.size
    outputs = {"cv_scores": Output((n_cand, A), "float64"), "candidate": Output((), "int64"),
               "alpha_index": Output((), "int64"), "mean_y": Output((), "float64")}
    if return_coef:
        outputs["coef"] = Output((p,), xs.dtype)
    res = map_voxel_blocks(cv_block, Y, outputs, voxel_block=voxel_block, progress=progress,
                           shared={"xs": xs_run}, bk=bk, with_coef=return_coef)
    coef = res.get("coef")
    return BandedRidgeCVResult(coef=coef, intercept=intercept(xs, coef, res["mean_y"]),
                               best_candidate=res["candidate"], gammas=candidates[res["candidate"]].T,
                               best_alphas=xs.alphas[res["alpha_index"]], best_alpha_index=res["alpha_index"],
                               cv_scores=res["cv_scores"], candidates=candidates, alphas=xs.alphas, spaces=spaces,
                               space_of_feature=space_of)


def predict_split(X, coef: np.ndarray, space_of_feature: np.ndarray, n_spaces: int | None = None) -> np.ndarray:
    """(n_spaces, n_trs, n_voxels) predictions of each space, ``X_b @ coef_b`` (float64;
    no intercept: their sum plus the intercept is the joint prediction)."""
    X, coef = np.asarray(X), np.asarray(coef)
    n_spaces = int(space_of_feature.max()) + 1 if n_spaces is None else n_spaces
    return np.stack([predict_linear(X[:, space_of_feature == b], coef[space_of_feature == b])
                     for b in range(n_spaces)])


class SpacePredictions(EstimatorParams):
    """Predictions and scores of a fitted estimator over feature spaces (``coef_``,
    ``intercept_``, ``spaces_``, ``result_.space_of_feature``, ``scoring``): shared by
    :class:`BandedRidgeCV` and :class:`~scalenc.ridge.stacking.StackingCV`."""

    def predict(self, X, split: bool = False) -> np.ndarray:
        """Predictions (n_trs, n_voxels); with ``split`` (n_spaces, n_trs, n_voxels), one part
        per feature space without the intercept (they sum to the joint prediction minus
        ``intercept_``)."""
        X = self._check_X(X)
        if split:
            return predict_split(X, self.coef_, self.result_.space_of_feature, len(self.spaces_))
        return predict_linear(X, self.coef_, self.intercept_)

    def score(self, X, Y) -> np.ndarray:
        """Per-voxel score of the joint prediction (Pearson r, or R² with ``scoring="r2"``)."""
        P = self.predict(X)
        return pearson_r(Y, P) if self.scoring == "r" else r2_score(Y, P)

    def score_split(self, X, Y) -> np.ndarray:
        """(n_spaces, n_voxels) split of :meth:`score` over the feature spaces:
        :func:`~scalenc.ridge.split.r2_score_split` or
        :func:`~scalenc.ridge.split.correlation_score_split`."""
        P = self.predict(X, split=True)
        return correlation_score_split(Y, P) if self.scoring == "r" else r2_score_split(Y, P)


class BandedRidgeCV(SpacePredictions):
    """Banded ridge with one cross-validated penalty per feature space and voxel.

    Parameters
    ----------
    feature_space : (n_features,) array-like
        Feature-space label of each column of ``X`` (himalaya's ``groups``; the
        ``feature_space`` coordinate of a labeled design).
    alphas : (n_alphas,) array
        Alpha grid on the scaled design (default ``logspace(0, 6, 13)``).
    n_iter : int
        Dirichlet draws of the random search (after the one-space corners).
    concentration : float or sequence of floats
        Dirichlet concentration(s), cycled over draws.
    candidates : (n_candidates, n_spaces) array, optional
        Explicit gammas instead of the random search (e.g. the same as himalaya's).
    cv : int, splitter or list of (train, test)
        As :class:`~scalenc.ridge.RidgeCV`.
    fit_intercept : bool
    scoring : {"r", "r2"}
    random_state : int or None
        Seed of the random search.
    voxel_block, backend, device, dtype
        As :class:`~scalenc.ridge.RidgeCV`.

    Attributes
    ----------
    coef_ : (n_features, n_voxels) ndarray
    intercept_ : (n_voxels,) ndarray
    best_candidate_ : (n_voxels,) int ndarray
    gammas_ : (n_spaces, n_voxels) ndarray
    alphas_ : (n_voxels,) ndarray
    cv_scores_ : (n_candidates, n_alphas, n_voxels) ndarray
    candidates_ : (n_candidates, n_spaces) ndarray
    spaces_ : list
        Space labels in order of first appearance in ``feature_space``.
    n_features_in_ : int
    """


    def __init__(self, feature_space=None, alphas=None, n_iter: int = 20, concentration=(0.1, 1.0), candidates=None,
                 cv=5, *, fit_intercept: bool = True, scoring: str = "r", random_state: int | None = 0,
                 voxel_block: int | None = 10_000, backend: str | None = None, device: str | None = None,
                 dtype: str = "float32"):
        self.feature_space = feature_space
        self.alphas = alphas
        self.n_iter = n_iter
        self.concentration = concentration
        self.candidates = candidates
        self.cv = cv
        self.fit_intercept = fit_intercept
        self.scoring = scoring
        self.random_state = random_state
        self.voxel_block = voxel_block
        self.backend = backend
        self.device = device
        self.dtype = dtype

    def fit(self, X, Y, stories=None) -> BandedRidgeCV:
        """Fit on ``X`` (n_trs, n_features) and ``Y`` (n_trs, n_voxels); ``stories`` (n_trs,)
        labels the story of each row (for story-grouped folds, as in ``RidgeCV.fit``)."""
        n, p = np.shape(X)
        if np.shape(Y)[0] != n:
            raise ValueError(f"X has {n} rows but Y has {np.shape(Y)[0]}")
        spaces = np.zeros(p, np.int64) if self.feature_space is None else self.feature_space
        alphas = np.logspace(0, 6, 13) if self.alphas is None else self.alphas
        res = solve_banded_ridge_cv(X, Y, spaces, alphas, check_cv(self.cv, n, stories), candidates=self.candidates,
                                    n_iter=self.n_iter, concentration=self.concentration,
                                    random_state=self.random_state, fit_intercept=self.fit_intercept,
                                    score=self.scoring, voxel_block=self.voxel_block, backend=self.backend,
                                    device=self.device, dtype=self.dtype)
        self.result_ = res
        self.coef_, self.intercept_ = res.coef, res.intercept
        self.best_candidate_, self.gammas_, self.alphas_ = res.best_candidate, res.gammas, res.best_alphas
        self.cv_scores_, self.candidates_, self.spaces_ = res.cv_scores, res.candidates, res.spaces
        self.n_features_in_ = p
        return self
