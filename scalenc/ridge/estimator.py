"""scikit-learn style estimator over :func:`~scalenc.ridge.solver.solve_ridge_cv`."""
from __future__ import annotations

import numpy as np

from ._params import EstimatorParams
from .cv import check_cv
from .scoring import pearson_r, r2_score
from .solver import predict_linear, solve_ridge_cv


class RidgeCV(EstimatorParams):
    """Ridge regression with cross-validated penalty per voxel (p-space solver).

    The loss is ``||Y - X W - b||^2 + alpha ||W||^2`` (himalaya's convention). Grids in
    HuthLab/LITcoder ``alpha^2`` units need ``alpha_squared=True``.

    Parameters
    ----------
    alphas : (n_alphas,) array
        Candidate penalties (default ``logspace(0, 6, 13)``).
    cv : int, splitter or list of (train, test)
        An int means story-grouped K-fold when ``stories`` are passed to ``fit``, else
        K-fold over contiguous 20-TR chunks (see :mod:`scalenc.ridge.cv`). Default 5.
    fit_intercept : bool
    scoring : {"r", "r2"}
        Held-out metric for choosing alphas, and what :meth:`score` returns per voxel.
    single_alpha : bool
        One alpha for all voxels.
    alpha_squared : bool
        Square the given grid (HuthLab/LITcoder units).
    voxel_block : int or None
        Voxels solved at once (memory bound); results do not depend on it.
    backend, device : str
        ``"numpy"``, ``"cupy"``, ``"torch"`` (``device="cuda"``); default: the enclosing
        :func:`~scalenc.ridge.backend.use_backend`, else numpy.
    dtype : {"float32", "float64"}

    Attributes
    ----------
    coef_ : (n_features, n_voxels) ndarray
    intercept_ : (n_voxels,) ndarray
    alphas_ : (n_voxels,) ndarray
        Chosen alpha per voxel.
    cv_scores_ : (n_alphas, n_voxels) ndarray
        Mean held-out score per alpha.
    n_features_in_ : int
    """

    def __init__(self, alphas=None, cv=5, *, fit_intercept: bool = True, scoring: str = "r",
                 single_alpha: bool = False, alpha_squared: bool = False, voxel_block: int | None = 10_000,
                 backend: str | None = None, device: str | None = None, dtype: str = "float32"):
        self.alphas = alphas
        self.cv = cv
        self.fit_intercept = fit_intercept
        self.scoring = scoring
        self.single_alpha = single_alpha
        self.alpha_squared = alpha_squared
        self.voxel_block = voxel_block
        self.backend = backend
        self.device = device
        self.dtype = dtype

    def fit(self, X, Y, stories=None) -> RidgeCV:
        """Fit on ``X`` (n_trs, n_features) and ``Y`` (n_trs, n_voxels); ``stories`` (n_trs,)
        labels the story of each row (for story-grouped folds)."""
        n = np.shape(X)[0]
        if np.shape(Y)[0] != n:
            raise ValueError(f"X has {n} rows but Y has {np.shape(Y)[0]}")
        alphas = np.logspace(0, 6, 13) if self.alphas is None else self.alphas
        folds = check_cv(self.cv, n, stories)
        res = solve_ridge_cv(X, Y, alphas, folds, fit_intercept=self.fit_intercept, score=self.scoring,
                             single_alpha=self.single_alpha, alpha_squared=self.alpha_squared,
                             voxel_block=self.voxel_block, backend=self.backend, device=self.device,
                             dtype=self.dtype)
        self.coef_ = res.coef
        self.intercept_ = res.intercept
        self.alphas_ = res.best_alphas
        self.best_alpha_index_ = res.best_alpha_index
        self.cv_scores_ = res.cv_scores
        self.fold_scores_ = res.fold_scores
        self.alpha_grid_ = res.alphas
        self.n_features_in_ = int(np.shape(X)[1])
        return self

    def predict(self, X) -> np.ndarray:
        """(n_trs, n_voxels) predictions, on the fit's backend, returned as numpy."""
        X = self._check_X(X)
        return predict_linear(X, self.coef_, self.intercept_, backend=self.backend or "numpy", device=self.device,
                              dtype=self.dtype)

    def score(self, X, Y) -> np.ndarray:
        """Per-voxel held-out score (Pearson r, or R² with ``scoring="r2"``), shape (n_voxels,)."""
        P = self.predict(X)
        Y = np.asarray(Y)
        return pearson_r(Y, P) if self.scoring == "r" else r2_score(Y, P)
