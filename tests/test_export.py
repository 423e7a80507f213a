"""Maps exported as data (scalenc.plot.export): read back with nibabel / nilearn and compared with
the run's results.zarr; the report reads only the documented results variables."""
from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("nilearn")
nib = pytest.importorskip("nibabel")
import matplotlib  # noqa: E402

matplotlib.use("Agg")

from scalenc import plot  # noqa: E402
from scalenc import results as results_mod  # noqa: E402
from scalenc.plot.export import run_maps  # noqa: E402

MNI = "MNI152NLin2009cAsym"


def _run(path, n, *, layers=("3", "6"), seed=0, attrs=None, coords=None, ceiling=True, split=True, extra=None,
         subject="UTS03"):
    """A saved run of ``len(layers)`` layers over ``n`` voxels with every documented variable."""
    rng = np.random.default_rng(seed)
    parts = []
    for lay in layers:
        r = rng.uniform(-0.2, 0.8, n)
        ds = results_mod.voxel_dataset(r, rng.uniform(0, 1, n), alpha=10.0 ** rng.integers(0, 4, n))
        if split:
            ds["r2_split"] = (("space", "voxel"), rng.uniform(-0.05, 0.3, (2, n)))
            ds = ds.assign_coords(space=["word rate", "embeddings"])
        parts.append(ds.expand_dims(layer=[lay]))
    res = xr.concat(parts, dim="layer", combine_attrs="override")
    if ceiling:
        res["noise_ceiling"] = ("voxel", np.r_[0.0, rng.uniform(0.3, 0.9, n - 1)])   # one voxel without ceiling
    res = res.assign_coords(voxel=np.arange(100, 100 + n), **{k: ("voxel", v) for k, v in (coords or {}).items()})
    res.attrs.update(attrs or {})
    for k, v in (extra or {}).items():
        res[k] = v
    cfg = {"run_name": path.name, "subject": subject, "extractors": [{"name": "wordrate"}, {"name": "embeddings"}],
           "model": {"model_name": "banded_ridge"}}
    return results_mod.save(path, res, config=cfg), res


def _expected(res):
    """The maps computed directly from the saved Dataset: best layer by median r."""
    lays = [str(x) for x in res["layer"].values]
    r = res["r"].values
    best = int(np.argmax(np.nanmedian(r, axis=1)))
    b = res.isel(layer=best)
    c = res["noise_ceiling"].values
    out = {"r": r[best], "alpha": b["alpha"].values, "q": b["q"].values,
           "significant": b["significant"].values.astype(float), "noiseceiling": c,
           "rnorm": np.array([r[best][i] / c[i] if c[i] > 0 else np.nan for i in range(c.size)]),
           "r2splitWordRate": b["r2_split"].sel(space="word rate").values,
           "r2splitEmbeddings": b["r2_split"].sel(space="embeddings").values}
    if len(lays) > 1:
        out["bestlayer"] = np.array([max(range(len(lays)), key=lambda k: r[k, i]) for i in range(r.shape[1])], float)
    return out, lays[best]


