"""Check: the scaling-laws script's output folder, read by ``precomputed``, equals ``SpeechExtractor``.

Runs HuthLab/encoding-model-scaling-laws' ``extract_speech_features.py`` as its README
does (``--model M --chunksz 100 --contextsz 16000 --use_featext --batchsz 64``), from the
path given with ``--reference`` (fetch the repository; the file is never copied into
scalenc), on a tiny random Whisper (:func:`scalenc.synthetic.hub_cache.build_tiny_whisper`)
and WAV files of synthetic tones (``--seconds``, one story each, each longer than one
window). The script writes
``features_cnk0.1_ctx16.0/<model>/`` (``encoder.0 .. encoder.N/<story>.npz``,
``<story>_times.npz``); that folder is read through the ``precomputed`` feature source and
compared with ``SpeechExtractor.compute`` on the same audio: rows, times, and the features
after Lanczos downsampling (``Downsampler()``) onto a TR grid (``--tr``).

To run the script's command-line part as is, this file stands in for what it needs and
this machine may lack: empty ``cottoncandy`` / ``ipdb`` modules (unused without
``--bucket``), a ``torchaudio.load`` reading the WAV with soundfile, ``Module.cuda()`` as a
no-op when there is no GPU, and a ``speech_model_configs.json`` (in a work folder used as
the current directory) naming the random model's folder, with the repository's stride and
minimum input length of ``whisper-tiny``.

    python benchmarks/features_precomputed.py --reference /path/to/extract_speech_features.py [--record]
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import io
import json
import os
import runpy
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
from _common import emit, machine  # noqa: E402
from features_speech import tones  # noqa: E402

MODEL = "whisper-tiny-random"


class _Stimulus:
    """What SpeechExtractor asks of an assembly: each story's audio path."""

    def __init__(self, paths):
        self.paths = paths

    def audio_path(self, story):
        return str(self.paths[story])


@contextlib.contextmanager
def _script_environment(work: Path, argv: list[str]):
    """cwd, argv and the stand-ins described in the module docstring, undone on exit."""
    import soundfile as sf
    import torch

    added = []
    for name in ("cottoncandy", "ipdb"):
        if importlib.util.find_spec(name) is None:
            sys.modules[name] = types.ModuleType(name)
            added.append(name)
    if importlib.util.find_spec("torchaudio") is None:
        ta = types.ModuleType("torchaudio")

        def load(path):
            y, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (samples, channels)
            return torch.from_numpy(np.ascontiguousarray(y.T)), sr

        ta.load = load
        sys.modules["torchaudio"] = ta
        added.append("torchaudio")
    cuda = torch.nn.Module.cuda
    if not torch.cuda.is_available():
        torch.nn.Module.cuda = lambda self, device=None: self
    old_cwd, old_argv = os.getcwd(), sys.argv
    os.chdir(work)
    sys.argv = argv
    try:
        yield
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv
        torch.nn.Module.cuda = cuda
        for name in added:
            sys.modules.pop(name, None)


