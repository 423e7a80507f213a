"""The GPU check: everything issue 18 measures, in one run that prints one markdown table.

Rows (each section runs on its own; a failure becomes that row's result, not an abort):

- **GPU tests**: ``pytest -m gpu`` (``--quick``: ``tests/test_backend.py`` only).
- **ridge**: :func:`scalenc.ridge.solve_ridge_cv` at LeBel scale (n 28,000 TRs, p 3,072,
  95,556 voxels, 10 alphas, 5 folds; ``--quick``: 1,500 x 96 x 3,000) on each backend of the
  device (``cuda``: cupy and torch_cuda where importable; ``cpu``: numpy and torch), Y
  already on the device: total seconds, the X side (G, downdates, eigendecompositions,
  :func:`~scalenc.ridge.solver.prepare_x` on the backend) and the voxel side, TFLOP/s of
  the voxel side (its GEMM flops / its seconds), and agreement with float64 numpy on a
  voxel subset (same chosen alpha, largest CV-score difference).
- **trainer**: :class:`scalenc.AbstractTrainer` on the synthetic dataset (30 stories x
  20,000 voxels, word rate + embeddings + a random 12 x 768 GPT-2 at lookback 256, default
  :class:`~scalenc.NestedCVModel` with permutation p-values; ``--quick``: 4 x 300, 2 x 64
  GPT-2 at lookback 32), once on the CPU (numpy, LM on the CPU) and once on ``--device``
  (torch backend, LM there), each after an untimed warm-up run on a tiny set: seconds of
  each, their ratio, largest r difference.
- **speech**: :class:`~scalenc.features.speech.SpeechExtractor` on random Whisper and
  HuBERT models (``features_speech.py``'s; hidden 384, 4 layers; ``--quick``: 32, 1) over
  60 s of tones (600 windows of 16 s, stride 0.1 s; ``--quick``: 4 s, 8 windows of 1.5 s):
  seconds, and with ``--reference PATH`` (the scaling-laws ``extract_speech_features.py``)
  the reference's seconds at its batch 64, the speed-up and the largest feature
  difference; bfloat16 against float32 (largest difference / largest value).
- **LM**: :class:`~scalenc.features.language_model.LanguageModelExtractor`, random GPT-2
  6 x 512 (``--quick``: 2 x 64), 20,000 words (``--quick``: 1,000): words/s; bfloat16
  against float32.
- **dask-cuda**: ``scalenc.distributed.client("cuda")`` (one worker per GPU) solving the
  ridge with a dask Y against the in-process result (skipped without CUDA or dask-cuda).

Finishes in about 6 minutes on one H200 (full sizes); ``--device cpu --quick`` in about a
minute on a laptop core (tested by ``tests/test_benchmarks.py``)::

    python benchmarks/gpu.py --reference /path/to/extract_speech_features.py --record
    python benchmarks/gpu.py --device cpu --quick
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
from _common import emit, machine  # noqa: E402

FULL = dict(ridge=(28_000, 3_072, 95_556), alphas=10, folds=5, f64_voxels=1_000,
            trainer=dict(n_stories=30, n_voxels=20_000, words=600, n_layer=12, n_embd=768, n_head=12, lookback=256),
            speech=dict(seconds=60.0, chunk=0.1, context=16.0, d_model=384, layers=4, heads=6, batch=64),
            lm=dict(words=20_000, n_layer=6, n_embd=512, n_head=8, lookback=256))
QUICK = dict(ridge=(1_500, 96, 3_000), alphas=10, folds=5, f64_voxels=300,
             trainer=dict(n_stories=4, n_voxels=300, words=200, n_layer=2, n_embd=64, n_head=4, lookback=32),
             speech=dict(seconds=4.0, chunk=0.5, context=1.0, d_model=32, layers=1, heads=2, batch=8),
             lm=dict(words=1_000, n_layer=2, n_embd=64, n_head=4, lookback=32))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _backends(device: str) -> list[str]:
    from scalenc.ridge.backend import BACKENDS, GPU_BACKENDS, unavailable

    names = [b for b in BACKENDS if (b in GPU_BACKENDS) == device.startswith("cuda")]
    return [b for b in names if unavailable(b) is None]


# --------------------------------------------------------------------------------------
def gpu_tests(args, size) -> list[tuple]:
    files = ["tests/test_backend.py"] if args.quick else ["tests"]
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files],
                       capture_output=True, text=True, cwd=ROOT)
    counts = dict((k, int(v)) for v, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", r.stdout))
    res = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("passed", "failed", "skipped"))
    return [("GPU tests", f"pytest -m gpu {' '.join(files)}", f"{res} ({time.perf_counter() - t0:.0f} s)")]


def _ridge_problem(n, p, v, seed=0):
    """Correlated features, voxels of spread SNR (so the chosen alphas vary)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)).astype(np.float32)
    X[:, 1:] += 0.5 * X[:, :-1]  # correlated neighbours
    W = rng.standard_normal((p, v)) * (rng.uniform(0, 1, v) ** 3 / np.sqrt(p))
    return X, W.astype(np.float32)