def test_volume_run_exports_nifti_on_the_assemblys_grid(tmp_path):
    from nilearn import image

    shape = (6, 7, 5)
    affine = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
    rng = np.random.default_rng(3)
    flat = np.sort(rng.choice(np.prod(shape), 60, replace=False))
    run, res = _run(tmp_path / "vol", 60, coords={"mask_indices": flat},
                    attrs={"space": MNI, "volume_shape": list(shape), "affine": affine.tolist()})
    plot.report(run, dpi=30, maps=False)                                  # the PNG maps are test_plot's
    exp, best = _expected(res)
    out = run / "export"
    assert json.loads((out / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    for desc, want in exp.items():
        name = f"sub-UTS03_space-{MNI}_desc-{desc}_stat"
        img = image.load_img(str(out / f"{name}.nii.gz"))                     # nilearn reads it
        np.testing.assert_allclose(img.affine, affine)
        data = np.asarray(img.get_fdata())
        assert data.shape == shape
        ijk = np.unravel_index(flat, shape)
        np.testing.assert_allclose(data[ijk], want.astype(np.float32), rtol=1e-6, equal_nan=True)
        outside = np.ones(shape, bool)
        outside[ijk] = False
        assert np.isnan(data[outside]).all()
        side = json.loads((out / f"{name}.json").read_text())
        assert side["Run"] == "vol" and side["Model"] == "wordrate+embeddings" and side["Space"] == MNI
        assert side["Layer"] == (None if desc in ("bestlayer", "noiseceiling") else best)
        assert side["Description"]
    assert json.loads((out / f"sub-UTS03_space-{MNI}_desc-bestlayer_stat.json").read_text())["Levels"] == \
        {"0": "3", "1": "6"}
    assert len(list(out.glob("*.nii.gz"))) == len(exp)


def test_surface_run_exports_one_gifti_per_hemisphere(tmp_path):
    from nilearn import surface

    total, half = 81924, 40962                                                # fsaverage6
    rng = np.random.default_rng(4)
    idx = np.sort(rng.choice(total, 50, replace=False))
    idx[:3] = [0, half - 1, half]                                            # both hemispheres' edges
    run, res = _run(tmp_path / "surf", 50, layers=("0",), coords={"mask_indices": idx},
                    attrs={"space": "fsaverage6"})
    plot.report(run, dpi=30, maps=False)
    exp, _ = _expected(res)
    assert "bestlayer" not in exp
    out = run / "export"
    for desc, want in exp.items():
        full = []
        for hemi, structure in (("L", "CortexLeft"), ("R", "CortexRight")):
            path = out / f"sub-UTS03_hemi-{hemi}_space-fsaverage6_desc-{desc}_stat.func.gii"
            g = nib.load(str(path))
            assert g.meta["AnatomicalStructurePrimary"] == structure
            data = np.asarray(surface.load_surf_data(str(path)))              # nilearn reads it
            assert data.shape == (half,)
            full.append(data)
        full = np.concatenate(full)
        np.testing.assert_allclose(full[idx], want.astype(np.float32), rtol=1e-6, equal_nan=True)
        rest = np.ones(total, bool)
        rest[idx] = False
        assert np.isnan(full[rest]).all()
    assert len(list(out.glob("*.func.gii"))) == 2 * len(exp)


def test_run_without_layout_writes_npy_and_says_why(tmp_path):
    run, res = _run(tmp_path / "lebel", 40, subject="")
    plot.report(run, dpi=30, maps=False)
    exp, _ = _expected(res)
    out = run / "export"
    assert not list(out.glob("*.nii*")) and not list(out.glob("*.gii"))
    np.testing.assert_array_equal(np.load(out / "voxel.npy"), res["voxel"].values)
    for desc, want in exp.items():
        np.testing.assert_allclose(np.load(out / f"desc-{desc}_stat.npy"), want.astype(np.float32), rtol=1e-6,
                                   equal_nan=True)
        side = json.loads((out / f"desc-{desc}_stat.json").read_text())
        assert "no voxel layout" in side["NoImageReason"] and side["VoxelOrder"] == "voxel.npy"


def test_report_reads_only_the_documented_variables(tmp_path):
    # a variable outside the contract, named as the old aliases, is ignored
    run, res = _run(tmp_path / "contract", 30, layers=("0",), split=False, ceiling=False,
                    extra={"correlation": (("layer", "voxel"), np.full((1, 30), 0.99))})
    s = plot.RunSummary(run)
    np.testing.assert_allclose(s.r["0"], res["r"].values[0])
    assert [m.desc for m in run_maps(s)] == ["r", "alpha", "q", "significant"]
    plot.report(run, dpi=30)
    np.testing.assert_allclose(np.load(run / "export" / "sub-UTS03_desc-r_stat.npy"), res["r"].values[0],
                               rtol=1e-6)
    bare = tmp_path / "bare"                                   # a folder whose results.zarr lacks r
    bare.mkdir()
    xr.Dataset({"correlation": (("layer", "voxel"), np.zeros((1, 5)))}, coords={"layer": ["0"]}).to_zarr(
        str(bare / "results.zarr"), consolidated=False)
    (bare / "metrics.json").write_text("{}")
    with pytest.raises(KeyError, match="results.zarr has no per-voxel 'r'"):
        plot.RunSummary(bare)
