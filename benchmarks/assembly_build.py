"""Benchmark: building an assembly from a LeBel-layout tree vs the plain I/O floor.

Builds a ds003020-layout tree of ``--stories`` x ``--voxels`` (float64 responses, like the
release), then measures, each in a fresh child process (so peak RSS is per stage):

- ``floor``: for every story, ``h5py`` read of ``data`` as float32 and a ``zarr`` write of
  the same array with the same chunks and codec as scalenc uses (no validation, no
  TextGrids, no metadata);
- ``scalenc``: ``scalenc.assembly.lebel.build`` (TextGrids, checks, voxel flags, atomic
  write).

It prints a table (MB/s of float64 input read, seconds, peak RSS) and, with
``--record``, appends it to ``benchmarks/RESULTS.md`` with the machine it ran on.

    python benchmarks/assembly_build.py --stories 84 --voxels 95556 --record   # UTS03 size
    python benchmarks/assembly_build.py --stories 4 --voxels 5000              # quick
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


def make_tree(root: Path, n_stories: int, n_voxels: int, rows: int, test_repeats: int = 10, seed: int = 0) -> int:
    """Write a LeBel-layout tree with random responses; return the float64 bytes written."""
    from scalenc.synthetic.writers import write_story_files

    rng = np.random.default_rng(seed)
    total = 0
    for i in range(n_stories):
        n = rows + int(rng.integers(-40, 40))  # story lengths vary, as in the release
        name = f"story{i:03d}" if i < n_stories - 1 else "wheretheressmoke"
        k = test_repeats if name == "wheretheressmoke" else 1  # the test story: stacked repeats
        bold = rng.standard_normal((k * n, n_voxels), dtype=np.float32)
        n_words = max(10, int(n * 2.0 * 2.5))
        starts = np.linspace(0.5, n * 2.0, n_words)  # ~2.5 words/s, as in the stories
        write_story_files(root, "UTS03", name, bold, n_acquired=n + 20, words=["word"] * n_words,
                          word_start=starts, word_end=starts + 0.3)
        total += bold.size * 8
        del bold
    return total



def stage_floor(root: Path, out: Path) -> None:
    import h5py
    import zarr

    from scalenc.assembly.writer import DEFAULT_VOXEL_CHUNK, _codecs

    g = zarr.open_group(str(out), mode="w")
    for f in sorted((root / "derivative" / "preprocessed_data" / "UTS03").glob("*.hf5")):
        with h5py.File(f, "r") as h:
            a = h["data"].astype("f4")[()]
        z = g.create_array(f.stem, shape=a.shape, dtype="f4", chunks=(a.shape[0], DEFAULT_VOXEL_CHUNK),
                           compressors=_codecs())
        z[...] = a
        del a


def stage_scalenc(root: Path, out: Path) -> None:
    from scalenc.assembly import lebel

    lebel.build(root, "UTS03", out, test_stories=("wheretheressmoke",), progress=False)



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stories", type=int, default=6)
    ap.add_argument("--voxels", type=int, default=20000)
    ap.add_argument("--rows", type=int, default=350, help="mean response rows per story (LeBel: ~354)")
    ap.add_argument("--test-repeats", type=int, default=10, help="repeats of the test story (UTS03: 10 + mean)")
    ap.add_argument("--workdir", default=None, help="where to write the tree (default: a temp dir)")
    ap.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--root", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        t0 = time.perf_counter()
        {"floor": stage_floor, "scalenc": stage_scalenc}[args.child](Path(args.root), Path(args.out))
        dt = time.perf_counter() - t0
        rss = peak_rss_bytes()
        print(json.dumps(dict(seconds=dt, peak_rss=rss)))
        return

    work = Path(args.workdir or tempfile.mkdtemp(prefix="scalenc-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    root = work / "ds003020"
    t0 = time.perf_counter()
    shutil.rmtree(root, ignore_errors=True)
    nbytes = make_tree(root, args.stories, args.voxels, args.rows, args.test_repeats)
    print(f"tree: {args.stories} stories x {args.voxels} voxels, {nbytes / 1e6:.0f} MB float64, "
          f"written in {time.perf_counter() - t0:.1f} s", flush=True)
    rows = []
    try:
        for stage in ("floor", "scalenc"):
            out = work / f"{stage}.zarr"
            shutil.rmtree(out, ignore_errors=True)
            r = run_child(__file__, stage, root, out)
            r["stage"] = stage
            r["mb_s"] = nbytes / 1e6 / r["seconds"]
            rows.append(r)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    ratio = rows[1]["seconds"] / rows[0]["seconds"]
    machine_line = machine()
    lines = [
        f"### assembly build, {args.stories} stories x {args.voxels} voxels (~{args.rows} rows/story, "
        f"test story x {args.test_repeats} repeats), "
        f"{datetime.date.today().isoformat()}",
        "",
        f"machine: {machine_line}; page cache dropped before each stage: {rows[0]['cache_dropped']}",
        "",
        "| stage | seconds | MB/s (float64 in) | peak RSS (MiB) |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        name = "h5py read + zarr write (I/O floor)" if r["stage"] == "floor" else "scalenc lebel.build"
        lines.append(f"| {name} | {r['seconds']:.1f} | {r['mb_s']:.0f} | {r['peak_rss'] / 2**20:.0f} |")
    lines += ["", f"scalenc / floor time ratio: {ratio:.2f} (target <= 1.5); "
                  f"peak RSS {rows[1]['peak_rss'] / 2**30:.2f} GiB (target < 2 GiB at 84 x 95,556)", ""]
    emit("\n".join(lines), args.record)


if __name__ == "__main__":
    main()
