"""Benchmark: SpeechExtractor vs the scaling-laws reference script, same model, audio, windows.

For each model kind (``--models whisper hubert``): a random model of the given size
(default: Whisper-tiny-sized encoder, d_model 384, 4 layers, 6 heads, 80 mel bins; a
HuBERT with hidden 384, 4 layers, 6 heads and HuBERT-base's convolutional feature
encoder), saved to a temporary folder; ``--seconds`` of synthetic harmonic tones at 16 kHz;
stride 0.1 s, window 16 s (+ stride).

- ``SpeechExtractor.compute`` (batch ``--batch-size``): scalenc;
- ``extract_speech_features`` of HuthLab/encoding-model-scaling-laws, imported from the
  path given with ``--reference`` (fetch the repository; the file is never copied into
  scalenc), at batch sizes ``--ref-batch-sizes`` (default 1 and 64, its README's value).
  Its command-line part imports cottoncandy, ipdb and torchaudio, which the function
  does not use: empty placeholder modules stand in for them when they are missing.

Both give every layer at the same windows; the largest absolute difference per model
is printed (Whisper: the reference's encoder frame ``(n_mel + 1) // 2``, scalenc's default).
Without ``--reference`` a per-window loop of this file (feature extractor + model, batch
1) is timed instead. Prints a markdown table with the machine and date (``--record``
appends it to RESULTS.md).

    python benchmarks/features_speech.py --reference /tmp/extract_speech_features.py
    python benchmarks/features_speech.py --device cuda --reference ... --seconds 120
    python benchmarks/features_speech.py --seconds 3 --context 1 --chunk 0.5 --d-model 32 --layers 1 --heads 2
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, machine  # noqa: E402


def tones(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Word-like bursts of harmonic tones (pitch per 'letter') separated by short pauses."""
    rng = np.random.default_rng(seed)
    y = np.zeros(int(round(seconds * sr)), np.float32)
    t0 = 0.2
    while t0 < seconds:
        n_letters = int(rng.integers(2, 9))
        for _ in range(n_letters):
            dur = rng.uniform(0.04, 0.09)
            i0, i1 = int(t0 * sr), min(y.size, int((t0 + dur) * sr))
            if i1 > i0:
                t = np.arange(i1 - i0) / sr
                f0 = 110.0 + 12.0 * int(rng.integers(0, 26))
                tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in (1, 2, 3))
                y[i0:i1] += (0.2 * np.hanning(i1 - i0) * tone).astype(np.float32)
            t0 += dur
        t0 += rng.uniform(0.05, 0.5)
    return y


class _Stimulus:
    """The one thing the extractor asks of an assembly: a story's audio path."""

    def __init__(self, path):
        self.path = str(path)

    def audio_path(self, story):
        return self.path


def build_model(path: Path, kind: str, d_model: int, layers: int, heads: int) -> str:
    """A random Whisper or HuBERT with its feature extractor, saved to ``path``."""
    import torch

    torch.manual_seed(0)
    if kind == "whisper":
        from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

        cfg = WhisperConfig(d_model=d_model, encoder_layers=layers, encoder_attention_heads=heads,
                            encoder_ffn_dim=4 * d_model, decoder_layers=1, decoder_attention_heads=heads,
                            decoder_ffn_dim=4 * d_model, num_mel_bins=80, max_source_positions=1500,
                            max_target_positions=16, vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                            decoder_start_token_id=1)
        WhisperModel(cfg).save_pretrained(path)
        WhisperFeatureExtractor().save_pretrained(path)
    else:
        from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

        cfg = HubertConfig(hidden_size=d_model, num_hidden_layers=layers, num_attention_heads=heads,
                           intermediate_size=4 * d_model)
        HubertModel(cfg).save_pretrained(path)
        Wav2Vec2FeatureExtractor(return_attention_mask=False, do_normalize=True).save_pretrained(path)
    return str(path)


