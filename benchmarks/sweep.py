"""Benchmark: an 8-subject x 4-layer sweep (:func:`scalenc.sweep.sweep`) against the 32
independent runs a user would otherwise make (one ``AbstractTrainer`` per subject and layer).

Data: ``--subjects`` synthetic subjects who heard the same ``--stories`` stories (same
words and times; each its own voxels and noise), a random tiny GPT-2 with ``--layers``
layers (hidden size ``--hidden``, so p = 4 delays x hidden), NestedCVModel with 5 inner
folds and 10 alphas. Both sides start from empty feature caches; the independent runs share
one cache (as a user running them one after the other would), so only the first extracts.

Reported, in seconds: the stimulus side (feature extraction or cache reads, alignment of the
design matrices) and the ridge's X-side decompositions (``G = X^T X``, fold downdates,
``eigh``: the time spent in :func:`scalenc.ridge.solver.prepare_x`), the rest of the fits
(the Y side), writing, and the total; then the ratios, and whether every per-voxel r,
alpha and p of the 32 (subject, layer) fits is identical.

    python benchmarks/sweep.py --record            # ~5 min on 2 cores
    python benchmarks/sweep.py --subjects 2 --layers 2 --stories 4 --voxels 200   # quick
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from _common import emit, machine  # noqa: E402


class _Timed:
    """Wraps ``scalenc.ridge.solver.prepare_x`` to add up the seconds spent in it."""

    def __init__(self, fn):
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *a, **k):
        t = time.perf_counter()
        try:
            return self.fn(*a, **k)
        finally:
            self.seconds += time.perf_counter() - t
            self.calls += 1


def run(args) -> str:
    import scalenc.ridge.solver as solver
    from scalenc import AbstractTrainer, FeatureExtractorFactory, NestedCVModel, results
    from scalenc.synthetic import synthetic
    from scalenc.synthetic.tiny_lm import build_tiny_lm
    from scalenc.sweep import sweep

    work = Path(args.workdir or tempfile.mkdtemp(prefix="scalenc-sweep-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    subs = []
    for k in range(args.subjects):  # same seed: same stories, words and times; responses differ
        lo = 0.05 + 0.05 * k
        subs.append(synthetic(work / f"s{k}", n_stories=args.stories, words_per_story=args.words,
                              n_voxels=args.voxels + 17 * k, embedding_dim=8, n_test_repeats=2, audio=False,
                              subject=f"SUB{k + 1:02d}", seed=5, snr_range=(lo, 1.5 + lo), voxel_chunk=1024,
                              overwrite=True))
    asms = [s.assembly() for s in subs]
    words = [str(w) for s in asms[0].stories for w in asms[0].words(s).word.values]
    lm = build_tiny_lm(work / "tiny-gpt2", words, n_layer=args.layers, n_embd=args.hidden, seed=1)
    t_data = time.perf_counter() - t
    layers = list(range(1, args.layers + 1))
    model = NestedCVModel(alphas=np.logspace(-1, 5, 10), n_inner_folds=5, seed=0)

    def extractor(cache):
        return [FeatureExtractorFactory.create_extractor("language_model", str(lm), {"lookback": 64}, cache)]

    timed = _Timed(solver.prepare_x)
    solver.prepare_x = timed  # solve_ridge_cv and NestedCVModel.x_side look it up here
    import scalenc.models.nested_cv as ncv

    ncv.prepare_x = timed
    try:
        # ---- the sweep --------------------------------------------------------------------------
        t = time.perf_counter()
        res = sweep(asms, {"gpt": extractor(work / "cache-sweep")}, layers=layers, model=model,
                    results_dir=work / "out", name="sweep", cache_dir=work / "cache-sweep", overwrite=True)
        sw_total = time.perf_counter() - t
        sw = res.timings
        sw_decomp = timed.seconds
        sw_calls = timed.calls

        # ---- 32 independent runs ----------------------------------------------------------------
        timed.seconds, timed.calls = 0.0, 0
        ind = {"extract": 0.0, "align": 0.0, "fit": 0.0, "write": 0.0}
        t = time.perf_counter()
        same = True
        for asm in asms:
            for layer in layers:
                tr = AbstractTrainer(asm, extractor(work / "cache-indep"), None, model, layer_idx=layer,
                                     results_dir=work / "indep" / asm.subject, run_name=f"layer{layer}",
                                     logger_backend="none", overwrite=True)
                tr.train()
                for k in ind:
                    ind[k] += tr.timings[k]
                got = results.load(res.runs[(asm.subject, "gpt")]).layer(str(layer)).load()
                want = results.load(tr.run_dir).layer(str(layer)).load()
                same &= all(np.array_equal(got[v].values, want[v].values, equal_nan=True) for v in ("r", "alpha", "p"))
        ind_total = time.perf_counter() - t
        ind_decomp = timed.seconds
        ind_calls = timed.calls
    finally:
        solver.prepare_x = timed.fn
        ncv.prepare_x = timed.fn
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)

    n_runs = args.subjects * args.layers
    stim_sw = sw["stimulus"]                                  # extraction + designs + X sides (one graph)
    stim_ind = ind["extract"] + ind["align"] + ind_decomp     # the same work in the 32 runs
    y_sw = sw["responses"]
    y_ind = ind["fit"] - ind_decomp
    today = datetime.date.today().isoformat()
    p = 4 * args.hidden
    lines = [f"### sweep: {args.subjects} subjects x {args.layers} layers (tiny GPT-2, p={p}) vs {n_runs} "
             f"independent runs, {args.stories} stories x ~{args.words} words, {args.voxels}-"
             f"{args.voxels + 17 * (args.subjects - 1)} voxels per subject, {today}", "",
             f"machine: {machine()}; in-process (no cluster); other jobs shared the cores (load average "
             f"{os.getloadavg()[0]:.1f} at the end). Data generation: {t_data:.0f} s (not counted).", "",
             f"| seconds | sweep | {n_runs} independent runs | ratio |", "|---|---:|---:|---:|",
             f"| stimulus side + X-side decompositions | {stim_sw:.1f} | {stim_ind:.1f} | "
             f"**{stim_ind / stim_sw:.1f}x** |",
             f"| of which the decompositions (prepare_x: {sw_calls} vs {ind_calls} calls) | {sw_decomp:.1f} | "
             f"{ind_decomp:.1f} | {ind_decomp / max(sw_decomp, 1e-9):.1f}x |",
             f"| Y side of the fits (C = X^T Y, voxel blocks, test scores) | {y_sw:.1f} | {y_ind:.1f} | "
             f"{y_ind / max(y_sw, 1e-9):.1f}x |",
             f"| writing results (run folders, reports; sweep: + summary, figure) | {sw['write']:.1f} | "
             f"{ind['write']:.1f} | {ind['write'] / max(sw['write'], 1e-9):.1f}x |",
             f"| total wall | {sw_total:.1f} | {ind_total:.1f} | {ind_total / sw_total:.1f}x |", "",
             f"Sweep graph: {sw['n_extract']} extractions, {sw['n_design']} design matrices, {sw['n_x_side']} X sides "
             f"for {sw['n_fits']} fits. Per-voxel r, alpha and p of all {n_runs} (subject, layer) fits identical "
             f"to the independent runs: **{same}**. (The independent runs' stimulus side: extract "
             f"{ind['extract']:.1f} s (cache reads after the first run), align {ind['align']:.1f} s.)", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=8)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--stories", type=int, default=10)
    ap.add_argument("--words", type=int, default=400)
    ap.add_argument("--voxels", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    emit(run(args), args.record)


if __name__ == "__main__":
    main()
