"""The interactive report.html opened in a real browser (headless Chromium, WebGL through SwiftShader):
no console messages, the screenshot's colours follow the values, and choosing another map (the
selector's change event, through ``#map=``) or a threshold changes it. Skipped without chromium."""
from __future__ import annotations

import re

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("nilearn")
pytest.importorskip("plotly")
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402

from scalenc import plot  # noqa: E402
from scalenc import results as results_mod  # noqa: E402
from scalenc.plot.interactive import chromium_binary, open_in_chromium  # noqa: E402
from scalenc.plot.maps import FSAVERAGE5_HEMI  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(chromium_binary() is None,
                                 reason="no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")]


def _hot(px):
    r, b = px[..., 0], px[..., 2]
    return (r > 0.35) & (r - b > 0.25)


def _cold(px):
    r, b = px[..., 0], px[..., 2]
    return (b > 0.35) & (b - r > 0.25)


def _save(path, r, split=None, coords=None, alpha=None):
    ds = results_mod.voxel_dataset(r, np.full(r.shape, 0.01), alpha=np.ones(r.shape) if alpha is None else alpha)
    if split is not None:
        ds["r2_split"] = (("space", "voxel"), split)
        ds = ds.assign_coords(space=np.array(["wordrate", "embeddings"], object))
    ds = ds.assign_coords(voxel=np.arange(r.size), **(coords or {}))
    return results_mod.save(path, ds, config={"run_name": path.name})


def _sides(png, box):
    """Hot and cold fractions left and right of the drawn brain's midline inside ``box`` (y0, y1, x0, x1)."""
    img = mpimg.imread(png)[..., :3]
    y0, y1, x0, x1 = box
    px = img[y0:y1, x0:x1]
    drawn = (px < 0.93).any(-1)                       # not the white page
    mid = int(np.nonzero(drawn)[1].mean())
    return {side: (_hot(part).mean(), _cold(part).mean()) for side, part in (("left", px[:, :mid]),
                                                                          ("right", px[:, mid:]))}


def test_surface_report_renders_and_follows_the_chosen_map(tmp_path):
    n = 2 * FSAVERAGE5_HEMI                                      # fsaverage5, inferred from the size
    left = np.arange(n) < FSAVERAGE5_HEMI
    r = np.where(left, 0.6, -0.3)
    split = np.stack([np.where(left, 0.2, 0.0), np.where(left, 0.0, 0.2)])   # wordrate left, embeddings right
    run = _save(tmp_path / "surf", r, split)
    plot.report(run, dpi=30, maps=False)
    page = run / "report.html"
    text = page.read_bytes()
    assert b"<script src=" not in text and b"<link" not in text and b"<img src='http" not in text  # one file
    box = (200, 780, 0, 1000)                                   # the brain view, left of the colour bar
    seen = {}
    for frag in ("", "map=r2splitEmbeddings", "map=r&threshold=0.75"):
        b = open_in_chromium(page, tmp_path / f"shot{len(seen)}.png", fragment=frag)
        assert b.console == [], b.console                       # no errors or warnings from the page
        assert b.rendered_ms is not None
        seen[frag] = _sides(b.png, box)
    (hl, cl), (hr, cr) = seen[""]["left"], seen[""]["right"]
    assert hl > 0.1 and hr < 0.01 * hl and cr > 0.05 and cl < 0.01 * cr       # r: left hot, right cold
    (hl, _), (hr, _) = seen["map=r2splitEmbeddings"]["left"], seen["map=r2splitEmbeddings"]["right"]
    assert hr > 0.1 and hl < 0.01 * hr                                         # the other map: right hot
    (hl, _), (hr, cr) = seen["map=r&threshold=0.75"]["left"], seen["map=r&threshold=0.75"]["right"]
    assert hl > 0.1 and cr < 0.001                                             # |r| = 0.3 < 0.45: background


def test_report_without_layout_draws_voxels_in_results_order(tmp_path):
    n = 3000
    first = np.arange(n) < n // 2
    rng = np.random.default_rng(0)
    r = np.where(first, 0.5, -0.5) + rng.uniform(-0.01, 0.01, n)
    alpha = 10.0 ** rng.integers(0, 5, n)
    run = _save(tmp_path / "flat", r, alpha=alpha)
    plot.report(run, dpi=30, maps=False)
    b = open_in_chromium(run / "report.html", tmp_path / "flat.png")
    assert b.console == [], b.console
    assert b.rendered_ms is not None
    px = mpimg.imread(b.png)[200:780, 0:1000, :3]
    hot, cold = np.nonzero(_hot(px))[0], np.nonzero(_cold(px))[0]
    assert hot.size > 5000 and cold.size > 5000
    assert np.percentile(hot, 95) < np.percentile(cold, 5)     # the first voxels (top rows) hot, the rest cold
    # a voxel's values, as hovering shows them, equal the results'
    b = open_in_chromium(run / "report.html", tmp_path / "dom.png", fragment="voxel=1234", dom=True)
    shown = dict(re.findall(r'data-map="(\w+)">[^<:]*: ([^<]+)<', b.dom))
    ds = results_mod.load(run).layer()
    assert float(shown["r"]) == pytest.approx(ds["r"].values[1234], rel=1e-3)
    assert float(shown["alpha"]) == pytest.approx(alpha[1234], rel=1e-3)
    assert float(shown["q"]) == pytest.approx(ds["q"].values[1234], rel=1e-3)
    assert shown["significant"] == ("significant" if ds["significant"].values[1234] else "not significant")
