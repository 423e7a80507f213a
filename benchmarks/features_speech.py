"""Benchmark: SpeechExtractor's batched sliding window vs a per-window loop.

Same audio, same model, same windows: a random Whisper-tiny-sized encoder (d_model 384,
4 encoder layers, 6 heads, 80 mel bins, ``WhisperFeatureExtractor()``) saved to a
temporary folder and loaded by path, over 60 s of synthetic harmonic tones at 16 kHz,
stride 0.1 s, window 16 s (+ stride): 600 windows.

- ``SpeechExtractor.compute``: windows batched ``--batch-size`` per forward pass;
- per-window loop: each window alone (feature extractor + encoder, batch 1), the way a
  straightforward implementation runs it. With ``--loop-windows N`` (default 60) a
  random subset of N windows is timed and the time extrapolated linearly to all
  windows (every Whisper window costs the same: its input is always 30 s of mel frames).

Both produce the same features (the largest absolute difference is printed). Prints a
markdown table with the machine and date.

    python benchmarks/features_speech.py                 # CPU, full size
    python benchmarks/features_speech.py --device cuda
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
from _common import machine  # noqa: E402


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


def build_model(path: Path, d_model: int, layers: int, heads: int) -> str:
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    cfg = WhisperConfig(d_model=d_model, encoder_layers=layers, encoder_attention_heads=heads,
                        encoder_ffn_dim=4 * d_model, decoder_layers=1, decoder_attention_heads=heads,
                        decoder_ffn_dim=4 * d_model, num_mel_bins=80, max_source_positions=1500,
                        max_target_positions=16, vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                        decoder_start_token_id=1)
    WhisperModel(cfg).save_pretrained(path)
    WhisperFeatureExtractor().save_pretrained(path)
    return str(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="audio length (s)")
    ap.add_argument("--chunk", type=float, default=0.1, help="stride chunk_size (s)")
    ap.add_argument("--context", type=float, default=16.0, help="context_size (s)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--loop-windows", type=int, default=60, help="windows timed in the per-window loop (0: all)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--d-model", type=int, default=384)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="folder for the model and the WAV (default: a temp dir)")
    args = ap.parse_args(argv)

    import soundfile as sf
    import torch

    from scalenc.features.speech import SpeechExtractor, sliding_windows, whisper_last_frame

    sr = 16000
    work = Path(args.workdir or tempfile.mkdtemp(prefix="scalenc_speech_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = build_model(work / "whisper_random", args.d_model, args.layers, args.heads)
    y = tones(args.seconds, sr, args.seed)
    wav = work / "story.wav"
    sf.write(wav, y, sr, subtype="FLOAT")
    stim = _Stimulus(wav)

    ex = SpeechExtractor(model_dir, {"chunk_size": args.chunk, "context_size": args.context,
                                     "batch_size": args.batch_size, "device": args.device})
    m = ex.load()  # model load is not timed (both paths share the loaded model)
    fe, enc, dev = m.feature_extractor, m.model, m.device
    win = sliding_windows(y.size, sr, args.chunk, args.context)
    K = len(win)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def one_window(k):
        w = y[win.start[k]:win.end[k]]
        kw = {"device": str(dev)} if dev.type != "cpu" else {}
        with torch.inference_mode():
            x = fe(w, sampling_rate=sr, return_tensors="pt", **kw).input_features.to(dev)
            hs = enc(x, output_hidden_states=True).hidden_states
            i = whisper_last_frame(w.size, fe.hop_length)
            return torch.stack([h[0, i] for h in hs]).float().cpu().numpy()

    one_window(K - 1)  # warm-up
    load0 = os.getloadavg()[0]

    sync()
    t0 = time.perf_counter()
    fs = ex.compute(stim, "story")
    sync()
    t_batched = time.perf_counter() - t0

    rng = np.random.default_rng(args.seed)
    n_loop = K if args.loop_windows <= 0 or args.loop_windows >= K else args.loop_windows
    pick = np.arange(K) if n_loop == K else np.sort(rng.choice(K, n_loop, replace=False))
    sync()
    t0 = time.perf_counter()
    loop = np.stack([one_window(k) for k in pick], axis=1)
    sync()
    t_loop_part = time.perf_counter() - t0
    t_loop = t_loop_part * K / n_loop
    load1 = os.getloadavg()[0]
    diff = float(np.abs(loop - fs["features"].values[:, pick]).max())

    dur = y.size / sr
    loop_note = "all windows" if n_loop == K else f"{n_loop} random windows timed, extrapolated x{K / n_loop:g}"
    print(f"## Speech features: batched sliding window vs per-window loop ({args.device})\n")
    print(f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"- machine: {machine()}")
    print(f"- torch {torch.__version__}, {torch.get_num_threads()} threads; load average {load0:.1f} -> {load1:.1f}"
          " (1-min, other jobs included)")
    print(f"- model: random Whisper encoder, d_model {args.d_model}, {args.layers} layers, {args.heads} heads, "
          f"80 mel bins, float32; {fs.sizes['layer']} layers kept, pool=last")
    print(f"- audio: {dur:g} s at {sr} Hz; stride {args.chunk} s, context {args.context} s: {K} windows "
          f"(each Whisper input padded to 30 s)")
    print(f"- per-window loop: {loop_note}; max |loop - batched| = {diff:.2e}\n")
    print("| method | windows | seconds | audio s / s | speedup |")
    print("|---|---|---|---|---|")
    print(f"| per-window loop (batch 1) | {K} ({loop_note}) | {t_loop:.1f} | {dur / t_loop:.3g} | 1.00 |")
    print(f"| SpeechExtractor.compute (batch {args.batch_size}) | {K} | {t_batched:.1f} | {dur / t_batched:.3g} "
          f"| {t_loop / t_batched:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
