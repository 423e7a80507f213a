"""Benchmark: the whole pipeline on the synthetic dataset, in-process vs a 2-worker LocalCluster.

For each size (stories x voxels) it generates the synthetic dataset, then runs
``AbstractTrainer`` with word rate + the generated embeddings + a tiny random GPT-2
(last layer), NestedCVModel with story-chunked inner folds, and reports the time of each
stage (extract, align, fit, write; the trainer's own timings) and peak memory: the
process's VmHWM in-process; on the cluster, the client's and the largest worker's.

Each configuration runs in a fresh child process so that peak memory is its own.

    python benchmarks/pipeline.py --record
    python benchmarks/pipeline.py --sizes 10x2000
"""
from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import emit, machine, peak_rss_bytes  # noqa: E402


def _worker_peak() -> int:
    return peak_rss_bytes()


def child(args) -> None:
    import numpy as np

    from scalenc import AbstractTrainer, FeatureExtractorFactory, NestedCVModel
    from scalenc.assembly import Assembly
    from scalenc.datasets.tiny_lm import build_tiny_lm

    work = Path(args.work)
    asm = Assembly(work / "data" / "SYN01.zarr")
    cache = work / f"cache-{args.mode}"
    shutil.rmtree(cache, ignore_errors=True)
    lm = work / "tiny-gpt2"
    if "lm" in args.extractors and not lm.exists():
        build_tiny_lm(lm, [str(w) for s in asm.stories for w in asm.words(s).word.values])
    make = FeatureExtractorFactory.create_extractor
    every = {"wordrate": lambda: make("wordrate", None, {"include_phonemes": False}, cache),
             "embeddings": lambda: make("embeddings", str(work / "data" / "embeddings.w2v.txt"), {}, cache),
             "lm": lambda: make("language_model", str(lm), {"lookback": 64, "layer_idx": 2}, cache)}
    exs = [every[name]() for name in args.extractors]
    client = None
    if args.mode == "cluster":
        from distributed import Client, LocalCluster

        env = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, env=env, dashboard_address=None)
        client = Client(cluster)
    t = time.perf_counter()
    m = AbstractTrainer(asm, exs, model=NestedCVModel(alphas=np.logspace(-1, 5, 13), voxel_block=args.block),
                        results_dir=work / "results", run_name=args.mode, logger_backend="none",
                        client=client).train()
    total = time.perf_counter() - t
    out = dict(total=total, **m["timings"], peak=peak_rss_bytes(), median_r=float(m["median_score"]),
               bold_mib=asm.info()["bold_bytes"] / 2**20)
    if client is not None:
        out["worker_peak"] = max(client.run(_worker_peak).values())
        client.close()
        cluster.close()
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["10x2000", "30x20000"])
    ap.add_argument("--block", type=int, default=2000, help="voxels per block / chunk in the fit")
    ap.add_argument("--extractors", nargs="+", default=["wordrate", "embeddings", "lm"],
                    choices=["wordrate", "embeddings", "lm"], help="feature spaces (lm: a tiny random GPT-2)")
    ap.add_argument("--modes", nargs="+", default=["inprocess", "cluster"], choices=["inprocess", "cluster"])
    ap.add_argument("--words-per-story", type=int, default=300,
                    help="story length (1400 gives ~320 TRs/story, LeBel-like)")
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="inprocess", help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    from scalenc.datasets import synthetic

    rows = []
    for size in args.sizes:
        n_st, n_vox = (int(x) for x in size.split("x"))
        work = Path(tempfile.mkdtemp(prefix="scalenc-pipe-"))
        try:
            t = time.perf_counter()
            synthetic(work / "data", n_stories=n_st, words_per_story=args.words_per_story, n_voxels=n_vox, audio=False,
                      voxel_chunk=args.block)
            gen = time.perf_counter() - t
            for mode in args.modes:
                r = subprocess.run([sys.executable, __file__, "--child", "--mode", mode, "--work", str(work),
                                    "--block", str(args.block), "--extractors", *args.extractors],
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    raise RuntimeError(r.stderr[-3000:])
                res = json.loads(r.stdout.strip().splitlines()[-1])
                rows.append((size, mode, gen, res))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    names = {"wordrate": "word rate", "embeddings": "embeddings", "lm": "tiny GPT-2"}
    lines = [f"### pipeline on the synthetic dataset ({' + '.join(names[e] for e in args.extractors)}), voxel "
             f"blocks of {args.block}, {args.words_per_story} words/story, {datetime.date.today().isoformat()}", "",
             f"machine: {machine()}", "",
             "| stories x voxels | responses MiB | mode | extract s | align s | fit s | write s | total s | "
             "peak RSS MiB (client / largest worker) | median r |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for size, mode, gen, r in rows:
        peak = f"{r['peak'] / 2**20:.0f}" + (f" / {r['worker_peak'] / 2**20:.0f}" if "worker_peak" in r else "")
        name = "in-process" if mode == "inprocess" else "LocalCluster, 2 workers x 1 thread"
        lines.append(f"| {size} | {r['bold_mib']:.0f} | {name} | {r['extract']:.1f} | {r['align']:.1f} | "
                     f"{r['fit']:.1f} | {r['write']:.1f} | {r['total']:.1f} | {peak} | {r['median_r']:.3f} |")
    lines.append("")
    emit("\n".join(lines), args.record)


if __name__ == "__main__":
    main()
