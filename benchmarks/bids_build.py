"""Benchmark: building an assembly from a Narratives-sized BIDS run vs the plain I/O floor.

Writes one fMRIPrep-named run: a float32 4-D NIfTI of ``--trs`` volumes on a
``--grid`` volume (uncompressed ``.nii``), a brain mask of about ``--mask-voxels`` voxels
(an ellipsoid), its ``_bold.json`` sidecar, ``events.tsv`` and a Gentle ``align.json`` at
~2.5 words/s. Then measures, each in a fresh child process (peak RSS per stage):

- ``floor``: what a user would write by hand: ``nibabel`` read of the whole image,
  ``data[mask].T`` and a ``zarr`` write of that (time, voxel) float32 array with the same
  chunks and codec as scalenc (no z-scoring, no checks, no words, no metadata);
- ``scalenc``: ``scalenc.assembly.bids.build`` (sidecar TR, events onset, Gentle words,
  checks, per-run z-scoring, voxel flags, atomic write, reading ``time_block`` volumes at
  a time).

Prints a table (seconds, MB/s of float32 image read, peak RSS) and with ``--record``
appends it to ``benchmarks/RESULTS.md``.

    python benchmarks/bids_build.py --record                       # 2250 TRs x 70,000 voxels
    python benchmarks/bids_build.py --trs 300 --grid 30 36 30     # quick
"""
from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import emit, machine, peak_rss_bytes, run_child  # noqa: E402

TR = 1.5
ONSET = 21.0  # 21styear's story onset


def _ellipsoid(grid, n_target: int) -> np.ndarray:
    g = [np.linspace(-1, 1, n) for n in grid]
    x, y, z = np.meshgrid(*g, indexing="ij")
    r2 = x ** 2 + y ** 2 + z ** 2
    thr = np.sort(r2.ravel())[n_target - 1]
    return r2 <= thr


def make_tree(root: Path, trs: int, grid, n_mask: int, seed: int = 0) -> dict:
    import nibabel as nib

    rng = np.random.default_rng(seed)
    func = root / "derivatives" / "fmriprep" / "sub-001" / "func"
    func.mkdir(parents=True)
    stem = "sub-001_task-21styear"
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    aff[:3, 3] = [-72.0, -84.0, -72.0]
    data = np.empty((*grid, trs), np.float32, order="F")
    for t0 in range(0, trs, 250):
        t1 = min(trs, t0 + 250)
        data[..., t0:t1] = rng.standard_normal((*grid, t1 - t0), dtype=np.float32) + 100
    bold = func / f"{stem}_space-MNI152NLin2009cAsym_res-native_desc-preproc_bold.nii"
    img = nib.Nifti1Image(data, aff)
    img.header.set_data_dtype(np.float32)
    nib.save(img, bold)
    del data, img
    mask = _ellipsoid(grid, n_mask)
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), aff), func / f"{stem}_space-MNI152NLin2009cAsym_res-native_"
                                                                  f"desc-brain_mask.nii.gz")
    bold.with_suffix(".json").write_text(json.dumps({"RepetitionTime": TR}))
    raw = root / "sub-001" / "func"
    raw.mkdir(parents=True)
    story_s = (trs - 20) * TR - ONSET
    (raw / f"{stem}_events.tsv").write_text(f"onset\tduration\ttrial_type\n{ONSET}\t{story_s:.1f}\tstory\n")
    n_words = int(story_s * 2.5)
    starts = np.sort(rng.uniform(0.5, story_s - 1, n_words))
    words = [{"word": "w", "alignedWord": "w", "case": "success", "start": float(a), "end": float(a) + 0.25}
             for a in starts]
    g = root / "stimuli" / "gentle" / "21styear"
    g.mkdir(parents=True)
    (g / "align.json").write_text(json.dumps({"transcript": "", "words": words}))
    return dict(bold=bold, mask=func / f"{stem}_space-MNI152NLin2009cAsym_res-native_desc-brain_mask.nii.gz",
                n_mask=int(mask.sum()), nbytes=bold.stat().st_size)


