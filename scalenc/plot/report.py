"""The run report: summary panels, brain maps and ROI summaries of a saved run.

:func:`report` reads a run folder through :func:`scalenc.results.load` and writes, in it:

``report.png``
    top row: histogram of test r (significant voxels highlighted); r against the noise
    ceiling, titled with the ceiling's source (ground truth or test repeats); median r per
    layer on an axis that starts at 0 with the median ceiling drawn (runs with several
    layers); median per ROI (when the voxels have ``roi`` labels). Below: the brain maps.
    The title names the run (and the layer only when there are several).
``maps/<name>.png``
    brain maps of the best layer (highest median r): r, r of significant voxels, and each
    feature space's split score (results variables with a ``split`` in their name and
    dims (space, voxel)), when the voxels' layout is known (:class:`BrainSpace`).
``roi_summary.csv``
    median r (and split scores) per ROI, when there are ROI labels.
``report.html``
    one self-contained interactive page (:mod:`scalenc.plot.interactive`): the maps of
    ``export/`` on the brain with a selector, a threshold slider and hover values, median r per
    layer, the ROI table, summary numbers, configuration and timings, ``report.png`` inlined.
``export/``
    every map as data (NIfTI, GIFTI per hemisphere, or .npy without a layout) with JSON
    sidecars, BIDS-derivatives names (:mod:`scalenc.plot.export`).

Only the documented variables of ``results.zarr`` (:data:`RESULT_VARIABLES`) are read.

Subject-space runs without a layout get a slice mosaic when a mask is given, and pycortex
flatmaps when a pycortex subject is given (arguments of :func:`report`, or the run
configuration's ``[plot]`` table: ``mask``, ``pycortex_subject``, ``pycortex_xfm``,
``pycortex_mask``).

The voxels' layout and ROI labels are read from the results' root coordinates/attrs
(``mask_indices``, ``roi``, attrs ``space``, ``volume_shape``, ``affine``) when the run
saved a layout (attr ``space`` or ``volume_shape``), else from the assembly named in the
run's configuration (``assembly``), matched on the ``voxel`` coordinate, else from
whatever the root holds (e.g. only ``roi``, or 20,484 voxels read as fsaverage5).
"""
from __future__ import annotations

import gc
import html
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .export import export_maps, run_maps
from .maps import BrainSpace, brain_map, flatmap, mask_from_nifti, save_figure, significant_values, split_maps
from .roi import as_labels, plot_roi_summary, roi_summary

logger = logging.getLogger(__name__)


#: The per-voxel variables of ``results.zarr`` that the report reads (ARCHITECTURE.md, "A per-voxel
#: result"); nothing else of a run is read.
RESULT_VARIABLES = ("r", "r2", "alpha", "p", "q", "significant", "r_fold", "weights", "gamma", "r2_split",
                    "r_split", "noise_ceiling")


def _var(ds, name):
    """A documented results variable as a numpy array, or None when the run did not save it."""
    if name not in RESULT_VARIABLES:
        raise KeyError(f"{name!r} is not a results variable; the contract has {RESULT_VARIABLES}")
    return np.asarray(ds[name].values) if ds is not None and name in ds.variables else None


