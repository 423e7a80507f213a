"""Benchmark: the language-model extractor vs one forward pass per word.

Same run, same model for both: a random GPT-2 (6 layers, n_embd 512, 8 heads,
n_positions 512) with a byte-level BPE tokenizer trained here on the text, both saved
with ``save_pretrained`` to a temporary folder and loaded by path; 5,000 words of real
English (``scalenc.synthetic.synthetic.corpus_words()``), lookback 256, fullcontext
(stride 32).

- ``extractor``: ``LanguageModelExtractor.compute`` (tokenization, shared causal windows,
  packed batches, all 7 layers gathered).
- ``one word per forward``: for each word, the model on exactly that word's window
  ``[k*stride, last_token + 1)`` alone (batch size 1, ``output_hidden_states=True``), its
  last token read from every layer: the same features, computed naively. When the full
  loop would take too long, it runs on a random subset of ``--ref-words`` words and the
  time is extrapolated linearly to all words (the table says so). The two are also
  compared on that subset (largest absolute difference).

Context: the default fullcontext stride (``lookback // 8``) gives each word between 7/8
and all of ``lookback`` tokens of context; ``stride=1`` gives every word exactly its last
``lookback`` tokens (LITcoder's fullcontext). The second table compares the two on the
first ``--exact-words`` words: speed, the largest feature difference and how many words
differ; the third their encoding performance on the synthetic dataset
(:func:`scalenc.synthetic.synthetic`, its ground truth known): the same random GPT-2 (with
a constant offset in feature 0 of the position embeddings, so that word presence is
readable, as in trained GPT-2s), one layer, through ``AbstractTrainer`` on the held-out
test story, median r over driven and over word-rate voxels, and the mean paired
difference (exact - default) over driven voxels with its standard error.

Prints markdown tables with the machine and date (``--record`` appends them to RESULTS.md)::

    python benchmarks/features_lm.py
    python benchmarks/features_lm.py --device cuda --words 20000
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def machine(device: str) -> str:
    import torch

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    s = (f"{os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.platform()}, python {platform.python_version()}, "
         f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    if device.startswith("cuda"):
        s += f", GPU {torch.cuda.get_device_name(torch.device(device))}"
    return s


class WordsAssembly:
    """The two methods of an Assembly the extractor reads (one story)."""

    def __init__(self, words):
        import xarray as xr

        n = len(words)
        start = np.arange(n) * 0.4
        self._ds = xr.Dataset({"start": ("word", start), "end": ("word", start + 0.3)},
                              coords={"word": ("word", np.asarray(words, dtype=object))})

    def words(self, story):
        return self._ds

    def word_times(self, story):
        return (self._ds["start"].values + self._ds["end"].values) / 2


def build_model(folder: Path, text: str, *, vocab_size: int, seed: int = 0, presence: float = 0.0) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<pad>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>")
    fast.save_pretrained(folder)
    cfg = GPT2Config(n_layer=6, n_embd=512, n_head=8, n_positions=512, vocab_size=len(fast), bos_token_id=0,
                     eos_token_id=0, pad_token_id=1)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        model.transformer.wpe.weight[:, 0] += presence
    model.save_pretrained(folder)


def encoding_performance(folder: Path, lookback: int, layer: int, device: str, work: Path, n_stories: int,
                         words_per_story: int, seed: int) -> dict:
    """Test-story r of the default-stride and stride-1 features on the synthetic dataset."""
    from scalenc.synthetic import synthetic
    from scalenc.features.language_model import LanguageModelExtractor
    from scalenc.trainer import AbstractTrainer

    ds = synthetic(work / "synthetic", n_stories=n_stories, words_per_story=words_per_story, n_voxels=200,
                   embedding_dim=16, seed=seed)
    gt = ds.ground_truth()
    driver = np.array([str(d) for d in gt["driver"].values])
    out = {}
    for name, stride in (("default", None), ("exact", 1)):
        cfg = dict(lookback=lookback, layer_idx=layer, device=device)
        if stride is not None:
            cfg["stride"] = stride
        ex = LanguageModelExtractor(str(folder), cfg, cache_dir=work / "cache")
        t0 = time.perf_counter()
        m = AbstractTrainer(ds.assembly(), [ex], logger_backend="none", results_dir=work / f"results_{name}",
                            run_name=name).train()
        r = np.asarray(m["correlations"], dtype=np.float64)
        out[name] = dict(r=r, seconds=time.perf_counter() - t0)
    out["driver"] = driver
    return out


def one_word_per_forward(model, ts, words_idx, *, lookback: int, stride: int, device):
    """Features (n_layers, len(words_idx), D) of the given words, one forward each."""
    import torch

    rows = []
    for j in words_idx:
        last = int(ts.last[j])
        k = max(0, -((lookback - 1 - last) // stride))
        s = k * stride
        ids = torch.as_tensor(ts.ids[s:last + 1], device=device).unsqueeze(0)
        with torch.inference_mode():
            hs = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
        rows.append(torch.stack([h[0, -1] for h in hs]).float().cpu().numpy())
    return np.stack(rows, axis=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--words", type=int, default=5000)
    ap.add_argument("--ref-words", type=int, default=300,
                    help="words timed in the one-word-per-forward loop (0 = all; else extrapolated)")
    ap.add_argument("--lookback", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--exact-words", type=int, default=1000, help="words extracted at stride 1 (LITcoder-exact)")
    ap.add_argument("--encoding-stories", type=int, default=6, help="synthetic stories (0: skip the encoding table)")
    ap.add_argument("--encoding-words", type=int, default=300, help="words per synthetic story")
    ap.add_argument("--encoding-layer", type=int, default=4)
    ap.add_argument("--encoding-lookback", type=int, default=32,
                    help="lookback of the encoding comparison (shorter than the stories, so that contexts differ)")
    ap.add_argument("--record", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    from _common import emit

    import torch
    from transformers import AutoModel

    from scalenc.synthetic.synthetic import corpus_words
    from scalenc.features.language_model import LanguageModelExtractor, default_stride, tokenize_words

    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = [w for w, _ in corpus_words()]
    reps = -(-args.words // len(corpus))
    words = (corpus * reps)[: args.words]
    stride = default_stride("fullcontext", args.lookback)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gpt2-6l-512"
        build_model(folder, " ".join(corpus), vocab_size=args.vocab)
        asm = WordsAssembly(words)
        ex = LanguageModelExtractor(str(folder), dict(lookback=args.lookback, context_type="fullcontext",
                                                      batch_size=args.batch_size, device=args.device))
        lm, tok = ex.load()  # loading is not timed (the process keeps the model)
        ts = tokenize_words(tok, words)
        ex.compute(WordsAssembly(words[:300]), "warmup")
        t0 = time.perf_counter()
        fs = ex.compute(asm, "bench")
        t_ex = time.perf_counter() - t0
        F = fs["features"].values

        ref_model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval().to(torch.device(args.device))
        rng = np.random.default_rng(0)
        n_ref = len(words) if args.ref_words <= 0 else min(args.ref_words, len(words))
        idx = np.arange(len(words)) if n_ref == len(words) else np.sort(rng.choice(len(words), n_ref, replace=False))
        one_word_per_forward(ref_model, ts, idx[:5], lookback=args.lookback, stride=stride,
                             device=torch.device(args.device))
        t0 = time.perf_counter()
        R = one_word_per_forward(ref_model, ts, idx, lookback=args.lookback, stride=stride,
                                 device=torch.device(args.device))
        t_ref_sub = time.perf_counter() - t0
        diff = float(np.abs(R - F[:, idx]).max())

        # default stride vs stride 1 (LITcoder-exact) on the first --exact-words words
        n_ex = min(args.exact_words, len(words))
        sub = WordsAssembly(words[:n_ex])
        exact = LanguageModelExtractor(str(folder), dict(lookback=args.lookback, context_type="fullcontext", stride=1,
                                                         batch_size=args.batch_size, device=args.device))
        t0 = time.perf_counter()
        F1 = exact.compute(sub, "exact")["features"].values
        t_exact = time.perf_counter() - t0
        t0 = time.perf_counter()
        F8 = ex.compute(sub, "default")["features"].values
        t_default = time.perf_counter() - t0
        dctx = np.abs(F1 - F8).max(axis=(0, 2))
        enc = None
        if args.encoding_stories:
            folder2 = Path(tmp) / "gpt2-6l-512-presence"
            build_model(folder2, " ".join(corpus), vocab_size=args.vocab, presence=0.5)
            enc = encoding_performance(folder2, args.encoding_lookback, args.encoding_layer, args.device, Path(tmp),
                                       args.encoding_stories, args.encoding_words, seed=0)

    extrapolated = n_ref < len(words)
    t_ref = t_ref_sub * len(words) / n_ref
    n = len(words)
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    ref_label = "one word per forward" + (f" ({n_ref} random words timed, {t_ref_sub:.1f} s, extrapolated "
                                          f"linearly to {n})" if extrapolated else "")
    lines = [f"### Language-model features: extractor vs one forward per word ({date})\n",
             f"Machine: {machine(args.device)}; device `{args.device}`; load average {os.getloadavg()[0]:.1f}.  ",
             f"Model: random GPT-2, 6 layers, n_embd 512, 8 heads, {lm.vocab_size}-token byte-level BPE trained "
             f"locally; {n} words of English ({ts.ids.size} tokens), fullcontext, lookback {args.lookback}, "
             f"stride {stride}, batch_size {args.batch_size}, float32, all {F.shape[0]} layers.  ",
             f"Largest |difference| between the two on the {n_ref} reference words: {diff:.1e}\n",
             "| method | seconds | words/s | speedup |", "|---|---:|---:|---:|",
             f"| {ref_label} | {t_ref:.1f} | {n / t_ref:.1f} | 1.0x |",
             f"| `LanguageModelExtractor.compute` | {t_ex:.1f} | {n / t_ex:.1f} | {t_ref / t_ex:.1f}x |", "",
             f"#### Context: default stride {stride} vs stride 1 (LITcoder-exact), first {n_ex} words\n",
             f"Largest |feature difference| over all layers: {dctx.max():.3g}; words differing by more than 1e-4: "
             f"{int((dctx > 1e-4).sum())} of {n_ex} (features of this random model have std "
             f"{float(F1.std()):.3g}).\n",
             "| stride | context of each word (tokens) | seconds | words/s |", "|---|---|---:|---:|",
             f"| {stride} (default) | {args.lookback - stride} .. {args.lookback - 1} | {t_default:.1f} | "
             f"{n_ex / t_default:.1f} |",
             f"| 1 (exact) | {args.lookback - 1} | {t_exact:.1f} | {n_ex / t_exact:.1f} |"]
    if enc is not None:
        drv = enc["driver"]
        driven = drv != "noise"
        d = enc["exact"]["r"][driven] - enc["default"]["r"][driven]
        lines += ["", f"#### Encoding performance, default vs exact context (synthetic dataset, {args.encoding_stories} "
                  f"stories x {args.encoding_words} words, 200 voxels; lookback {args.encoding_lookback}, "
                  f"layer {args.encoding_layer}; test story r)\n",
                  "| stride | median r, driven voxels | median r, word-rate voxels | median r, noise voxels | "
                  "extract + fit, s |", "|---|---:|---:|---:|---:|"]
        enc_stride = default_stride("fullcontext", args.encoding_lookback)
        for name, label in (("default", f"{enc_stride} (default)"), ("exact", "1 (exact)")):
            r = enc[name]["r"]
            lines.append(f"| {label} | {np.median(r[driven]):.3f} | {np.median(r[drv == 'wordrate']):.3f} | "
                         f"{np.median(r[drv == 'noise']):.3f} | {enc[name]['seconds']:.1f} |")
        lines.append(f"\nPaired difference exact - default over the {int(driven.sum())} driven voxels: mean "
                     f"{d.mean():+.4f} (standard error {d.std(ddof=1) / np.sqrt(d.size):.4f}), largest "
                     f"|difference| {np.abs(d).max():.3f}.")
    emit("\n".join(lines) + "\n", args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