def stage_floor(root: Path, out: Path) -> None:
    import nibabel as nib
    import zarr

    from scalenc.assembly.writer import DEFAULT_VOXEL_CHUNK, _codecs

    func = root / "derivatives" / "fmriprep" / "sub-001" / "func"
    bold = next(func.glob("*_desc-preproc_bold.nii"))
    mask = np.asarray(nib.load(next(func.glob("*_desc-brain_mask.nii.gz"))).dataobj) != 0
    data = np.asarray(nib.load(bold).dataobj)
    y = np.ascontiguousarray(data[mask].T)
    del data
    g = zarr.open_group(str(out), mode="w")
    z = g.create_array("bold", shape=y.shape, dtype="f4", chunks=(y.shape[0], DEFAULT_VOXEL_CHUNK),
                       compressors=_codecs())
    z[...] = y


def stage_scalenc(root: Path, out: Path) -> None:
    from scalenc.assembly import narratives

    narratives.build(root, "001", ["21styear"], out, progress=False)



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trs", type=int, default=2250)
    ap.add_argument("--grid", type=int, nargs=3, default=[48, 56, 48], help="volume grid (default 48 56 48)")
    ap.add_argument("--mask-voxels", type=int, default=70000)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--root", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        t0 = time.perf_counter()
        {"floor": stage_floor, "scalenc": stage_scalenc}[args.child](Path(args.root), Path(args.out))
        print(json.dumps(dict(seconds=time.perf_counter() - t0, peak_rss=peak_rss_bytes())))
        return

    work = Path(args.workdir or tempfile.mkdtemp(prefix="scalenc-bids-bench-"))
    root = work / "ds002345"
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    info = make_tree(root, args.trs, tuple(args.grid), args.mask_voxels)
    print(f"tree: {args.trs} TRs x {info['n_mask']} mask voxels of a {tuple(args.grid)} grid, "
          f"{info['nbytes'] / 1e6:.0f} MB float32 NIfTI, written in {time.perf_counter() - t0:.1f} s", flush=True)
    rows = []
    try:
        for stage in ("floor", "scalenc"):
            out = work / f"{stage}.zarr"
            shutil.rmtree(out, ignore_errors=True)
            r = run_child(__file__, stage, root, out)
            r.update(stage=stage, mb_s=info["nbytes"] / 1e6 / r["seconds"])
            rows.append(r)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    run_mib = args.trs * info["n_mask"] * 4 / 2**20
    ratio = rows[1]["seconds"] / rows[0]["seconds"]
    lines = [
        f"### BIDS build, one Narratives-sized run: {args.trs} TRs x {info['n_mask']} mask voxels "
        f"({tuple(args.grid)} float32 NIfTI, {info['nbytes'] / 2**20:.0f} MiB), {datetime.date.today().isoformat()}",
        "",
        f"machine: {machine()}; page cache dropped before each stage: {rows[0]['cache_dropped']}",
        "",
        "| stage | seconds | MB/s (NIfTI in) | peak RSS (MiB) |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        name = ("nibabel read + data[mask] + zarr write (I/O floor)" if r["stage"] == "floor"
                else "scalenc narratives.build (bids.build)")
        lines.append(f"| {name} | {r['seconds']:.1f} | {r['mb_s']:.0f} | {r['peak_rss'] / 2**20:.0f} |")
    lines += ["", f"scalenc / floor time ratio: {ratio:.2f} (target <= 1.5); masked run = {run_mib:.0f} MiB float32, "
                  f"whole image = {info['nbytes'] / 2**20:.0f} MiB; scalenc peak RSS / masked run = "
                  f"{rows[1]['peak_rss'] / 2**20 / run_mib:.2f}", ""]
    emit("\n".join(lines), args.record)


if __name__ == "__main__":
    main()
