"""Brain maps, ROI summaries, the run report and the synthetic voxel layouts.

Maps are checked by their pixels: values that are high in one hemisphere/region colour
that part of the rendered image (hot colours of ``cold_hot``) and not the rest; swapping
the values swaps the coloured parts.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("nilearn")
pytest.importorskip("nibabel")
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from scalenc import plot  # noqa: E402
from scalenc import results as results_mod  # noqa: E402
from scalenc.synthetic.layout import CENTRES, LayoutError, make_layout  # noqa: E402
from scalenc.plot.maps import FSAVERAGE5_HEMI, BrainSpace, MapError  # noqa: E402


def _pixels(fig):
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float) / 255.0


def _crop(img, ax):
    bb = ax.get_window_extent()
    h = img.shape[0]
    return img[max(int(h - bb.y1), 0):int(h - bb.y0), max(int(bb.x0), 0):int(bb.x1)]


def _hot(px):
    """Red-to-yellow pixels (positive values of cold_hot / RdBu_r); greys are neither hot nor cold."""
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    return (r > 0.35) & (r - b > 0.25)


def _cold(px):
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    return (b > 0.35) & (b - r > 0.25)


def _panel_hot(fig):
    img = _pixels(fig)
    return {ax.scalenc_panel: _hot(_crop(img, ax)).mean() for ax in fig.axes if hasattr(ax, "scalenc_panel")}


# ---------------------------------------------------------------------------------- surface
@pytest.mark.slow
def test_surface_map_colours_the_hemisphere_with_high_values():
    left_high = np.r_[np.full(FSAVERAGE5_HEMI, 0.8), np.zeros(FSAVERAGE5_HEMI)]
    hot = {}
    for name, values in (("left", left_high), ("right", left_high[::-1].copy())):
        fig = plot.surface_map(values, vmax=1.0, figsize=(3.2, 2.6), colorbar=False)
        hot[name] = _panel_hot(fig)
        plt.close(fig)
        assert len(hot[name]) == 4
    for view in ("lateral", "medial"):
        assert hot["left"][("left", view)] > 0.1, hot["left"]       # a good part of the panel is hot
        assert hot["left"][("right", view)] < 0.005, hot["left"]     # zero is drawn black, not hot
        assert hot["right"][("right", view)] > 0.1, hot["right"]
        assert hot["right"][("left", view)] < 0.005, hot["right"]


def test_surface_map_of_sparse_vertices_colours_only_their_region():
    # the fsaverage5 vertices within 20 mm of the left auditory cortex; the others absent (background)
    from nilearn import datasets

    pial = datasets.load_fsaverage("fsaverage5")["pial"]
    xyz = np.vstack([pial.parts["left"].coordinates, pial.parts["right"].coordinates])
    near = np.flatnonzero(np.linalg.norm(xyz - np.array(CENTRES["L_AC"][0]), axis=1) < 20)
    assert 50 < near.size < 2000 and near.max() < FSAVERAGE5_HEMI
    space = BrainSpace("surface", "fsaverage5", near)
    fig = plot.surface_map(np.full(near.size, 0.7), space, vmax=1.0, figsize=(3.2, 2.6), colorbar=False)
    hot = _panel_hot(fig)
    plt.close(fig)
    assert hot[("left", "lateral")] > 0.002, hot
    assert max(hot[("right", "lateral")], hot[("right", "medial")]) < 0.2 * hot[("left", "lateral")], hot


def test_surface_renderer_draws_a_patch_where_the_projection_puts_it():
    """A value on a lateral patch of the left hemisphere is drawn in its colour at the projected
    position of the left lateral panel, nowhere in the medial or right panels (hidden / absent);
    NaN vertices show the sulcal depth in grey."""
    from nilearn import datasets
    from nilearn.plotting import cm as nilearn_cm

    from scalenc.plot.maps import _cmap, _fsaverage5, surface_projection

    fs = datasets.load_fsaverage("fsaverage5")                  # the fast loader reads nilearn's own meshes
    sulc = datasets.load_fsaverage_data(mesh="fsaverage5", mesh_type="inflated", data_type="sulcal")
    for hemi in ("left", "right"):
        coords, faces, bg = _fsaverage5("inflated")[hemi]
        np.testing.assert_allclose(coords, fs["inflated"].parts[hemi].coordinates)
        np.testing.assert_array_equal(faces, fs["inflated"].parts[hemi].faces)
        np.testing.assert_allclose(bg, np.asarray(sulc.data.parts[hemi]).ravel())
    grid = np.linspace(0, 1, 257)
    np.testing.assert_array_equal(_cmap("cold_hot")(grid), nilearn_cm.cold_hot(grid))

    coords = _fsaverage5("inflated")["left"][0]
    lat, med = surface_projection("left", "lateral"), surface_projection("left", "medial")
    # the left lateral view looks from -x with the frontal pole on the left; the medial one from +x
    np.testing.assert_allclose(lat[:, 2], -(coords[:, 0] - coords[:, 0].mean()))
    np.testing.assert_allclose(med[:, 2], coords[:, 0] - coords[:, 0].mean())
    front, back = np.argmax(coords[:, 1]), np.argmin(coords[:, 1])
    assert lat[front, 0] < lat[back, 0] and med[front, 0] > med[back, 0]
    right_lat = surface_projection("right", "lateral")
    rc = _fsaverage5("inflated")["right"][0]
    assert right_lat[np.argmax(rc[:, 1]), 0] > right_lat[np.argmin(rc[:, 1]), 0]

    centre = int(np.argmax(lat[:, 2]))                          # the most lateral vertex, facing the viewer
    patch = np.linalg.norm(coords - coords[centre], axis=1) < 15
    assert 30 < patch.sum() < 1000
    values = np.full(20484, np.nan)
    values[:FSAVERAGE5_HEMI][patch] = 0.8
    fig = plot.surface_map(values, vmax=1.0, figsize=(4.0, 3.2), colorbar=False)
    img = _pixels(fig)
    axes = {ax.scalenc_panel: ax for ax in fig.axes if hasattr(ax, "scalenc_panel")}
    assert sorted(axes) == [("left", "lateral"), ("left", "medial"), ("right", "lateral"), ("right", "medial")]
    want = np.asarray(_cmap("cold_hot")(0.9)[:3])               # 0.8 on [-1, 1]
    x, y = axes["left", "lateral"].transData.transform(lat[centre, :2])
    row, col = int(img.shape[0] - y), int(x)
    np.testing.assert_allclose(img[row - 2:row + 3, col - 2:col + 3], np.broadcast_to(want, (5, 5, 3)), atol=3 / 255)

    def coloured(px):
        return np.abs(px - want).max(axis=-1) < 0.05

    lat_px = _crop(img, axes["left", "lateral"])
    assert coloured(lat_px).mean() > 0.01
    for key in (("left", "medial"), ("right", "lateral"), ("right", "medial")):
        px = _crop(img, axes[key])
        assert not coloured(px).any(), key
        assert (np.ptp(px, axis=-1) < 0.02).all(), key          # only greys: the sulcal background
        assert (px.mean(axis=-1) < 0.6).mean() > 0.05, key      # ... and it is drawn (dark sulci)
    x, y = axes["left", "medial"].transData.transform(med[front, :2])
    assert np.ptp(img[int(img.shape[0] - y), int(x)]) < 0.02     # NaN there: grey
    plt.close(fig)


def test_fsaverage6_values_are_drawn_on_the_fsaverage5_vertices():
    vals = np.arange(81924, dtype=float)
    space = BrainSpace.from_voxels({"voxel": np.arange(81924)})
    assert space.kind == "surface" and space.space == "fsaverage6"
    full = space.vertices(vals)
    np.testing.assert_array_equal(full, np.r_[np.arange(10242), 40962 + np.arange(10242)])
    sparse = BrainSpace.from_voxels(xr.Dataset(coords={"mask_indices": ("voxel", [5, 20000])},
                                               attrs={"space": "fsaverage5"}))
    out = sparse.vertices([1.0, 2.0])
    assert out[5] == 1.0 and out[20000] == 2.0 and np.isnan(out).sum() == 20484 - 2
    with pytest.raises(MapError, match="has 2 voxels"):
        sparse.vertices([1.0, 2.0, 3.0])


# ---------------------------------------------------------------------------------- volume
@pytest.fixture(scope="module")
def mni_layout():
    n = 700
    return make_layout("mni", np.array(["both"] * n), np.ones(n), voxel_size=6.0)


def _mni_space(lay):
    return BrainSpace.from_voxels(xr.Dataset(coords={"mask_indices": ("voxel", lay.mask_indices)}, attrs=lay.attrs))


def test_glass_brain_colours_the_side_with_high_values(mni_layout):
    space = _mni_space(mni_layout)
    assert space.kind == "volume" and space.volume_shape == tuple(mni_layout.attrs["volume_shape"])
    x = mni_layout.coordinates[:, 0]
    centroids = {}
    for side, values in (("left", np.where(x < 0, 0.9, 0.0)), ("right", np.where(x > 0, 0.9, 0.0))):
        fig = plot.volume_map(values, space, kinds=("glass",), glass_mode="z", vmax=1.0, figsize=(3.0, 3.0))
        ax = next(a for a in fig.axes if getattr(a, "scalenc_panel", None) == "glass")
        hot = _hot(_crop(_pixels(fig), ax))
        plt.close(fig)
        assert hot.sum() > 50
        centroids[side] = np.nonzero(hot)[1].mean() / hot.shape[1]
    assert centroids["left"] < 0.45 < 0.55 < centroids["right"], centroids   # neurological view: L on the left


def test_slice_maps_show_where_values_are(mni_layout):
    space = _mni_space(mni_layout)
    counts = {}
    for name, values in (("all", np.full(space.n_voxels, 0.9)), ("none", np.zeros(space.n_voxels)),
                         ("neg", np.full(space.n_voxels, -0.9))):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "empty mask", UserWarning)      # nilearn, on the all-zero map
            fig = plot.volume_map(values, space, kinds=("slices",), vmax=1.0, n_slices=3, figsize=(4.0, 1.6))
        ax = next(a for a in fig.axes if getattr(a, "scalenc_panel", None) == "slices")
        img = _crop(_pixels(fig), ax)
        counts[name] = (_hot(img).sum(), _cold(img).sum())
        plt.close(fig)
    assert counts["all"][0] > 100 and counts["all"][1] == 0
    assert counts["none"] == (0, 0)
    assert counts["neg"][1] > 100 and counts["neg"][0] == 0


def test_mosaic_tiles_follow_the_slices_values():
    mask = np.zeros((3, 10, 10), bool)
    mask[:, 2:8, 2:8] = True
    space = BrainSpace.from_mask(mask)
    assert space.kind == "mosaic" and space.n_voxels == 108
    k = np.nonzero(mask)[0]                                    # slice of each voxel (C order)
    values = np.array([-0.9, 0.0, 0.9])[k]
    fig = plot.mosaic(values, mask=mask, vmax=1.0, tile_size=0.8)
    img = _pixels(fig)
    tiles = {ax.scalenc_panel: _crop(img, ax) for ax in fig.axes if hasattr(ax, "scalenc_panel")}
    plt.close(fig)
    assert sorted(tiles) == [0, 1, 2]
    assert _cold(tiles[0]).mean() > 0.2 and _hot(tiles[0]).mean() == 0
    assert _hot(tiles[2]).mean() > 0.2 and _cold(tiles[2]).mean() == 0
    assert _hot(tiles[1]).mean() == 0 and _cold(tiles[1]).mean() == 0
    with pytest.raises(MapError, match="108 voxels"):
        plot.mosaic(values[:-1], mask=mask)


def test_mask_from_nifti_is_in_pycortex_order(tmp_path):
    import nibabel as nib

    m = np.zeros((4, 5, 6), np.uint8)                          # file axes (x, y, z)
    m[1, 2, 3] = 1
    nib.save(nib.Nifti1Image(m, np.eye(4)), tmp_path / "mask.nii.gz")
    zyx = plot.mask_from_nifti(tmp_path / "mask.nii.gz")
    assert zyx.shape == (6, 5, 4) and zyx[3, 2, 1] and zyx.sum() == 1
    assert plot.mask_from_nifti(tmp_path / "mask.nii.gz", pycortex_order=False)[1, 2, 3]


# ---------------------------------------------------------------------------------- ROI
def test_roi_summary_medians():
    rng = np.random.default_rng(0)
    roi = np.array(["b", "other", "a", "a", "b", "b", "a"])
    r = rng.standard_normal(7)
    split = rng.standard_normal(7)
    split[2] = np.nan
    s = plot.roi_summary({"r": r, "split x": split}, roi)
    assert list(s["roi"].values) == ["a", "b", "other"]
    assert list(s["n_voxels"].values) == [3, 3, 1]
    for lab in ("a", "b", "other"):
        sel = roi == lab
        assert s["median"].sel(measure="r", roi=lab) == pytest.approx(np.median(r[sel]))
        assert s["median"].sel(measure="split x", roi=lab) == pytest.approx(np.nanmedian(split[sel]))


# ---------------------------------------------------------------------------------- layouts
def test_mni_layout_places_voxels_by_ground_truth(mni_layout):
    from nilearn import datasets

    rng = np.random.default_rng(1)
    n = 400
    driver = rng.choice(["noise", "wordrate", "embeddings", "both"], n)
    snr = np.where(driver == "noise", 0.0, rng.uniform(0.1, 3, n))
    lay = make_layout("mni", driver, snr, seed=3)
    shape, aff = lay.attrs["volume_shape"], np.array(lay.attrs["affine"])
    assert lay.attrs["space"] == "MNI152NLin2009aSym" and len(np.unique(lay.mask_indices)) == n
    ijk = np.array(np.unravel_index(lay.mask_indices, shape)).T
    np.testing.assert_allclose(ijk @ aff[:3, :3].T + aff[:3, 3], lay.coordinates)
    gm = datasets.load_mni152_gm_mask(resolution=2)                 # every voxel lies in grey matter
    src = np.rint(np.c_[lay.coordinates, np.ones(n)] @ np.linalg.inv(gm.affine).T)[:, :3].astype(int)
    assert np.asarray(gm.get_fdata())[tuple(src.T)].all()
    dist = {k: np.linalg.norm(lay.coordinates[:, None] - np.array([CENTRES[c][0] for c in CENTRES
                                                                   if CENTRES[c][1] == k])[None], axis=2).min(1)
            for k in ("wordrate", "embeddings")}
    assert np.median(dist["wordrate"][driver == "wordrate"]) < np.median(dist["wordrate"][driver == "embeddings"])
    assert np.median(dist["embeddings"][driver == "embeddings"]) < np.median(dist["embeddings"][driver == "wordrate"])
    assert set(lay.roi) <= set(CENTRES) | {"other"}
    with pytest.raises(LayoutError, match="unknown voxel layout"):
        make_layout("talairach", driver, snr)


def test_fsaverage5_layout_and_synthetic_hook(tmp_path):
    from scalenc.synthetic import synthetic

    kw = dict(n_stories=2, words_per_story=60, n_voxels=40, audio=False, seed=5)
    plain = synthetic(tmp_path / "plain", **kw)
    placed = synthetic(tmp_path / "placed", layout="fsaverage5", **kw)
    vox = placed.assembly().voxels
    assert vox.attrs["space"] == "fsaverage5"
    idx = vox["mask_indices"].values
    assert idx.shape == (40,) and len(np.unique(idx)) == 40 and idx.max() < 20484
    gt = placed.ground_truth()
    roi = np.array([str(x) for x in vox["roi"].values])
    assert (roi[gt["driver"].values == "wordrate"] != "other").all()
    a, b = plain.assembly(), placed.assembly()
    story = a.train_stories[0]
    np.testing.assert_array_equal(a.bold(story).values, b.bold(story).values)   # same responses
    space = BrainSpace.from_voxels(vox)
    assert space.kind == "surface" and np.array_equal(space.index, idx)
    with pytest.raises(LayoutError):
        synthetic(tmp_path / "bad", layout="mni305", **kw)
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


# ---------------------------------------------------------------------------------- report
def _save(run_dir, layers, *, config=None, noise_ceiling=None, voxel_coords=None, extra=None):
    """Save a run from per-layer {correlations, significant_mask, ...} through the results API."""
    parts = []
    for lay, m in layers.items():
        r = np.asarray(m["correlations"], float)
        ds = results_mod.voxel_dataset(r, np.full(r.shape, 0.5), alpha=np.ones(r.shape))
        ds["significant"] = ("voxel", np.asarray(m["significant_mask"], bool))
        if m.get("noise_ceiling_source"):
            ds.attrs["noise_ceiling_source"] = m["noise_ceiling_source"]
        parts.append(ds.expand_dims(layer=[str(lay)]))
    res = xr.concat(parts, dim="layer", combine_attrs="override")
    if noise_ceiling is not None:
        res["noise_ceiling"] = ("voxel", np.asarray(noise_ceiling, float))
    for k, v in (voxel_coords or {}).items():
        res = res.assign_coords({k: ("voxel", np.asarray(v))})
    if extra is not None:
        res = res.merge(extra.expand_dims(layer=res["layer"].values))
    from scalenc.engine import save_run  # saves, then draws the report (as a run does)

    return save_run(run_dir, res, config=config)


def _metrics(r, sig, ceiling=None, source=None):
    m = {"correlations": r, "significant_mask": sig, "median_score": float(np.median(r)),
         "n_significant": int(sig.sum())}
    if ceiling is not None:
        m["noise_ceiling"] = ceiling
        m["noise_ceiling_source"] = source
    return m


def test_report_axes_titles_and_ceiling_source(tmp_path):
    n = 201
    ceiling = np.full(n, 0.6)
    spread = np.linspace(-0.01, 0.01, n)
    layers = {"3": _metrics(0.1098 + spread, np.ones(n, bool), ceiling, "ground truth"),
              "6": _metrics(0.1104 + spread, np.ones(n, bool), ceiling, "ground truth")}
    run = _save(tmp_path / "gpt-run", layers, config={"run_name": "gpt-run"}, noise_ceiling=ceiling)
    assert (run / "report.png").exists() and (run / "report.html").exists()
    s = plot.RunSummary(run)
    fig = plt.figure(figsize=(8, 3))
    axes = plot.summary_panels(s, fig)
    lo, hi = axes["layers"].get_ylim()
    assert lo == 0.0 and hi >= 0.6                       # from 0, ceiling in view: 0.0006 is not a collapse
    assert any("ground truth" in t.get_text() for t in axes["layers"].get_legend().get_texts())
    assert "ground truth" in axes["ceiling"].get_title()
    plt.close(fig)
    head = plot.headline(s)
    assert head.startswith("gpt-run:") and "ground truth" in head and "layer 6" in head
    assert "ground truth" in (run / "report.html").read_text()

    one = _save(tmp_path / "single", {"0": _metrics(layers["3"]["correlations"], np.ones(n, bool))},
                           config={"run_name": "single"})
    s1 = plot.RunSummary(one)
    fig = plt.figure(figsize=(4, 3))
    axes = plot.summary_panels(s1, fig)
    assert set(axes) == {"hist"} and "layer" not in axes["hist"].get_title()
    plt.close(fig)
    assert "layer" not in plot.headline(s1) and plot.headline(s1).startswith("single:")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning:zarr")
def test_report_draws_r_and_split_maps_from_the_results(tmp_path):
    n = 20484                                              # LITcoder's fsaverage5 layout, inferred from the size
    left = np.arange(n) < FSAVERAGE5_HEMI
    strong = np.arange(n) % 25 == 0                        # the colour scale's top (99th percentile) is 2x
    r = np.where(left, np.where(strong, 1.0, 0.5), 0.05)
    sig = left.copy()
    half = np.where(strong, 0.3, 0.15)
    split = xr.Dataset({"r2_split": (("space", "voxel"), np.stack([np.where(left, half, 0.0),
                                                                   np.where(left, 0.0, half)]))},
                       coords={"space": ["wordrate", "embeddings"]})
    run = _save(tmp_path / "surf", {"0": _metrics(r, sig)}, config={"run_name": "surf"},
                voxel_coords={"voxel": np.arange(n)}, extra=split)
    plot.report(run, dpi=40)
    files = sorted(p.name for p in (run / "maps").iterdir())
    assert files == ["r.png", "r2_split_embeddings.png", "r2_split_wordrate.png", "significant.png"]

    def halves(name):
        img = mpimg.imread(run / "maps" / name)[..., :3]
        w = img.shape[1]
        return _hot(img[:, :int(0.42 * w)]).mean(), _hot(img[:, int(0.42 * w):int(0.84 * w)]).mean()

    wl, wr = halves("r2_split_wordrate.png")
    el, er = halves("r2_split_embeddings.png")
    assert wl > 0.05 and wr < 0.1 * wl and er > 0.05 and el < 0.1 * er
    sl, sr = halves("significant.png")
    assert sl > 0.05 and sr == 0.0
    html = (run / "report.html").read_text()
    assert "maps/r2_split_wordrate.png" in html


@pytest.mark.slow
def test_report_of_a_synthetic_run_with_mni_layout(tmp_path):
    from scalenc.synthetic import synthetic
    from scalenc.features import FeatureExtractorFactory
    from scalenc.models import NestedCVModel
    from scalenc.trainer import AbstractTrainer

    ds = synthetic(tmp_path / "data", n_stories=3, n_voxels=300, audio=False, layout="mni")
    asm = ds.assembly()
    make = FeatureExtractorFactory.create_extractor
    ex = [make("wordrate", None, {"include_phonemes": False}, tmp_path / "cache"),
          make("embeddings", str(ds.embeddings_path), {}, tmp_path / "cache")]
    trainer = AbstractTrainer(asm, ex, None, NestedCVModel(alphas=np.logspace(-1, 4, 6), seed=0), [1, 2, 3, 4], None,
                              results_dir=tmp_path / "results", run_name="demo-run", logger_backend="local")
    m = trainer.train()
    run = tmp_path / "results" / "demo-run"
    assert {"r.png", "significant.png"} <= {p.name for p in (run / "maps").iterdir()}
    rows = (run / "roi_summary.csv").read_text().strip().splitlines()
    assert rows[0] == "roi,n_voxels,r"
    roi = np.array([str(x) for x in asm.voxels["roi"].values])
    for line in rows[1:]:
        lab, cnt, med = line.split(",")
        sel = roi == lab
        assert int(cnt) == sel.sum()
        assert float(med) == pytest.approx(np.median(m["correlations"][sel]), rel=1e-5)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["layers"]["0"]["noise_ceiling_source"] == "ground truth"
    page = (run / "report.html").read_text()                   # the interactive page: ROI table, configuration
    assert "<h2>Median per ROI</h2>" in page and all(f"<td>{lab}</td>" in page for lab in set(roi.tolist()))
    assert "run_name = &quot;demo-run&quot;" in page or 'run_name = "demo-run"' in page
    sub = f"sub-{asm.subject}_" if asm.subject else ""
    # the exports, through the trainer
    nii = run / "export" / f"{sub}space-{asm.voxels.attrs['space']}_desc-r_stat.nii.gz"
    import nibabel as nib

    img = nib.load(str(nii))
    ijk = np.unravel_index(asm.voxels["mask_indices"].values, img.shape)
    np.testing.assert_allclose(np.asarray(img.dataobj)[ijk], np.float32(m["correlations"]), rtol=1e-6)


@pytest.mark.slow
def test_flatmap_with_pycortex_sample_subject(tmp_path):
    cortex = pytest.importorskip("cortex")
    if "S1" not in cortex.db.subjects:
        pytest.skip("pycortex sample subject S1 not in the database")
    m = cortex.db.get_mask("S1", "fullhead", "thick")          # (z, y, x)
    x = np.indices(m.shape)[2][m]
    side = np.where(x > m.shape[2] // 2, 0.5, -0.5)            # one hemisphere positive, the other negative
    centres = {}
    for sign in (1, -1):
        fig = plot.flatmap(sign * side, "S1", "fullhead", vmax=1.0)
        img = _pixels(fig)
        plt.close(fig)
        hot, cold = _hot(img), _cold(img)
        assert hot.mean() > 0.05 and cold.mean() > 0.05
        centres[sign] = (np.nonzero(hot)[1].mean() / img.shape[1], np.nonzero(cold)[1].mean() / img.shape[1])
    # each sign colours one flattened hemisphere; flipping the values swaps the colours
    assert (centres[1][0] < 0.5 < centres[1][1]) != (centres[1][1] < 0.5 < centres[1][0])
    assert (centres[1][0] < 0.5) == (centres[-1][1] < 0.5) and (centres[1][1] < 0.5) == (centres[-1][0] < 0.5)
    run = _save(tmp_path / "s1", {"0": _metrics(side, side > 0)}, config={"run_name": "s1"})
    plot.report(run, pycortex=("S1", "fullhead"), dpi=30)
    assert {"flat_r.png", "flat_significant.png"} <= {p.name for p in (run / "maps").iterdir()}


def test_report_draws_a_mosaic_from_a_mask_for_subject_space_runs(tmp_path):
    mask = np.zeros((3, 8, 8), bool)
    mask[:, 2:6, 2:6] = True
    k = np.nonzero(mask)[0]
    r = np.array([-0.4, 0.1, 0.6])[k]
    run = _save(tmp_path / "subj", {"0": _metrics(r, r > 0.3)}, config={"run_name": "subj"})
    assert not (run / "maps").exists()                          # no layout known: no maps
    plot.report(run, mask=mask, dpi=40)
    assert sorted(p.name for p in (run / "maps").iterdir()) == ["r.png", "significant.png"]
    img = mpimg.imread(run / "maps" / "r.png")[..., :3]
    assert _hot(img).sum() > 0 and _cold(img).sum() > 0
    sig = mpimg.imread(run / "maps" / "significant.png")[..., :3]
    w = int(0.84 * sig.shape[1])                                # left of the colour bar
    assert _hot(sig[:, :w]).sum() > 0 and _cold(sig[:, :w]).sum() == 0   # only the r = 0.6 slice is significant
    other = _save(tmp_path / "subj2", {"0": _metrics(r[:-1], r[:-1] > 0.3)}, config={"run_name": "x"})
    plot.report(other, mask=mask, dpi=40)                       # wrong voxel count: logged, no maps
    assert not (other / "maps").exists()


def test_report_without_significant_voxels_draws_the_other_maps(tmp_path):
    mask = np.zeros((2, 6, 6), bool)
    mask[:, 1:5, 1:5] = True
    r = np.linspace(-0.2, 0.3, int(mask.sum()))
    run = _save(tmp_path / "none-sig", {"0": _metrics(r, np.zeros(r.shape, bool))}, config={"run_name": "n"})
    plot.report(run, mask=mask, dpi=30)                          # a map of only NaN is skipped, not an error
    assert sorted(p.name for p in (run / "maps").iterdir()) == ["r.png"]
