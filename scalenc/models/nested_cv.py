"""The tutorials' model object, ``NestedCVModel``, on top of :mod:`scalenc.ridge`.

It keeps LITcoder's constructor arguments and ``fit_predict`` signature and return value
``(metrics, weights, best_alphas)``, with these deliberate differences:

- penalties follow ``alpha ||w||^2`` (himalaya); LITcoder's grids are in ``alpha^2`` units:
  pass ``alpha_squared=True`` to use such a grid unchanged;
- folds are seeded (``seed``), so results are reproducible;
- p-values can come from a block-permutation test that respects autocorrelation
  (``pvalue_method="permutation"``); the analytic ones (LITcoder's) ignore it;
- the solver is the p-space ridge (any backend, voxel blocks, dask arrays).
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import xarray as xr
from scipy.stats import chi2

from ..results import to_metrics, voxel_dataset
from ..ridge.cv import ChunkKFold, StoryKFold
from ..ridge.scoring import block_permutation_pvalues, noise_ceiling, pearson_pvalues, pearson_r, r2_score
from ..ridge.solver import prepare_x, solve_ridge_cv

logger = logging.getLogger(__name__)

MODELS = ("ridge_regression",)
FOLDINGS = ("chunked", "story", "group")
PVALUE_METHODS = ("analytic", "permutation")


class NestedCVModel:
    """Ridge regression with (nested) cross-validated per-voxel alphas.

    Parameters
    ----------
    model_name : str
        Only ``"ridge_regression"``.
    alphas : array, optional
        Penalty grid, ``alpha ||w||^2`` convention; default ``logspace(-1, 8, 10)`` (LITcoder's
        default values, here read in himalaya units unless ``alpha_squared``).
    n_outer_folds, n_inner_folds : int
        Outer folds (only without a separate test set) and inner folds (alpha choice).
    chunk_length : int
        TRs per contiguous chunk for ``folding="chunked"``.
    single_alpha : bool
        One alpha for all voxels.
    use_corr : bool
        Choose alphas by held-out Pearson r (True) or R² (False).
    alpha_fdr : float
        Benjamini–Hochberg level.
    alpha_squared : bool
        Square ``alphas`` (HuthLab/LITcoder grid units).
    folding : {"chunked", "story"}
        Inner/outer folds: shuffled contiguous chunks (within stories when ``groups`` are
        given), or whole stories (``groups`` required; ``"group"`` is an alias).
    seed : int
        Seed of the chunk shuffles and permutations.
    pvalue_method : {"analytic", "permutation"}
    n_permutations, permutation_block : int
        Block-permutation test settings.
    backend, device, dtype, voxel_block
        Passed to :func:`~scalenc.ridge.solver.solve_ridge_cv`.
    """

    def __init__(self, model_name: str = "ridge_regression", alphas=None, n_outer_folds: int = 5,
                 n_inner_folds: int = 5, chunk_length: int = 20, single_alpha: bool = False, use_corr: bool = True,
                 alpha_fdr: float = 0.05, alpha_squared: bool = False, folding: str = "chunked", seed: int = 0,
                 pvalue_method: str = "analytic", n_permutations: int = 1000, permutation_block: int = 10,
                 backend: str | None = None, device: str | None = None, dtype: str = "float32",
                 voxel_block: int | None = 10_000):
        if model_name not in MODELS:
            raise ValueError(f"unknown model_name {model_name!r}; accepted: {MODELS}")
        if folding not in FOLDINGS:
            raise ValueError(f"unknown folding {folding!r}; accepted: {FOLDINGS}")
        if pvalue_method not in PVALUE_METHODS:
            raise ValueError(f"unknown pvalue_method {pvalue_method!r}; accepted: {PVALUE_METHODS}")
        self.model_name = model_name
        self.alphas = np.logspace(-1, 8, 10) if alphas is None else np.asarray(alphas, dtype=np.float64)
        self.n_outer_folds = int(n_outer_folds)
        self.n_inner_folds = int(n_inner_folds)
        self.chunk_length = int(chunk_length)
        self.single_alpha = single_alpha
        self.use_corr = use_corr
        self.alpha_fdr = alpha_fdr
        self.alpha_squared = alpha_squared
        self.folding = "story" if folding == "group" else folding
        self.seed = seed
        self.pvalue_method = pvalue_method
        self.n_permutations = n_permutations
        self.permutation_block = permutation_block
        self.backend, self.device, self.dtype, self.voxel_block = backend, device, dtype, voxel_block

    def __repr__(self) -> str:
        return (f"NestedCVModel({self.model_name!r}, alphas={len(self.alphas)} values, n_outer_folds="
                f"{self.n_outer_folds}, n_inner_folds={self.n_inner_folds}, folding={self.folding!r}, "
                f"single_alpha={self.single_alpha}, use_corr={self.use_corr})")

    def _splitter(self, n_splits: int, groups):
        if self.folding == "story":
            if groups is None:
                raise ValueError("folding='story' needs groups (the story of each row)")
            return StoryKFold(n_splits=n_splits, shuffle=False)
        return ChunkKFold(chunk_length=self.chunk_length, n_splits=n_splits, seed=self.seed)

    def _fit(self, X, Y, groups, x_side=None):
        folds = list(self._splitter(self.n_inner_folds, groups).split(len(X), groups))
        return solve_ridge_cv(X, Y, self.alphas, folds, score="r" if self.use_corr else "r2",
                              single_alpha=self.single_alpha, alpha_squared=self.alpha_squared,
                              voxel_block=self.voxel_block, backend=self.backend, device=self.device,
                              dtype=self.dtype, x_side=x_side)

    def x_side(self, features, groups=None):
        """The ridge's X-side quantities of a test-set fit on ``features`` (its inner folds'
        Grams and eigendecompositions), to share between fits with the same training design
        (``fit_dataset(..., x_side=...)``; :func:`scalenc.sweep`)."""
        X = np.asarray(features)
        groups = None if groups is None else np.asarray(groups)
        folds = list(self._splitter(self.n_inner_folds, groups).split(len(X), groups))
        alphas = self.alphas ** 2 if self.alpha_squared else self.alphas
        return prepare_x(X, folds, alphas, score="r" if self.use_corr else "r2", dtype=self.dtype)

    def _pvalues(self, y, pred, r, groups=None):
        if self.pvalue_method == "analytic":
            return pearson_pvalues(r, y.shape[0])
        return block_permutation_pvalues(y, pred, block_length=self.permutation_block,
                                         n_permutations=self.n_permutations, seed=self.seed, groups=groups)

    def fit_predict(self, features, targets, X_test=None, y_test=None, groups=None, test_repeats=None
                    ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        """Fit and evaluate (LITcoder's signature and return value).

        Parameters
        ----------
        features : (n_train, n_features) array
        targets : (n_train, n_voxels) array (numpy or voxel-chunked dask)
        X_test, y_test : (n_test, n_features), (n_test, n_voxels), optional
            A held-out test set (e.g. the repeated test story): alphas are chosen by inner CV
            on the training rows, the model is refit on all of them and scored on the test
            set. Without them, an outer CV loop scores every outer fold.
        groups : (n_train,) array, optional
            Story of each training row (folds never mix stories inside a chunk).
        test_repeats : (n_repeats, n_test, n_voxels) array, optional
            Repeats of the test story; adds the noise ceiling (``cc_max``) to the metrics.

        Returns
        -------
        metrics : dict
            ``median_score, mean_score, std_score, min_score, max_score, correlations, p_values,
            corrected_p_values, significant_mask, n_significant, percent_significant,
            best_alphas, r2_scores, pvalue_method`` (+ ``noise_ceiling`` with repeats,
            ``fold_correlations`` in outer-CV mode); built from :meth:`fit_dataset`.
        weights : (n_features, n_voxels) ndarray
        best_alphas : (n_voxels,) ndarray
        """
        ds = self.fit_dataset(features, targets, X_test=X_test, y_test=y_test, groups=groups,
                              test_repeats=test_repeats)
        metrics = to_metrics(ds)
        coef, best = ds["weights"].values, ds["alpha"].values
        self.metrics_, self.coef_, self.best_alphas_ = metrics, coef, best
        return metrics, coef, best

    def fit_dataset(self, features, targets, X_test=None, y_test=None, groups=None, test_repeats=None,
                    x_side=None) -> xr.Dataset:
        """Fit and evaluate; return the per-voxel results as a Dataset.

        Same parameters as :meth:`fit_predict`, and ``x_side`` (with a test set): the
        :meth:`x_side` of ``features`` and ``groups``, computed once for several fits.

        Returns
        -------
        Dataset over ``voxel``
            ``r, r2, alpha, p, q, significant, weights (feature, voxel)``, ``r_fold (fold,
            voxel)`` in outer-CV mode, ``noise_ceiling`` with ``test_repeats``; attributes
            ``pvalue_method, alpha_fdr, mode`` ("test set" or "outer cv"), ``n_test``
            (rows scored per fit). See :mod:`scalenc.results`.
        """
        X = np.asarray(features)
        n = X.shape[0]
        if targets.shape[0] != n:
            raise ValueError(f"features have {n} rows but targets have {targets.shape[0]}")
        if (X_test is None) != (y_test is None):
            raise ValueError("pass both X_test and y_test, or neither")
        groups = None if groups is None else np.asarray(groups)
        attrs = {"pvalue_method": self.pvalue_method}
        if x_side is not None and X_test is None:
            raise ValueError("x_side is for fits with a test set (X_test, y_test); the outer-CV mode refits per fold")
        if X_test is not None:
            res = self._fit(X, targets, groups, x_side)
            Xt, yt = np.asarray(X_test), np.asarray(y_test)
            if Xt.shape[0] != yt.shape[0]:
                raise ValueError(f"X_test has {Xt.shape[0]} rows but y_test has {yt.shape[0]}")
            pred = Xt @ res.coef.astype(np.float64) + res.intercept
            r = pearson_r(yt, pred)
            ds = voxel_dataset(r, self._pvalues(yt, pred, r), alpha=res.best_alphas, r2=r2_score(yt, pred),
                               alpha_fdr=self.alpha_fdr, weights=res.coef,
                               attrs={**attrs, "mode": "test set", "n_test": int(yt.shape[0])})
        else:
            outer = list(self._splitter(self.n_outer_folds, groups).split(n, groups))
            rs, ps, r2s, coefs, alphas = [], [], [], [], []
            for k, (tr, te) in enumerate(outer):
                res = self._fit(X[tr], _rows(targets, tr), None if groups is None else groups[tr])
                yt = np.asarray(_rows(targets, te))
                pred = X[te] @ res.coef.astype(np.float64) + res.intercept
                r = pearson_r(yt, pred)
                rs.append(r)
                ps.append(self._pvalues(yt, pred, r))
                r2s.append(r2_score(yt, pred))
                coefs.append(res.coef)
                alphas.append(res.best_alphas)
                logger.info("outer fold %d/%d: median r %.3f", k + 1, len(outer), float(np.nanmedian(r)))
            # alphas live on a log grid: their geometric mean over outer folds
            ds = voxel_dataset(np.mean(rs, axis=0), _fisher(np.asarray(ps)), alpha=np.exp(np.mean(np.log(alphas), axis=0)),
                               r2=np.mean(r2s, axis=0), r_fold=np.asarray(rs), alpha_fdr=self.alpha_fdr,
                               weights=np.mean(coefs, axis=0),
                               attrs={**attrs, "mode": "outer cv", "n_test": int(min(len(te) for _, te in outer))})
        if test_repeats is not None:
            ds["noise_ceiling"] = ("voxel", noise_ceiling(np.asarray(test_repeats))["cc_max"])
            ds.attrs["noise_ceiling_source"] = "test repeats (cc_max)"
        return ds


def _rows(a, idx):
    return a[idx] if not hasattr(a, "dask") else a[np.asarray(idx)]


def _fisher(p: np.ndarray) -> np.ndarray:
    """Fisher's method over folds (axis 0): -2 sum log p ~ chi2(2K)."""
    stat = -2 * np.log(np.clip(p, 1e-300, 1.0)).sum(axis=0)
    return chi2.sf(stat, 2 * p.shape[0])


__all__ = ["NestedCVModel"]