class RunSummary:
    """What the report needs from a saved run, read through :func:`scalenc.results.load` only
    (the documented variables :data:`RESULT_VARIABLES`, ``metrics.json``, ``config.toml``)."""

    def __init__(self, run_dir: str | os.PathLike):
        from .. import results as results_mod

        self.path = Path(run_dir)
        self.res = results_mod.load(self.path)
        self.config: dict[str, Any] = dict(self.res.config or {})
        self.metrics: dict[str, Any] = dict(self.res.metrics or {})
        self.run_name = str(self.config.get("run_name") or self.path.name)
        self.layers = list(self.res.layers)
        self.root = self.res.dataset                        # one Dataset over (layer, voxel)
        if "r" not in self.root.variables:
            raise KeyError(f"{self.path}/results.zarr has no per-voxel 'r'; variables: {list(self.root.data_vars)}")
        self.data = {lay: self.res.layer(lay) for lay in self.layers}
        r_all = np.asarray(self.root["r"].transpose("layer", "voxel").values, float)
        self.r = {lay: r_all[i] for i, lay in enumerate(self.layers)}
        self.best = max(self.layers, key=lambda lay: _nanmedian(self.r[lay])) if self.layers else None
        nc = self.res.noise_ceiling
        self.ceiling = None if nc is None else np.asarray(nc, float)
        self.ceiling_source = self._ceiling_source()
        self.subject = str(self.config.get("subject") or self.root.attrs.get("subject") or "")

    def _ceiling_source(self) -> str | None:
        layer_metrics = self.metrics.get("layers", {}) if isinstance(self.metrics.get("layers"), dict) else {}
        for lay in [self.best, *self.layers]:
            m = layer_metrics.get(lay, {})
            if isinstance(m, dict) and m.get("noise_ceiling_source"):
                return str(m["noise_ceiling_source"])
        for attrs in (self.root.attrs, self.root["noise_ceiling"].attrs if self.ceiling is not None else {}):
            if attrs.get("noise_ceiling_source"):
                return str(attrs["noise_ceiling_source"])
        return None

    def voxels(self):
        """The voxels' coordinates/attrs (results root, else the run's assembly), or None."""
        n = self.r[self.best].shape[0] if self.best is not None else 0
        root = self.root
        if root is not None and ("space" in root.attrs or "volume_shape" in root.attrs):
            return root                                   # the run saved its layout
        path = self.config.get("assembly")
        if not path or not Path(str(path)).exists():
            return root
        try:
            from ..assembly import Assembly

            asm = Assembly(str(path))
            self.subject = self.subject or asm.subject
            vox = asm.voxels
            if asm.voxel_space is not None and "voxel_space" not in vox.attrs:
                vox = vox.assign_attrs(voxel_space=asm.voxel_space)
            if root is not None and "voxel" in root.variables and "voxel" in vox.variables:
                vox = vox.sel(voxel=np.asarray(root["voxel"].values))
            if vox.sizes.get("voxel") != n:
                logger.info("report: assembly %s has %s voxels, the results %d; no maps", path,
                            vox.sizes.get("voxel"), n)
                return root
            return vox
        except Exception as e:  # noqa: BLE001 - the report must not fail on a moved assembly
            logger.info("report: cannot read the voxels of %s (%s); no maps", path, e)
            return root

    def layer_label(self, layer) -> str:
        return f"layer {layer}" if len(self.layers) > 1 else ""


def _splits(ds) -> dict[str, np.ndarray]:
    """Each feature space's split scores (``r2_split``, ``r_split``): ``{"<var> <space>": values}``."""
    return split_maps(ds, [v for v in ("r2_split", "r_split") if v in ds.variables])


def _nanmedian(a) -> float:
    a = np.asarray(a, float)
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else float("nan")


def summary_panels(s: RunSummary, fig, gs_row=None, roi_table=None) -> dict[str, Any]:
    """Draw the summary row into ``fig`` (a gridspec cell, default the whole figure);
    return the axes by name: ``hist``, ``ceiling``, ``layers``, ``roi`` (those drawn)."""
    if gs_row is None:
        gs_row = fig.add_gridspec(1, 1)[0]
    best, r = s.best, s.r[s.best]
    sig = _var(s.data[best], "significant")
    panels = ["hist"] + (["ceiling"] if s.ceiling is not None else []) + (["layers"] if len(s.layers) > 1 else []) \
        + (["roi"] if roi_table is not None else [])
    sub = gs_row.subgridspec(1, len(panels), wspace=0.35)
    axes = {name: fig.add_subplot(sub[0, i]) for i, name in enumerate(panels)}
    ax = axes["hist"]
    finite = np.isfinite(r)
    bins = np.histogram_bin_edges(r[finite], bins=50) if finite.any() else 10
    if sig is not None and sig.shape == r.shape:
        sig = sig.astype(bool)
        ax.hist([r[finite & sig], r[finite & ~sig]], bins=bins, stacked=True, color=["C3", "0.6"],
                label=[f"significant ({int((finite & sig).sum())})", "not significant"])
    else:
        ax.hist(r[finite], bins=bins, color="C0")
    med = _nanmedian(r)
    ax.axvline(med, color="k", ls="--", label=f"median {med:.3f}")
    lab = s.layer_label(best)
    ax.set(xlabel="test r", ylabel="voxels", title=f"test r{' (' + lab + ')' if lab else ''}")
    ax.legend(fontsize=7)
    if "ceiling" in axes:
        ax = axes["ceiling"]
        src = s.ceiling_source or "source not recorded"
        ax.scatter(s.ceiling, r, s=3, alpha=0.5)
        lo = min(0.0, np.nanmin(r), np.nanmin(s.ceiling))
        ax.plot([lo, 1], [lo, 1], "k--", lw=1)
        ax.set(xlabel=f"noise ceiling r ({src})", ylabel="test r", title=f"r vs ceiling ({src})")
    if "layers" in axes:
        ax = axes["layers"]
        meds = [_nanmedian(s.r[lay]) for lay in s.layers]
        x = np.arange(len(s.layers))
        ax.plot(x, meds, "o-", label="median r")
        top = np.nanmax(meds)
        if s.ceiling is not None:
            c = _nanmedian(s.ceiling)
            ax.axhline(c, color="C3", ls="--", label=f"median ceiling {c:.3f} ({s.ceiling_source or 'source?'})")
            top = max(top, c)
        bottom = min(0.0, np.nanmin(meds))
        ax.set_ylim(bottom, (top if np.isfinite(top) and top > 0 else 1.0) * 1.15)
        ax.set_xticks(x, s.layers, fontsize=7)
        ax.set(xlabel="layer", ylabel="median r", title="median r per layer")
        ax.legend(fontsize=7)
    if "roi" in axes:
        plot_roi_summary(roi_table, ax=axes["roi"], title="median per ROI")
    return axes


