"""Voxel layouts for the synthetic dataset: where each synthetic voxel sits on a brain.

The synthetic responses (:mod:`scalenc.synthetic.synthetic`) have no anatomy; a layout
places them on a template so that the demo and the tests can draw brain maps. Two
layouts, both in millimetre coordinates of the MNI/fsaverage (Talairach-like) frame:

``"mni"``
    voxels of a grey-matter mask of nilearn's MNI152 template (ICBM152 2009a, the symmetric
    release by its file names ``mni_icbm152_*_tal_nlin_sym_09a``,
    shipped with nilearn), resampled to an isotropic grid of ``voxel_size`` mm (by default
    chosen from ``n_voxels`` so that the selected voxels fill about an eighth of the grey
    matter). The assembly's ``voxels`` group gets ``mask_indices`` (flat C-order indices
    into ``volume_shape``) and the attrs ``space = "MNI152NLin2009aSym"``,
    ``volume_shape`` (3 ints) and ``affine`` (4 x 4 list, voxel -> mm).
``"fsaverage5"``
    vertices of nilearn's fsaverage5 pial mesh, left hemisphere (0..10,241) then right
    (10,242..20,483), LITcoder's 20,484-vertex order. ``mask_indices`` holds each voxel's
    vertex index; attrs ``space = "fsaverage5"`` and ``n_vertices = 20484``.

Placement follows the ground truth so that maps look like language maps: candidate
positions are scored by Gaussian blobs (``BLOB_SIGMA_MM``) around a few classic
language-network centres (:data:`CENTRES`, MNI mm); the ``n_voxels`` highest-scoring
positions are used; pure-noise voxels take the lowest-scoring of those (blob edges),
voxels driven by word rate go near auditory cortex, by embeddings near the angular
gyrus / inferior frontal / precuneus centres, by both near the superior temporal sulcus,
and within each group higher SNR goes nearer a centre. Each voxel's ``roi`` label is its
nearest centre within ``2.5 * BLOB_SIGMA_MM``, else ``"other"``.

The layout uses its own random stream, so a dataset with and without a layout has the
same responses.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

#: Language-network centres (MNI mm) and the synthetic driver each attracts.
CENTRES: dict[str, tuple[tuple[float, float, float], str]] = {
    "L_AC": ((-50.0, -22.0, 8.0), "wordrate"),
    "R_AC": ((52.0, -20.0, 8.0), "wordrate"),
    "L_STS": ((-56.0, -42.0, 2.0), "both"),
    "R_STS": ((56.0, -36.0, 0.0), "both"),
    "L_AG": ((-46.0, -64.0, 32.0), "embeddings"),
    "R_AG": ((48.0, -62.0, 30.0), "embeddings"),
    "L_IFG": ((-48.0, 24.0, 10.0), "embeddings"),
    "PCun": ((-6.0, -58.0, 38.0), "embeddings"),
}
BLOB_SIGMA_MM = 12.0
LAYOUTS = ("mni", "fsaverage5")
MNI_SPACE = "MNI152NLin2009aSym"
FSAVERAGE5_VERTICES = 20484
_DRIVERS = ("wordrate", "both", "embeddings")


class LayoutError(ValueError):
    """A voxel layout cannot be made (unknown name, too many voxels)."""


@dataclasses.dataclass(frozen=True)
class VoxelLayout:
    """Where each voxel sits.

    Attributes
    ----------
    kind : str
        ``"mni"`` or ``"fsaverage5"``.
    mask_indices : (n_voxels,) int64
        Flat C-order index into ``attrs["volume_shape"]`` (volume) or vertex index (surface).
    roi : (n_voxels,) str
    coordinates : (n_voxels, 3) float64
        Millimetre coordinates of each voxel / vertex.
    attrs : dict
        ``space`` and, for volumes, ``volume_shape`` and ``affine``; for surfaces ``n_vertices``.
    """

    kind: str
    mask_indices: np.ndarray
    roi: np.ndarray
    coordinates: np.ndarray
    attrs: dict[str, Any]


def _nilearn_datasets():
    try:
        from nilearn import datasets
    except ImportError as e:
        raise ImportError("voxel layouts use nilearn's templates: install scalenc[plot] (or scalenc[all])") from e
    return datasets


def _mni_candidates(voxel_size: float):
    """In-mask voxel centres of the MNI152 grey-matter mask on an isotropic grid."""
    datasets = _nilearn_datasets()

    gm = datasets.load_mni152_gm_mask(resolution=2)
    data = np.asarray(gm.get_fdata()) > 0
    aff = gm.affine
    lo = aff[:3, 3]
    hi = lo + np.diag(aff[:3, :3]) * (np.array(data.shape) - 1)
    shape = tuple(int(np.floor((h - l) / voxel_size)) + 1 for l, h in zip(lo, hi))
    affine = np.diag([voxel_size, voxel_size, voxel_size, 1.0])
    affine[:3, 3] = lo
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = ijk * voxel_size + lo
    src = np.rint((xyz - aff[:3, 3]) / np.diag(aff[:3, :3])).astype(int)
    src = np.clip(src, 0, np.array(data.shape) - 1)
    inside = data[src[:, 0], src[:, 1], src[:, 2]]
    flat = np.ravel_multi_index(ijk[inside].T, shape)
    return flat.astype(np.int64), xyz[inside], dict(space=MNI_SPACE, volume_shape=[int(s) for s in shape],
                                                   affine=affine.tolist(), voxel_size_mm=float(voxel_size))


def _fsaverage5_candidates():
    datasets = _nilearn_datasets()

    mesh = datasets.load_fsaverage("fsaverage5")["pial"]
    xyz = np.vstack([mesh.parts["left"].coordinates, mesh.parts["right"].coordinates]).astype(float)
    if xyz.shape[0] != FSAVERAGE5_VERTICES:
        raise LayoutError(f"nilearn's fsaverage5 mesh has {xyz.shape[0]} vertices, expected {FSAVERAGE5_VERTICES}")
    return np.arange(xyz.shape[0], dtype=np.int64), xyz, dict(space="fsaverage5", n_vertices=FSAVERAGE5_VERTICES)


def _default_voxel_size(n_voxels: int) -> float:
    gm_volume_mm3 = 1.6e6  # grey matter of the template's mask, about
    s = (gm_volume_mm3 / (8.0 * max(n_voxels, 1))) ** (1 / 3)
    return float(np.clip(np.round(s), 2.0, 12.0))


def make_layout(kind: str, driver: np.ndarray, snr: np.ndarray, *, seed: int = 0,
                voxel_size: float | None = None) -> VoxelLayout:
    """Place voxels with the given ground truth on a template (module docstring).

    Parameters
    ----------
    kind : {"mni", "fsaverage5"}
    driver : (n_voxels,) str
        ``"noise"``, ``"wordrate"``, ``"embeddings"`` or ``"both"`` per voxel.
    snr : (n_voxels,) float
        Per-voxel SNR (0 for noise voxels).
    seed : int
        Breaks ties between equally scored positions.
    voxel_size : float, optional
        Grid spacing in mm for ``"mni"`` (default from the voxel count, 2-12 mm).

    Returns
    -------
    VoxelLayout
    """
    driver = np.asarray(driver).astype(str)
    snr = np.asarray(snr, float)
    n = driver.shape[0]
    if snr.shape != (n,):
        raise LayoutError(f"snr has shape {snr.shape}, expected ({n},)")
    if kind == "mni":
        size = voxel_size or _default_voxel_size(n)
        index, xyz, attrs = _mni_candidates(size)
        while voxel_size is None and index.size < 2 * n and size > 2:  # too coarse for this many voxels
            size -= 1.0
            index, xyz, attrs = _mni_candidates(size)
    elif kind == "fsaverage5":
        index, xyz, attrs = _fsaverage5_candidates()
    else:
        raise LayoutError(f"unknown voxel layout {kind!r}; choose one of {LAYOUTS} (or None)")
    if n > index.size:
        raise LayoutError(f"layout {kind!r} has {index.size} positions, fewer than the {n} voxels"
                          + (" (pass a smaller voxel_size)" if kind == "mni" else ""))
    rng = np.random.default_rng([seed, 7])
    names = list(CENTRES)
    centres = np.array([CENTRES[k][0] for k in names])
    prefs = np.array([CENTRES[k][1] for k in names])
    d2 = ((xyz[:, None, :] - centres[None]) ** 2).sum(-1)           # (candidate, centre)
    blob = np.exp(-d2 / (2 * BLOB_SIGMA_MM ** 2))
    score = blob.max(1) + 1e-9 * rng.random(index.size)
    chosen = np.argsort(-score, kind="stable")[:n]
    c_score = score[chosen]
    free = np.ones(n, bool)
    position = np.empty(n, np.int64)                                  # voxel -> position among `chosen`
    noise = np.flatnonzero(driver == "noise")
    order = np.argsort(c_score, kind="stable")                        # lowest score first
    position[noise] = order[:noise.size]
    free[order[:noise.size]] = False
    for d in _DRIVERS + tuple(sorted(set(driver) - set(_DRIVERS) - {"noise"})):
        members = np.flatnonzero(driver == d)
        if not members.size:
            continue
        cols = prefs == d
        pref = blob[chosen][:, cols].max(1) if cols.any() else np.zeros(n)
        pref = pref + 1e-3 * c_score
        cand = np.flatnonzero(free)
        best = cand[np.argsort(-pref[cand], kind="stable")[:members.size]]
        members = members[np.argsort(-snr[members], kind="stable")]    # strongest voxel nearest a centre
        position[members] = best
        free[best] = False
    where = chosen[position]
    near = d2[where].argmin(1)
    roi = np.where(np.sqrt(d2[where, near]) <= 2.5 * BLOB_SIGMA_MM, np.array(names)[near], "other")
    return VoxelLayout(kind=kind, mask_indices=index[where], roi=roi.astype(str), coordinates=xyz[where],
                       attrs=attrs)


def write_layout(assembly_path, layout: VoxelLayout) -> None:
    """Store a layout in an assembly's ``voxels`` group (``mask_indices``, ``roi``, attrs)."""
    import zarr

    from ..assembly.writer import _write_array

    root = zarr.open_group(str(assembly_path), mode="r+")
    vox = root["voxels"]
    n = int(vox["voxel"].shape[0])
    if layout.mask_indices.shape != (n,):
        raise LayoutError(f"{assembly_path}: layout has {layout.mask_indices.shape[0]} voxels, the assembly {n}")
    for name in ("mask_indices", "roi"):
        if name in vox:
            raise LayoutError(f"{assembly_path}: voxels/{name} already exists; not overwritten")
    _write_array(vox, "mask_indices", layout.mask_indices.astype(np.int64), ["voxel"])
    _write_array(vox, "roi", layout.roi.astype(str), ["voxel"])
    vox.attrs.update({**layout.attrs, "layout": f"synthetic ({layout.kind}), see scalenc.synthetic.layout"})