def ridge(args, size) -> list[tuple]:
    import torch

    from scalenc.ridge import solve_ridge_cv
    from scalenc.ridge.backend import get_backend
    from scalenc.ridge.solver import prepare_x

    n, p, v = size["ridge"]
    A, K = size["alphas"], size["folds"]
    alphas = np.logspace(-1, 6, A)
    folds = [(np.setdiff1d(np.arange(n), t), t) for t in np.array_split(np.arange(n), K)]
    X, W = _ridge_problem(n, p, v)
    sub = np.arange(min(v, size["f64_voxels"]))
    rows = []
    # the float64 reference's X side (numpy, CPU), computed once and shared by every backend's check
    xs64 = prepare_x(X.astype(np.float64), folds, alphas, dtype="float64", backend="numpy")
    for name in _backends(args.device):
        bk = get_backend(name)
        # Y made on the device already (as a trainer's responses would be), with the device's RNG
        Xd = bk.asarray(X)
        if name.startswith("torch"):
            g = torch.Generator(device=bk.device).manual_seed(1)
            Y = torch.empty((n, v), dtype=torch.float32, device=bk.device)
            noise = lambda shape: torch.randn(shape, generator=g, device=bk.device)  # noqa: E731
        else:  # numpy, cupy
            Y = bk.xp.empty((n, v), dtype=bk.xp.float32)
            rs = np.random.default_rng(1) if name == "numpy" else bk.xp.random.RandomState(1)
            noise = lambda shape: rs.standard_normal(size=shape, dtype=bk.xp.float32)  # noqa: E731
        step = 8_192
        for a in range(0, v, step):
            b = min(v, a + step)
            Y[:, a:b] = Xd @ bk.asarray(W[:, a:b]) + noise((n, b - a))
        Ysub_host = bk.to_numpy(Y[:, sub]).astype(np.float64)
        del Xd
        bk.synchronize()
        t0 = time.perf_counter()
        xs = prepare_x(X, folds, alphas, backend=bk)
        bk.synchronize()
        t_x = time.perf_counter() - t0
        res = solve_ridge_cv(X, Y, alphas, folds, backend=bk, x_side=xs, progress=False)
        bk.synchronize()
        t_all = time.perf_counter() - t0
        t_y = t_all - t_x
        r = int(min(p, n))
        flops = 2 * n * p * v + K * (2 * p * r * v + A * (2 * r * r * v + 4 * r * v)) + 4 * p * r * v
        ref = solve_ridge_cv(X.astype(np.float64), Ysub_host, alphas, folds, backend="numpy", dtype="float64",
                             return_coef=False, progress=False, x_side=xs64)  # float64 numpy on a voxel subset
        same = float(np.mean(res.best_alpha_index[sub] == ref.best_alpha_index)) * 100
        dscore = float(np.abs(res.cv_scores[:, sub] - ref.cv_scores).max())
        rows.append((f"ridge CV ({name})", f"n {n:,}, p {p:,}, v {v:,}, {A} alphas, {K} folds",
                     f"{t_all:.2f} s (X side {t_x:.2f} s, voxel side {t_y:.2f} s, {flops / t_y / 1e12:.3g} TFLOP/s); "
                     f"same alpha as float64 on {same:.1f} % of {sub.size:,} voxels, max CV-score diff {dscore:.1e}"))
        del Y, res, xs
        if name == "cupy":  # hand the pool's memory back before the next backend sizes its blocks
            bk.xp.get_default_memory_pool().free_all_blocks()
        elif name == "torch_cuda":
            torch.cuda.empty_cache()
    return rows


