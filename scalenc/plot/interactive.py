"""The run's interactive ``report.html``: one self-contained file (plotly's JavaScript inlined, the
maps embedded as base64 float32), opened from disk with no network.

What the page holds (:func:`interactive_html`):

- a brain view coloured by any map of :func:`scalenc.plot.export.run_maps`, chosen with a
  selector: fsaverage5 inflated surfaces (plotly ``mesh3d``, dorsal view, left hemisphere on the
  left; fsaverage6 / fsaverage voxels on their fsaverage5 vertices, as the PNG maps), three
  orthogonal slices of a volume (plotly heatmaps; the sliders move the cursor, a click moves it
  to the voxel), or, without a layout (LeBel hf5), an image of the voxels in results order
  (voxel ``i`` at row ``i // W``, column ``i % W``, ``W = ceil(sqrt(n))``);
- a threshold slider: voxels with ``|value|`` below the chosen fraction of the map's colour
  limit are drawn as background;
- hover on a voxel: its index, ROI and every map's value (r, ceiling, r / ceiling, alpha,
  q, splits, best layer);
- median r per layer (with the median ceiling), the ROI table, the summary numbers per layer,
  the run's configuration (``config.toml``) and timings (``metrics.json`` ``timings``, when the
  run recorded them), and the static ``report.png`` inlined.

``report.html#map=<desc>&threshold=<fraction>`` opens with that map and threshold (through the
same selector and slider events a user triggers); ``&voxel=<i>`` shows voxel ``i``'s values as
hovering it does (``i``: position in ``results.zarr``). When the page has drawn its first map it
logs ``scalenc-report-rendered <ms since navigation start>`` to the console and sets
``document.body.dataset.rendered``.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .maps import FSAVERAGE5_HEMI, SURFACE_VERTICES, BrainSpace, _fsaverage5

#: colour scales (plotly's format; the page colours surfaces and scatter points with the same stops)
DIVERGING = [[0.0, "#053061"], [0.2, "#2166ac"], [0.4, "#92c5de"], [0.5, "#f7f7f7"], [0.6, "#f4a582"],
             [0.8, "#d6604d"], [1.0, "#b2182b"]]
SEQUENTIAL = [[0.0, "#440154"], [0.25, "#3b528b"], [0.5, "#21918c"], [0.75, "#5ec962"], [1.0, "#fde725"]]


def _b64(a, dtype) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype).tobytes()).decode("ascii")


def _limits(values: np.ndarray, diverging: bool, levels) -> tuple[float, float]:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if levels:
        keys = [float(k) for k in levels]
        return min(keys), max(max(keys), min(keys) + 1)
    if not v.size:
        return (-1.0, 1.0) if diverging else (0.0, 1.0)
    if diverging:
        top = float(np.percentile(np.abs(v), 99)) or float(np.abs(v).max()) or 1.0
        return -top, top
    lo, hi = float(v.min()), float(np.percentile(v, 99))
    return lo, (hi if hi > lo else lo + 1.0)


def _view(space: BrainSpace | None, n: int) -> dict[str, Any]:
    if space is not None and space.kind == "surface" and space.space in SURFACE_VERTICES:
        half = SURFACE_VERTICES[space.space] // 2
        idx = np.asarray(space.index, np.int64)
        right = idx >= half
        local = idx - right * half
        fs5 = np.where(local < FSAVERAGE5_HEMI, local + right * FSAVERAGE5_HEMI, -1)  # nested icosahedra
        meshes = _fsaverage5("inflated")
        hemis = {}
        for key, hemi in (("L", "left"), ("R", "right")):
            coords, faces, sulc = meshes[hemi]
            c = np.array(coords, float)
            c[:, 0] += (-5 - c[:, 0].max()) if key == "L" else (5 - c[:, 0].min())   # side by side
            hemis[key] = {"xyz": _b64(c, np.float32), "faces": _b64(faces, np.int32), "sulc": _b64(sulc > 0, np.uint8)}
        return {"kind": "surface", "space": space.space, "vertex": _b64(fs5, np.int32), "hemis": hemis,
                "nHemi": FSAVERAGE5_HEMI}
    if space is not None and space.volume_shape is not None:
        return {"kind": "volume", "space": space.space, "shape": [int(x) for x in space.volume_shape],
                "index": _b64(space.index, np.int32),
                "affine": None if space.affine is None else np.asarray(space.affine, float).tolist()}
    return {"kind": "none", "n": int(n)}


def payload(s, space: BrainSpace | None, maps, vox=None) -> dict[str, Any]:
    """The data the page draws (JSON-ready)."""
    from .report import _nanmedian

    n = int(s.r[s.best].shape[0])
    items = []
    for m in maps:
        lo, hi = _limits(m.values, m.diverging, m.levels)
        items.append({"desc": m.desc, "label": m.label, "units": m.units, "diverging": bool(m.diverging),
                      "levels": m.levels, "cmin": lo, "cmax": hi, "data": _b64(m.values, np.float32)})
    roi = None
    if vox is not None and "roi" in getattr(vox, "variables", {}):
        from .roi import as_labels

        labels = as_labels(vox["roi"].values)
        if labels.shape == (n,):
            names, codes = np.unique(labels, return_inverse=True)
            roi = {"names": names.tolist(), "codes": _b64(codes, np.int32)}
    return {"run": s.run_name, "best": s.best, "layers": s.layers, "n": n,
            "maps": items, "view": _view(space, n), "roi": roi,
            "layerCurve": {"layers": s.layers, "median_r": [_finite(_nanmedian(s.r[x])) for x in s.layers],
                           "median_ceiling": None if s.ceiling is None else _finite(_nanmedian(s.ceiling)),
                           "ceiling_source": s.ceiling_source},
            "scales": {"diverging": DIVERGING, "sequential": SEQUENTIAL}}


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _table(header, rows) -> str:
    e = html.escape
    return ("<table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows) + "</table>")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def interactive_html(s, space: BrainSpace | None, maps, *, roi_table=None, vox=None, png: bytes | None = None,
                     map_files=()) -> str:
    """The page (module docstring) as one string."""
    from plotly.offline import get_plotlyjs

    from .report import headline

    e = html.escape
    data = json.dumps(payload(s, space, maps, vox), allow_nan=False, default=_json_default)
    layer_metrics = s.metrics.get("layers", {}) if isinstance(s.metrics.get("layers"), dict) else {}
    keys: list[str] = []
    for m in layer_metrics.values():
        keys += [k for k in m if k not in keys and isinstance(m[k], (int, float)) and not isinstance(m[k], bool)]
    summary = _table(["layer", *keys], [[lay, *(_fmt(layer_metrics.get(lay, {}).get(k, "")) for k in keys)]
                                        for lay in s.layers])
    roi_html = ""
    if roi_table is not None:
        meas = [str(m) for m in roi_table["measure"].values]
        roi_html = "<h2>Median per ROI</h2>" + _table(["roi", "voxels", *meas], [
            [str(lab), str(int(roi_table["n_voxels"].values[j])),
             *(f"{v:.4f}" for v in roi_table["median"].values[:, j])]
            for j, lab in enumerate(roi_table["roi"].values)])
    cfg_path = s.path / "config.toml"
    config_text = cfg_path.read_text(encoding="utf-8") if cfg_path.exists() else "(no config.toml)"
    timings = s.metrics.get("timings") or s.root.attrs.get("timings")
    if isinstance(timings, str):
        try:
            timings = json.loads(timings)
        except ValueError:
            timings = {"timings": timings}
    timing_html = (_table(["stage", "seconds"], [[k, _fmt(v)] for k, v in timings.items()])
                   if isinstance(timings, dict) and timings else "<p>not recorded by this run</p>")
    options = "".join(f"<option value='{e(m.desc)}'>{e(m.label)}</option>" for m in maps)
    static = ""
    if png is not None:
        static = ("<h2>Static report</h2><img alt='report.png' style='max-width:100%' src='data:image/png;base64,"
                  + base64.b64encode(png).decode("ascii") + "'>")
    if map_files:
        static += "<p>PNG maps next to this file: " + ", ".join(
            f"<a href='{e(os.path.relpath(p, s.path))}'>{e(t)}</a>" for t, p in map_files) + "</p>"
    return _PAGE.format(
        title=e(s.run_name), headline=e(headline(s)), path=e(str(s.path)),
        ceiling=e(s.ceiling_source or ("none" if s.ceiling is None else "source not recorded")),
        options=options, plotly=get_plotlyjs(), data=data.replace("</", "<\\/"), summary=summary, roi=roi_html,
        config=e(config_text), timings=timing_html, static=static, script=_SCRIPT)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o))


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body{{font-family:sans-serif;margin:1em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:12px}} pre{{background:#f6f6f6;padding:6px;font-size:12px}}
#controls{{display:flex;gap:1.5em;align-items:center;flex-wrap:wrap}} #slicectl{{display:flex;gap:1em}}
</style>
<script>{plotly}</script>
</head><body>
<h1>{title}</h1>
<p>{headline}</p><p>{path}; noise ceiling: {ceiling}</p>
<div id="controls">
<label>map <select id="map-select">{options}</select></label>
<label>threshold |value| &ge; <input type="range" id="threshold" min="0" max="1" step="0.01" value="0">
<span id="threshold-value">0</span></label>
</div>
<div id="slicectl"></div>
<div id="brain" style="width:100%;height:620px"></div>
<div id="voxel-info" style="font-size:12px;padding:4px;min-height:3em">hover or click a voxel to see its values</div>
<div id="layers" style="width:100%;max-width:720px;height:320px"></div>
{roi}
<h2>Summary per layer</h2>{summary}
<h2>Timings</h2>{timings}
<h2>Configuration</h2><pre>{config}</pre>
{static}
<script type="application/json" id="scalenc-data">{data}</script>
<script>{script}</script>
</body></html>
"""

