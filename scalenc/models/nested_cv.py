"""The tutorials' model object, ``NestedCVModel``, on top of :mod:`scalenc.ridge`.

It keeps LITcoder's constructor arguments and ``fit_predict`` signature and return value
``(metrics, weights, best_alphas)``, with these deliberate differences:

- penalties follow ``alpha ||w||^2`` (himalaya); LITcoder's grids are in ``alpha^2`` units:
  pass ``alpha_squared=True`` to use such a grid unchanged;
- folds are seeded (``seed``), so results are reproducible;
- p-values come by default from a block-permutation test that respects the
  autocorrelation of BOLD responses (``pvalue_method="permutation"``: blocks of
  ``permutation_block`` TRs, never straddling a story, are shuffled); LITcoder's analytic
  ones (``pvalue_method="analytic"``, the Student t of ``scipy.stats.pearsonr``) assume
  independent samples and call too many pure-noise voxels significant on autocorrelated
  data. The metrics say which one was used (``pvalue_method``);
- the solver is the p-space ridge (any backend, voxel blocks, dask arrays).
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import xarray as xr
from scipy.special import chdtrc

from ..results import to_metrics, voxel_dataset
from ..ridge.cv import ChunkKFold, StoryKFold
from ..ridge.scoring import (degenerate_voxels, noise_ceiling, pearson_r, r2_score, scatter_voxels, significance,
                              usable_voxels)
from ..ridge.banded import predict_split, solve_banded_ridge_cv
from ..ridge.solver import prepare_x, solve_ridge_cv
from ..ridge.split import correlation_score_split, r2_score_split

logger = logging.getLogger(__name__)

MODELS = ("ridge_regression", "banded_ridge")
FOLDINGS = ("chunked", "story", "group")
PVALUE_METHODS = ("analytic", "permutation", "effective_dof")


class NestedCVModel:
    """Ridge regression with (nested) cross-validated per-voxel alphas.

    Parameters
    ----------
    model_name : {"ridge_regression", "banded_ridge"}
        ``"banded_ridge"``: one penalty per feature space and voxel (himalaya's banded ridge:
        space b scaled by ``sqrt(gamma_b)``, gamma on the simplex, times the alpha grid),
        chosen by CV among ``candidates`` (or a Dirichlet random search of ``n_iter`` draws
        plus the one-space corners). The feature spaces are given to :meth:`fit_dataset` as
        ``feature_groups`` (the trainer passes the spaces of its extractors). Results add
        ``gamma`` (space, voxel), ``r2_split`` and ``r_split`` (space, voxel): the product-measure
        R² split (parts sum to the joint R²) and the correlation split on the test rows.
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
    pvalue_method : {"permutation", "effective_dof", "analytic"}
        ``"permutation"`` (default): one-sided block-permutation test within stories
        (:func:`~scalenc.ridge.scoring.block_permutation_pvalues`), calibrated on
        autocorrelated data; on a test set too short for it (fewer than ``min(100, n_permutations)``
        distinct block orderings) the effective-degrees-of-freedom t-test is used instead,
        with a warning, and ``pvalue_method`` says so (:func:`~scalenc.ridge.scoring.significance`).
        ``"effective_dof"``: that t-test (:func:`~scalenc.ridge.scoring.effective_dof_pvalues`).
        ``"analytic"``: LITcoder's Student-t p-values of Pearson r, which assume independent samples.
    n_permutations : int
        Permutations (the smallest p is ``1 / (n_permutations + 1)``).
    permutation_block : int, "auto" or None
        Block length in TRs; ``"auto"`` or None (default) chooses it from the test rows'
        autocorrelation (:func:`~scalenc.ridge.scoring.choose_block_length`, at least 10 TRs);
        the length used is in the results' attrs (``permutation_block``).
    backend, device, dtype, voxel_block
        Passed to :func:`~scalenc.ridge.solver.solve_ridge_cv`. ``voxel_block`` (default
        2000) bounds the response-side memory to about rows x voxel_block x 8 bytes per
        block being solved; results do not depend on it. (On the synthetic 30 stories x
        20,000 voxels set, 10,000 peaked at 925 MiB RSS and 2,000 at 586 MiB, see
        ``benchmarks/RESULTS.md``.)
    """

    def __init__(self, model_name: str = "ridge_regression", alphas=None, n_outer_folds: int = 5,
                 n_inner_folds: int = 5, chunk_length: int = 20, single_alpha: bool = False, use_corr: bool = True,
                 alpha_fdr: float = 0.05, alpha_squared: bool = False, folding: str = "chunked", seed: int = 0,
                 pvalue_method: str = "permutation", n_permutations: int = 1000, permutation_block: int | str | None = None,
                 backend: str | None = None, device: str | None = None, dtype: str = "float32",
                 voxel_block: int | None = 2_000, n_iter: int = 20, concentration=(0.1, 1.0), candidates=None):
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
        if permutation_block is None or permutation_block == "auto":
            permutation_block = "auto"
        elif isinstance(permutation_block, bool) or not isinstance(permutation_block, (int, np.integer)) \
                or permutation_block < 1:
            raise ValueError(f"permutation_block must be a positive int or 'auto', got {permutation_block!r}")
        self.permutation_block = permutation_block
        self.backend, self.device, self.dtype, self.voxel_block = backend, device, dtype, voxel_block
        self.n_iter, self.concentration = int(n_iter), concentration
        self.candidates = None if candidates is None else np.asarray(candidates, dtype=np.float64)
        if model_name == "banded_ridge" and single_alpha:
            raise ValueError("single_alpha is not available with model_name='banded_ridge'")

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

    def _fit(self, X, Y, groups, x_side=None, feature_groups=None):
        folds = list(self._splitter(self.n_inner_folds, groups).split(len(X), groups))
        if self.model_name == "banded_ridge":
            if feature_groups is None:
                raise ValueError("model_name='banded_ridge' needs feature_groups (the feature space of each column)")
            if x_side is not None:
                raise ValueError("x_side is for model_name='ridge_regression'")
            alphas = self.alphas ** 2 if self.alpha_squared else self.alphas
            return solve_banded_ridge_cv(X, Y, feature_groups, alphas, folds, candidates=self.candidates,
                                         n_iter=self.n_iter, concentration=self.concentration,
                                         random_state=self.seed, score="r" if self.use_corr else "r2",
                                         voxel_block=self.voxel_block, backend=self.backend, device=self.device,
                                         dtype=self.dtype)
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

    def _pvalues(self, y, pred, r, groups=None) -> tuple[np.ndarray, str]:
        """(p-values, the method used): :func:`scalenc.ridge.scoring.significance` (block length
        from the data with ``permutation_block="auto"``; too few test rows for the permutation
        test: the effective-degrees-of-freedom t-test, with a warning)."""
        p, info = significance(y, pred, method=self.pvalue_method, block_length=self.permutation_block,
                               n_permutations=self.n_permutations, seed=self.seed, groups=groups,
                               voxel_block=self.voxel_block)
        self._pvalue_info = info
        return p, info["pvalue_method"]

    def fit_predict(self, features, targets, X_test=None, y_test=None, groups=None, test_repeats=None,
                    groups_test=None) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
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
            Story of each training row (folds never mix stories inside a chunk; in the outer
            loop, permutation blocks never straddle a story).
        test_repeats : (n_repeats, n_test, n_voxels) array, optional
            Repeats of the test story; adds the noise ceiling (``cc_max``) to the metrics.
        groups_test : (n_test,) array, optional
            Story of each test row (permutation blocks never straddle a story).

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
                              test_repeats=test_repeats, groups_test=groups_test)
        metrics = to_metrics(ds)
        coef, best = ds["weights"].values, ds["alpha"].values
        self.metrics_, self.coef_, self.best_alphas_ = metrics, coef, best
        return metrics, coef, best

    def fit_dataset(self, features, targets, X_test=None, y_test=None, groups=None, test_repeats=None,
                    groups_test=None, x_side=None, feature_groups=None) -> xr.Dataset:
        """Fit and evaluate; return the per-voxel results as a Dataset.

        Same parameters as :meth:`fit_predict`, and ``x_side`` (with a test set): the
        :meth:`x_side` of ``features`` and ``groups``, computed once for several fits;
        ``feature_groups`` (n_features,): the feature space of each column (banded ridge;
        taken from a DataArray's ``feature_space`` coordinate when ``features`` is one).

        Returns
        -------
        Dataset over ``voxel``
            ``r, r2, alpha, p, q, significant, weights (feature, voxel), intercept``, ``r_fold (fold,
            voxel)`` in outer-CV mode, ``noise_ceiling`` with ``test_repeats``; attributes
            ``pvalue_method, alpha_fdr, mode`` ("test set" or "outer cv"), ``n_test``
            (rows scored per fit). See :mod:`scalenc.results`. Degenerate voxels (constant, NaN or
            infinite responses) get NaN scores and p = 1, counted in ``attrs["n_degenerate"]``; with
            in-memory responses they are left out of the fit, so no other voxel's result changes.
        """
        if feature_groups is None and isinstance(features, xr.DataArray) and "feature_space" in features.coords:
            feature_groups = features["feature_space"].values
        keep = usable_voxels(targets, y_test)  # degenerate voxels: left out, NaN scores, p = 1
        if keep is not None:
            sub = self.fit_dataset(
                features, np.ascontiguousarray(targets[:, keep]), X_test=X_test,
                y_test=None if y_test is None else np.ascontiguousarray(np.asarray(y_test)[:, keep]), groups=groups,
                test_repeats=None if test_repeats is None else np.asarray(test_repeats)[..., keep],
                groups_test=groups_test, x_side=x_side, feature_groups=feature_groups)
            return scatter_voxels(sub, keep, targets.shape[1])
        X = np.asarray(features)
        n = X.shape[0]
        if targets.shape[0] != n:
            raise ValueError(f"features have {n} rows but targets have {targets.shape[0]}")
        if (X_test is None) != (y_test is None):
            raise ValueError("pass both X_test and y_test, or neither")
        groups = None if groups is None else np.asarray(groups)
        attrs = {"pvalue_method": self.pvalue_method}
        if self.pvalue_method == "permutation":
            attrs.update(n_permutations=int(self.n_permutations), permutation_block=str(self.permutation_block))
        if x_side is not None and X_test is None:
            raise ValueError("x_side is for fits with a test set (X_test, y_test); the outer-CV mode refits per fold")
        if X_test is not None:
            res = self._fit(X, targets, groups, x_side, feature_groups)
            Xt, yt = np.asarray(X_test), np.asarray(y_test)
            if Xt.shape[0] != yt.shape[0]:
                raise ValueError(f"X_test has {Xt.shape[0]} rows but y_test has {yt.shape[0]}")
            pred = Xt @ res.coef.astype(np.float64) + res.intercept
            r = pearson_r(yt, pred)
            r[degenerate_voxels(yt, pred)] = np.nan
            p, used = self._pvalues(yt, pred, r, groups_test)
            attrs.update(self._pvalue_info)
            ds = voxel_dataset(r, p, alpha=res.best_alphas, r2=r2_score(yt, pred),
                               alpha_fdr=self.alpha_fdr, weights=res.coef, intercept=res.intercept,
                               attrs={**attrs, "pvalue_method": used, "mode": "test set",
                                      "n_test": int(yt.shape[0])})
            self._add_split(ds, res, [(Xt, yt)])
        else:
            outer = list(self._splitter(self.n_outer_folds, groups).split(n, groups))
            rs, ps, r2s, coefs, alphas, used, icepts, fits = [], [], [], [], [], set(), [], []
            for k, (tr, te) in enumerate(outer):
                res = self._fit(X[tr], _rows(targets, tr), None if groups is None else groups[tr],
                                feature_groups=feature_groups)
                yt = np.asarray(_rows(targets, te))
                pred = X[te] @ res.coef.astype(np.float64) + res.intercept
                r = pearson_r(yt, pred)
                rs.append(r)
                p, how = self._pvalues(yt, pred, r, None if groups is None else groups[te])
                ps.append(p)
                used.add(how)
                r2s.append(r2_score(yt, pred))
                coefs.append(res.coef)
                icepts.append(np.broadcast_to(np.asarray(res.intercept, dtype=np.float64), r.shape))
                alphas.append(res.best_alphas)
                fits.append((res, X[te], yt))
                logger.info("outer fold %d/%d: median r %.3f", k + 1, len(outer), float(np.nanmedian(r)))
            # alphas live on a log grid: their geometric mean over outer folds
            ds = voxel_dataset(np.mean(rs, axis=0), _fisher(np.asarray(ps)),
                               alpha=np.exp(np.mean(np.log(alphas), axis=0)), r2=np.mean(r2s, axis=0),
                               r_fold=np.asarray(rs), alpha_fdr=self.alpha_fdr, weights=np.mean(coefs, axis=0),
                               intercept=np.mean(icepts, axis=0),
                               attrs={**attrs, "pvalue_method": "+".join(sorted(used)), "mode": "outer cv",
                                      "n_test": int(min(len(te) for _, te in outer))})
            if self.model_name == "banded_ridge":
                self._add_split_folds(ds, fits)
        if test_repeats is not None:
            ds["noise_ceiling"] = ("voxel", noise_ceiling(np.asarray(test_repeats))["cc_max"])
            ds.attrs["noise_ceiling_source"] = "test repeats (cc_max)"
        return ds


    def _split_parts(self, res, Xt, yt):
        parts = predict_split(Xt, np.asarray(res.coef, dtype=np.float64), res.space_of_feature, len(res.spaces))
        return r2_score_split(yt, parts, center=True), correlation_score_split(yt, parts)

    def _add_split(self, ds: xr.Dataset, res, tests) -> None:
        """Banded ridge: per-space gammas and test split scores, dims (space, voxel)."""
        if self.model_name != "banded_ridge":
            return
        (Xt, yt), = tests
        r2s, rs = self._split_parts(res, Xt, yt)
        labels = [str(s) for s in res.spaces]
        ds["gamma"] = (("space", "voxel"), np.asarray(res.gammas, dtype=np.float64))
        ds["r2_split"] = (("space", "voxel"), np.asarray(r2s, dtype=np.float64))
        ds["r_split"] = (("space", "voxel"), np.asarray(rs, dtype=np.float64))
        ds.coords["space"] = ("space", labels)
        ds.attrs["model_name"] = "banded_ridge"

    def _add_split_folds(self, ds: xr.Dataset, fits) -> None:
        """Outer-CV banded ridge: split scores and gammas averaged over the outer folds."""
        parts = [self._split_parts(res, Xt, yt) for res, Xt, yt in fits]
        labels = [str(s) for s in fits[0][0].spaces]
        ds["gamma"] = (("space", "voxel"), np.mean([np.asarray(res.gammas, float) for res, _, _ in fits], axis=0))
        ds["r2_split"] = (("space", "voxel"), np.mean([p[0] for p in parts], axis=0))
        ds["r_split"] = (("space", "voxel"), np.mean([p[1] for p in parts], axis=0))
        ds.coords["space"] = ("space", labels)
        ds.attrs["model_name"] = "banded_ridge"


def _rows(a, idx):
    return a[idx] if not hasattr(a, "dask") else a[np.asarray(idx)]


def _fisher(p: np.ndarray) -> np.ndarray:
    """Fisher's method over folds (axis 0): -2 sum log p ~ chi2(2K)."""
    stat = -2 * np.log(np.clip(p, 1e-300, 1.0)).sum(axis=0)
    return chdtrc(2 * p.shape[0], stat)  # chi2(2K).sf, without importing scipy.stats


__all__ = ["NestedCVModel"]