def run_reference(reference: Path, work: Path, model_dir: Path, stories: list[str], batch: int, chunk_ms: int,
                  context_ms: int) -> tuple[Path, float, str]:
    """Run the script's ``__main__``; return its output folder, seconds and stdout."""
    cfg_src = reference.parent / "speech_model_configs.json"
    base = {"stride": 320, "min_input_length": 400}
    if cfg_src.exists():
        base = {k: v for k, v in json.loads(cfg_src.read_text())["whisper-tiny"].items() if k != "huggingface_hub"}
    (work / "speech_model_configs.json").write_text(json.dumps({MODEL: {"huggingface_hub": str(model_dir), **base}}))
    argv = [str(reference), "--stimulus_dir", "story_audio", "--model", MODEL, "--chunksz", str(chunk_ms),
            "--contextsz", str(context_ms), "--use_featext", "--batchsz", str(batch), "--stories", *stories]
    out = io.StringIO()
    try:
        with _script_environment(work, argv), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            t0 = time.perf_counter()
            runpy.run_path(str(reference), run_name="__main__")
            secs = time.perf_counter() - t0
    except BaseException:
        sys.stderr.write(out.getvalue()[-5000:])  # the script's own output (progress bars included)
        raise
    folder = work / f"features_cnk{chunk_ms / 1000:0.1f}_ctx{context_ms / 1000:0.1f}" / MODEL
    return folder, secs, out.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, help="path of extract_speech_features.py (scaling-laws repo)")
    ap.add_argument("--seconds", type=float, nargs="+", default=[40.0, 25.0], help="length of each story (s)")
    ap.add_argument("--chunk-ms", type=int, default=100, help="the script's --chunksz (ms)")
    ap.add_argument("--context-ms", type=int, default=16000, help="the script's --contextsz (ms)")
    ap.add_argument("--batch-size", type=int, default=64, help="the script's --batchsz and SpeechExtractor's")
    ap.add_argument("--tr", type=float, default=2.0, help="TR of the grid the features are downsampled to (s)")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--workdir", default=None, help="folder for the model, audio and features (default: a temp dir)")
    ap.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)

    import soundfile as sf
    import torch

    from scalenc.align import Downsampler
    from scalenc.synthetic.hub_cache import build_tiny_whisper
    from scalenc.features import FeatureExtractorFactory
    from scalenc.features.speech import SpeechExtractor

    shortest = (args.chunk_ms + args.context_ms) / 1000
    if min(args.seconds) <= shortest:
        raise SystemExit(f"--seconds: every story must outlast one window ({shortest:g} s): the reference also "
                         "writes windows past the end of a shorter story")
    reference = Path(args.reference).expanduser().resolve()
    if not reference.is_file():
        raise SystemExit(f"--reference: {reference} not found")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="scalenc_precomputed_check_")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    model_dir = build_tiny_whisper(work / MODEL, d_model=args.d_model, encoder_layers=args.layers, heads=args.heads)
    sr = 16000
    audio = {}
    (work / "story_audio").mkdir(exist_ok=True)
    for i, secs in enumerate(args.seconds):
        story = f"story{i}"
        audio[story] = work / "story_audio" / f"{story}.wav"
        sf.write(audio[story], tones(secs, sr, seed=i), sr, subtype="FLOAT")
    stories = sorted(audio)
    load0 = os.getloadavg()[0]

    folder, t_ref, _ = run_reference(reference, work, model_dir, stories, args.batch_size, args.chunk_ms,
                                     args.context_ms)
    pre = FeatureExtractorFactory.create_extractor("precomputed", str(folder), {})
    speech = SpeechExtractor(str(model_dir), {"chunk_size": args.chunk_ms / 1000, "context_size": args.context_ms / 1000,
                                              "batch_size": args.batch_size, "device": "cpu"})
    stim = _Stimulus(audio)
    ds = Downsampler()
    rows, worst_ds, worst_raw, t_ours = [], 0.0, 0.0, 0.0
    for story in stories:
        fs_pre = pre.compute(stim, story)
        t0 = time.perf_counter()
        fs_sp = speech.compute(stim, story)
        t_ours += time.perf_counter() - t0
        A, B = fs_pre["features"].values, fs_sp["features"].values
        if A.shape != B.shape:
            raise SystemExit(f"story {story}: precomputed {A.shape} vs SpeechExtractor {B.shape} (layer, row, feature)")
        dt = float(np.abs(fs_pre["time"].values - fs_sp["time"].values).max())
        dur = sf.info(str(audio[story])).duration
        grid = np.arange(args.tr / 2, dur, args.tr)
        dA = np.stack([ds.downsample(A[i], fs_pre["time"].values, grid) for i in range(A.shape[0])])
        dB = np.stack([ds.downsample(B[i], fs_sp["time"].values, grid) for i in range(B.shape[0])])
        raw, down = float(np.abs(A - B).max()), float(np.abs(dA - dB).max())
        worst_raw, worst_ds = max(worst_raw, raw), max(worst_ds, down)
        rows.append((story, dur, A.shape[0], A.shape[1], grid.size, dt, raw, down, float(np.abs(dB).max())))
    load1 = os.getloadavg()[0]

    lines = ["## Precomputed features: the scaling-laws script's folder read by `precomputed` vs `SpeechExtractor`\n",
             f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"- machine: {machine()}; load average {load0:.1f} -> {load1:.1f} (1-min, other jobs included)",
             f"- torch {torch.__version__}, cpu; random Whisper: d_model {args.d_model}, {args.layers} encoder "
             f"layers, {args.heads} heads, 80 mel bins (layers `{pre.layers[0]}` .. `{pre.layers[-1]}`)",
             f"- reference: `{reference.name}` run as a script (`--chunksz {args.chunk_ms} --contextsz "
             f"{args.context_ms} --use_featext --batchsz {args.batch_size}`), {t_ref:.1f} s for all stories; "
             f"`SpeechExtractor.compute` (batch {args.batch_size}) {t_ours:.1f} s",
             f"- downsampling: `Downsampler()` (lanczos, window 3) onto a {args.tr:g} s TR grid",
             f"- max |precomputed - SpeechExtractor|: rows {worst_raw:.2e}, downsampled {worst_ds:.2e}", "",
             "| story | audio s | layers | rows | TRs | max abs time diff (s) | max abs diff, rows "
             "| max abs diff, downsampled | max abs downsampled value |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for story, dur, n_layers, n_rows, n_tr, dt, raw, down, scale in rows:
        lines.append(f"| {story} | {dur:g} | {n_layers} | {n_rows} | {n_tr} | {dt:.1e} | {raw:.2e} | {down:.2e} "
                     f"| {scale:.3g} |")
    emit("\n".join(lines) + "\n", args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