def trainer(args, size) -> list[tuple]:
    from scalenc import AbstractTrainer, FeatureExtractorFactory, NestedCVModel
    from scalenc.synthetic import synthetic
    from scalenc.synthetic.tiny_lm import build_tiny_lm

    c = size["trainer"]
    work = Path(args.workdir) / "trainer"
    ds = synthetic(work / "data", n_stories=c["n_stories"], words_per_story=c["words"], n_voxels=c["n_voxels"],
                   audio=False, seed=0, overwrite=True)
    asm = ds.assembly()
    lm = build_tiny_lm(work / "gpt2", [str(w) for s in asm.stories for w in asm.words(s).word.values],
                       n_layer=c["n_layer"], n_embd=c["n_embd"], n_head=c["n_head"])
    make = FeatureExtractorFactory.create_extractor
    small = synthetic(work / "warmup", n_stories=3, words_per_story=300, n_voxels=50, audio=False, seed=1,
                      overwrite=True).assembly()
    out = {}
    gpu_backend = "torch_cuda" if args.device.startswith("cuda") else "torch"
    runs = (("cpu", "cpu", "numpy"), (args.device, args.device, gpu_backend))

    def train(assembly, label, device, backend, tag):
        cache = work / f"cache-{tag}-{label}-{backend}"
        exs = [make("wordrate", None, {"include_phonemes": False}, cache),
               make("embeddings", str(ds.embeddings_path), {}, cache),
               make("language_model", str(lm), {"lookback": c["lookback"], "layer_idx": c["n_layer"] // 2,
                                                  "device": device}, cache)]
        return AbstractTrainer(assembly, exs, model=NestedCVModel(backend=backend), results_dir=work / "results",
                               run_name=f"{tag}-{label}-{backend}", logger_backend="none", overwrite=True).train()

    for run in runs:  # imports, model loads, kernel compilation: not timed
        train(small, *run, "warmup")
    for label, device, backend in runs:
        t0 = time.perf_counter()
        m = train(asm, label, device, backend, "timed")
        _sync(device)
        out[label, backend] = (time.perf_counter() - t0, np.asarray(m["correlations"], np.float64),
                               m.get("timings", {}))
    (t_cpu, r_cpu, tm_cpu), (t_dev, r_dev, tm_dev) = out.values()
    parts = lambda tm: ", ".join(f"{k} {tm[k]:.1f}" for k in ("extract", "fit") if k in tm)  # noqa: E731
    return [("trainer CPU vs device", f"{c['n_stories']} stories x {c['n_voxels']:,} voxels, word rate + embeddings "
             f"+ random GPT-2 {c['n_layer']}x{c['n_embd']} (lookback {c['lookback']})",
             f"CPU {t_cpu:.1f} s ({parts(tm_cpu)}) vs {args.device}/{gpu_backend} {t_dev:.1f} s ({parts(tm_dev)}): "
             f"{t_cpu / t_dev:.2f}x; largest r difference {np.nanmax(np.abs(r_cpu - r_dev)):.1e}, "
             f"median r {np.nanmedian(r_dev):.3f}")]