_SCRIPT = r"""
(function () {
"use strict";
const D = JSON.parse(document.getElementById("scalenc-data").textContent);
const brain = document.getElementById("brain");
const sel = document.getElementById("map-select"), thr = document.getElementById("threshold");
const thrValue = document.getElementById("threshold-value");
function bytes(b64) { const s = atob(b64), u = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) u[i] = s.charCodeAt(i); return u.buffer; }
const f32 = b => new Float32Array(bytes(b)), i32 = b => new Int32Array(bytes(b)), u8 = b => new Uint8Array(bytes(b));
const cache = {};
function values(m) { if (!cache[m.desc]) cache[m.desc] = f32(m.data); return cache[m.desc]; }
const byDesc = {}; D.maps.forEach(m => { byDesc[m.desc] = m; });
function hex(c) { return [1, 3, 5].map(i => parseInt(c.substr(i, 2), 16)); }
const scales = {diverging: D.scales.diverging.map(([t, c]) => [t, hex(c)]),
                sequential: D.scales.sequential.map(([t, c]) => [t, hex(c)])};
function colour(m, v) {            // the plotly colourscale's colour of v (clamped to [cmin, cmax])
  const st = scales[m.diverging ? "diverging" : "sequential"];
  let t = (v - m.cmin) / (m.cmax - m.cmin); t = Math.max(0, Math.min(1, t));
  for (let i = 1; i < st.length; i++) if (t <= st[i][0]) {
    const a = st[i - 1], b = st[i], f = (t - a[0]) / (b[0] - a[0] || 1);
    return "rgb(" + [0, 1, 2].map(k => Math.round(a[1][k] + f * (b[1][k] - a[1][k]))).join(",") + ")"; }
  const c = st[st.length - 1][1]; return "rgb(" + c.join(",") + ")";
}
function cut(m) { return Number(thr.value) * Math.max(Math.abs(m.cmin), Math.abs(m.cmax)); }
function shown(m, v, c) { return Number.isFinite(v) && Math.abs(v) >= c; }
const roiCodes = D.roi ? i32(D.roi.codes) : null;
function fmt(v) { return Number.isFinite(v) ? (Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0)
  ? v.toExponential(3) : v.toPrecision(4)) : "n/a"; }
const esc = t => String(t).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
function hover(i) {                // every map's value at voxel i
  let s = "<b>voxel " + i + (roiCodes ? " (" + esc(D.roi.names[roiCodes[i]]) + ")" : "") + "</b>";
  D.maps.forEach(m => { const v = values(m)[i];
    s += " &nbsp;|&nbsp; <span data-map='" + esc(m.desc) + "'>" + esc(m.label) + ": "
      + esc(m.levels && Number.isFinite(v) ? m.levels[String(v)] : fmt(v)) + "</span>"; });
  return s;
}
function colourbar(m) {
  return {colorscale: m.diverging ? D.scales.diverging : D.scales.sequential, cmin: m.cmin, cmax: m.cmax,
          showscale: true, colorbar: {title: {text: m.units}}};
}
const V = D.view;
let draw, ready, voxelOf;
const info = document.getElementById("voxel-info");
function showVoxel(ev) { const i = voxelOf(ev.points[0]);
  info.innerHTML = (i !== undefined && i >= 0) ? hover(i) : "no voxel here"; }

if (V.kind === "surface") {
  const vert = i32(V.vertex), nH = V.nHemi, total = 2 * nH;
  const voxelAt = new Int32Array(total).fill(-1);
  vert.forEach((vx, i) => { if (vx >= 0) voxelAt[vx] = i; });
  const hemis = ["L", "R"].map((h, k) => {
    const xyz = f32(V.hemis[h].xyz), f = i32(V.hemis[h].faces), sulc = u8(V.hemis[h].sulc);
    const n = xyz.length / 3, x = new Float32Array(n), y = new Float32Array(n), z = new Float32Array(n);
    for (let j = 0; j < n; j++) { x[j] = xyz[3 * j]; y[j] = xyz[3 * j + 1]; z[j] = xyz[3 * j + 2]; }
    const m = f.length / 3, I = new Int32Array(m), J = new Int32Array(m), K = new Int32Array(m);
    for (let j = 0; j < m; j++) { I[j] = f[3 * j]; J[j] = f[3 * j + 1]; K[j] = f[3 * j + 2]; }
    return {x, y, z, I, J, K, sulc, offset: k * nH, n};
  });
  function colours(m, h) {
    const v = values(m), c = cut(m), out = new Array(h.n);
    for (let j = 0; j < h.n; j++) { const vx = voxelAt[h.offset + j], val = vx >= 0 ? v[vx] : NaN;
      out[j] = shown(m, val, c) ? colour(m, val) : (h.sulc[j] ? "rgb(120,120,120)" : "rgb(200,200,200)"); }
    return out;
  }
  draw = function (m) {
    const traces = hemis.map(h => ({type: "mesh3d", x: h.x, y: h.y, z: h.z, i: h.I, j: h.J, k: h.K,
      vertexcolor: colours(m, h), hoverinfo: "none", flatshading: false,
      lighting: {ambient: 0.75, diffuse: 0.35, specular: 0.05}}));
    traces.push({type: "scatter3d", mode: "markers", x: [0], y: [0], z: [0], hoverinfo: "skip",
                 marker: Object.assign({size: 0.1, opacity: 0, color: [m.cmin]}, colourbar(m)), showlegend: false});
    const axis = {visible: false};
    return Plotly.react(brain, traces, {margin: {l: 0, r: 0, t: 30, b: 0}, title: {text: m.label},
      scene: {xaxis: axis, yaxis: axis, zaxis: axis, aspectmode: "data",
              camera: {eye: {x: 0, y: 0, z: 1.6}, up: {x: 0, y: 1, z: 0}, projection: {type: "orthographic"}}},
      uirevision: "brain"}, {responsive: true});
  };
  voxelOf = pt => pt.curveNumber < 2 ? voxelAt[hemis[pt.curveNumber].offset + pt.pointNumber] : -1;
} else if (V.kind === "volume") {
  const sh = V.shape, idx = i32(V.index), N = sh[0] * sh[1] * sh[2];
  const at = new Int32Array(N).fill(-1); idx.forEach((f, i) => { at[f] = i; });
  const ctl = document.getElementById("slicectl"), cur = [0, 1, 2].map(a => Math.floor(sh[a] / 2));
  const r = values(D.maps[0]); let best = -Infinity;
  idx.forEach((f, i) => { if (r[i] > best) { best = r[i];
    cur[0] = Math.floor(f / (sh[1] * sh[2])); cur[1] = Math.floor(f / sh[2]) % sh[1]; cur[2] = f % sh[2]; } });
  const sliders = [0, 1, 2].map(a => { const l = document.createElement("label");
    l.textContent = "axis " + a + " "; const s = document.createElement("input");
    s.type = "range"; s.min = 0; s.max = sh[a] - 1; s.value = cur[a]; s.id = "slice-" + a;
    s.addEventListener("input", () => { cur[a] = Number(s.value); draw(current()); });
    l.appendChild(s); ctl.appendChild(l); return s; });
  // three panels: the slice with axis 2, axis 1, axis 0 fixed at the cursor
  const panels = [[0, 1, 2], [0, 2, 1], [1, 2, 0]];   // [column axis, row axis, fixed axis]
  function flat(p, cc, rr) { const ijk = [0, 0, 0]; ijk[p[0]] = cc; ijk[p[1]] = rr; ijk[p[2]] = cur[p[2]];
    return (ijk[0] * sh[1] + ijk[1]) * sh[2] + ijk[2]; }
  voxelOf = pt => at[flat(panels[pt.curveNumber], pt.x, pt.y)];
  function slice(m, p) {
    const [ca, ra, fa] = p, v = values(m), c = cut(m), z = [];
    for (let rr = 0; rr < sh[ra]; rr++) { const zr = [];
      for (let cc = 0; cc < sh[ca]; cc++) { const vx = at[flat(p, cc, rr)], val = vx >= 0 ? v[vx] : NaN;
        zr.push(shown(m, val, c) ? val : null); }
      z.push(zr); }
    return z;
  }
  draw = function (m) {
    const traces = panels.map((p, k) => ({type: "heatmap", z: slice(m, p), hovertemplate: "%{z:.4g}<extra></extra>",
        xaxis: "x" + (k + 1), yaxis: "y" + (k + 1), zmin: m.cmin, zmax: m.cmax, showscale: k === 2,
        colorscale: m.diverging ? D.scales.diverging : D.scales.sequential, colorbar: {title: {text: m.units}}}));
    const lay = {margin: {l: 30, r: 10, t: 30, b: 30}, title: {text: m.label}, plot_bgcolor: "#dddddd",
                 grid: {rows: 1, columns: 3, pattern: "independent"}};
    panels.forEach((p, k) => { lay["xaxis" + (k + 1)] = {title: {text: "axis " + p[0]}, constrain: "domain"};
      lay["yaxis" + (k + 1)] = {title: {text: "axis " + p[1]}, scaleanchor: "x" + (k + 1), constrain: "domain"}; });
    return Plotly.react(brain, traces, lay, {responsive: true});
  };
  ready = () => brain.on("plotly_click", ev => { const pt = ev.points[0]; const k = pt.curveNumber, p = panels[k];
    cur[p[0]] = pt.x; cur[p[1]] = pt.y; p.slice(0, 2).forEach(a => { sliders[a].value = cur[a]; });
    draw(current()); });
} else {
  // no layout: the voxels in results order, wrapped into the rows of an image
  const n = D.n, W = Math.ceil(Math.sqrt(n)), H = Math.ceil(n / W);
  voxelOf = pt => { const i = pt.y * W + pt.x; return i < n ? i : -1; };
  draw = function (m) {
    const v = values(m), c = cut(m), z = [];
    for (let r = 0; r < H; r++) { const row = new Array(W);
      for (let k = 0; k < W; k++) { const i = r * W + k; row[k] = i < n && shown(m, v[i], c) ? v[i] : null; }
      z.push(row); }
    return Plotly.react(brain, [Object.assign({type: "heatmap", z: z, hovertemplate:
      "row %{y}, column %{x}: %{z:.4g}<extra></extra>", zmin: m.cmin, zmax: m.cmax, showscale: true,
      colorscale: m.diverging ? D.scales.diverging : D.scales.sequential, colorbar: {title: {text: m.units}}})],
      {margin: {l: 50, r: 10, t: 30, b: 40}, plot_bgcolor: "#dddddd",
       title: {text: m.label + " (no brain layout: voxel i at row i / " + W + ", column i % " + W + ")"},
       xaxis: {title: {text: "voxel % " + W}, constrain: "domain"},
       yaxis: {title: {text: "voxel / " + W + " (rows)"}, scaleanchor: "x", autorange: "reversed"}},
      {responsive: true});
  };
}

function current() { return byDesc[sel.value]; }
let last;
function update() { thrValue.textContent = fmt(cut(current())); last = draw(current()); return last; }
sel.addEventListener("change", update);
thr.addEventListener("input", update);

const params = new URLSearchParams(location.hash.slice(1));
if (params.get("threshold") !== null) thr.value = params.get("threshold");
if (params.get("map") && byDesc[params.get("map")]) {   // as a user's choice: the selector's change event
  sel.value = params.get("map"); sel.dispatchEvent(new Event("change"));
} else { update(); }
const first = last;
if (params.get("voxel") !== null) info.innerHTML = hover(Number(params.get("voxel")));
Promise.resolve(first).then(() => { if (ready) ready();
  brain.on("plotly_hover", showVoxel); brain.on("plotly_click", showVoxel);
  const ms = performance.now(); document.body.dataset.rendered = String(ms);
  console.log("scalenc-report-rendered " + ms.toFixed(0));
  setTimeout(layerCurve, 0); });
function layerCurve() {
  const lc = D.layerCurve;
  if (lc.layers.length > 1) {
    const tr = [{type: "scatter", mode: "lines+markers", x: lc.layers.map(String), y: lc.median_r, name: "median r"}];
    if (lc.median_ceiling !== null) tr.push({type: "scatter", mode: "lines", x: lc.layers.map(String),
      y: lc.layers.map(() => lc.median_ceiling), name: "median ceiling (" + (lc.ceiling_source || "source?") + ")",
      line: {dash: "dash"}});
    Plotly.newPlot("layers", tr, {title: {text: "median r per layer"}, xaxis: {title: {text: "layer", type: "category"}},
      yaxis: {title: {text: "median r"}, rangemode: "tozero"}, margin: {t: 40}});
  } else { document.getElementById("layers").style.display = "none"; }
}
})();
"""