def headline(s: RunSummary) -> str:
    """The report's title: run name, voxels, median r (best layer when several), ceiling and its source."""
    lab = s.layer_label(s.best)
    head = f"{s.run_name}: {s.r[s.best].shape[0]} voxels, median r {_nanmedian(s.r[s.best]):.3f}"
    if lab:
        head += f" (best: {lab} of {len(s.layers)})"
    if s.ceiling is not None:
        head += f"; median ceiling {_nanmedian(s.ceiling):.3f} ({s.ceiling_source or 'source not recorded'})"
    return head


def _draw_maps(s: RunSummary, draw, out_dir: Path, dpi: int, prefix: str = "") -> list[tuple[str, Path]]:
    """Draw r, significant r and split maps with ``draw(values, title=, label=, vmax=) -> Figure``."""
    ds = s.data[s.best]
    r = s.r[s.best]
    lab = s.layer_label(s.best)
    suffix = f" ({lab})" if lab else ""
    todo = [("r", f"test r{suffix}", r, "r")]
    sig = _var(ds, "significant")
    if sig is not None and sig.shape == r.shape:
        todo.append(("significant", f"test r, significant voxels ({int(sig.astype(bool).sum())}){suffix}",
                     significant_values(r, sig), "r"))
    splits = _splits(ds)
    split_vmax = {}
    for name, v in splits.items():  # one colour scale per split variable, shared by its spaces
        var = name.split(" ", 1)[0]
        split_vmax[var] = max(split_vmax.get(var, 0.0), float(np.nanpercentile(np.abs(v), 99)) if np.isfinite(v).any()
                              else 0.0)
    for name, v in splits.items():
        var, space_label = name.split(" ", 1)
        todo.append((f"{var}_{space_label}", f"{var}: {space_label}{suffix}", v, var))
    out_dir.mkdir(exist_ok=True)
    written = []
    for key, title, values, label in todo:
        vmax = split_vmax.get(label) or None
        if not np.isfinite(np.asarray(values, float)).any():       # e.g. no significant voxel
            logger.info("report: map %r has no finite value; not drawn", title)
            continue
        fig = draw(values, title=title, label=label, vmax=vmax)
        path = out_dir / f"{prefix}{_safe(key)}.png"
        save_figure(fig, path, dpi=dpi)
        written.append((title, path))
    return written


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _roi_table(s: RunSummary, vox) -> Any:
    if vox is None or "roi" not in getattr(vox, "variables", {}):
        return None
    roi = as_labels(vox["roi"].values)
    r = s.r[s.best]
    if roi.shape != r.shape:
        return None
    values = {"r": r, **_splits(s.data[s.best])}
    return roi_summary(values, roi)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def report(run_dir: str | os.PathLike, *, maps: bool = True, html_page: bool = True, dpi: int = 100,
           mask=None, pycortex: tuple[str, str] | None = None, pycortex_mask: str = "thick",
           export: bool = True) -> Path:
    """Draw the report of a saved run (module docstring); return the path of ``report.png``.

    Parameters
    ----------
    run_dir : path-like
        A run folder written by :func:`scalenc.results.save`.
    maps : bool
        Draw brain maps when the voxels' layout is known (needs nilearn).
    html_page : bool
        Also write ``report.html`` (interactive, :mod:`scalenc.plot.interactive`, when plotly is
        installed; else a static page of the PNGs).
    export : bool
        Also write the maps as NIfTI / GIFTI / .npy with JSON sidecars under ``export/``
        (:mod:`scalenc.plot.export`).
    dpi : int
    mask : (z, y, x) bool array or path to a mask NIfTI, optional
        For subject-space voxels without a layout (LeBel hf5): voxel ``i`` is the ``i``-th
        voxel of the mask in C order (a NIfTI is read in pycortex order,
        :func:`scalenc.plot.mask_from_nifti`); drawn as a mosaic. Default: the run
        configuration's ``[plot] mask``.
    pycortex : (subject, xfmname), optional
        Also draw pycortex flatmaps (``maps/flat_*.png``) when pycortex and the subject are
        installed. Default: the configuration's ``[plot] pycortex_subject`` and
        ``pycortex_xfm``; ``pycortex_mask`` is the pycortex mask type.
    """
    import dask

    # The report allocates many small matplotlib objects; in a process holding a large heap (a
    # trainer's, after a fit) the cyclic collector's full passes would cost more than the drawing.
    # Its reads are a few small per-voxel arrays: read in this thread, not through a thread pool
    # or a distributed client that the run may hold.
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        with dask.config.set(scheduler="synchronous"):
            return _report(run_dir, maps=maps, html_page=html_page, dpi=dpi, mask=mask, pycortex=pycortex,
                           pycortex_mask=pycortex_mask, export=export)
    finally:
        if gc_enabled:
            gc.enable()


