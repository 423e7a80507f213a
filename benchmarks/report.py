"""The run report at LeBel scale: size and opening time of the interactive report.html in headless
Chromium, time of the exports, and the PNG report's time against the reference checkout's.

A synthetic run of 95,556 voxels (LeBel's UTS03 count), 3 layers, banded ridge over 2 feature
spaces (r2_split) and a noise ceiling, saved through ``scalenc.results.save``, in three layouts:

- ``lebel``: no layout (LeBel's hf5 responses): .npy exports, the voxels plotted in results order;
- ``lebel+mask``: the same voxels placed by a (z, y, x) mask (``[plot] mask``): slices;
- ``fsaverage5``: 20,484 vertices: GIFTI exports, the inflated surfaces (WebGL).

For each: report.html size, the page's own render time (``scalenc-report-rendered``: ms from
navigation start until the first map is drawn; median of ``--opens`` opens), chromium's wall
time (start, load, screenshot, exit) and the CPU seconds of its processes (what a busy machine
does not inflate), next to plotly's own ``write_html`` page of one heatmap and an empty page, the export time, and the PNG report time
(``report(..., html_page=False, export=False)``, what every run draws) of this checkout and of
``--reference`` (a checkout of scalenc before the interactive report, e.g. the main branch;
its report() draws the PNGs and a static page). Each report time is the best of 2 runs in a
fresh process.

    python benchmarks/report.py --reference /work/main [--record]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import emit, machine  # noqa: E402

N_LEBEL = 95556


def make_run(path: Path, n: int, seed: int = 0) -> Path:
    import xarray as xr

    from scalenc import results as results_mod

    rng = np.random.default_rng(seed)
    parts = []
    for lay in ("3", "6", "9"):
        r = np.clip(rng.normal(0.05, 0.08, n), -0.3, 0.9).astype(np.float32)
        p = np.where(r > 0.15, 1e-4, rng.uniform(0, 1, n))             # some significant voxels
        ds = results_mod.voxel_dataset(r, p, alpha=10.0 ** rng.integers(0, 5, n))
        ds["r2_split"] = (("space", "voxel"), rng.normal(0.01, 0.02, (2, n)).astype(np.float32))
        ds = ds.assign_coords(space=np.array(["wordrate", "embeddings"], object))
        parts.append(ds.expand_dims(layer=[lay]))
    res = xr.concat(parts, dim="layer", combine_attrs="override")
    res["noise_ceiling"] = ("voxel", rng.uniform(0.1, 0.8, n).astype(np.float32))
    res = res.assign_coords(voxel=np.arange(n))
    config = {"run_name": path.name, "subject": "UTS03", "extractors": [{"name": "wordrate"}, {"name": "embeddings"}],
              "model": {"model_name": "banded_ridge"}}
    return results_mod.save(path, res, config=config)


def lebel_mask(n: int) -> np.ndarray:
    """A (z, y, x) = (54, 84, 84) ellipsoid shell holding exactly ``n`` voxels (cortex-like)."""
    z, y, x = np.indices((54, 84, 84))
    d = ((z - 27) / 27) ** 2 + ((y - 42) / 42) ** 2 + ((x - 42) / 42) ** 2
    order = np.argsort(np.abs(d - 0.8), axis=None, kind="stable")[:n]
    mask = np.zeros(d.size, bool)
    mask[order] = True
    return mask.reshape(d.shape)


CHILD = r"""
import json, sys, time
import numpy as np
from scalenc.plot.report import report
run, kind = sys.argv[1], sys.argv[2]
kw = {}
if kind == "png-new":
    kw = dict(html_page=False, export=False)
mask = sys.argv[3] if len(sys.argv) > 3 else None
if mask:
    kw["mask"] = np.load(mask)
best = []
for _ in range(2):
    t = time.perf_counter(); report(run, **kw); best.append(time.perf_counter() - t)
