"""Finite impulse response (FIR) delays of a design matrix, per story."""
from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np


def validate_delays(delays, *, kept=None, n_rows: int | None = None, story: str | None = None,
                    key: str = "fir_delays") -> list[int]:
    """Check FIR delays and return them as a list of int.

    Parameters
    ----------
    delays : sequence of int
        Must be non-empty, integers (not bool or float), without duplicates.
    kept : sequence of int, optional
        Grid rows of one story that the fit keeps after trimming; with ``n_rows`` (the
        length of that story's grid), every delay must leave stimulus in some kept row
        (a delay ``d >= 0`` fills rows ``d ..``, a negative one rows ``.. n_rows + d``):
        otherwise its columns are all zero and the fit learns nothing from them.
    story : str, optional
        Named in the error.
    key : str
        The name of the setting in errors (``fir_delays`` for the trainer and the config).

    Raises
    ------
    ValueError
        One line naming ``key``, the offending delay and, for a story, its usable range.
    """
    if isinstance(delays, (str, bytes)) or not isinstance(delays, (Sequence, np.ndarray)):
        raise ValueError(f"{key} must be a list of integers (delays in TRs, e.g. [1, 2, 3, 4]), got {delays!r}")
    out = []
    for d in list(delays):
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, numbers.Integral):
            raise ValueError(f"{key} must be integers (delays in TRs), got {d!r} in {list(delays)!r}")
        out.append(int(d))
    if not out:
        raise ValueError(f"{key} is empty: give at least one delay in TRs, e.g. [1, 2, 3, 4]")
    dup = sorted({d for d in out if out.count(d) > 1})
    if dup:
        raise ValueError(f"{key} repeats delay(s) {dup} (identical columns): {out}")
    if kept is not None and n_rows is not None:
        rows = np.asarray(kept, dtype=np.int64).ravel()
        where = f"story {story!r}" if story is not None else "the story"
        if rows.size == 0:
            raise ValueError(f"{where}: the trimming keeps no rows of its {n_rows}-row grid")
        lo, hi = int(rows.min()), int(rows.max())
        for d in out:
            if (d >= 0 and d > hi) or (d < 0 and n_rows + d <= lo):
                raise ValueError(f"{key}: delay {d} TRs leaves no stimulus in the kept rows of {where} "
                                 f"(grid rows {lo}..{hi} of {n_rows}), so its columns would be all zero; "
                                 f"usable delays here are {-(n_rows - 1 - lo)}..{hi}")
    return out


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
    delays = validate_delays(delays, key="delays")
    n, p = X.shape
    out = np.zeros((n, len(delays) * p), dtype=X.dtype)
    for k, d in enumerate(delays):
        block = out[:, k * p:(k + 1) * p]
        if d >= 0:
            if d < n:
                block[d:] = X[:n - d]
        else:
            if -d < n:
                block[:n + d] = X[-d:]
    return out