def _report(run_dir, *, maps, html_page, dpi, mask, pycortex, pycortex_mask, export=True) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    s = RunSummary(run_dir)
    if s.best is None:
        raise ValueError(f"{s.path}: the results hold no layer")
    vox = s.voxels()
    space = None
    if vox is not None:
        try:
            space = BrainSpace.from_voxels(vox, n_voxels=s.r[s.best].shape[0])
        except Exception as e:  # noqa: BLE001
            logger.info("report: voxel layout not usable (%s); no maps", e)
    opts = s.config.get("plot", {}) if isinstance(s.config.get("plot"), dict) else {}
    mask = mask if mask is not None else opts.get("mask")
    if space is None and mask is not None:
        try:
            m = mask_from_nifti(mask) if isinstance(mask, (str, os.PathLike)) else np.asarray(mask, bool)
            space = BrainSpace.from_mask(m)
            if space.n_voxels != s.r[s.best].shape[0]:
                logger.warning("report: the mask has %d voxels, the results %d; no maps", space.n_voxels,
                               s.r[s.best].shape[0])
                space = None
        except Exception as e:  # noqa: BLE001 - the report must not fail on a bad mask
            logger.warning("report: mask %s not usable (%s); no maps", mask, e)
            space = None
    if pycortex is None and opts.get("pycortex_subject") and opts.get("pycortex_xfm"):
        pycortex = (str(opts["pycortex_subject"]), str(opts["pycortex_xfm"]))
        pycortex_mask = str(opts.get("pycortex_mask", pycortex_mask))
    roi_table = _roi_table(s, vox)
    map_files: list[tuple[str, Path]] = []
    if maps and space is not None:
        try:
            def draw_brain(v, **kw):
                with matplotlib.rc_context({"figure.dpi": dpi}):  # surface panels: rasterised at this dpi
                    return brain_map(v, space, **kw)

            map_files = _draw_maps(s, draw_brain, s.path / "maps", dpi)
        except ImportError as e:
            logger.warning("report: no brain maps (%s)", e)
    if maps and pycortex is not None:
        subject, xfm = pycortex

        def draw_flat(v, *, title, label, vmax):
            return flatmap(v, subject, xfm, mask=pycortex_mask, title=title, vmax=vmax)

        try:
            map_files += _draw_maps(s, draw_flat, s.path / "maps", dpi, prefix="flat_")
        except (ImportError, ValueError) as e:
            logger.warning("report: no pycortex flatmaps (%s)", e)
    if roi_table is not None:
        df_lines = ["roi,n_voxels," + ",".join(map(str, roi_table["measure"].values))]
        for j, lab in enumerate(roi_table["roi"].values):
            vals = ",".join(f"{v:.6g}" for v in roi_table["median"].values[:, j])
            df_lines.append(f"{lab},{int(roi_table['n_voxels'].values[j])},{vals}")
        _write_text(s.path / "roi_summary.csv", "\n".join(df_lines) + "\n")

    # report.png: summary row + maps, two per row
    n_panels = 1 + (s.ceiling is not None) + (len(s.layers) > 1) + (roi_table is not None)
    width = max(4.6 * n_panels, 12.0)
    images = [(t, mpimg.imread(p)) for t, p in map_files]
    map_rows = int(np.ceil(len(images) / 2))
    row_h = [3.6] + [width / 2 * (max(im.shape[0] / im.shape[1] for _, im in images[2 * i:2 * i + 2]))
                     for i in range(map_rows)]
    fig = plt.figure(figsize=(width, sum(row_h) + 1.1))
    gs = fig.add_gridspec(1 + map_rows, 1, height_ratios=row_h, hspace=0.25,
                          top=1 - 0.85 / (sum(row_h) + 1.1), bottom=0.55 / (sum(row_h) + 1.1), left=0.05, right=0.98)
    summary_panels(s, fig, gs[0], roi_table)
    for i in range(map_rows):
        sub = gs[1 + i].subgridspec(1, 2, wspace=0.02)
        for k in range(2):
            ax = fig.add_subplot(sub[0, k])
            ax.axis("off")
            if 2 * i + k < len(images):
                ax.imshow(images[2 * i + k][1])
    fig.suptitle(headline(s), fontsize=11)
    out = save_figure(fig, s.path / "report.png", dpi=dpi)
    specs = run_maps(s) if (export or html_page) else []
    if export:
        try:
            export_maps(s, space, maps=specs)
        except ImportError as e:
            logger.warning("report: no NIfTI/GIFTI export (%s)", e)
    if html_page:
        try:
            from .interactive import interactive_html

            page = interactive_html(s, space, specs, roi_table=roi_table, vox=vox,
                                    png=Path(out).read_bytes(), map_files=map_files)
        except ImportError as e:
            logger.warning("report: report.html without interactive maps (%s; pip install plotly)", e)
            page = _html(s, map_files, roi_table)
        _write_text(s.path / "report.html", page)
    return Path(out)


