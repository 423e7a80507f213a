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

import dataclasses
import inspect
import logging
from typing import Any

import numpy as np
import xarray as xr
from scipy.special import chdtrc

from ..results import to_metrics, voxel_dataset
from ..ridge.cv import ChunkKFold, StoryKFold
from ..ridge.scoring import (degenerate_voxels, noise_ceiling, pearson_r, r2_score, scatter_voxels, significance,
                              usable_voxels)
from ..ridge.solver import predict_linear
from .solvers import SOLVERS, BandedSearch, SolverOptions

logger = logging.getLogger(__name__)

MODELS = tuple(SOLVERS)  # the registered solvers (scalenc.models.solvers)
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
        its design's ``feature_space`` coordinate (the engine's designs record each extractor's space). Results add
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
        Inner/outer folds: shuffled contiguous chunks (within stories when the rows' stories
        are known), or whole stories (stories required; ``"group"`` is an alias).
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
    solver_options : SolverOptions, optional
        ``backend``, ``device``, ``dtype``, ``voxel_block`` of every solver
        (:class:`~scalenc.models.solvers.SolverOptions`); each may also be passed as a keyword
        of its own (``NestedCVModel(backend="torch")``). ``voxel_block`` (default 2000)
        bounds the response-side memory to about rows x voxel_block x 8 bytes per block being
        solved; results do not depend on it. (On the synthetic 30 stories x 20,000 voxels set,
        10,000 peaked at 925 MiB RSS and 2,000 at 586 MiB, see ``benchmarks/RESULTS.md``.)
    search : BandedSearch, optional
        ``n_iter``, ``concentration``, ``candidates`` of banded ridge
        (:class:`~scalenc.models.solvers.BandedSearch`); also accepted as keywords.
    """

    def __init__(self, model_name: str = "ridge_regression", alphas=None, n_outer_folds: int = 5,
                 n_inner_folds: int = 5, chunk_length: int = 20, single_alpha: bool = False, use_corr: bool = True,
                 alpha_fdr: float = 0.05, alpha_squared: bool = False, folding: str = "chunked", seed: int = 0,
                 pvalue_method: str = "permutation", n_permutations: int = 1000, permutation_block: int | str | None = None,
                 *,
                 solver_options: SolverOptions | None = None, search: BandedSearch | None = None, **options):
        if model_name not in SOLVERS:
            raise ValueError(f"unknown model_name {model_name!r}; accepted: {tuple(SOLVERS)}")
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
        groups = {"solver_options": (solver_options or SolverOptions(), SolverOptions),
                  "search": (search or BandedSearch(), BandedSearch)}
        for key in options:
            if not any(key in {f.name for f in dataclasses.fields(cls)} for _, cls in groups.values()):
                raise TypeError(f"NestedCVModel got an unexpected keyword {key!r}; accepted: "
                                f"{sorted(self.param_defaults())}")
        for name, (obj, cls) in groups.items():
            own = {f.name: options[f.name] for f in dataclasses.fields(cls) if f.name in options}
            setattr(self, name, dataclasses.replace(obj, **own))
        self.search.n_iter = int(self.search.n_iter)
        if self.search.candidates is not None:
            self.search.candidates = np.asarray(self.search.candidates, dtype=np.float64)
        if model_name == "banded_ridge" and single_alpha:
            raise ValueError("single_alpha is not available with model_name='banded_ridge'")

    def __repr__(self) -> str:
        return (f"NestedCVModel({self.model_name!r}, alphas={len(self.alphas)} values, n_outer_folds="
                f"{self.n_outer_folds}, n_inner_folds={self.n_inner_folds}, folding={self.folding!r}, "
                f"single_alpha={self.single_alpha}, use_corr={self.use_corr})")

    # -- what the registered solvers read ----------------------------------------------------
    @property
    def solver(self):
        """The :class:`~scalenc.models.solvers.Solver` of ``model_name``."""
        return SOLVERS[self.model_name]

    @property
    def score_name(self) -> str:
        """Held-out score that chooses alphas: ``"r"`` or ``"r2"``."""
        return "r" if self.use_corr else "r2"

    @property
    def penalties(self) -> np.ndarray:
        """The alpha grid in ``alpha ||w||^2`` units (``alphas ** 2`` with ``alpha_squared``)."""
        return self.alphas ** 2 if self.alpha_squared else self.alphas

    @property
    def solver_kwargs(self) -> dict[str, Any]:
        """The options every solver takes, as keywords: ``backend``, ``device``, ``dtype``, ``voxel_block``."""
        return dataclasses.asdict(self.solver_options)

    # the grouped options, readable (and settable) by their own names
    backend = property(lambda self: self.solver_options.backend,
                       lambda self, v: setattr(self.solver_options, "backend", v))
    device = property(lambda self: self.solver_options.device,
                      lambda self, v: setattr(self.solver_options, "device", v))
    dtype = property(lambda self: self.solver_options.dtype,
                     lambda self, v: setattr(self.solver_options, "dtype", v))
    voxel_block = property(lambda self: self.solver_options.voxel_block,
                           lambda self, v: setattr(self.solver_options, "voxel_block", v))
    n_iter = property(lambda self: self.search.n_iter)
    concentration = property(lambda self: self.search.concentration)
    candidates = property(lambda self: self.search.candidates)

    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        """Every keyword the constructor takes (the grouped options' fields included), with
        its default: what a ``[model]`` table of ``scalenc run`` may set."""
        out = {k: p.default for k, p in inspect.signature(cls).parameters.items()
               if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD}
        for group in (SolverOptions, BandedSearch):
            out.update({f.name: f.default for f in dataclasses.fields(group)})
        return out

    def get_params(self) -> dict[str, Any]:
        """The constructor's keywords and their values (flat: the grouped options' fields by
        their own names), as scikit-learn's ``get_params``."""
        return {k: getattr(self, k) for k in self.param_defaults()}

    @property
    def shares_x_side(self) -> bool:
        """Whether fits on the same design can share :meth:`x_side` (the solver has a prepare step)."""
        return self.solver.prepare is not None

    def _splitter(self, n_splits: int, stories):
        if self.folding == "story":
            if stories is None:
                raise ValueError("folding='story' needs the story of each row (a design with a 'story' coordinate, "
                                 "or stories=...)")
            return StoryKFold(n_splits=n_splits, shuffle=False)
        return ChunkKFold(chunk_length=self.chunk_length, n_splits=n_splits, seed=self.seed)

    def _fit(self, X, Y, stories, x_side=None, feature_space=None):
        folds = list(self._splitter(self.n_inner_folds, stories).split(len(X), stories))
        solver = self.solver
        if solver.needs_feature_space and feature_space is None:
            raise ValueError(f"model_name={self.model_name!r} needs the feature space of each column (a design with "
                             "a 'feature_space' coordinate, or feature_space=...)")
        if x_side is not None and solver.prepare is None:
            raise ValueError(f"x_side is not shared by model_name={self.model_name!r}")
        return solver.fit(self, X, Y, folds, feature_space=feature_space, x_side=x_side)

    def x_side(self, features, stories=None):
        """The solver's X-side quantities of a test-set fit on ``features`` (for ridge: its
        inner folds' Grams and eigendecompositions), to share between fits with the same
        training design (``fit_dataset(..., x_side=...)``; :mod:`scalenc.engine`). The stories
        of the rows come from a DataArray's ``story`` coordinate when not given."""
        if self.solver.prepare is None:
            raise ValueError(f"model_name={self.model_name!r} has no shareable X side")
        if stories is None:
            stories = _coord(features, "story")
        X = np.asarray(features)
        stories = None if stories is None else np.asarray(stories)
        folds = list(self._splitter(self.n_inner_folds, stories).split(len(X), stories))
        return self.solver.prepare(self, X, folds)

    def _pvalues(self, y, pred, r, stories=None) -> tuple[np.ndarray, str]:
        """(p-values, the method used): :func:`scalenc.ridge.scoring.significance` (block length
        from the data with ``permutation_block="auto"``; too few test rows for the permutation
        test: the effective-degrees-of-freedom t-test, with a warning)."""
        p, info = significance(y, pred, method=self.pvalue_method, block_length=self.permutation_block,
                               n_permutations=self.n_permutations, seed=self.seed, stories=stories,
                               voxel_block=self.voxel_block)
        self._pvalue_info = info
        return p, info["pvalue_method"]

    def fit_predict(self, features, targets, X_test=None, y_test=None, stories=None, test_repeats=None,
                    stories_test=None) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        """Fit and evaluate (LITcoder's signature and return value).

        Parameters
        ----------
        features : (n_train, n_features) array, or a labeled design
            A ``(tr, feature)`` DataArray (:func:`scalenc.align.align_story`, the engine's
            designs): the story of each row comes from its ``story`` coordinate and the
            feature space of each column from ``feature_space``.
        targets : (n_train, n_voxels) array (numpy, voxel-chunked dask, or StackedResponses)
        X_test, y_test : (n_test, n_features), (n_test, n_voxels), optional
            A held-out test set (e.g. the repeated test story): alphas are chosen by inner CV
            on the training rows, the model is refit on all of them and scored on the test
            set. Without them, an outer CV loop scores every outer fold.
        stories : (n_train,) array, optional
            Story of each training row, for plain arrays (folds never mix stories inside a
            chunk; in the outer loop, permutation blocks never straddle a story).
        test_repeats : (n_repeats, n_test, n_voxels) array, optional
            Repeats of the test story; adds the noise ceiling (``cc_max``) to the metrics.
        stories_test : (n_test,) array, optional
            Story of each test row, for a plain ``X_test`` (permutation blocks never straddle a story).

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
        ds = self.fit_dataset(features, targets, X_test=X_test, y_test=y_test, stories=stories,
                              test_repeats=test_repeats, stories_test=stories_test)
        metrics = to_metrics(ds)
        coef, best = ds["weights"].values, ds["alpha"].values
        self.metrics_, self.coef_, self.best_alphas_ = metrics, coef, best
        return metrics, coef, best

    def fit_dataset(self, features, targets, X_test=None, y_test=None, stories=None, test_repeats=None,
                    stories_test=None, x_side=None, feature_space=None) -> xr.Dataset:
        """Fit and evaluate; return the per-voxel results as a Dataset.

        Same parameters as :meth:`fit_predict`, and ``x_side`` (with a test set): the
        :meth:`x_side` of ``features``, computed once for several fits; ``feature_space``
        (n_features,): the feature space of each column of a plain array (banded ridge).

        Returns
        -------
        Dataset over ``voxel``
            ``r, r2, alpha, p, q, significant, weights (feature, voxel), intercept``, ``r_fold (fold,
            voxel)`` in outer-CV mode, ``noise_ceiling`` with ``test_repeats``, the solver's own
            outputs (banded ridge: ``gamma``, ``r2_split``, ``r_split`` over ``space``);
            attributes ``model_name, pvalue_method, alpha_fdr, mode`` ("test set" or "outer
            cv"), ``n_test`` (rows scored per fit). With a labeled design the weights carry
            its ``feature_space`` and ``delay`` coordinates. See :mod:`scalenc.results`.
        """
        if feature_space is None:
            feature_space = _coord(features, "feature_space")
        if stories is None:
            stories = _coord(features, "story")
        if stories_test is None and X_test is not None:
            stories_test = _coord(X_test, "story")
        keep = usable_voxels(targets, y_test)  # degenerate voxels: left out, NaN scores, p = 1
        if keep is not None:
            sub = self.fit_dataset(
                features, np.ascontiguousarray(targets[:, keep]), X_test=X_test,
                y_test=None if y_test is None else np.ascontiguousarray(np.asarray(y_test)[:, keep]),
                stories=stories, test_repeats=None if test_repeats is None else np.asarray(test_repeats)[..., keep],
                stories_test=stories_test, x_side=x_side, feature_space=feature_space)
            return scatter_voxels(sub, keep, targets.shape[1])
        X = np.asarray(features)
        n = X.shape[0]
        if targets.shape[0] != n:
            raise ValueError(f"features have {n} rows but targets have {targets.shape[0]}")
        if (X_test is None) != (y_test is None):
            raise ValueError("pass both X_test and y_test, or neither")
        stories = None if stories is None else np.asarray(stories)
        attrs = {"pvalue_method": self.pvalue_method}
        if self.pvalue_method == "permutation":
            attrs.update(n_permutations=int(self.n_permutations), permutation_block=str(self.permutation_block))
        if x_side is not None and X_test is None:
            raise ValueError("x_side is for fits with a test set (X_test, y_test); the outer-CV mode refits per fold")
        if X_test is not None:
            res = self._fit(X, targets, stories, x_side, feature_space)
            Xt, yt = np.asarray(X_test), np.asarray(y_test)
            if Xt.shape[0] != yt.shape[0]:
                raise ValueError(f"X_test has {Xt.shape[0]} rows but y_test has {yt.shape[0]}")
            pred = predict_linear(Xt, res.coef, res.intercept)
            r = pearson_r(yt, pred)
            r[degenerate_voxels(yt, pred)] = np.nan
            p, used = self._pvalues(yt, pred, r, stories_test)
            attrs.update(self._pvalue_info)
            ds = voxel_dataset(r, p, alpha=res.best_alphas, r2=r2_score(yt, pred),
                               alpha_fdr=self.alpha_fdr, weights=res.coef, intercept=res.intercept,
                               attrs={**attrs, "pvalue_method": used, "mode": "test set",
                                      "n_test": int(yt.shape[0])})
            self._add_outputs(ds, [(res, Xt, yt)])
        else:
            outer = list(self._splitter(self.n_outer_folds, stories).split(n, stories))
            rs, ps, r2s, coefs, alphas, used, icepts, fits = [], [], [], [], [], set(), [], []
            for k, (tr, te) in enumerate(outer):
                res = self._fit(X[tr], _rows(targets, tr), None if stories is None else stories[tr],
                                feature_space=feature_space)
                yt = np.asarray(_rows(targets, te))
                pred = predict_linear(X[te], res.coef, res.intercept)
                r = pearson_r(yt, pred)
                rs.append(r)
                p, how = self._pvalues(yt, pred, r, None if stories is None else stories[te])
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
            self._add_outputs(ds, fits)
        if test_repeats is not None:
            ds["noise_ceiling"] = ("voxel", noise_ceiling(np.asarray(test_repeats))["cc_max"])
            ds.attrs["noise_ceiling_source"] = "test repeats (cc_max)"
        if isinstance(features, xr.DataArray) and "weights" in ds:
            ds = ds.assign_coords({k: ("feature", features[k].values) for k in ("feature_space", "delay")
                                   if k in features.coords})
        return ds

    def _add_outputs(self, ds: xr.Dataset, fits) -> None:
        """The solver's own per-voxel outputs on the scored rows (averaged over outer folds)."""
        outputs = self.solver.outputs
        if outputs is None:
            return
        parts = [outputs(self, res, Xt, yt) for res, Xt, yt in fits]
        for name, (dims, _) in parts[0][0].items():
            ds[name] = (dims, np.mean([np.asarray(p[0][name][1], dtype=np.float64) for p in parts], axis=0))
        ds.coords.update(parts[0][1])
        ds.attrs["model_name"] = self.model_name


def _coord(a, name: str):
    """A DataArray's coordinate ``name`` as an array (None otherwise)."""
    if isinstance(a, xr.DataArray) and name in a.coords:
        return np.asarray(a[name].values)
    return None


def _rows(a, idx):
    return a[idx] if not hasattr(a, "dask") else a[np.asarray(idx)]


def _fisher(p: np.ndarray) -> np.ndarray:
    """Fisher's method over folds (axis 0): -2 sum log p ~ chi2(2K)."""
    stat = -2 * np.log(np.clip(p, 1e-300, 1.0)).sum(axis=0)
    return chdtrc(2 * p.shape[0], stat)  # chi2(2K).sf, without importing scipy.stats


__all__ = ["NestedCVModel"]
