"""Summaries of per-voxel values by region of interest (the assembly's ``roi`` labels)."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr


def as_labels(roi) -> np.ndarray:
    """ROI labels as a fixed-width ``str`` array (also from numpy's variable-width StringDType)."""
    return np.array([str(x) for x in np.asarray(roi).tolist()], dtype=str)


def roi_summary(values: Mapping[str, np.ndarray], roi) -> xr.Dataset:
    """Median of each measure per ROI.

    Parameters
    ----------
    values : dict measure -> (n_voxels,) array
        E.g. ``{"r": correlation, "r2_split wordrate": ...}``; NaN values are ignored.
    roi : (n_voxels,) str array
        One label per voxel; empty labels are grouped as ``""``.

    Returns
    -------
    xr.Dataset
        ``median`` (measure, roi) and ``n_voxels`` (roi); ROIs sorted by name, ``"other"``
        (if present) last.
    """
    roi = as_labels(roi)
    labels = sorted(set(roi.tolist()), key=lambda s: (s.lower() == "other", s))
    names = list(values)
    med = np.full((len(names), len(labels)), np.nan)
    for j, lab in enumerate(labels):
        sel = roi == lab
        for i, name in enumerate(names):
            v = np.asarray(values[name], float)
            if v.shape != roi.shape:
                raise ValueError(f"measure {name!r} has shape {v.shape}, the roi labels {roi.shape}")
            v = v[sel]
            v = v[np.isfinite(v)]
            if v.size:
                med[i, j] = np.median(v)
    n = np.array([(roi == lab).sum() for lab in labels], np.int64)
    return xr.Dataset({"median": (("measure", "roi"), med), "n_voxels": ("roi", n)},
                      coords={"measure": names, "roi": labels})


def plot_roi_summary(summary: xr.Dataset, *, ax=None, title: str | None = "median per ROI"):
    """Grouped bars: one group per ROI, one bar per measure."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.6 * summary.sizes["roi"] + 1.5), 3.2))
    med = summary["median"].values
    n_m, n_r = med.shape
    width = 0.8 / max(n_m, 1)
    x = np.arange(n_r)
    for i, name in enumerate(summary["measure"].values):
        ax.bar(x + (i - (n_m - 1) / 2) * width, np.nan_to_num(med[i]), width, label=str(name))
    ax.set_xticks(x, [f"{r}\n({n})" for r, n in zip(summary["roi"].values, summary["n_voxels"].values)],
                  fontsize=7)
    ax.axhline(0, color="k", lw=0.5)
    ax.set(ylabel="median", title=title)
    leg = ax.legend(fontsize=7, loc="upper center", ncol=max(n_m, 1), frameon=False)
    # room above the bars for the legend: the y limit raised until the tallest bar ends below it
    lo, hi = ax.get_ylim()
    top = float(np.nanmax(np.nan_to_num(med), initial=0.0))
    if top > 0:
        box = leg.get_window_extent(ax.figure.canvas.get_renderer()).transformed(ax.transAxes.inverted())
        frac = max(min(box.y0, 1.0) - 0.03, 0.3)
        ax.set_ylim(lo, max(hi, lo + (top - lo) / frac))
    return ax