def speech(args, size) -> list[tuple]:
    import soundfile as sf

    from features_speech import _Stimulus, build_model, import_reference, tones
    from scalenc.features.speech import SpeechExtractor, sliding_windows

    c = size["speech"]
    work = Path(args.workdir) / "speech"
    work.mkdir(parents=True, exist_ok=True)
    sr = 16000
    y = tones(c["seconds"], sr, 0)
    wav = work / "story.wav"
    sf.write(wav, y, sr, subtype="FLOAT")
    stim = _Stimulus(wav)
    ref_fn = import_reference(args.reference) if args.reference else None
    rows = []
    for kind in ("whisper", "hubert"):
        model_dir = build_model(work / kind, kind, c["d_model"], c["layers"], c["heads"])
        base = {"chunk_size": c["chunk"], "context_size": c["context"], "batch_size": c["batch"],
                "device": args.device, "strict_device": True}
        ex = SpeechExtractor(model_dir, base)
        m = ex.load()
        ex.compute_windows(y, sliding_windows(int(c["chunk"] * sr) * 2, sr, c["chunk"], c["context"]), m)  # warm-up
        _sync(args.device)
        t0 = time.perf_counter()
        ours = ex.compute(stim, "story")["features"].values
        _sync(args.device)
        t = time.perf_counter() - t0
        K = ours.shape[1]
        res = f"{t:.2f} s ({K / t:.0f} windows/s)"
        if ref_fn is not None:
            import torch
            from transformers import AutoFeatureExtractor, AutoModel

            dev = m.device
            ref_model = AutoModel.from_pretrained(model_dir, output_hidden_states=True).eval().to(dev)
            ref_fe = AutoFeatureExtractor.from_pretrained(model_dir)
            _sync(args.device)
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = ref_fn(ref_model, {"stride": 320, "min_input_length": 400}, torch.from_numpy(y).to(dev),
                             c["chunk"], c["context"], batchsz=64, feature_extractor=ref_fe, disable_tqdm=True)
            _sync(args.device)
            t_ref = time.perf_counter() - t0
            mods = out["module_features"]
            ref = np.stack([np.asarray(mods[k], np.float32) for k in sorted(mods, key=lambda k: int(k.split(".")[-1]))])
            res += (f"; reference (batchsz 64) {t_ref:.2f} s: {t_ref / t:.2f}x; largest difference "
                    f"{float(np.abs(ref - ours).max()):.1e}")
        half = SpeechExtractor(model_dir, {**base, "dtype": "bfloat16"}).compute(stim, "story")["features"].values
        rel = np.abs(half - ours).max() / np.abs(ours).max()
        res += f"; bfloat16 vs float32: largest difference / largest value {rel:.1e}"
        rows.append((f"speech ({kind})", f"{c['seconds']:g} s audio, {K} windows of {c['context'] + c['chunk']:g} s, "
                     f"hidden {c['d_model']}, {c['layers']} layers, batch {c['batch']}", res))
    return rows


def lm(args, size) -> list[tuple]:
    from features_lm import WordsAssembly
    from scalenc.synthetic.tiny_lm import build_tiny_lm
    from scalenc.features.language_model import LanguageModelExtractor

    c = size["lm"]
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(2_000)]
    words = [vocab[i] for i in rng.zipf(1.3, c["words"]) % len(vocab)]
    folder = build_tiny_lm(Path(args.workdir) / "lm", vocab, n_layer=c["n_layer"], n_embd=c["n_embd"],
                           n_head=c["n_head"])
    asm = WordsAssembly(words)
    cfg = dict(lookback=c["lookback"], device=args.device, strict_device=True)
    LanguageModelExtractor(str(folder), cfg).compute(WordsAssembly(words[:50]), "s")  # load + warm-up
    _sync(args.device)
    t0 = time.perf_counter()
    fs = LanguageModelExtractor(str(folder), cfg).compute(asm, "s")["features"].values
    _sync(args.device)
    t = time.perf_counter() - t0
    half = LanguageModelExtractor(str(folder), dict(cfg, dtype="bfloat16")).compute(asm, "s")["features"].values
    return [("LM extractor", f"random GPT-2 {c['n_layer']}x{c['n_embd']}, {c['words']:,} words, lookback "
             f"{c['lookback']}", f"{c['words'] / t:,.0f} words/s ({t:.2f} s); bfloat16 vs float32: largest "
             f"difference / largest value {np.abs(half - fs).max() / np.abs(fs).max():.1e}")]


