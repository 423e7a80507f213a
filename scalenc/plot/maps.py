"""Per-voxel values drawn on the brain (own surface renderer on nilearn's meshes; nilearn for
volumes; pycortex for flatmaps).

Where a voxel sits is described by a :class:`BrainSpace`, read from an assembly's
``voxels`` Dataset (:meth:`BrainSpace.from_voxels`):

surface (``kind="surface"``)
    ``space`` is ``"fsaverage5"``, ``"fsaverage6"`` or ``"fsaverage"`` (attr ``space``, or
    inferred from a voxel count of 20,484 / 81,924 / 327,684 with no ``mask_indices``).
    Vertex order: left hemisphere then right (LITcoder's layout). ``mask_indices``, when
    present, is each voxel's vertex index; vertices without a voxel are drawn as
    background. Drawn on nilearn's fsaverage5 meshes (shipped with nilearn, nothing is
    downloaded). fsaverage6 / fsaverage data are drawn at fsaverage5 resolution: the
    fsaverage meshes are nested icosahedra, so the first 10,242 vertices of each
    hemisphere of fsaverage6 / fsaverage are the fsaverage5 vertices.

    The panels are rendered here, not through mplot3d: each view is an orthographic
    projection of the mesh (:func:`surface_projection`, nilearn's (elev, azim) for the
    named views), rasterised by a numpy z-buffer into the index of the face seen at each
    pixel; a map is then a colour lookup per face (nilearn's face colouring: the mean of
    the face's vertex values, the sulcal depth in grey where a vertex is NaN) shown with
    ``imshow``. Meshes (read from nilearn's GIFTI files without importing nilearn),
    projections and face-index images are cached per process (``functools.lru_cache``).
volume (``kind="volume"``)
    attrs ``volume_shape`` (3 ints) and ``affine`` (4 x 4, voxel -> mm) and
    ``mask_indices`` (flat C-order indices into ``volume_shape``, the axes of the NIfTI
    data array). In a standard space (``space`` containing ``"MNI"``; the default when no
    ``space`` is given) glass-brain and slice maps over nilearn's MNI152 template; in
    another space, slices without a template.

The BIDS/fMRIPrep readers record the same as one attribute, ``voxel_space``
(:attr:`scalenc.assembly.Assembly.voxel_space`): ``{"kind": "volume", "shape", "affine",
"space"}`` with ``mask_indices``, or ``{"kind": "surface", "mesh"}`` with the voxels'
``hemi`` and ``vertex`` (e.g. fsaverage6 GIFTI runs); :meth:`BrainSpace.from_voxels` reads
either form, and the report passes the assembly's ``voxel_space`` along.
mosaic (``kind="mosaic"``)
    subject-space data without an affine (e.g. LeBel hf5 files): ``volume_shape`` and
    ``mask_indices``, or a 3-D boolean mask (:func:`mask_from_nifti`), drawn as a mosaic
    of slices along the first axis (for pycortex-ordered (z, y, x) masks: axial slices).

:func:`flatmap` draws a pycortex flatmap when pycortex and a pycortex database with the
subject are installed (ds003020 ships ``derivative/pycortex-db``).

Surface and volume maps use a symmetric ``cold_hot`` scale (as LITcoder's), mosaics and
flatmaps ``RdBu_r`` (as pycortex); ``vmax`` is the 99th percentile of ``|value|`` unless
given; NaN values are drawn as background.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: Vertices (left + right) of the fsaverage surfaces.
SURFACE_VERTICES = {"fsaverage5": 20484, "fsaverage6": 81924, "fsaverage": 327684}
FSAVERAGE5_HEMI = 10242
DEFAULT_CMAP = "cold_hot"


class MapError(ValueError):
    """Values cannot be placed on the brain (lengths, indices or space don't match)."""


def _nilearn():
    try:
        import nilearn  # noqa: F401
        from nilearn import datasets, plotting
    except ImportError as e:
        raise ImportError("brain maps need nilearn: install scalenc[plot] (or scalenc[all])") from e
    return datasets, plotting


@dataclasses.dataclass(frozen=True)
class BrainSpace:
    """How voxels map onto a brain (module docstring).

    Attributes
    ----------
    kind : {"surface", "volume", "mosaic"}
    space : str
        E.g. ``"fsaverage5"``, ``"MNI152NLin2009cAsym"``, ``"subject"``.
    index : (n_voxels,) int64
        Vertex index (surface) or flat C-order index into ``volume_shape`` (volumes).
    volume_shape : tuple of 3 int, optional
    affine : (4, 4) float array, optional
    """

    kind: str
    space: str
    index: np.ndarray
    volume_shape: tuple[int, int, int] | None = None
    affine: np.ndarray | None = None

    @property
    def n_voxels(self) -> int:
        return int(self.index.shape[0])

    @classmethod
    def from_voxels(cls, voxels, n_voxels: int | None = None) -> BrainSpace | None:
        """Read the layout from an assembly's ``voxels`` Dataset (or a mapping with
        ``mask_indices`` and an ``attrs`` mapping); None when it says nothing about anatomy."""
        attrs = dict(getattr(voxels, "attrs", {}) or {})
        names = set(getattr(voxels, "variables", {}) or voxels)
        mask = np.asarray(voxels["mask_indices"], dtype=np.int64) if "mask_indices" in names else None
        if n_voxels is None:
            n_voxels = int(mask.shape[0]) if mask is not None else int(np.asarray(voxels["voxel"]).shape[0])
        vs = attrs.get("voxel_space")  # what the BIDS readers record (Assembly.voxel_space)
        if isinstance(vs, str):
            vs = json.loads(vs)
        if isinstance(vs, Mapping):
            if vs.get("kind") == "volume" and mask is not None and vs.get("shape") and vs.get("affine"):
                return cls("volume", str(vs.get("space") or "subject"), mask, tuple(int(x) for x in vs["shape"]),
                           np.asarray(vs["affine"], float).reshape(4, 4))
            mesh = str(vs.get("mesh") or "")
            if (vs.get("kind") == "surface" and mesh in SURFACE_VERTICES and {"hemi", "vertex"} <= names):
                right = np.array([str(h).upper().startswith("R") for h in np.asarray(voxels["hemi"]).tolist()])
                index = np.asarray(voxels["vertex"], dtype=np.int64) + right * (SURFACE_VERTICES[mesh] // 2)
                return cls("surface", mesh, index)
        space = str(attrs.get("space", "") or "")
        shape = attrs.get("volume_shape")
        affine = attrs.get("affine")
        if space.startswith("fsaverage") or (not space and shape is None and mask is None
                                            and n_voxels in SURFACE_VERTICES.values()):
            if not space:
                space = next(k for k, v in SURFACE_VERTICES.items() if v == n_voxels)
            return cls("surface", space, mask if mask is not None else np.arange(n_voxels, dtype=np.int64))
        if shape is not None and mask is not None:
            shape = tuple(int(s) for s in shape)
            if affine is not None:
                return cls("volume", space or "MNI152", mask, shape, np.asarray(affine, float).reshape(4, 4))
            return cls("mosaic", space or "subject", mask, shape)
        return None

    @classmethod
    def from_mask(cls, mask: np.ndarray, *, affine=None, space: str = "subject") -> BrainSpace:
        """Layout of voxels taken from a 3-D boolean mask in C order (``np.flatnonzero``)."""
        mask = np.asarray(mask, bool)
        if mask.ndim != 3:
            raise MapError(f"a voxel mask must be 3-D, got shape {mask.shape}")
        idx = np.flatnonzero(mask).astype(np.int64)
        if affine is None:
            return cls("mosaic", space, idx, tuple(mask.shape))
        return cls("volume", space, idx, tuple(mask.shape), np.asarray(affine, float).reshape(4, 4))

    def check(self, values: np.ndarray, what: str = "values") -> np.ndarray:
        values = np.asarray(values, float)
        if values.shape != (self.n_voxels,):
            raise MapError(f"{what} has shape {values.shape}, the brain layout has {self.n_voxels} voxels")
        return values

    def volume(self, values) -> np.ndarray:
        """Values as a 3-D array (NaN outside the voxels)."""
        if self.volume_shape is None:
            raise MapError(f"a {self.kind} layout has no volume")
        values = self.check(values)
        size = int(np.prod(self.volume_shape))
        if self.index.size and (self.index.min() < 0 or self.index.max() >= size):
            raise MapError(f"mask_indices out of range for volume_shape {self.volume_shape}")
        out = np.full(size, np.nan)
        out[self.index] = values
        return out.reshape(self.volume_shape)

    def vertices(self, values) -> np.ndarray:
        """Values on the fsaverage5 vertices (20,484; NaN where no voxel)."""
        if self.kind != "surface":
            raise MapError(f"a {self.kind} layout is not a surface")
        values = self.check(values)
        total = SURFACE_VERTICES.get(self.space)
        if total is None:
            raise MapError(f"unknown surface space {self.space!r}; known: {sorted(SURFACE_VERTICES)}")
        if self.index.size and (self.index.min() < 0 or self.index.max() >= total):
            raise MapError(f"vertex indices out of range for {self.space} ({total} vertices)")
        full = np.full(total, np.nan)
        full[self.index] = values
        half = total // 2
        return np.concatenate([full[:FSAVERAGE5_HEMI], full[half:half + FSAVERAGE5_HEMI]])


def color_limit(values, vmax: float | None = None) -> float:
    """Symmetric colour limit: ``vmax``, else the 99th percentile of ``|values|``."""
    if vmax is not None:
        return float(vmax)
    v = np.abs(np.asarray(values, float))
    v = v[np.isfinite(v)]
    return float(max(np.percentile(v, 99), 1e-6)) if v.size else 1.0


def _colorbar(fig, vmax: float, cmap: str, label: str | None, rect=(0.86, 0.15, 0.018, 0.7)):
    import matplotlib as mpl

    cax = fig.add_axes(list(rect))
    sm = mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(-vmax, vmax), cmap=_cmap(cmap))
    fig.colorbar(sm, cax=cax, label=label)
    return cax


def _pigtailed(base: str, name: str):
    """nilearn's "pigtailed" colour map (``nilearn.plotting.cm``): ``base`` reversed on [0, 0.5],
    then ``base`` on [0.5, 1] (``cold_hot`` from ``hot``), without importing nilearn.plotting."""
    import matplotlib as mpl

    seg = mpl.colormaps[base]._segmentdata

    def fill(c1, c2):
        return ([(0.5 * (1 - p), a, b) for (p, a, b) in reversed(seg[c1])]
                + [(0.5 * (1 + p), a, b) for (p, a, b) in seg[c2]])

    cdict = {"green": fill("green", "green"), "blue": fill("red", "blue"), "red": fill("blue", "red")}
    return mpl.colors.LinearSegmentedColormap(name, cdict, mpl.rcParams["image.lut"])


#: nilearn colour maps built here (the others come from nilearn.plotting.cm).
_PIGTAILED = {"cold_hot": "hot", "cold_white_hot": "hot_r"}


@functools.lru_cache(maxsize=16)
def _named_cmap(name: str):
    import matplotlib as mpl

    try:
        return mpl.colormaps[name]
    except KeyError:
        pass
    if name in _PIGTAILED:
        return _pigtailed(_PIGTAILED[name], name)
    if name.endswith("_r") and name[:-2] in _PIGTAILED:
        return _pigtailed(_PIGTAILED[name[:-2]], name[:-2]).reversed()
    from nilearn.plotting import cm  # registers cold_hot & co.

    return getattr(cm, name) if hasattr(cm, name) else mpl.colormaps[name]


def _cmap(name):
    if not isinstance(name, str):
        return name
    return _named_cmap(name)


# ---------------------------------------------------------------------------------- surface
#: (elev, azim) of each named view, as nilearn's matplotlib engine (mplot3d conventions).
SURFACE_VIEWS = {
    "left": {"lateral": (0, 180), "medial": (0, 0), "dorsal": (90, 0), "ventral": (270, 0),
             "anterior": (0, 90), "posterior": (0, 270)},
    "right": {"lateral": (0, 0), "medial": (0, 180), "dorsal": (90, 0), "ventral": (270, 0),
              "anterior": (0, 90), "posterior": (0, 270)},
}
#: nilearn's fsaverage5 file prefix of each mesh name.
_MESH_FILES = {"inflated": "infl", "pial": "pial", "white_matter": "white", "sphere": "sphere", "flat": "flat"}


_GIFTI_TYPES = {"NIFTI_TYPE_FLOAT32": "f4", "NIFTI_TYPE_FLOAT64": "f8", "NIFTI_TYPE_INT32": "i4",
                "NIFTI_TYPE_UINT8": "u1"}


def _read_gifti(path: str) -> list[np.ndarray]:
    """The data arrays of a (gzipped) GIFTI file with base64-encoded arrays, as nilearn ships them
    (a few milliseconds; importing nibabel for it takes ~0.2 s). Anything else: ValueError."""
    import base64
    import gzip
    import xml.etree.ElementTree as ET
    import zlib

    with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
        root = ET.parse(f).getroot()
    out = []
    for da in root.iter("DataArray"):
        a = da.attrib
        enc, dtype = a.get("Encoding"), _GIFTI_TYPES.get(a.get("DataType", ""))
        if enc not in ("GZipBase64Binary", "Base64Binary") or dtype is None or a.get("ExternalFileName"):
            raise ValueError(f"{path}: GIFTI array not read here ({enc}, {a.get('DataType')})")
        raw = base64.b64decode((da.findtext("Data") or "").strip())
        if enc == "GZipBase64Binary":
            raw = zlib.decompress(raw)
        order = "<" if a.get("Endian", "LittleEndian") == "LittleEndian" else ">"
        shape = tuple(int(a[f"Dim{i}"]) for i in range(int(a.get("Dimensionality", "1"))))
        arr = np.frombuffer(raw, dtype=order + dtype)
        if arr.size != int(np.prod(shape)):
            raise ValueError(f"{path}: GIFTI array of {arr.size} values, expected shape {shape}")
        fortran = a.get("ArrayIndexingOrder") == "ColumnMajorOrder"
        out.append(arr.reshape(shape, order="F" if fortran else "C"))
    return out


@functools.lru_cache(maxsize=8)
def _fsaverage5(mesh: str) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{hemi: (coords (10242, 3), faces (20480, 3), sulcal depth (10242,))}`` of nilearn's fsaverage5.

    Read from the files nilearn ships (``nilearn/datasets/data/fsaverage5``) without importing
    ``nilearn.datasets`` (a second of imports); through nibabel, then nilearn's loaders, when
    that fails (another nilearn version or file format).
    """
    if mesh not in _MESH_FILES:
        raise MapError(f"unknown fsaverage5 mesh {mesh!r}; known: {sorted(_MESH_FILES)}")
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise ImportError("brain maps need nilearn: install scalenc[plot] (or scalenc[all])")
    folder = os.path.join(os.path.dirname(spec.origin), "datasets", "data", "fsaverage5")
    out = {}
    try:
        for hemi in ("left", "right"):
            coords, faces = _read_gifti(os.path.join(folder, f"{_MESH_FILES[mesh]}_{hemi}.gii.gz"))
            (sulc,) = _read_gifti(os.path.join(folder, f"sulc_{hemi}.gii.gz"))
            out[hemi] = (coords, faces, sulc)
    except (OSError, ValueError, KeyError, SyntaxError) as e:  # ET.ParseError is a SyntaxError
        logger.debug("fsaverage5 files under %s not read directly (%s); using nibabel / nilearn", folder, e)
        try:
            import nibabel as nib

            for hemi in ("left", "right"):
                coords, faces = nib.load(os.path.join(folder, f"{_MESH_FILES[mesh]}_{hemi}.gii.gz")).agg_data()
                sulc = nib.load(os.path.join(folder, f"sulc_{hemi}.gii.gz")).agg_data()
                out[hemi] = (coords, faces, sulc)
        except (OSError, ValueError) as e2:
            logger.debug("nibabel could not read them either (%s); using nilearn's loaders", e2)
            datasets, _ = _nilearn()
            surf = datasets.load_fsaverage("fsaverage5")[mesh]
            sulc = datasets.load_fsaverage_data(mesh="fsaverage5", mesh_type=mesh, data_type="sulcal")
            out = {hemi: (surf.parts[hemi].coordinates, surf.parts[hemi].faces, sulc.data.parts[hemi])
                   for hemi in ("left", "right")}
    return {hemi: (np.asarray(c, np.float64), np.asarray(f, np.int64), np.asarray(b, np.float64).ravel())
            for hemi, (c, f, b) in out.items()}


def _view_angles(hemi: str, view) -> tuple[float, float]:
    if isinstance(view, str):
        try:
            return SURFACE_VIEWS[hemi][view]
        except KeyError:
            raise MapError(f"unknown surface view {view!r}; use one of {sorted(SURFACE_VIEWS['left'])} "
                           f"or (elev, azim)") from None
    elev, azim = view
    return float(elev), float(azim)


def surface_projection(hemi: str, view="lateral", mesh: str = "inflated") -> np.ndarray:
    """Where each fsaverage5 vertex of ``hemi`` lands in a ``view`` (orthographic camera).

    Returns
    -------
    (10242, 3) array
        Screen x (to the right), screen y (up) and depth (towards the viewer), in mm of the mesh
        centred on its mean (as nilearn centres it). The panels of :func:`surface_map` are
        drawn in these x/y coordinates: ``ax.transData`` maps them to pixels.
    """
    coords = _fsaverage5(mesh)[hemi][0]
    elev, azim = _view_angles(hemi, view)
    e = np.deg2rad((elev + 180.0) % 360.0 - 180.0)               # mplot3d's camera for (elev, azim)
    a = np.deg2rad(azim)
    w = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    up = np.array([0.0, 0.0, -1.0 if abs(e) > np.pi / 2 else 1.0])
    u = np.cross(up, w)
    u /= np.linalg.norm(u)
    v = np.cross(w, u)
    c = coords - coords.mean(axis=0)
    return np.stack([c @ u, c @ v, c @ w], axis=1)


@functools.lru_cache(maxsize=16)
def _closed(mesh: str, hemi: str) -> bool:
    """Whether the mesh is a closed surface (every edge in two faces): back faces can be culled."""
    faces = _fsaverage5(mesh)[hemi][1]
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, counts = np.unique(edges[:, 0] * (faces.max() + 1) + edges[:, 1], return_counts=True)
    return bool((counts == 2).all())


@functools.lru_cache(maxsize=64)
def _raster(mesh: str, hemi: str, view, ppmm: float, box: tuple[float, float, float, float]) -> np.ndarray:
    """The face seen at each pixel of ``box`` = (x0, x1, y0, y1) in :func:`surface_projection`
    coordinates, ``ppmm`` pixels per mm: (height, width) int array, -1 where no face.

    A z-buffer over pixel centres: each face's bounding-box pixels are tested with barycentric
    coordinates, the nearest face (interpolated depth) wins; on a closed mesh, faces turned away
    from the viewer are dropped first.
    """
    x0, x1, y0, y1 = box
    width, height = int(round((x1 - x0) * ppmm)), int(round((y1 - y0) * ppmm))
    faces = _fsaverage5(mesh)[hemi][1]
    proj = surface_projection(hemi, view, mesh)
    px, py = (proj[:, 0] - x0) * ppmm, (y1 - proj[:, 1]) * ppmm           # pixel units, row 0 at the top
    tx, ty, tz = px[faces], py[faces], proj[:, 2][faces]
    area = (tx[:, 1] - tx[:, 0]) * (ty[:, 2] - ty[:, 0]) - (tx[:, 2] - tx[:, 0]) * (ty[:, 1] - ty[:, 0])
    bx0 = np.maximum(np.ceil(tx.min(1) - 0.5), 0).astype(np.int64)
    bx1 = np.minimum(np.floor(tx.max(1) - 0.5), width - 1).astype(np.int64)
    by0 = np.maximum(np.ceil(ty.min(1) - 0.5), 0).astype(np.int64)
    by1 = np.minimum(np.floor(ty.max(1) - 0.5), height - 1).astype(np.int64)
    bw, bh = np.maximum(bx1 - bx0 + 1, 0), np.maximum(by1 - by0 + 1, 0)
    keep = (bw * bh > 0) & (area != 0)
    if _closed(mesh, hemi):  # front faces share the winding of the faces nearest to the viewer
        near = np.argsort(-tz.mean(1))[:64]
        keep &= area * np.sign(area[near].sum()) > 0
    fid = np.flatnonzero(keep)
    cnt = (bw * bh)[fid]
    f = np.repeat(fid, cnt)
    k = np.arange(f.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    cx, cy = bx0[f] + k % bw[f], by0[f] + k // bw[f]
    qx, qy = cx + 0.5, cy + 0.5
    X, Y, ar = tx[f], ty[f], area[f]
    l0 = ((X[:, 1] - qx) * (Y[:, 2] - qy) - (X[:, 2] - qx) * (Y[:, 1] - qy)) / ar
    l1 = ((X[:, 2] - qx) * (Y[:, 0] - qy) - (X[:, 0] - qx) * (Y[:, 2] - qy)) / ar
    l2 = 1.0 - l0 - l1
    eps = -1e-9                                                          # pixel centres on an edge count
    inside = (l0 >= eps) & (l1 >= eps) & (l2 >= eps)
    Z = tz[f[inside]]
    depth = l0[inside] * Z[:, 0] + l1[inside] * Z[:, 1] + l2[inside] * Z[:, 2]
    pix = (cy * width + cx)[inside]
    f = f[inside]
    order = np.lexsort((depth, pix))                                     # per pixel, nearest last
    last = np.r_[pix[order][1:] != pix[order][:-1], True]
    out = np.full(width * height, -1, np.int32)
    out[pix[order][last]] = f[order][last]
    out = out.reshape(height, width)
    out.setflags(write=False)
    return out


def _face_colours(values: np.ndarray, faces: np.ndarray, sulc: np.ndarray, cmap, vmax: float) -> np.ndarray:
    """RGBA (uint8) per face, plus a transparent last row for "no face" (index -1), as nilearn's
    matplotlib engine colours faces: the mean of the face's vertex values through ``cmap`` over
    [-vmax, vmax]; faces with a NaN vertex show the sulcal depth (face mean, rescaled to [0, 1]
    over the hemisphere) in ``gray_r``."""
    import matplotlib as mpl

    bg = sulc[faces].mean(axis=1)
    lo, hi = np.nanmin(bg), np.nanmax(bg)
    if lo < 0 or hi > 1:
        bg = (bg - lo) / (hi - lo if hi > lo else 1.0)
    rgba = mpl.colormaps["gray_r"](bg)
    fv = values[faces].mean(axis=1)
    ok = np.isfinite(fv)
    rgba[ok] = cmap((fv[ok] + vmax) / (2.0 * vmax))
    out = np.zeros((faces.shape[0] + 1, 4), np.uint8)
    out[:-1] = np.clip(np.round(rgba * 255.0), 0, 255)
    return out


def surface_map(values, space: BrainSpace | None = None, *, title: str | None = None, vmax: float | None = None,
                cmap: str = DEFAULT_CMAP, mesh: str = "inflated", views: Sequence[str] = ("lateral", "medial"),
                label: str | None = None, figsize=(6.0, 4.6), colorbar: bool = True):
    """Draw per-vertex values on fsaverage5: rows = views, columns = left, right.

    Each panel is an image rendered here (orthographic projection, z-buffer over the mesh's
    faces; :func:`surface_projection`) and shown with ``imshow``, coloured as nilearn's
    ``plot_surf_stat_map`` colours faces: the mean of a face's vertex values, NaN (no voxel)
    as the sulcal depth in grey. The meshes, projections and face images are cached per
    process, so further maps cost a colour lookup. Panels are rasterised at the figure's dpi
    (``rcParams["figure.dpi"]`` when the figure is made): for a sharper file at a higher
    ``savefig`` dpi, draw under ``matplotlib.rc_context({"figure.dpi": dpi})``.

    Parameters
    ----------
    values : (n_voxels,) array
        One value per voxel of ``space`` (default: the 20,484 fsaverage5 vertices in order).
    space : BrainSpace, optional
        A surface layout; default fsaverage5, vertex i = value i.
    mesh : {"inflated", "pial", "white_matter", "sphere"}
        nilearn's fsaverage5 mesh to draw on (sulcal depth as background).
    views : sequence of str or (elev, azim)
        "lateral", "medial", "dorsal", "ventral", "anterior", "posterior" (nilearn's views).

    Returns
    -------
    matplotlib.figure.Figure
        Axes in order (view, hemisphere); each carries ``scalenc_panel = (hemi, view)``; its data
        coordinates are the :func:`surface_projection` x/y of that view (mm).
    """
    import matplotlib.pyplot as plt

    values = np.asarray(values, float)
    if space is None:
        if values.shape[0] not in SURFACE_VERTICES.values():
            raise MapError(f"{values.shape[0]} values: not an fsaverage surface (known sizes "
                           f"{sorted(SURFACE_VERTICES.values())}); pass a BrainSpace")
        space = BrainSpace.from_voxels({"voxel": np.arange(values.shape[0])})
    full = space.vertices(values)
    surf = _fsaverage5(mesh)
    vm = color_limit(values, vmax)
    cm = _cmap(cmap)
    views = [v if isinstance(v, str) else tuple(v) for v in views]
    panels = [(view, hemi) for view in views for hemi in ("left", "right")]
    bounds = {}
    for view, hemi in panels:
        p = surface_projection(hemi, view, mesh)
        bounds[hemi, view] = (p[:, 0].min(), p[:, 0].max(), p[:, 1].min(), p[:, 1].max())
    # one scale for all panels: each panel's box is the largest extent, centred on its hemisphere
    span_x = max(b[1] - b[0] for b in bounds.values()) * 1.06
    span_y = max(b[3] - b[2] for b in bounds.values()) * 1.06
    fig = plt.figure(figsize=figsize)
    n_rows = len(views)
    right, top = (0.84 if colorbar else 1.0), (0.92 if title else 1.0)
    fig.subplots_adjust(left=0, right=right, bottom=0, top=top, wspace=0, hspace=0)
    cell_w, cell_h = figsize[0] * fig.dpi * right / 2, figsize[1] * fig.dpi * top / n_rows
    ppmm = min(cell_w / span_x, cell_h / span_y)
    ppmm = float(np.ceil(ppmm * 4) / 4)                            # a few sizes, so that the cache hits
    colours = {}
    for r, view in enumerate(views):
        for c, hemi in enumerate(("left", "right")):
            ax = fig.add_subplot(n_rows, 2, 2 * r + c + 1)
            b = bounds[hemi, view]
            xc, yc = (b[0] + b[1]) / 2, (b[2] + b[3]) / 2
            # the box on a whole-pixel grid, so that the cached raster is reused for any values
            w, h = np.ceil(span_x * ppmm) / ppmm, np.ceil(span_y * ppmm) / ppmm
            box = (round(xc - w / 2, 6), round(xc - w / 2, 6) + w, round(yc - h / 2, 6), round(yc - h / 2, 6) + h)
            idx = _raster(mesh, hemi, view, ppmm, box)
            if hemi not in colours:
                _, faces, sulc = surf[hemi]
                data = full[:FSAVERAGE5_HEMI] if hemi == "left" else full[FSAVERAGE5_HEMI:]
                colours[hemi] = _face_colours(data, faces, sulc, cm, vm)
            ax.imshow(colours[hemi][idx], extent=box, origin="upper", interpolation="antialiased",
                      aspect="equal")
            ax.set_xlim(box[0], box[1])
            ax.set_ylim(box[2], box[3])
            ax.set_axis_off()
            ax.scalenc_panel = (hemi, view)
            if r == 0:  # which hemisphere each column shows
                ax.text(0.5, 1.0, "L" if hemi == "left" else "R", transform=ax.transAxes, ha="center", va="top",
                        fontsize=10, fontweight="bold", color="0.25")
    if colorbar:
        _colorbar(fig, vm, cmap, label)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _nifti(values, space: BrainSpace):
    import nibabel as nib

    vol = space.volume(values)
    return nib.Nifti1Image(np.nan_to_num(vol, nan=0.0).astype(np.float32), space.affine)


def slice_coords(values, space: BrainSpace, n_slices: int = 6) -> list[float]:
    """Axial cut coordinates (mm) for ``n_slices`` slices: spread over the z extent of the
    strongest ``|values|`` (the top decile of the non-zero finite ones, at least ``n_slices``
    voxels), or over the layout's own voxels when no value is (e.g. no significant voxel), never
    where nilearn would put the cuts of an empty image (the cerebellum)."""
    v = np.abs(space.check(values))
    v[~np.isfinite(v)] = 0
    ijk = np.stack(np.unravel_index(space.index, space.volume_shape), axis=1).astype(float)
    z = (ijk @ space.affine[:3, :3].T + space.affine[:3, 3])[:, 2]
    if (v > 0).any():
        strong = v >= np.quantile(v[v > 0], 0.9)
        if strong.sum() < n_slices:
            strong = v >= np.sort(v)[-min(n_slices, int((v > 0).sum()))]
        lo, hi = np.quantile(z[strong], [0.0, 1.0])
    elif z.size:
        lo, hi = np.quantile(z, [0.1, 0.9])
    else:
        return [0.0] * n_slices
    step = abs(float(np.linalg.det(space.affine[:3, :3]))) ** (1 / 3) or 1.0
    if hi - lo < step * (n_slices - 1):  # a thin band: neighbouring slices around it
        mid = (lo + hi) / 2
        lo, hi = mid - step * (n_slices - 1) / 2, mid + step * (n_slices - 1) / 2
    return [float(c) for c in np.linspace(lo, hi, n_slices)]


def volume_map(values, space: BrainSpace, *, kinds: Sequence[str] = ("glass", "slices"), title: str | None = None,
               vmax: float | None = None, cmap: str = DEFAULT_CMAP, label: str | None = None, n_slices: int = 6,
               glass_mode: str = "ortho", figsize=(7.0, 2.6), cut_from=None):
    """Glass-brain (max projection, signed) and axial slice maps of volume data.

    In an MNI space the slices lie over nilearn's MNI152 template; in another space over
    nothing (and no glass brain). Voxels outside the layout (and values exactly 0) are not
    coloured. ``glass_mode`` is nilearn's ``display_mode`` of the glass brain ("ortho",
    "z", "lyrz", ...); ``n_slices`` axial slices, cut where ``cut_from`` (default ``values``;
    e.g. all voxels' r for a map of the significant ones) is strongest (:func:`slice_coords`).

    Returns
    -------
    matplotlib.figure.Figure
        One axes row per entry of ``kinds``; the axes carry ``scalenc_panel = kind``.
    """
    import matplotlib.pyplot as plt

    _, plotting = _nilearn()
    if space.kind != "volume":
        raise MapError(f"a {space.kind} layout has no affine: use mosaic() for subject-space volumes")
    values = space.check(values)
    img = _nifti(values, space)
    vm = color_limit(values, vmax)
    standard = "mni" in space.space.lower()
    fig = plt.figure(figsize=(figsize[0], figsize[1] * len(kinds)))
    h = 1.0 / len(kinds)
    top = 0.92 if title else 1.0
    for i, kind in enumerate(kinds):
        ax = fig.add_axes([0.0, top - (i + 1) * h * top, 0.84, h * top])
        ax.scalenc_panel = kind
        common = dict(axes=ax, figure=fig, cmap=_cmap(cmap), vmin=-vm, vmax=vm, colorbar=False,
                      symmetric_cbar=True, threshold=1e-9, annotate=True)
        if kind not in ("glass", "slices"):
            raise MapError(f"unknown volume map kind {kind!r}; use 'glass' or 'slices'")
        if kind == "glass" and not standard:
            logger.info("glass-brain map skipped: space %r is not a standard space", space.space)
            continue
        with warnings.catch_warnings():  # coarse or sparse grids: nilearn says so on every map
            warnings.filterwarnings("ignore", "Too many cuts requested", UserWarning)
            warnings.filterwarnings("ignore", "empty mask", UserWarning)
            if kind == "glass":
                plotting.plot_glass_brain(img, display_mode=glass_mode, plot_abs=False, black_bg=False, **common)
            else:
                kw = {} if standard else {"bg_img": None}
                cuts = slice_coords(values if cut_from is None else cut_from, space, n_slices)
                plotting.plot_stat_map(img, display_mode="z", cut_coords=cuts, draw_cross=False, **kw, **common)
    _colorbar(fig, vm, cmap, label, rect=(0.86, 0.1, 0.018, 0.75 * top))
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def mosaic(values, space: BrainSpace | None = None, *, mask=None, title: str | None = None, vmax: float | None = None,
           cmap: str = "RdBu_r", label: str | None = None, n_cols: int | None = None, tile_size: float = 1.1):
    """Mosaic of all slices (first volume axis) of subject-space data.

    Parameters
    ----------
    values : (n_voxels,) array
    space : BrainSpace, optional
        A mosaic (or volume) layout; or give ``mask``.
    mask : (nz, ny, nx) bool array, optional
        Voxel ``i`` is the ``i``-th True element in C order (LeBel / pycortex order).
    cmap : str
        Default ``RdBu_r`` (white at 0, as pycortex) so that strong values stand out from
        the grey out-of-mask background.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per slice holding non-empty voxels (attribute ``scalenc_panel = slice index``).
    """
    import matplotlib.pyplot as plt

    if space is None:
        if mask is None:
            raise MapError("mosaic needs a layout or a mask")
        space = BrainSpace.from_mask(mask)
    values = space.check(values)
    vol = space.volume(values)
    keep = [k for k in range(vol.shape[0]) if np.isfinite(vol[k]).any()]
    if not keep:
        raise MapError("no voxel to draw")
    n_cols = n_cols or int(np.ceil(np.sqrt(len(keep) * 1.5)))
    n_rows = int(np.ceil(len(keep) / n_cols))
    vm = color_limit(values, vmax)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(tile_size * n_cols + 0.8, tile_size * n_rows + 0.4),
                             squeeze=False)
    cm = _cmap(cmap).with_extremes(bad="0.85")
    for ax in axes.ravel():
        ax.axis("off")
    for ax, k in zip(axes.ravel(), keep):
        ax.imshow(np.ma.masked_invalid(vol[k]), cmap=cm, vmin=-vm, vmax=vm, origin="lower", interpolation="nearest")
        ax.scalenc_panel = k
    fig.subplots_adjust(left=0.01, right=0.84, bottom=0.01, top=0.92 if title else 0.99, wspace=0.02, hspace=0.02)
    _colorbar(fig, vm, cmap, label, rect=(0.86, 0.15, 0.02, 0.7))
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def mask_from_nifti(path: str | os.PathLike, *, pycortex_order: bool = True) -> np.ndarray:
    """Read a 3-D mask NIfTI (e.g. ``pycortex-db/UTS03/transforms/UTS03_auto/mask_thick.nii.gz``).

    ``pycortex_order=True`` returns the array transposed to (z, y, x), the order in which
    pycortex (and LeBel's hf5 files) enumerate voxels; else the file's own axes.
    """
    import nibabel as nib

    try:
        data = np.asarray(nib.load(str(path)).dataobj)
    except Exception as e:  # noqa: BLE001 - nibabel raises several types
        raise MapError(f"{path}: cannot read mask ({e})") from e
    if data.ndim != 3:
        raise MapError(f"{path}: mask has shape {data.shape}, expected 3-D")
    mask = data > 0
    return mask.T if pycortex_order else mask


def flatmap(values, subject: str, xfmname: str, *, mask: str | np.ndarray = "thick", title: str | None = None,
            vmax: float | None = None, cmap: str = "RdBu_r", with_curvature: bool = True):
    """pycortex flatmap of subject-space voxel values.

    Parameters
    ----------
    values : (n_voxels,) array
        One value per voxel of the pycortex mask (e.g. LeBel's responses are in the order of
        ``cortex.db.get_mask(subject, xfmname, "thick")``).
    subject, xfmname : str
        pycortex subject and transform (e.g. ``"UTS03"``, ``"UTS03_auto"``; the sample
        subject ``"S1"`` with ``"fullhead"``).
    mask : str or bool array
        pycortex mask type or an explicit (z, y, x) mask.

    Returns
    -------
    matplotlib.figure.Figure
    """
    try:
        import cortex
    except ImportError as e:
        raise ImportError("flatmaps need pycortex (pip install pycortex) and a pycortex database "
                          "with the subject (ds003020 ships derivative/pycortex-db)") from e
    if subject not in cortex.db.subjects:
        raise MapError(f"pycortex subject {subject!r} not in the database at {cortex.database.default_filestore}")
    m = cortex.db.get_mask(subject, xfmname, mask) if isinstance(mask, str) else np.asarray(mask, bool)
    values = np.asarray(values, float)
    if values.shape != (int(m.sum()),):
        raise MapError(f"values has shape {values.shape}; the {subject}/{xfmname} mask has {int(m.sum())} voxels")
    vm = color_limit(values, vmax)
    vol = cortex.Volume(values, subject, xfmname, mask=m, vmin=-vm, vmax=vm, cmap=cmap)
    fig = cortex.quickflat.make_figure(vol, with_rois=False, with_labels=False, with_sulci=False,
                                       with_curvature=with_curvature, with_colorbar=True)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def brain_map(values, space: BrainSpace, **kwargs):
    """Draw ``values`` the way ``space`` calls for (surface / volume / mosaic)."""
    if space.kind == "surface":
        return surface_map(values, space, **kwargs)
    if space.kind == "volume":
        return volume_map(values, space, **kwargs)
    if space.kind == "mosaic":
        return mosaic(values, space, **kwargs)
    raise MapError(f"unknown layout kind {space.kind!r}")


def significant_values(r, significant) -> np.ndarray:
    """``r`` where ``significant``, NaN elsewhere (drawn as background)."""
    r = np.asarray(r, float)
    return np.where(np.asarray(significant, bool), r, np.nan)


def split_maps(ds, variables: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Per-space split scores found in a results Dataset: ``{"<var> <space>": (voxel,) array}``.

    A split variable has dims (<space dim>, voxel) with a space dim other than ``feature``
    (e.g. ``r2_split`` with dims (feature_space, voxel)).
    """
    out: dict[str, np.ndarray] = {}
    names = variables if variables is not None else [k for k in ds.data_vars if "split" in str(k)]
    for name in names:
        da = ds[name]
        if da.ndim != 2 or "voxel" not in da.dims:
            continue
        other = next(d for d in da.dims if d != "voxel")
        if other == "feature":
            continue
        labels = da[other].values if other in da.coords else np.arange(da.sizes[other])
        for i, lab in enumerate(labels):
            out[f"{name} {lab}"] = np.asarray(da.isel({other: i}).values, float)
    return out


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 100) -> str:
    """Save a figure atomically (temporary file, then rename) and close it."""
    import matplotlib.pyplot as plt

    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(path) or ".", "." + os.path.basename(path) + ".tmp")
    try:
        fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
        # zlib level 1: a third of the default's encoding time for ~15% larger files
        fig.savefig(tmp, dpi=dpi, format=fmt, **({"pil_kwargs": {"compress_level": 1}} if fmt == "png" else {}))
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path

