"""A run's per-voxel maps as data files that the field's viewers read.

:func:`run_maps` lists the maps of a saved run (read through :class:`~scalenc.plot.report.RunSummary`,
i.e. the documented variables of ``results.zarr``), of its best layer (highest median r):

=================  ==============================================================================
desc               value per voxel
=================  ==============================================================================
``r``              test correlation ``r``
``rnorm``          ``r / noise_ceiling`` (ceiling-normalised r; NaN where the ceiling is <= 0)
``noiseceiling``   the noise ceiling (its source in the sidecar)
``alpha``          the chosen ridge penalty
``q``              FDR q-value of ``r``
``significant``    1 where ``significant`` (q <= the run's FDR level), else 0
``r2split<Space>`` each feature space's split R² (``r2_split``; banded runs); ``rsplit<Space>`` for
                   ``r_split``
``bestlayer``      position (0-based) in the run's layers of each voxel's highest-r layer; the
                   sidecar's ``Levels`` names them (runs with several layers)
=================  ==============================================================================

:func:`export_maps` writes them under ``<run>/export/`` in BIDS-derivatives style, each with a
JSON sidecar (run, model, layer, what the value is, units, source variable):

volume layouts (:class:`~scalenc.plot.maps.BrainSpace` ``kind="volume"``)
    ``sub-<label>_space-<space>_desc-<desc>_stat.nii.gz``: float32 NIfTI on the assembly's grid
    and affine (NaN outside the voxels); no ``space-`` entity in the subject's own space.
surface layouts (fsaverage5 / fsaverage6 / fsaverage)
    ``sub-<label>_hemi-<L|R>_space-<mesh>_desc-<desc>_stat.func.gii``: one float32 GIFTI per
    hemisphere over all of the mesh's vertices (NaN where no voxel), tagged ``CortexLeft`` /
    ``CortexRight`` for Connectome Workbench.
no layout (LeBel hf5 responses; mosaics without an affine)
    ``sub-<label>_desc-<desc>_stat.npy`` (float32, in the order of ``results.zarr``'s ``voxel``
    coordinate, which ``sub-<label>_voxel.npy`` holds) and a sidecar whose ``NoImageReason``
    says why there is no NIfTI.

``sub-<label>`` is the run's subject (configuration ``subject``, else the assembly's); it is left
out when unknown. ``dataset_description.json`` makes the folder a BIDS derivatives dataset.
The folder is written whole to a temporary path and renamed (a previous export of the same run
is replaced: it is this function's own output).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .maps import SURFACE_VERTICES, BrainSpace

logger = logging.getLogger(__name__)

EXPORT_DIR = "export"


@dataclasses.dataclass
class MapSpec:
    """One per-voxel map of a run.

    Attributes
    ----------
    desc : str
        Alphanumeric key (the BIDS ``desc`` entity and the report's selector value).
    label : str
        Human-readable name.
    values : (n_voxels,) float array
    description : str
        What the value is (sidecar ``Description``).
    variable : str
        The ``results.zarr`` variable(s) it comes from.
    layer : str or None
        The layer it shows (None for maps over layers or without one).
    units : str
    levels : dict, optional
        For discrete maps: value -> meaning.
    diverging : bool
        Signed values (symmetric colour scale) rather than magnitudes.
    """

    desc: str
    label: str
    values: np.ndarray
    description: str
    variable: str
    layer: str | None = None
    units: str = "arbitrary"
    levels: dict[str, str] | None = None
    diverging: bool = True


def bids_label(text: Any) -> str:
    """``text`` reduced to the letters and digits that a BIDS entity value may hold."""
    return re.sub(r"[^A-Za-z0-9]", "", str(text))


def _camel(text: Any) -> str:
    parts = re.split(r"[^A-Za-z0-9]+", str(text))
    return "".join(p[:1].upper() + p[1:] for p in parts if p)


def run_maps(s) -> list[MapSpec]:
    """The maps of a run (module docstring) from a :class:`~scalenc.plot.report.RunSummary`."""
    best = s.best
    ds = s.data[best]
    lay = best if len(s.layers) > 1 else None
    r = np.asarray(s.r[best], float)
    at = f" (layer {best})" if lay is not None else ""
    out = [MapSpec("r", f"test r{at}", r, "Pearson correlation between predicted and measured responses on the "
                   "test stories", "r", lay, "Pearson r")]
    if s.ceiling is not None:
        c = np.asarray(s.ceiling, float)
        with np.errstate(divide="ignore", invalid="ignore"):
            rnorm = np.where(c > 0, r / c, np.nan)
        src = s.ceiling_source or "source not recorded"
        out.append(MapSpec("rnorm", f"r / noise ceiling{at}", rnorm,
                           f"test r divided by the voxel's noise ceiling ({src}); NaN where the ceiling is <= 0",
                           "r, noise_ceiling", lay, "fraction of the noise ceiling"))
        out.append(MapSpec("noiseceiling", "noise ceiling", c, f"noise ceiling of the voxel's r ({src})",
                           "noise_ceiling", None, "Pearson r", diverging=False))
    for name, desc, what, units, div in (
            ("alpha", "alpha", "ridge penalty chosen by cross-validation (penalty alpha ||w||^2)", "penalty", False),
            ("q", "q", "Benjamini-Hochberg FDR q-value of r", "q-value", False)):
        if name in ds.variables:
            out.append(MapSpec(desc, f"{name}{at}", np.asarray(ds[name].values, float), what, name, lay, units,
                               diverging=div))
    if "significant" in ds.variables:
        sig = np.asarray(ds["significant"].values, bool).astype(float)
        fdr = s.root.attrs.get("alpha_fdr")
        out.append(MapSpec("significant", f"significant{at}", sig,
                           f"1 where r is significant (q <= {fdr if fdr is not None else 'the FDR level'}), else 0",
                           "significant", lay, "binary", {"0": "not significant", "1": "significant"}, False))
    for var, stem, what in (("r2_split", "r2split", "split R² of feature space"),
                            ("r_split", "rsplit", "split correlation of feature space")):
        if var in ds.variables and "space" in ds[var].dims:
            for space in [str(x) for x in ds[var]["space"].values]:
                v = np.asarray(ds[var].sel(space=space).values, float)
                out.append(MapSpec(f"{stem}{_camel(space)}", f"{var}: {space}{at}", v, f"{what} {space!r}", var,
                                   lay, "R²" if var == "r2_split" else "Pearson r"))
    if len(s.layers) > 1:
        stack = np.stack([s.r[x] for x in s.layers])
        finite = np.isfinite(stack).any(0)
        idx = np.where(finite, np.argmax(np.where(np.isfinite(stack), stack, -np.inf), axis=0), -1)
        out.append(MapSpec("bestlayer", "best layer (highest r)", np.where(finite, idx, np.nan).astype(float),
                           "position in the run's layers of the layer with the voxel's highest test r",
                           "r", None, "layer position", {str(i): str(x) for i, x in enumerate(s.layers)}, False))
    return out


def _subject(s) -> str:
    subject = s.config.get("subject") or getattr(s, "subject", "") or ""
    return bids_label(subject)


def _model(config: dict) -> str:
    names = [str(e.get("name") or e.get("model_name") or e.get("type") or "") for e in config.get("extractors", [])
             if isinstance(e, dict)]
    return "+".join(n for n in names if n) or str(config.get("model", {}).get("model_name", "") or "")


def _no_image_reason(space: BrainSpace | None) -> str:
    if space is None:
        return ("the assembly records no voxel layout (e.g. LeBel's preprocessed hf5 responses: cortical voxels in "
                "the subject's pycortex space, no affine); values are in results.zarr's voxel order")
    return (f"the {space.kind} layout has no affine (voxels placed by a mask only); values are in results.zarr's "
            "voxel order")


def export_maps(s, space: BrainSpace | None, out: str | os.PathLike | None = None,
                maps: list[MapSpec] | None = None) -> list[Path]:
    """Write every map of ``s`` (a RunSummary) under ``out`` (default ``<run>/export``); return the files.

    See the module docstring for the formats and names.
    """
    from .._io import atomic_directory

    out = Path(out) if out is not None else s.path / EXPORT_DIR
    maps = run_maps(s) if maps is None else maps
    sub = _subject(s)
    prefix = f"sub-{sub}_" if sub else ""
    common = {"Run": s.run_name, "Model": _model(s.config), "Estimator": str(s.config.get("model", {}).get(
        "model_name", "") or ""), "Layers": list(s.layers), "Sources": ["results.zarr"],
              "NoiseCeilingSource": s.ceiling_source}
    kind = space.kind if space is not None else None
    written: list[str] = []
    with atomic_directory(out, overwrite=True) as tmp:
        _dump(tmp / "dataset_description.json", {
            "Name": f"scalenc maps of {s.run_name}", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "scalenc", "Version": _version()}]})
        if kind not in ("volume", "surface"):
            np.save(tmp / f"{prefix}voxel.npy", np.asarray(s.root["voxel"].values))
        for m in maps:
            side = {"Description": m.description, "Variable": m.variable, "Layer": m.layer, "Units": m.units,
                    **common}
            if m.levels:
                side["Levels"] = m.levels
            values = np.asarray(m.values, np.float32)
            if kind == "volume":
                names = _write_volume(tmp, prefix, m.desc, values, space, side)
            elif kind == "surface":
                names = _write_surface(tmp, prefix, m.desc, values, space, side)
            else:
                name = f"{prefix}desc-{m.desc}_stat"
                np.save(tmp / f"{name}.npy", values)
                side["NoImageReason"] = _no_image_reason(space)
                side["VoxelOrder"] = f"{prefix}voxel.npy"
                _dump(tmp / f"{name}.json", side)
                names = [f"{name}.npy"]
            written += names
    if kind not in ("volume", "surface"):
        logger.info("export: %s: no NIfTI/GIFTI (%s); wrote .npy", s.run_name, _no_image_reason(space))
    return [out / n for n in written]


def _space_entity(space: BrainSpace) -> str:
    label = bids_label(space.space)
    return "" if label.lower() in ("", "subject", "native") else f"space-{label}_"


def _write_volume(tmp: Path, prefix: str, desc: str, values, space: BrainSpace, side: dict) -> list[str]:
    import nibabel as nib

    vol = space.volume(values).astype(np.float32)
    img = nib.Nifti1Image(vol, np.asarray(space.affine, float))
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = desc.encode()[:79]
    name = f"{prefix}{_space_entity(space)}desc-{desc}_stat"
    nib.save(img, tmp / f"{name}.nii.gz")
    _dump(tmp / f"{name}.json", {**side, "Space": space.space})
    return [f"{name}.nii.gz"]


def _write_surface(tmp: Path, prefix: str, desc: str, values, space: BrainSpace, side: dict) -> list[str]:
    import nibabel as nib

    total = SURFACE_VERTICES[space.space]
    full = np.full(total, np.nan, np.float32)
    values = space.check(values)
    if space.index.size and (space.index.min() < 0 or space.index.max() >= total):
        raise ValueError(f"vertex indices out of range for {space.space} ({total} vertices)")
    full[space.index] = values
    half = total // 2
    names = []
    for hemi, part, structure in (("L", full[:half], "CortexLeft"), ("R", full[half:], "CortexRight")):
        arr = nib.gifti.GiftiDataArray(np.ascontiguousarray(part, np.float32), intent="NIFTI_INTENT_NONE",
                                       datatype="NIFTI_TYPE_FLOAT32",
                                       meta=nib.gifti.GiftiMetaData({"Name": desc}))
        img = nib.gifti.GiftiImage(darrays=[arr], meta=nib.gifti.GiftiMetaData(
            {"AnatomicalStructurePrimary": structure}))
        name = f"{prefix}hemi-{hemi}_{_space_entity(space)}desc-{desc}_stat"
        nib.save(img, tmp / f"{name}.func.gii")
        _dump(tmp / f"{name}.json", {**side, "Space": space.space, "Hemisphere": hemi})
        names.append(f"{name}.func.gii")
    return names


def _dump(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=1, default=str) + "\n", encoding="utf-8")


def _version() -> str:
    from .._version import __version__

    return __version__