def _html(s: RunSummary, map_files, roi_table) -> str:
    e = html.escape
    layer_metrics = s.metrics.get("layers", {}) if isinstance(s.metrics.get("layers"), dict) else {}
    keys = []
    for m in layer_metrics.values():
        keys += [k for k in m if k not in keys and isinstance(m[k], (int, float)) and not isinstance(m[k], bool)]
    rows = "".join("<tr><td>" + e(lay) + "</td>" + "".join(
        f"<td>{layer_metrics.get(lay, {}).get(k, ''):.4g}</td>" if isinstance(layer_metrics.get(lay, {}).get(k), float)
        else f"<td>{e(str(layer_metrics.get(lay, {}).get(k, '')))}</td>" for k in keys) + "</tr>" for lay in s.layers)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(s.run_name)}</title>",
             "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}img{max-width:100%}"
             ".maps{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:8px}</style>",
             f"</head><body><h1>{e(s.run_name)}</h1>",
             f"<p>{e(str(s.path))}; noise ceiling: "
             f"{e(s.ceiling_source or ('none' if s.ceiling is None else 'source not recorded'))}</p>",
             "<h2>Summary per layer</h2><table><tr><th>layer</th>" + "".join(f"<th>{e(k)}</th>" for k in keys)
             + f"</tr>{rows}</table>",
             "<h2>Report</h2><img src='report.png' alt='report'>"]
    if map_files:
        parts.append("<h2>Maps</h2><div class='maps'>" + "".join(
            f"<figure><img src='{e(os.path.relpath(p, s.path))}' alt='{e(t)}'><figcaption>{e(t)}</figcaption></figure>"
            for t, p in map_files) + "</div>")
    if roi_table is not None:
        meas = [str(m) for m in roi_table["measure"].values]
        parts.append("<h2>Median per ROI</h2><table><tr><th>roi</th><th>voxels</th>"
                     + "".join(f"<th>{e(m)}</th>" for m in meas) + "</tr>" + "".join(
                         f"<tr><td>{e(str(lab))}</td><td>{int(roi_table['n_voxels'].values[j])}</td>"
                         + "".join(f"<td>{v:.4f}</td>" for v in roi_table["median"].values[:, j]) + "</tr>"
                         for j, lab in enumerate(roi_table["roi"].values)) + "</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
