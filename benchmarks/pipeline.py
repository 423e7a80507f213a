"""Benchmark: the whole pipeline on the synthetic dataset, in-process vs a 2-worker LocalCluster.

For each size (stories x voxels) it generates the synthetic dataset, then runs
``AbstractTrainer`` with word rate + the generated embeddings + a tiny random GPT-2
(last layer), NestedCVModel with story-chunked inner folds, and reports the time of each
stage (extract, align, fit, write; the trainer's own timings) and peak memory: the
process's VmHWM in-process; on the cluster, the client's and the largest worker's.

Each configuration runs in a fresh child process so that peak memory is its own.

    python benchmarks/pipeline.py --record
    python benchmarks/pipeline.py --sizes 10x2000
    python benchmarks/pipeline.py --sizes 10x2000 --modes cluster cluster-notls --repeats-cluster 3  # TLS cost

The cluster mode is scalenc's ``local_cluster`` (TLS with a certificate made for the run);
``cluster-notls`` the same with ``security=False``.

Against LITcoder (``--litcoder PATH``, a checkout of LITcoder whose ``encoding`` package is
imported from that path; ``--litcoder-python`` an interpreter whose environment has
LITcoder's dependencies, e.g. transformer-lens < 3): both libraries run the same tutorial
code (the LeBel word-rate / embeddings tutorials with both extractors: FIR delays 1-4, the
tutorials' LeBel trimming, the last story held out, ``NestedCVModel("ridge_regression")``
with its defaults, ``logger_backend="wandb"`` with ``WANDB_MODE=disabled``), the module
prefix being the only difference. LITcoder reads the LITcoder pickle of the synthetic
assembly, scalenc its zarr store. Each run is a fresh process started with the page cache
dropped (when root) and empty feature caches; the wall time is the process's, from spawn to
exit (interpreter start and imports included). Runs alternate between the two libraries.

    python benchmarks/pipeline.py --sizes 30x20484 --words-per-story 1400 --modes \\
        --litcoder /path/to/litcoder_core --litcoder-python /path/to/litenv/bin/python --repeats 3
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import emit, machine, peak_rss_bytes  # noqa: E402


def _worker_peak() -> int:
    return peak_rss_bytes()


def child(args) -> None:
    import numpy as np

    from scalenc import AbstractTrainer, FeatureExtractorFactory, NestedCVModel
    from scalenc.assembly import Assembly
    from scalenc.synthetic.tiny_lm import build_tiny_lm

    work = Path(args.work)
    asm = Assembly(work / "data" / "SYN01.zarr")
    cache = work / f"cache-{args.mode}"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(work / "results" / args.mode, ignore_errors=True)  # a repeated run of this mode
    lm = work / "tiny-gpt2"
    if "lm" in args.extractors and not lm.exists():
        build_tiny_lm(lm, [str(w) for s in asm.stories for w in asm.words(s).word.values])
    make = FeatureExtractorFactory.create_extractor
    every = {"wordrate": lambda: make("wordrate", None, {"include_phonemes": False}, cache),
             "embeddings": lambda: make("embeddings", str(work / "data" / "embeddings.w2v.txt"), {}, cache),
             "lm": lambda: make("language_model", str(lm), {"lookback": 64, "layer_idx": 2}, cache)}
    exs = [every[name]() for name in args.extractors]
    client = None
    t_start = time.perf_counter()
    if args.mode in ("cluster", "cluster-notls"):
        from distributed import Client

        from scalenc.distributed import local_cluster

        # scalenc's cluster: TLS with a certificate made for the run; cluster-notls: security=False
        cluster = local_cluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                security=False if args.mode == "cluster-notls" else None)
        client = Client(cluster)
    t = time.perf_counter()
    m = AbstractTrainer(asm, exs, model=NestedCVModel(alphas=np.logspace(-1, 5, 13), voxel_block=args.block),
                        results_dir=work / "results", run_name=args.mode, logger_backend="none",
                        client=client).train()
    total = time.perf_counter() - t
    out = dict(total=total, start=t - t_start, **m["timings"], peak=peak_rss_bytes(), median_r=float(m["median_score"]),
               bold_mib=asm.info()["bold_bytes"] / 2**20)
    if client is not None:
        out["worker_peak"] = max(client.run(_worker_peak).values())
        client.close()
        cluster.close()
    print(json.dumps(out))


LEBEL_TRIM = {"train_features_start": 10, "train_features_end": -5, "train_targets_start": 0,
              "train_targets_end": None, "test_features_start": 50, "test_features_end": -5,
              "test_targets_start": 40, "test_targets_end": None}


def tutorial_child(args) -> None:
    """The tutorials' workflow (word rate + embeddings) with the package ``args.package``
    (``scalenc`` or LITcoder's ``encoding``): the same code for both. Prints one JSON line."""
    import importlib

    t0 = time.perf_counter()
    import numpy as np

    pkg = args.package

    def mod(name):
        return importlib.import_module(f"{pkg}.{name}")

    load_assembly = mod("assembly.assembly_loader").load_assembly
    factory = mod("features.factory").FeatureExtractorFactory
    downsampler_cls = mod("downsample.downsampling").Downsampler
    model_cls = mod("models.nested_cv").NestedCVModel
    trainer_cls = mod("trainer").AbstractTrainer
    t_import = time.perf_counter() - t0

    work = Path(args.work)
    cache = work / f"cache-{pkg}"
    shutil.rmtree(cache, ignore_errors=True)
    tick = time.perf_counter()
    assembly = load_assembly(args.assembly)
    t_load = time.perf_counter() - tick
    wordrate = factory.create_extractor(modality="wordrate", model_name="wordrate", config={}, cache_dir=str(cache))
    embeddings = factory.create_extractor(
        modality="embeddings", model_name="word2vec",
        config={"vector_path": str(work / "data" / "embeddings.w2v.txt"), "binary": False, "lowercase": False,
                "oov_handling": "copy_prev", "use_tqdm": False},
        cache_dir=str(cache))
    trainer = trainer_cls(assembly=assembly, feature_extractors=[wordrate, embeddings], downsampler=downsampler_cls(),
                          model=model_cls(model_name="ridge_regression"), fir_delays=[1, 2, 3, 4],
                          trimming_config=dict(LEBEL_TRIM), use_train_test_split=True, logger_backend="wandb",
                          wandb_project_name="bench", dataset_type="lebel", results_dir=str(work / f"results-{pkg}"),
                          downsample_config={})
    stages = {"extract": 0.0, "align": 0.0, "fit": 0.0, "write": 0.0}
    if pkg != "scalenc":  # LITcoder reports no stage times: time its trainer's steps from outside
        def timed(obj, name, stage):
            fn = getattr(obj, name)

            def wrapper(*a, **k):
                tick = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    stages[stage] += time.perf_counter() - tick
            setattr(obj, name, wrapper)
        for name, stage in (("extract_and_downsample_features", "extract"), ("apply_fir_delays", "align"),
                            ("structure_data", "align"), ("log_metrics", "write"), ("save_model", "write")):
            timed(trainer, name, stage)
        timed(trainer.model, "fit_predict", "fit")
    tick = time.perf_counter()
    metrics = trainer.train()
    t_train = time.perf_counter() - tick
    if pkg == "scalenc":
        stages = dict(trainer.timings)
    r = np.asarray(metrics["correlations"], dtype=np.float64)
    np.save(work / f"r-{pkg}.npy", r)
    print(json.dumps(dict(imports=t_import, load=t_load, train=t_train, in_process=time.perf_counter() - t0,
                          **stages, peak=peak_rss_bytes(), median_r=float(np.nanmedian(r)))))


def compare_litcoder(args, size: str) -> list[tuple[str, dict]]:
    """Run the tutorial workflow with LITcoder and with scalenc on one synthetic set."""
    import numpy as np
    from _common import drop_caches

    from scalenc.assembly import Assembly
    from scalenc.synthetic import synthetic
    from scalenc.synthetic.litcoder_pickle import write_litcoder_pickle

    n_st, n_vox = (int(x) for x in size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="scalenc-vs-litcoder-"))
    rows = []
    try:
        if n_vox != 20484:  # LITcoder's trainer draws its maps on fsaverage5 and accepts nothing else
            raise SystemExit("the LITcoder comparison needs 20484 voxels (fsaverage5 vertices), e.g. --sizes 30x20484")
        synthetic(work / "data", n_stories=n_st, words_per_story=args.words_per_story, n_voxels=n_vox, audio=False,
                  layout="fsaverage5")
        zarr_path = work / "data" / "SYN01.zarr"
        pkl = write_litcoder_pickle(Assembly(zarr_path), work / "assembly_lebel_syn01.pkl")
        sides = {"scalenc": (sys.executable, "scalenc", str(zarr_path), {}),
                 "LITcoder": (args.litcoder_python or sys.executable, "encoding", str(pkl),
                              {"PYTHONPATH": str(Path(args.litcoder).resolve())})}
        for rep in range(args.repeats):
            for name, (python, pkg, asm, extra_env) in sides.items():
                env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true", **extra_env}
                dropped = drop_caches()
                tick = time.perf_counter()
                r = subprocess.run([python, __file__, "--child", "--tutorial", "--package", pkg, "--assembly", asm,
                                    "--work", str(work)], capture_output=True, text=True, env=env, cwd=work)
                wall = time.perf_counter() - tick
                if r.returncode != 0:
                    raise RuntimeError(f"{name} run failed:\n{r.stderr[-3000:]}")
                res = json.loads(r.stdout.strip().splitlines()[-1])
                res.update(wall=wall, cache_dropped=dropped, repeat=rep)
                print(f"  {size} {name} run {rep + 1}: {wall:.1f} s", file=sys.stderr)
                rows.append((name, res))
        r_s, r_l = np.load(work / "r-scalenc.npy"), np.load(work / "r-encoding.npy")
        ok = np.isfinite(r_s) & np.isfinite(r_l)
        agree = dict(r_corr=float(np.corrcoef(r_s[ok], r_l[ok])[0, 1]), max_abs=float(np.max(np.abs(r_s - r_l)[ok])),
                     bold_mib=Assembly(zarr_path).info()["bold_bytes"] / 2**20,
                     pkl_mib=pkl.stat().st_size / 2**20)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows, agree