print(json.dumps({"seconds": min(best)}))
"""


def child_report(code: Path, run: Path, kind: str, mask: Path | None) -> float:
    env = {**os.environ, "PYTHONPATH": str(code), "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-c", CHILD, str(run), kind] + ([str(mask)] if mask else [])
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"report ({kind}, {code}) failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])["seconds"]


def plain_plotly(folder: Path, n: int, opens: int) -> dict:
    """The reference a user would pick: plotly's own ``write_html`` (plotly.js inlined) of one heatmap
    of ``n`` values, timed to its first ``plotly_afterplot`` in the same browser."""
    import plotly.graph_objects as go

    from scalenc.plot.interactive import open_in_chromium

    w = int(np.ceil(np.sqrt(n)))
    z = np.full(w * w, np.nan)
    z[:n] = np.random.default_rng(0).normal(size=n)
    page = folder / "plain.html"
    go.Figure([go.Heatmap(z=z.reshape(w, w))]).write_html(page, include_plotlyjs=True, div_id="plain")
    text = page.read_text().replace("</body>", "<script>document.getElementById('plain').on('plotly_afterplot', "
                                    "() => console.log('scalenc-report-rendered ' + performance.now()));</script></body>")
    page.write_text(text)
    runs = [open_in_chromium(page, folder / f"plain{i}.png", budget_ms=None) for i in range(opens)]
    return {"mb": page.stat().st_size / 1e6,
            "rendered_ms": float(np.median([r.rendered_ms for r in runs if r.rendered_ms is not None] or [np.nan])),
            "wall_s": float(np.median([r.wall_s for r in runs])), "cpu_s": float(np.median([r.cpu_s for r in runs]))}


def blank_page(folder: Path, opens: int) -> dict:
    """Chromium's own floor: an empty page (start, load, screenshot, exit)."""
    from scalenc.plot.interactive import open_in_chromium

    page = folder / "blank.html"
    page.write_text("<!doctype html><html><body><script>console.log('scalenc-report-rendered ' + "
                    "performance.now());</script></body></html>")
    runs = [open_in_chromium(page, folder / f"blank{i}.png", budget_ms=None) for i in range(opens)]
    return {"mb": page.stat().st_size / 1e6, "rendered_ms": float(np.median([r.rendered_ms for r in runs])),
            "wall_s": float(np.median([r.wall_s for r in runs])), "cpu_s": float(np.median([r.cpu_s for r in runs]))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, help="a scalenc checkout before this report (e.g. /work/main)")
    ap.add_argument("--opens", type=int, default=3)
    ap.add_argument("--layouts", default="lebel,lebel+mask,fsaverage5")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args(argv)

    from scalenc.plot import RunSummary
    from scalenc.plot.export import export_maps, run_maps
    from scalenc.plot.interactive import open_in_chromium
    from scalenc.plot.maps import BrainSpace

    code = HERE.parent
    rows = []
    with tempfile.TemporaryDirectory(prefix="scalenc-report-bench-") as tmp:
        tmp = Path(tmp)
        for layout in args.layouts.split(","):
            n = 20484 if layout == "fsaverage5" else N_LEBEL
            folder = tmp / layout.replace("+", "_")
            folder.mkdir()
            mask_path = None
            if layout == "lebel+mask":
                mask_path = folder / "mask.npy"
                np.save(mask_path, lebel_mask(n))
            run = make_run(folder / "run", n)
            ref_run = None
            if args.reference:
                ref_run = folder / "ref_run"
                shutil.copytree(run, ref_run)
            s = RunSummary(run)
            space = (BrainSpace.from_mask(np.load(mask_path)) if mask_path else
                     BrainSpace.from_voxels(s.root, n_voxels=n) if layout == "fsaverage5" else None)
            tick = time.perf_counter()
            export_maps(s, space, out=folder / "export", maps=run_maps(s))
            export_s = time.perf_counter() - tick
            png_new = child_report(code, run, "png-new", mask_path)
            full_new = child_report(code, run, "full", mask_path)
            png_ref = child_report(args.reference, ref_run, "full", mask_path) if args.reference else float("nan")
            page = run / "report.html"
            opens = [open_in_chromium(page, folder / f"open{i}.png", budget_ms=None) for i in range(args.opens)]
            errors = sorted({m for o in opens for m in o.console})
            rendered = [o.rendered_ms for o in opens]
            rows.append({"layout": layout, "n": n, "mb": page.stat().st_size / 1e6,
                         "rendered_ms": float(np.median([x for x in rendered if x is not None] or [np.nan])),
                         "not_rendered": sum(x is None for x in rendered),
                         "wall_s": float(np.median([o.wall_s for o in opens])), "errors": errors,
                         "cpu_s": float(np.median([o.cpu_s for o in opens])),
                         "export_s": export_s, "png_new": png_new, "full_new": full_new, "png_ref": png_ref,
                         "n_export": len(list((run / "export").iterdir()))})
            print(json.dumps(rows[-1]), flush=True)
        plain = plain_plotly(tmp, N_LEBEL, args.opens)
        blank = blank_page(tmp, args.opens)
        print(json.dumps({"plain": plain, "blank": blank}), flush=True)
    date = datetime.date.today().isoformat()
    lines = [f"### report at LeBel scale: 3 layers, 2 feature spaces, noise ceiling, {date}", "",
             f"machine: {machine()} (shared with other jobs: load average {os.getloadavg()[0]:.1f}); "
             f"chromium headless, WebGL through SwiftShader; {args.opens} opens each", "",
             "| page | voxels | report.html MB | rendered (ms, median) | chromium wall (s) | chromium CPU (s) | "
             "console messages | export (s) | files in export/ | PNG report (s) | reference PNG report (s) | "
             "full report (s) |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['layout']} | {r['n']} | {r['mb']:.1f} | {r['rendered_ms']:.0f}"
                     f"{' (' + str(r['not_rendered']) + ' not rendered)' if r['not_rendered'] else ''} | "
                     f"{r['wall_s']:.1f} | {r['cpu_s']:.1f} | {len(r['errors'])} | {r['export_s']:.2f} | {r['n_export']} | "
                     f"{r['png_new']:.2f} | {r['png_ref']:.2f} | {r['full_new']:.2f} |")
    lines.append(f"| reference: plotly `write_html` of one {N_LEBEL}-value heatmap | {N_LEBEL} | {plain['mb']:.1f} | "
                 f"{plain['rendered_ms']:.0f} | {plain['wall_s']:.1f} | {plain['cpu_s']:.1f} | | | | | | |")
    lines.append(f"| floor: an empty page | | 0.0 | {blank['rendered_ms']:.0f} | {blank['wall_s']:.1f} | "
                 f"{blank['cpu_s']:.1f} | | | | | | |")
    lines += ["", "Targets: report.html < 20 MB, rendered < 3,000 ms at 95,556 voxels; PNG report time as the "
              "reference's (which also writes its static report.html)."]
    emit("\n".join(lines) + "\n", args.record)
    for r in rows:
        if r["errors"]:
            print(f"{r['layout']}: console: {r['errors']}")


if __name__ == "__main__":
    main()
