"""Per-feature-space scores of a joint linear model, and variance partitioning.

A banded (or any linear) model's prediction is a sum over feature spaces,
``Yhat = sum_b Yhat_b`` with ``Yhat_b = X_b W_b`` (:meth:`BandedRidgeCV.predict` with
``split=True``). These functions say how much of a voxel's score each space carries:

- :func:`r2_score_split`, the product measure: with ``y`` and the ``Yhat_b`` centred over
  samples, ``R2_b = (2 y^T Yhat_b - Yhat_b^T Yhat) / y^T y``; the parts sum to the joint
  ``R2 = 1 - |y - Yhat|^2 / |y|^2`` exactly. A part is negative when a space's
  prediction is anti-aligned with the rest of the model.
- :func:`correlation_score_split`: ``r_b = y^T Yhat_b / (|y| |Yhat|)`` (centred), whose
  parts sum to the joint Pearson r.
- :func:`variance_partitioning`: unique and shared variance of two or three spaces from
  the R² of the joint model and of every sub-model (set algebra on explained variance).
  With finite data the inputs are noisy estimates, so a "shared" or "unique" part can
  come out negative (for instance when two spaces suppress each other, or when a
  sub-model overfits less than the joint one); the values are returned as computed,
  never clipped, so that their sum still equals the joint R².
"""
from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import numpy as np

from .backend import host_array

__all__ = ["correlation_score_split", "r2_score_split", "variance_partitioning"]


def _check_split(y_true: Any, y_pred: Any, name: str, center: bool) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(host_array(y_true), dtype=np.float64)
    P = np.asarray(host_array(y_pred), dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if P.ndim == 2:
        P = P[None]
    if P.ndim != 3 or P.shape[1:] != y.shape:
        raise ValueError(f"{name}: y_pred must be (n_spaces, n_samples, n_voxels) with y_true "
                         f"(n_samples, n_voxels) = {y.shape}, got {P.shape}")
    if center:
        y = y - y.mean(axis=0)
        P = P - P.mean(axis=1, keepdims=True)
    return y, P


def r2_score_split(y_true: Any, y_pred: Any, *, center: bool = True) -> np.ndarray:
    """Split the R² of a summed prediction into one part per feature space.

    Parameters
    ----------
    y_true : (n_samples, n_voxels) array
    y_pred : (n_spaces, n_samples, n_voxels) array
        Per-space predictions; their sum is the joint prediction.
    center : bool, default True
        Centre ``y_true`` and each prediction over samples first (the parts then sum to
        the joint R² of the centred prediction; an intercept or mean offset does not
        count). With False, inputs are used as given and ``y_true`` should be zero-mean
        (himalaya's ``r2_score_split`` convention).

    Returns
    -------
    r2 : (n_spaces, n_voxels) float64
        ``r2.sum(0)`` equals ``1 - |y - sum_b y_pred[b]|^2 / |y|^2``. A voxel with zero
        variance gets 0 in every part.
    """
    y, P = _check_split(y_true, y_pred, "r2_score_split", center)
    joint = P.sum(axis=0)
    yy = np.einsum("ij,ij->j", y, y)
    num = 2 * np.einsum("ij,bij->bj", y, P) - np.einsum("bij,ij->bj", P, joint)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(yy > 0, num / np.where(yy > 0, yy, 1.0), 0.0)


def correlation_score_split(y_true: Any, y_pred: Any) -> np.ndarray:
    """Split the Pearson r of a summed prediction into one part per feature space.

    Parameters
    ----------
    y_true : (n_samples, n_voxels) array
    y_pred : (n_spaces, n_samples, n_voxels) array

    Returns
    -------
    r : (n_spaces, n_voxels) float64
        ``r_b = <y, yhat_b> / (|y| |yhat|)`` with everything centred over samples;
        ``r.sum(0)`` is the Pearson r of ``y_true`` and ``y_pred.sum(0)``. A voxel
        constant in ``y_true`` or in the joint prediction gets 0.
    """
    y, P = _check_split(y_true, y_pred, "correlation_score_split", True)
    joint = P.sum(axis=0)
    den = np.sqrt(np.einsum("ij,ij->j", y, y) * np.einsum("ij,ij->j", joint, joint))
    num = np.einsum("ij,bij->bj", y, P)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def variance_partitioning(r2: Mapping[Iterable[Hashable], Any]) -> dict[frozenset, np.ndarray]:
    """Unique and shared explained variance of feature spaces, from sub-model R² values.

    Treat the variance a model explains as the area of a union of one region per space.
    Given the R² of the model on every non-empty subset of the spaces, the part explained
    by exactly the spaces ``S`` (by all of them and by none of the others) is, with ``V``
    the other spaces and ``R2(empty) = 0``::

        part(S) = sum over non-empty T within S of (-1)^(|T|+1) (R2(T | V) - R2(V))

    For two spaces A, B: ``unique(A) = R2(AB) - R2(B)``, ``shared(A, B) = R2(A) + R2(B) -
    R2(AB)``; for three, the seven parts of a three-set Venn diagram.

    Parameters
    ----------
    r2 : mapping from a collection of space names to (n_voxels,) arrays (or scalars)
        Must contain every non-empty subset of the spaces named in its keys (3 entries
        for two spaces, 7 for three); keys may be tuples, lists, sets or frozensets. Use
        held-out R² of the joint model and of each sub-model fitted on those spaces only.

    Returns
    -------
    dict
        ``frozenset(S) -> (n_voxels,) float64`` for every non-empty subset ``S``: a
        singleton is that space's unique variance, a larger set the variance shared by
        exactly those spaces. The parts sum to the joint R². Negative parts are kept
        (see the module docstring): they mean the sub-models' R² are not consistent with
        nested explained variance, typically from noise or suppression.
    """
    table = {frozenset(k): np.asarray(v, dtype=np.float64) for k, v in r2.items()}
    spaces = frozenset().union(*table) if table else frozenset()
    if not 2 <= len(spaces) <= 3:
        raise ValueError(f"variance_partitioning needs two or three feature spaces, got {sorted(map(str, spaces))}")
    subsets = [frozenset(c) for k in range(1, len(spaces) + 1) for c in itertools.combinations(sorted(spaces, key=str), k)]
    missing = [sorted(map(str, s)) for s in subsets if s not in table]
    if missing:
        raise ValueError(f"variance_partitioning: missing the R² of sub-models {missing}")

    def f(s: frozenset) -> np.ndarray:
        return table[s] if s else np.zeros_like(table[spaces])

    out = {}
    for S in subsets:
        V = spaces - S
        out[S] = sum((-1) ** (len(T) + 1) * (f(T | V) - f(V))
                     for k in range(1, len(S) + 1) for T in map(frozenset, itertools.combinations(S, k)))
    return out
