"""A small language model built offline, for the demo and the tests.

No weights can be downloaded, so the demo's "language model" is a randomly initialised
GPT-2 (transformers) with a word-level tokenizer trained on the given text, saved with
``save_pretrained`` to a folder and loaded back through the real loading code of the
language-model extractor. Its features are fixed random functions of each word and its
context: they carry word identity, not learned semantics. Like the residual stream of a
trained GPT-2 (which has a few dimensions with large, nearly constant values on every
token), the position embeddings get a constant offset ``presence`` in feature 0, so that
word presence (hence word rate) is linearly readable from every layer.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def build_tiny_lm(out: str | os.PathLike, words: Iterable[str], *, n_layer: int = 2, n_embd: int = 64,
                  n_head: int = 4, n_positions: int = 512, seed: int = 0, presence: float = 0.0) -> Path:
    """Train a word-level tokenizer on ``words`` and save it with a random GPT-2.

    Parameters
    ----------
    out : path-like
        Folder to write (config, weights, tokenizer).
    words : iterable of str
        Training text of the word-level tokenizer (its vocabulary).
    n_layer, n_embd, n_head, n_positions : int
        GPT-2 sizes.
    seed : int
        Seed of the random weights.
    presence : float
        Constant added to feature 0 of every position embedding (0: plain random GPT-2).

    Returns
    -------
    Path
        The model folder (config, weights, tokenizer), loadable with ``from_pretrained``.
    """
    try:
        import torch
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers
        from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    except ImportError as e:
        raise ImportError("the tiny language model needs torch and transformers: install scalenc[lm]") from e
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(words)], trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>"],
                                                                          show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>")
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=n_positions,
                     vocab_size=len(fast), bos_token_id=0, eos_token_id=0, pad_token_id=1)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        model.transformer.wpe.weight[:, 0] += float(presence)
    model.save_pretrained(out)
    return out
