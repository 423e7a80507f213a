"""Small things a reader of the maps notices: the ROI legend clear of the bars, L/R labels on
surface views, axial slices cut where the strongest values are (also with no significant voxel)."""
from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

from scalenc import plot  # noqa: E402
from scalenc.plot import BrainSpace  # noqa: E402

pytest.importorskip("nilearn")


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("heights", [[0.9, 0.9, 0.9], [0.2, 0.95, 0.5, 0.95, 0.3]])
def test_roi_legend_does_not_cover_bars(heights):
    n = len(heights)
    med = np.array([heights, np.array(heights) * 0.97, np.array(heights) * 0.5])
    summary = xr.Dataset({"median": (("measure", "roi"), med), "n_voxels": ("roi", np.full(n, 10))},
                         coords={"measure": ["r", "ceiling", "r2"], "roi": [f"ROI{i}" for i in range(n)]})
    ax = plot.plot_roi_summary(summary)
    fig = ax.figure
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    leg = ax.get_legend().get_window_extent(r)
    bars = [p.get_window_extent(r) for p in ax.patches]
    assert len(bars) == med.size
    assert not any(_overlaps(leg, b) for b in bars)
    assert ax.get_window_extent(r).contains(leg.x0 + 1, leg.y0 + 1)  # still inside the panel (report layouts)
    plt.close(fig)


def test_surface_views_label_left_and_right():
    values = np.linspace(-1, 1, 20484)
    fig = plot.surface_map(values, vmax=1.0, figsize=(3.2, 2.6), colorbar=False)
    labels = {}
    for ax in fig.axes:
        panel = getattr(ax, "scalenc_panel", None)
        if panel is not None:
            labels.setdefault(panel[0], set()).update(t.get_text() for t in ax.texts)
    plt.close(fig)
    assert labels["left"] == {"L"} and labels["right"] == {"R"}


@pytest.fixture(scope="module")
def mni():
    from scalenc.synthetic.layout import make_layout

    n = 600
    lay = make_layout("mni", np.array(["both"] * n), np.ones(n), voxel_size=6.0)
    space = BrainSpace.from_voxels(xr.Dataset(coords={"mask_indices": ("voxel", lay.mask_indices)}, attrs=lay.attrs))
    return space, lay.coordinates


def test_slices_cut_at_the_strongest_r_even_with_no_significant_voxel(mni, monkeypatch):
    from scalenc.plot import maps

    space, xyz = mni
    z = xyz[:, 2]
    band = (z >= 20) & (z <= 40)
    assert band.sum() > 20
    r = np.where(band, 0.8, 0.05)
    seen = []
    _, plotting = maps._nilearn()
    real = plotting.plot_stat_map
    monkeypatch.setattr(plotting, "plot_stat_map", lambda *a, **k: seen.append(k["cut_coords"]) or real(*a, **k))
    none_significant = np.full(space.n_voxels, np.nan)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "empty mask", UserWarning)
        for kw in ({"cut_from": r}, {}):
            fig = plot.volume_map(none_significant, space, kinds=("slices",), vmax=1.0, n_slices=4, **kw)
            plt.close(fig)
        fig = plot.volume_map(r, space, kinds=("slices",), vmax=1.0, n_slices=4)
        plt.close(fig)
    from_r, from_layout, from_values = seen
    assert len(from_r) == 4 and from_r == from_values                      # the same cuts as the r map
    assert min(from_r) >= 20 - 1e-6 and max(from_r) <= 40 + 1e-6, from_r    # where r is strongest
    lo, hi = np.quantile(z, [0.1, 0.9])                                     # nothing to go by: the voxels' own extent
    assert min(from_layout) >= lo - 1e-6 and max(from_layout) <= hi + 1e-6, from_layout