def dask_cuda(args, size) -> list[tuple]:
    import importlib.util

    what = "client(\"cuda\"): ridge over dask voxel chunks on one worker per GPU"
    if not args.device.startswith("cuda"):
        return [("dask-cuda", what, "skipped: no CUDA device")]
    if importlib.util.find_spec("dask_cuda") is None:
        return [("dask-cuda", what, "skipped: dask-cuda is not importable")]
    import dask.array as da

    from scalenc.distributed import client
    from scalenc.ridge import solve_ridge_cv

    n, p, v = (4_000, 256, 20_000) if not args.quick else (1_000, 64, 2_000)
    X, W = _ridge_problem(n, p, v)
    Y = X @ W + np.random.default_rng(1).standard_normal((n, v)).astype(np.float32)
    folds = [(np.setdiff1d(np.arange(n), t), t) for t in np.array_split(np.arange(n), 5)]
    alphas = np.logspace(-1, 6, 10)
    ref = solve_ridge_cv(X, Y, alphas, folds, backend="torch_cuda", progress=False)
    with client("cuda") as c:
        n_workers = len(c.scheduler_info()["workers"])
        t0 = time.perf_counter()
        got = solve_ridge_cv(X, da.from_array(Y, chunks=(n, 2_048)), alphas, folds, backend="torch_cuda",
                             progress=False)
        t = time.perf_counter() - t0
    same = float(np.mean(got.best_alpha_index == ref.best_alpha_index)) * 100
    return [("dask-cuda", f"{what}; n {n:,}, p {p}, v {v:,}",
             f"{n_workers} worker(s), {t:.2f} s; same alpha as in-process on {same:.1f} % of voxels, "
             f"largest coef difference "
             f"{np.abs(got.coef - ref.coef).max():.1e}")]


SECTIONS = {"tests": gpu_tests, "ridge": ridge, "trainer": trainer, "speech": speech, "lm": lm, "dask": dask_cuda}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--quick", action="store_true", help="small sizes (a CPU check of the script)")
    ap.add_argument("--reference", default=None, help="path of the scaling-laws extract_speech_features.py")
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    ap.add_argument("--workdir", default=None, help="folder for the data and models (default: a temp dir)")
    ap.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="scalenc_gpu_check_")
    size = QUICK if args.quick else FULL
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--device {args.device}: CUDA is not available here (torch {torch.__version__}); use --device cpu",
              file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    rows = []
    for name in args.sections:
        t0 = time.perf_counter()
        try:
            rows += SECTIONS[name](args, size)
        except Exception as e:  # noqa: BLE001 - one failed section is one row
            traceback.print_exc()
            rows.append((name, "-", f"FAILED: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
        print(f"[{name}: {time.perf_counter() - t0:.1f} s]", file=sys.stderr)
    gpu = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "none"
    lines = [f"## GPU check ({args.device}{', quick sizes' if args.quick else ''})\n",
             f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"- machine: {machine()}; GPU: {gpu}; torch {torch.__version__}, {torch.get_num_threads()} threads",
             f"- total {time.perf_counter() - t_start:.0f} s", "",
             "| check | size | result |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    emit("\n".join(lines) + "\n", args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
