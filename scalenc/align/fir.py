"""Finite impulse response (FIR) delays of a design matrix, per story."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def fir(X: np.ndarray, delays: Sequence[int] = (1, 2, 3, 4)) -> np.ndarray:
    """Stack delayed copies of ``X`` (one story) side by side.

    Parameters
    ----------
    X : (n_trs, n_features) array
    delays : sequence of int
        Shifts in TRs; positive delays look back in time (row ``t`` of the delay-``d``
        block is ``X[t - d]``), rows shifted in from outside the story are zero, so the
        end of one story never leaks into the next.

    Returns
    -------
    Xd : (n_trs, len(delays) * n_features) array
        Delay-major columns: ``Xd[:, k * p:(k + 1) * p]`` is ``X`` delayed by ``delays[k]``.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"fir expects a 2-D (n_trs, n_features) array, got shape {X.shape}")
    n, p = X.shape
    out = np.zeros((n, len(delays) * p), dtype=X.dtype)
    for k, d in enumerate(delays):
        d = int(d)
        block = out[:, k * p:(k + 1) * p]
        if d >= 0:
            if d < n:
                block[d:] = X[:n - d]
        else:
            if -d < n:
                block[:n + d] = X[-d:]
    return out