# ------------------------------------------------------------------------------ headless browser
#: chromium's own performance hints, not the page's messages
BROWSER_HINTS = ("Canvas2D: Multiple readback operations", "GPU stall due to ReadPixels",
                 "Automatic fallback to software WebGL has been deprecated")


@dataclasses.dataclass
class BrowserRun:
    """What :func:`open_in_chromium` saw: the screenshot, the page's console messages (chromium's
    :data:`BROWSER_HINTS` left out), the page's ``scalenc-report-rendered`` time (ms since
    navigation start; None when it did not render), the browser's wall time (s) and the CPU
    seconds of its processes (user + system, all of them; the same page costs the same CPU on a
    busy machine, where wall times grow)."""

    png: Path
    console: list[str]
    rendered_ms: float | None
    wall_s: float
    dom: str | None = None
    cpu_s: float | None = None


def _cpu_while_running(proc: subprocess.Popen, timeout: float) -> float | None:
    """Wait for ``proc``; return the user + system CPU seconds of it and its descendants (sampled
    every 20 ms with psutil: chromium's renderer and GPU processes are not reaped into our
    ``RUSAGE_CHILDREN``), or None without psutil."""
    try:
        import psutil
    except ImportError:
        psutil = None
    seen: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise subprocess.TimeoutExpired(proc.args, timeout)
        if psutil is not None:
            try:
                root = psutil.Process(proc.pid)
                for p in [root, *root.children(recursive=True)]:
                    try:
                        t = p.cpu_times()
                        seen[p.pid] = t.user + t.system
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
        time.sleep(0.02)
    return sum(seen.values()) if psutil is not None else None