def litcoder_table(size: str, rows, agree, args) -> str:
    import statistics

    lines = [f"### scalenc vs LITcoder, the tutorials' workflow (word rate + embeddings), synthetic LeBel-layout set "
             f"{size} ({args.words_per_story} words/story), {datetime.date.today().isoformat()}", "",
             f"machine: {machine()}; page cache dropped before each run: {all(r['cache_dropped'] for _, r in rows)}; "
             f"responses {agree['bold_mib']:.0f} MiB float32 (LITcoder pickle {agree['pkl_mib']:.0f} MiB)", "",
             "| library | run | wall s (process) | imports s | load s | extract s | align s | fit s | write s | "
             "peak RSS MiB | median r (test story) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows:
        lines.append(f"| {name} | {r['repeat'] + 1} | {r['wall']:.1f} | {r['imports']:.1f} | {r['load']:.1f} | "
                     f"{r['extract']:.1f} | {r['align']:.1f} | {r['fit']:.1f} | {r['write']:.1f} | "
                     f"{r['peak'] / 2**20:.0f} | {r['median_r']:.3f} |")
    med = {n: statistics.median(r["wall"] for m, r in rows if m == n) for n in ("scalenc", "LITcoder")}
    lines += ["", f"Median wall: LITcoder {med['LITcoder']:.1f} s, scalenc {med['scalenc']:.1f} s: "
              f"**{med['LITcoder'] / med['scalenc']:.2f}x**. Per-voxel test r, scalenc vs LITcoder: correlation "
              f"{agree['r_corr']:.4f}, largest difference {agree['max_abs']:.3f}.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["10x2000", "30x20000"])
    ap.add_argument("--block", type=int, default=2000, help="voxels per block / chunk in the fit")
    ap.add_argument("--extractors", nargs="+", default=["wordrate", "embeddings", "lm"],
                    choices=["wordrate", "embeddings", "lm"], help="feature spaces (lm: a tiny random GPT-2)")
    ap.add_argument("--modes", nargs="*", default=["inprocess", "cluster"],
                    choices=["inprocess", "cluster", "cluster-notls"],
                    help="cluster: 2-worker LocalCluster with TLS (scalenc's default); cluster-notls: without")
    ap.add_argument("--repeats-cluster", type=int, default=1, metavar="N",
                    help="runs of each cluster mode, alternating (for the TLS overhead)")
    ap.add_argument("--litcoder", default=None, metavar="PATH",
                    help="a LITcoder checkout (the folder holding its `encoding` package): compare the tutorials' "
                         "workflow against it")
    ap.add_argument("--litcoder-python", default=None, metavar="PYTHON",
                    help="interpreter with LITcoder's dependencies (default: this one)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per library in the LITcoder comparison")
    ap.add_argument("--words-per-story", type=int, default=300,
                    help="story length (1400 gives ~320 TRs/story, LeBel-like)")
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="inprocess", help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tutorial", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--package", default="scalenc", help=argparse.SUPPRESS)
    ap.add_argument("--assembly", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        (tutorial_child if args.tutorial else child)(args)
        return
    if args.litcoder:
        for size in args.sizes:
            rows, agree = compare_litcoder(args, size)
            emit(litcoder_table(size, rows, agree, args), args.record)
    if not args.modes:
        return
    from scalenc.synthetic import synthetic

    rows = []
    for size in args.sizes:
        n_st, n_vox = (int(x) for x in size.split("x"))
        work = Path(tempfile.mkdtemp(prefix="scalenc-pipe-"))
        try:
            t = time.perf_counter()
            synthetic(work / "data", n_stories=n_st, words_per_story=args.words_per_story, n_voxels=n_vox, audio=False,
                      voxel_chunk=args.block)
            gen = time.perf_counter() - t
            order = [m for m in args.modes if not m.startswith("cluster")] + [
                m for _ in range(args.repeats_cluster) for m in args.modes if m.startswith("cluster")]
            for mode in order:
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
        name = {"inprocess": "in-process", "cluster": "LocalCluster, 2 workers x 1 thread, TLS",
                "cluster-notls": "LocalCluster, 2 workers x 1 thread, no TLS"}[mode]
        lines.append(f"| {size} | {r['bold_mib']:.0f} | {name} | {r['extract']:.1f} | {r['align']:.1f} | "
                     f"{r['fit']:.1f} | {r['write']:.1f} | {r['total']:.1f} | {peak} | {r['median_r']:.3f} |")
    lines.append("")
    import statistics

    for size in args.sizes:  # the cost of TLS: median totals of the alternating cluster runs
        def med(mode, key):
            vals = [r[key] for sz, mm, _, r in rows if sz == size and mm == mode]
            return statistics.median(vals) if vals else None, len(vals)

        (a, n), (b, _) = med("cluster", "total"), med("cluster-notls", "total")
        if a is not None and b is not None:
            sa, sb = med("cluster", "start")[0], med("cluster-notls", "start")[0]
            lines += [f"{size}: TLS overhead on the cluster run (medians of {n} alternating runs each): total "
                      f"{a:.1f} s with TLS vs {b:.1f} s without: **{100 * (a - b) / b:+.1f} %**; cluster start "
                      f"{sa:.1f} s vs {sb:.1f} s.", ""]
    emit("\n".join(lines), args.record)


if __name__ == "__main__":
    main()