def import_reference(path: str):
    """``extract_speech_features`` from the reference file at ``path``."""
    import importlib.util
    import types

    import transformers  # noqa: F401  (before the placeholders: it probes for torchaudio)
    from transformers import AutoFeatureExtractor, AutoModel, WhisperModel  # noqa: F401

    placeholders = []
    for name in ("cottoncandy", "ipdb", "torchaudio"):  # used only by the script's __main__ part
        if importlib.util.find_spec(name) is None:
            sys.modules[name] = types.ModuleType(name)
            placeholders.append(name)
    try:
        spec = importlib.util.spec_from_file_location("scaling_laws_reference", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        for name in placeholders:
            sys.modules.pop(name, None)
    return mod.extract_speech_features


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", default=None, help="path of extract_speech_features.py (scaling-laws repo)")
    ap.add_argument("--models", nargs="+", default=["whisper", "hubert"], choices=["whisper", "hubert"])
    ap.add_argument("--seconds", type=float, default=30.0, help="audio length (s)")
    ap.add_argument("--chunk", type=float, default=0.1, help="stride chunk_size (s)")
    ap.add_argument("--context", type=float, default=16.0, help="context_size (s)")
    ap.add_argument("--batch-size", type=int, default=16, help="SpeechExtractor batch size")
    ap.add_argument("--ref-batch-sizes", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--loop-windows", type=int, default=60, help="without --reference: windows timed in the "
                    "per-window loop (0: all), extrapolated to all")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--d-model", type=int, default=384)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="folder for the models and the WAV (default: a temp dir)")
    ap.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)

    import soundfile as sf
    import torch

    from scalenc.features.speech import SpeechExtractor, sliding_windows, whisper_frame

    ref_fn = import_reference(args.reference) if args.reference else None
    sr = 16000
    work = Path(args.workdir or tempfile.mkdtemp(prefix="scalenc_speech_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    y = tones(args.seconds, sr, args.seed)
    wav = work / "story.wav"
    sf.write(wav, y, sr, subtype="FLOAT")
    stim = _Stimulus(wav)
    dur = y.size / sr
    load0 = os.getloadavg()[0]

    def sync(dev):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    rows, notes = [], []
    for kind in args.models:
        model_dir = build_model(work / f"{kind}_random", kind, args.d_model, args.layers, args.heads)
        ex = SpeechExtractor(model_dir, {"chunk_size": args.chunk, "context_size": args.context,
                                         "batch_size": args.batch_size, "device": args.device,
                                         "strict_device": True})
        m = ex.load()  # model load and the first audio read (librosa import) are not timed
        ex.load_audio(stim, "story")
        fe, enc, dev = m.feature_extractor, m.model, m.device
        win = sliding_windows(y.size, sr, args.chunk, args.context)
        K = len(win)
        ex.compute_windows(y, sliding_windows(int(args.chunk * sr) * 2, sr, args.chunk, args.context), m)  # warm-up
        sync(dev)
        t0 = time.perf_counter()
        fs = ex.compute(stim, "story")
        sync(dev)
        t_ours = time.perf_counter() - t0
        ours = fs["features"].values
        rows.append((kind, f"`SpeechExtractor.compute` (batch {args.batch_size})", K, t_ours, None))
        if ref_fn is not None:
            from transformers import AutoFeatureExtractor, AutoModel

            ref_model = AutoModel.from_pretrained(model_dir, output_hidden_states=True).eval().to(dev)
            ref_fe = AutoFeatureExtractor.from_pretrained(model_dir)
            wav_t = torch.from_numpy(y).to(dev)
            diffs = []
            for bs in args.ref_batch_sizes:
                sync(dev)
                t0 = time.perf_counter()
                with torch.inference_mode():
                    out = ref_fn(ref_model, {"stride": 320, "min_input_length": 400}, wav_t, args.chunk, args.context,
                                 batchsz=bs, feature_extractor=ref_fe, disable_tqdm=True)
                sync(dev)
                t_ref = time.perf_counter() - t0
                mods = out["module_features"]
                keys = sorted(mods, key=lambda k: int(k.split(".")[-1]))
                ref = np.stack([np.asarray(mods[k], dtype=np.float32) for k in keys])
                assert ref.shape == ours.shape, (ref.shape, ours.shape)
                np.testing.assert_allclose(out["times"][:, 1], fs["time"].values, atol=1e-6)
                diffs.append(float(np.abs(ref - ours).max()))
                rows.append((kind, f"reference `extract_speech_features` (batchsz {bs})", ref.shape[1], t_ref, t_ours))
            notes.append(f"{kind}: max |scalenc - reference| over all {ours.shape[0]} layers and {K} windows = "
                         f"{max(diffs):.2e}")
        else:
            rng = np.random.default_rng(args.seed)
            n_loop = K if args.loop_windows <= 0 or args.loop_windows >= K else args.loop_windows
            pick = np.arange(K) if n_loop == K else np.sort(rng.choice(K, n_loop, replace=False))

            def one_window(k):
                w = y[win.start[k]:win.end[k]]
                with torch.inference_mode():
                    if kind == "whisper":
                        kw = {"device": str(dev)} if dev.type != "cpu" else {}
                        x = fe(w, sampling_rate=sr, return_tensors="pt", **kw).input_features.to(dev)
                        hs = enc(x, output_hidden_states=True).hidden_states
                        i = whisper_frame(w.size, fe.hop_length)
                    else:
                        x = fe(w, sampling_rate=sr, return_tensors="pt").input_values.to(dev)
                        hs = enc(x, output_hidden_states=True).hidden_states
                        i = hs[0].shape[1] - 1
                    return torch.stack([h[0, i] for h in hs]).float().cpu().numpy()

            sync(dev)
            t0 = time.perf_counter()
            loop = np.stack([one_window(k) for k in pick], axis=1)
            sync(dev)
            t_loop = (time.perf_counter() - t0) * K / n_loop
            note = "all windows" if n_loop == K else f"{n_loop} random windows timed, extrapolated x{K / n_loop:g}"
            rows.append((kind, f"per-window loop (batch 1; {note})", K, t_loop, t_ours))
            notes.append(f"{kind}: max |loop - batched| = {float(np.abs(loop - ours[:, pick]).max()):.2e}")
    load1 = os.getloadavg()[0]

    lines = [f"## Speech features: scalenc vs the scaling-laws reference ({args.device})\n",
             f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"- machine: {machine()}",
             f"- torch {torch.__version__}, {torch.get_num_threads()} threads; load average {load0:.1f} -> "
             f"{load1:.1f} (1-min, other jobs included)",
             f"- models: random, hidden {args.d_model}, {args.layers} layers, {args.heads} heads (Whisper: 80 mel "
             "bins, input padded to 30 s; HuBERT: base-sized conv feature encoder), float32, every layer kept",
             f"- audio: {dur:g} s at {sr} Hz; stride {args.chunk} s, context {args.context} s",
             *[f"- {n}" for n in notes], "",
             "| model | method | windows | seconds | audio s / s | time / scalenc's |",
             "|---|---|---:|---:|---:|---:|"]
    for kind, method, n, t, t_ours in rows:
        ratio = "1.00" if t_ours is None else f"{t / t_ours:.2f}"
        lines.append(f"| {kind} | {method} | {n} | {t:.1f} | {dur / t:.3g} | {ratio} |")
    emit("\n".join(lines) + "\n", args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