def chromium_binary() -> str | None:
    """The headless browser found on PATH (Debian's ``chromium``), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def open_in_chromium(page: str | os.PathLike, png: str | os.PathLike, *, fragment: str = "",
                     size: tuple[int, int] = (1200, 900), budget_ms: int | None = 20000,
                     timeout: float = 180, dom: bool = False) -> BrowserRun:
    """Open ``page`` (a local file, ``#fragment`` appended) in headless Chromium, screenshot it to
    ``png`` and return the console (``--enable-logging=stderr``). WebGL through SwiftShader (no GPU).
    ``budget_ms``: virtual time to let the page settle before the screenshot (None: the load event).
    ``dom``: print the page's DOM instead of a screenshot (``BrowserRun.dom``)."""
    exe = chromium_binary()
    if exe is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    url = Path(page).resolve().as_uri() + (f"#{fragment}" if fragment else "")
    with tempfile.TemporaryDirectory(prefix="scalenc-chromium-") as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars",
               "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-first-run",
               f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}", "--enable-logging=stderr",
               "--v=0", "--dump-dom" if dom else f"--screenshot={Path(png).resolve()}"]
        if budget_ms:
            cmd.append(f"--virtual-time-budget={int(budget_ms)}")
        tick = time.perf_counter()
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(cmd + [url], stdout=out, stderr=err, text=True)
            cpu = _cpu_while_running(proc, timeout)
            wall = time.perf_counter() - tick
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
    msgs = [m.group(1) for m in re.finditer(r':CONSOLE[:(]\d+\)?\] "(.*?)", source:', stderr, re.S)]
    rendered = None
    for m in msgs:
        if m.startswith("scalenc-report-rendered "):
            rendered = float(m.split()[1])
    console = [m for m in msgs if not m.startswith("scalenc-report-rendered ")
               and not any(m.startswith(h) for h in BROWSER_HINTS)]
    if not Path(png).exists() and not dom:
        raise RuntimeError(f"chromium wrote no screenshot of {page} (exit {proc.returncode}): {stderr[-800:]}")
    return BrowserRun(Path(png), console, rendered, wall, stdout if dom else None, cpu)
