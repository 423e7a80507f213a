"""Language-model features: hidden states of a local Hugging Face model, one row per word.

:class:`LanguageModelExtractor` (modality ``"language_model"``) reads every layer of a
transformer in one pass over a story and returns a FeatureSet ``(layer, time, feature)``
with one row per word at the word's midpoint time.

Tokenization
------------
The story's words (each stripped of surrounding whitespace) are joined with single
spaces into one text, tokenized once by a *fast* tokenizer without special tokens, and
each token is mapped to a word through its character offsets
(``return_offsets_mapping``): a token belongs to the first word whose end character is
at or after the token's end (a token that covers only the space before a word belongs
to that word). So the tokens of the story are exactly the tokens of the running text,
whatever the tokenizer's pre-tokenizer does with spaces. No BOS/CLS/SEP token is added.

Windows (the definition of the features)
----------------------------------------
Let the story's tokens be ``0 .. N-1``, ``L = lookback`` and ``S = stride``. Window
``k`` covers tokens ``[k*S, k*S + L)`` (``k = 0, 1, ...``; the first window starts at 0).
A word whose last token is ``l`` is read from the *earliest* window that contains
``l``: ``k = max(0, ceil((l - L + 1) / S))``, so its last token sees between ``L - S``
and ``L - 1`` tokens of context (fewer at the start of the story). The word's
features are those of that window cut right after the word, ``[k*S, l + 1)``:

- ``last_token=True``: the hidden state of token ``l``;
- ``last_token=False``: the mean over the word's tokens that lie in the window (all of
  them unless a single word has more than ``L - S + 1`` tokens).

Context types: ``fullcontext`` (default stride ``max(1, L // 8)``), ``halfcontext``
(default stride ``max(1, L // 2)``) and ``nocontext`` (each word alone: the window is the
word's own tokens, at most the last ``L`` of them; ``stride`` must not be set).

What context each word gets, exactly: with the default ``fullcontext`` stride
``S = L // 8`` the last token of a word sees the ``c`` tokens before it, ``c = l - k*S``,
between ``L - S`` (7/8 of ``lookback``) and ``L - 1`` tokens (all ``l`` tokens of the
story while ``l < L``). LITcoder's ``fullcontext`` gives every word exactly its last
``lookback`` tokens (the word's last token and the ``L - 1`` before it): that is
``stride=1`` here (``c = L - 1`` for every word past the first ``L`` tokens), equal to a
one-window-per-word computation to float precision but one forward pass per word, hence
much slower (``benchmarks/features_lm.py`` records both speeds, the largest difference
and their encoding performance). The tutorial API takes ``lookback`` in the extractor
config (and the trainer's ``lookback=`` sets it); ``stride`` only in the config.

How it is computed. For a *causal* model the hidden states of tokens up to ``l`` do not
depend on later tokens, so one forward pass over the full window ``[k*S, k*S + L)`` gives
the features of every word assigned to window ``k`` (about ``S`` tokens' worth of words
per window: this is what makes it fast). For a *bidirectional* encoder (BERT...) later
tokens would leak into earlier ones, so every word gets its own window ``[k*S, l + 1)``.
Whether a model is causal is measured, not guessed from its name: a probe sequence is
run twice with only its last token changed; the model is causal when the earlier
positions do not change.

Windows are sorted by length and packed into forward passes of at most
``batch_size * lookback`` tokens (``batch_size`` full windows); shorter windows are
right-padded with an attention mask, and position ids start at 0 in every window, so
padding does not change the result.

Layers
------
``backend="transformers"``: ``output_hidden_states=True``; label ``0`` is the embedding
output and ``1 .. n_layers`` the outputs of the blocks, exactly Hugging Face's
``hidden_states`` (for GPT-2 and most causal LMs the last one has the final layer norm
applied). ``backend="transformer_lens"``: the local model is wrapped in a
``transformer_lens.model_bridge.TransformerBridge`` (raw weights, nothing folded) and the
hook ``blocks.{i}.hook_{hook}`` is read for every block ``i``; for ``hook="resid_post"``
the labels follow the transformers backend (``0`` = ``blocks.0.hook_resid_pre``, the
embedding output; ``i + 1`` = ``blocks.{i}.hook_resid_post``: equal to ``hidden_states[i +
1]`` except the last block, which is read before the final layer norm); for every other
hook the label is the block index ``i``. Hooks with more than one trailing dimension
(e.g. ``attn.hook_z``) are flattened into ``feature``.

Words that produce no token (empty or whitespace-only words, or characters the tokenizer
drops) get the row of the previous word (the next word's row when it is at the start of
the story).

Models
------
``model_name`` (and ``tokenizer``) may be a local folder saved with ``save_pretrained``, a
Hugging Face Hub id (``gpt2``, ``facebook/opt-125m``, ``EleutherAI/pythia-70m``, with an
optional ``revision``) or a TransformerLens name or alias (``gpt2-small`` -> ``gpt2``,
mapped with transformer-lens's own table). Hub models come from the standard cache
(``HF_HOME`` / ``HF_HUB_CACHE``; ``HF_HUB_OFFLINE=1`` loads cached ones without network)
and are downloaded there when missing and reachable. Locating, device choice
(``device="auto"``: CUDA, MPS, CPU; an unavailable device warns and uses the CPU unless
``strict_device``), dtype and the per-process model cache are shared with the speech
extractor in :mod:`scalenc.features._hf`. The feature cache key holds the folder's file
digest, or the Hub id and resolved commit.
"""
from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import xarray as xr

from . import _hf
from .base import FeatureError, FeatureExtractor, make_feature_set

logger = logging.getLogger(__name__)

CONTEXT_TYPES = ("fullcontext", "halfcontext", "nocontext")
BACKENDS = ("transformers", "transformer_lens")
DTYPES = _hf.DTYPES
WHO = "language_model extractor"


# --------------------------------------------------------------------------------------
# tokenization and windows (pure functions, no torch)
# --------------------------------------------------------------------------------------
@dataclass
class TokenizedStory:
    """Tokens of a story and where each word's tokens are.

    Attributes
    ----------
    ids : (n_tokens,) int64
    first, last : (n_words,) int64
        Index of each word's first and last token; ``-1`` for words without tokens.
    """

    ids: np.ndarray
    first: np.ndarray
    last: np.ndarray

    @property
    def has_tokens(self) -> np.ndarray:
        return self.last >= 0


def tokenize_words(tokenizer, words: Sequence[str]) -> TokenizedStory:
    """Tokenize ``words`` joined with spaces and map tokens to words by character offsets.

    Parameters
    ----------
    tokenizer : transformers fast tokenizer
    words : (n_words,) str
        Stripped of surrounding whitespace; empty words get no tokens.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise FeatureError(f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer: the language model "
                           "extractor maps tokens to words with character offsets; save the tokenizer with "
                           "tokenizer.json (a PreTrainedTokenizerFast)")
    words = [str(w).strip() for w in words]
    keep = np.flatnonzero([len(w) > 0 for w in words])
    n = len(words)
    first = np.full(n, -1, dtype=np.int64)
    last = np.full(n, -1, dtype=np.int64)
    if keep.size == 0:
        return TokenizedStory(np.zeros(0, np.int64), first, last)
    kept = [words[i] for i in keep]
    lengths = np.array([len(w) for w in kept], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
    ends = starts + lengths  # exclusive character end of each kept word
    text = " ".join(kept)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    if ids.size == 0:
        return TokenizedStory(ids, first, last)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    tok_end = np.maximum(offsets[:, 1], offsets[:, 0])
    # first kept word whose end is at or after the token's end
    owner = np.minimum(np.searchsorted(ends, tok_end, side="left"), len(kept) - 1)
    owner = np.maximum.accumulate(owner)  # tokens of a word are contiguous
    present = np.unique(owner)
    first[keep[present]] = np.searchsorted(owner, present, side="left")
    last[keep[present]] = np.searchsorted(owner, present, side="right") - 1
    return TokenizedStory(ids, first, last)


def default_stride(context_type: str, lookback: int) -> int:
    """Default tokens between window starts (0 for ``nocontext``: no shared windows)."""
    if context_type == "fullcontext":
        return max(1, lookback // 8)
    if context_type == "halfcontext":
        return max(1, lookback // 2)
    if context_type == "nocontext":
        return 0
    raise FeatureError(f"context_type must be one of {CONTEXT_TYPES}, got {context_type!r}")


@dataclass
class WindowPlan:
    """Token windows and where each word is read from.

    Attributes
    ----------
    starts, ends : (n_windows,) int64
        Token range ``[start, end)`` of each window.
    word : (n_reads,) int64
        Word of each read (words with tokens only).
    window : (n_reads,) int64
        Window the word is read from.
    p0, p1 : (n_reads,) int64
        First and last position (inclusive, relative to the window start) of the word's
        tokens in that window.
    """

    starts: np.ndarray
    ends: np.ndarray
    word: np.ndarray
    window: np.ndarray
    p0: np.ndarray
    p1: np.ndarray

    @property
    def n_tokens(self) -> int:
        return int((self.ends - self.starts).sum())


def plan_windows(tok: TokenizedStory, *, lookback: int, stride: int, context_type: str,
                 causal: bool) -> WindowPlan:
    """Windows of the module docstring.

    A word with last token ``l`` is read from ``[k*stride, l + 1)`` with
    ``k = max(0, ceil((l - lookback + 1) / stride))`` (``nocontext``: from its own tokens,
    at most ``lookback``). Causal models share one window ``[k*stride,
    min(k*stride + lookback, N))`` among all words with the same ``k``.
    """
    words = np.flatnonzero(tok.has_tokens)
    f, l_ = tok.first[words], tok.last[words]
    n_tok = tok.ids.size
    if context_type == "nocontext":
        w_start = np.maximum(f, l_ + 1 - lookback)
        w_end = l_ + 1
    else:
        k = np.maximum(0, -((lookback - 1 - l_) // stride))  # ceil((l - lookback + 1) / stride)
        w_start = k * stride
        w_end = np.minimum(w_start + lookback, n_tok) if causal else l_ + 1
    pairs, window = np.unique(np.stack([w_start, w_end], axis=1), axis=0, return_inverse=True)
    window = np.asarray(window).reshape(-1)
    p0 = np.maximum(f, w_start) - w_start
    p1 = l_ - w_start
    return WindowPlan(pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64), words.astype(np.int64),
                      window.astype(np.int64), p0.astype(np.int64), p1.astype(np.int64))


def pack_batches(lengths: np.ndarray, token_budget: int) -> list[np.ndarray]:
    """Group windows (indices) into batches of similar length, each at most
    ``token_budget`` padded tokens (a single longer window gets a batch of its own)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, cur, cur_max = [], [], 0
    for i in order:
        n = int(lengths[i])
        new_max = max(cur_max, n)
        if cur and new_max * (len(cur) + 1) > token_budget:
            batches.append(np.array(cur))
            cur, new_max = [], n
        cur.append(int(i))
        cur_max = new_max
    if cur:
        batches.append(np.array(cur))
    return batches


# --------------------------------------------------------------------------------------
# model loading (cached per process)
# --------------------------------------------------------------------------------------
@dataclass
class LoadedModel:
    """A loaded model and what the extractor needs to know about it."""

    model: Any                      # the Hugging Face model (nn.Module)
    bridge: Any | None              # TransformerBridge (transformer_lens backend)
    causal: bool
    n_blocks: int
    hidden_size: int
    vocab_size: int
    max_positions: int | None
    device: Any
    forward_params: set[str] = field(default_factory=set)


def clear_model_cache() -> None:
    """Forget the models and tokenizers loaded in this process (:data:`scalenc.features._hf.MODELS`)."""
    _hf.clear_model_cache()


def load_tokenizer(tok: _hf.ResolvedModel, *, add_prefix_space: bool | None = None):
    """A fast tokenizer (cached per process)."""
    from transformers import AutoTokenizer

    kw = {} if add_prefix_space is None else {"add_prefix_space": add_prefix_space}
    key = _hf.model_key("tokenizer", tok, add_prefix_space)
    return _hf.MODELS.get(key, lambda: _hf.from_pretrained(AutoTokenizer, tok, what="tokenizer", who=WHO, **kw))


def load_model(model: _hf.ResolvedModel, *, backend: str = "transformers", device: str = "auto",
               dtype: str = "float32", tokenizer: _hf.ResolvedModel | None = None,
               strict_device: bool = False, device_map=None) -> LoadedModel:
    """Load a model (cached per process; see :mod:`scalenc.features._hf`). ``device_map``
    (transformers backend): passed to ``from_pretrained`` (``"auto"``: spread over the
    node's GPUs, for models too big for one)."""
    dev = _hf.pick_device(device, strict=strict_device, who=WHO)
    tdt = _hf.torch_dtype(dtype, who=WHO)
    if device_map is not None and backend != "transformers":
        raise FeatureError(f"{WHO}: device_map is for backend='transformers', got backend={backend!r}")
    tl_tok = tokenizer.identity() if (backend == "transformer_lens" and tokenizer is not None) else None
    key = _hf.model_key("language_model", model, backend, str(dev), dtype, tl_tok, device_map)
    return _hf.MODELS.get(key, lambda: _load_model(model, backend, dev, dtype, tdt, tokenizer, device_map))


def _load_model(model: _hf.ResolvedModel, backend: str, dev, dtype: str, tdt,
                tokenizer: _hf.ResolvedModel | None, device_map=None) -> LoadedModel:
    t0 = time.perf_counter()
    from transformers import AutoConfig, AutoModel

    config = _hf.from_pretrained(AutoConfig, model, what="model config (config.json)", who=WHO)
    if getattr(config, "is_encoder_decoder", False):
        raise FeatureError(f"model {model} is an encoder-decoder ({config.model_type}); the language_model "
                           "extractor supports decoder-only and encoder-only models")
    bridge = None
    if backend == "transformers":
        hf = _hf.from_pretrained(AutoModel, model, what="model weights", who=WHO, dtype=tdt,
                                 **_hf.device_map_kwargs(device_map))
    else:
        hf, bridge = _load_bridge(model, config, dev, tdt, tokenizer or model)
    if bridge is None:
        _hf.place(hf, dev, device_map)
        dev = _hf.input_device(hf, dev, device_map)
    else:
        hf.eval()
    base = hf.base_model if hasattr(hf, "base_model") else hf
    n_blocks = (int(bridge.cfg.n_layers) if bridge is not None
                else _hf.config_int(config, "num_hidden_layers", "n_layer", "num_layers"))
    hidden = _hf.config_int(config, "hidden_size", "n_embd", "d_model")
    vocab = int(hf.get_input_embeddings().num_embeddings)
    max_pos = _hf.config_int(config, "n_positions", "max_position_embeddings")
    params = set(inspect.signature(base.forward).parameters)
    causal = _probe_causal(base, vocab, dev)
    logger.info("loaded %s (%s, %s, %s, causal=%s) in %.1f s", model, backend, dev, dtype, causal,
                time.perf_counter() - t0)
    return LoadedModel(model=base, bridge=bridge, causal=causal, n_blocks=int(n_blocks or 0),
                       hidden_size=int(hidden or 0), vocab_size=vocab, max_positions=max_pos, device=dev,
                       forward_params=params)


def _load_bridge(model: _hf.ResolvedModel, config, dev, tdt, tokenizer: _hf.ResolvedModel):
    """The HF model with its LM head (as the bridge's adapters expect) and a TransformerBridge."""
    try:
        from transformer_lens.model_bridge import TransformerBridge
        from transformer_lens.model_bridge.sources.transformers.source import (
            determine_architecture_from_hf_config, get_hf_model_class_for_architecture)
    except ImportError as e:
        raise FeatureError(f"backend='transformer_lens' needs transformer-lens >= 4 installed ({e})") from e
    from transformers import AutoTokenizer

    architecture = determine_architecture_from_hf_config(config)
    cls = get_hf_model_class_for_architecture(architecture)
    hf = _hf.from_pretrained(cls, model, what="model weights", who=WHO, dtype=tdt, attn_implementation="eager")
    hf.eval().to(dev)
    # a separate tokenizer instance: the bridge configures (mutates) the one it is given
    tok = _hf.from_pretrained(AutoTokenizer, tokenizer, what="tokenizer", who=WHO)
    # the snapshot folder, not the Hub id: the bridge reads the config from it without network
    bridge = TransformerBridge.boot_transformers(str(model.path), hf_model=hf, tokenizer=tok, device=str(dev),
                                                 dtype=tdt)
    bridge.eval()
    return hf, bridge


def _probe_causal(model, vocab: int, dev) -> bool:
    """True when changing the last token of a sequence leaves the earlier positions unchanged."""
    import torch

    # ordinary ids from the middle of the vocabulary (not special or unused low ids)
    base = [vocab // 2 + i for i in range(5)]
    ids = torch.tensor([base, base[:4] + [vocab // 3]], device=dev) % max(vocab, 1)
    with torch.inference_mode():
        hs = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                   output_hidden_states=True).hidden_states[-1].float()
    return bool(torch.allclose(hs[0, :4], hs[1, :4], rtol=1e-4, atol=1e-5))


# --------------------------------------------------------------------------------------
# the extractor
# --------------------------------------------------------------------------------------
class LanguageModelExtractor(FeatureExtractor):
    """Hidden states of a local language model, one row per word (see the module docstring
    for the exact windows).

    Parameters
    ----------
    model_name : str or path
        Folder saved with ``save_pretrained``, Hugging Face Hub id or TransformerLens name
        (module docstring, "Models").
    config : dict
        ``model_name`` : str, optional
            Overrides the constructor's ``model_name``.
        ``backend`` : {"transformers", "transformer_lens"}
            Hugging Face ``hidden_states`` (default) or a TransformerBridge hook.
        ``hook`` : str
            transformer_lens only: the per-block hook ``blocks.{i}.hook_{hook}`` (default
            ``"resid_post"``; e.g. ``"resid_pre"``, ``"resid_mid"``, ``"attn_out"``,
            ``"mlp_out"``). With the transformers backend it must stay ``"resid_post"``.
        ``layer_idx`` : int, list of int or "all"
            Layers returned by ``extract`` (selection only: the cache holds all layers).
        ``last_token`` : bool
            True (default): the word's last token; False: the mean over its tokens.
        ``lookback`` : int
            Tokens per window (default 256; at most the model's position limit).
        ``context_type`` : {"fullcontext", "halfcontext", "nocontext"}
        ``stride`` : int, optional
            Tokens between window starts (default ``max(1, lookback // 8)`` for
            fullcontext: each word sees between 7/8 of ``lookback`` and ``lookback - 1``
            tokens before its last token; ``max(1, lookback // 2)`` for halfcontext; not
            allowed with nocontext). ``stride=1``: every word sees exactly its last
            ``lookback`` tokens, as LITcoder's fullcontext (slower; module docstring).
        ``batch_size`` : int
            Full windows per forward pass (default 8); shorter windows are packed up to
            ``batch_size * lookback`` tokens per pass.
        ``device`` : str
            ``"auto"`` (default: CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda[:i]"`` or
            ``"mps"``; an unavailable device gives a warning and the CPU.
        ``strict_device`` : bool
            True: an unavailable ``device`` is a FeatureError instead.
        ``device_map`` : str or dict, optional
            Passed to ``from_pretrained`` (transformers backend): ``"auto"`` spreads a model
            too big for one GPU over the node's GPUs (accelerate); use with
            ``dtype="bfloat16"``/``"float16"`` for large models. Not part of the cache key.
        ``revision`` : str, optional
            Hub revision (branch, tag or commit) of a Hub ``model_name``; the feature
            cache key holds the commit it resolves to.
        ``dtype`` : {"float32", "float16", "bfloat16", "float64"}
            Model weights dtype (features are stored as float32).
        ``add_prefix_space`` : bool, optional
            Passed to the tokenizer when set (default: the tokenizer's own setting).
        ``tokenizer`` : str or path, optional
            Folder of the tokenizer (default: the model's folder). It is really used,
            and its files are part of the cache identity.
    cache_dir : path-like, optional
        Feature cache root.

    Output
    ------
    FeatureSet ``features (layer, time, feature)``: one row per word at its midpoint
    (``assembly.word_times``); attrs ``model``, ``tokenizer``, ``backend``,
    ``context_type``, ``lookback``, ``stride`` (0 for nocontext), ``hook``,
    ``last_token``, ``causal``.
    """

    modality: ClassVar[str] = "language_model"
    needs_gpu: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {
        "model_name": None,
        "backend": "transformers",
        "hook": "resid_post",
        "layer_idx": "all",
        "last_token": True,
        "lookback": 256,
        "context_type": "fullcontext",
        "stride": None,
        "batch_size": 8,
        "device": "auto",
        "strict_device": False,
        "revision": None,
        "dtype": "float32",
        "add_prefix_space": None,
        "tokenizer": None,
        "device_map": None,
    }
    types: ClassVar[dict[str, tuple[type, ...]]] = {
        "model_name": (str, os.PathLike),
        "tokenizer": (str, os.PathLike),
        "layer_idx": (int, np.integer, list, tuple, str),
        "stride": (int, np.integer),
        "add_prefix_space": (bool,),
        "revision": (str,),
    }

    def __init__(self, model_name: str | os.PathLike | None = None, config=None, cache_dir=None):
        super().__init__(model_name, config, cache_dir)
        self._where: dict[tuple, _hf.ResolvedModel] = {}
        c = self.config
        if c["model_name"] is not None:
            self.model_name = c["model_name"]
        if self.model_name is None:
            raise FeatureError("language_model extractor: no model; pass model_name (a local folder saved with "
                               "save_pretrained, a Hugging Face Hub id or a TransformerLens name) or "
                               "config['model_name']")
        self.model_name = str(self.model_name)
        if c["backend"] not in BACKENDS:
            raise FeatureError(f"language_model extractor: backend must be one of {BACKENDS}, got {c['backend']!r}")
        if c["context_type"] not in CONTEXT_TYPES:
            raise FeatureError(f"language_model extractor: context_type must be one of {CONTEXT_TYPES}, "
                               f"got {c['context_type']!r}")
        if c["dtype"] not in DTYPES:
            raise FeatureError(f"language_model extractor: dtype must be one of {DTYPES}, got {c['dtype']!r}")
        if c["lookback"] < 1:
            raise FeatureError(f"language_model extractor: lookback must be >= 1, got {c['lookback']}")
        if c["batch_size"] < 1:
            raise FeatureError(f"language_model extractor: batch_size must be >= 1, got {c['batch_size']}")
        if not c["hook"]:
            raise FeatureError("language_model extractor: hook must be a non-empty string")
        if c["backend"] == "transformers" and c["hook"] != "resid_post":
            raise FeatureError(f"language_model extractor: hook {c['hook']!r} needs backend='transformer_lens'; "
                               "the transformers backend returns hidden_states (the residual stream, "
                               "hook='resid_post')")
        if isinstance(c["layer_idx"], str) and c["layer_idx"] != "all":
            raise FeatureError(f"language_model extractor: layer_idx must be an int, a list of ints or 'all', "
                               f"got {c['layer_idx']!r}")
        if c["context_type"] == "nocontext":
            if c["stride"] is not None:
                raise FeatureError("language_model extractor: stride has no meaning with context_type='nocontext' "
                                   "(each word is read alone); leave it unset")
            self.stride = 0
        else:
            self.stride = (default_stride(c["context_type"], c["lookback"]) if c["stride"] is None
                           else int(c["stride"]))
            if not 1 <= self.stride <= c["lookback"]:
                raise FeatureError(f"language_model extractor: stride must be in [1, lookback={c['lookback']}], "
                                   f"got {self.stride}")

    # locations and identity --------------------------------------------------------
    @property
    def model(self) -> _hf.ResolvedModel:
        """Where the model is (:func:`scalenc.features._hf.resolve_model`: a folder, a Hub
        id or a TransformerLens name), resolved once per extractor."""
        key = ("model", self.model_name, self.config["revision"])
        if key not in self._where:
            self._where[key] = _hf.resolve_model(self.model_name, revision=self.config["revision"], what="model",
                                                 who=WHO)
        return self._where[key]

    @property
    def tokenizer(self) -> _hf.ResolvedModel:
        """Where the tokenizer is (default: with the model)."""
        t = self.config["tokenizer"]
        if t is None:
            return self.model
        key = ("tokenizer", str(t))
        if key not in self._where:
            self._where[key] = _hf.resolve_model(t, what="tokenizer", who=WHO)
        return self._where[key]

    @property
    def model_path(self) -> Path:
        return self.model.path

    @property
    def tokenizer_path(self) -> Path:
        return self.tokenizer.path

    def no_cache_keys(self) -> set[str]:
        return super().no_cache_keys() | {"device_map"}

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        m, t = self.model, self.tokenizer
        ident["model"] = str(m)
        cfg = ident["config"]
        cfg["model_name"] = str(m)
        cfg["tokenizer"] = str(t)
        cfg["stride"] = self.stride
        cfg.pop("revision", None)  # the resolved commit is in model_files
        ident["model_files"] = m.identity()
        ident["tokenizer_files"] = t.identity()
        return ident

    # loading ------------------------------------------------------------------------
    def load(self) -> tuple[LoadedModel, Any]:
        """The (cached) model and tokenizer."""
        c = self.config
        m, t = self.model, self.tokenizer
        lm = load_model(m, backend=c["backend"], device=c["device"], dtype=c["dtype"], tokenizer=t,
                        strict_device=c["strict_device"], device_map=c["device_map"])
        tok = load_tokenizer(t, add_prefix_space=c["add_prefix_space"])
        return lm, tok

    def hook_names(self, lm: LoadedModel) -> tuple[list[str], list[int]]:
        """transformer_lens hook names read and their layer labels."""
        hook = self.config["hook"]
        suffix = hook if (hook.startswith("hook_") or "." in hook) else f"hook_{hook}"
        names = [f"blocks.{i}.{suffix}" for i in range(lm.n_blocks)]
        labels = list(range(lm.n_blocks))
        if suffix == "hook_resid_post":
            names = ["blocks.0.hook_resid_pre"] + names
            labels = list(range(lm.n_blocks + 1))
        available = set(lm.bridge.hook_dict)
        missing = [n for n in names if n not in available]
        if missing:
            per_block = sorted(n[len("blocks.0."):] for n in available if n.startswith("blocks.0."))
            raise FeatureError(f"language_model extractor: hook {hook!r} not found ({missing[0]}); per-block hooks "
                               f"of this model: {per_block}")
        return names, labels

    # computing ----------------------------------------------------------------------
    def compute(self, assembly, story: str) -> xr.Dataset:
        c = self.config
        words = [str(w) for w in assembly.words(story)["word"].values]
        times = assembly.word_times(story)
        if not words:
            raise FeatureError(f"story {story!r}: no words to compute language-model features on")
        lm, tok = self.load()
        t0 = time.perf_counter()
        ts = tokenize_words(tok, words)
        if not ts.has_tokens.any():
            raise FeatureError(f"story {story!r}: the tokenizer {self.tokenizer_path} produced no tokens")
        if ts.ids.max() >= lm.vocab_size:
            raise FeatureError(f"story {story!r}: token id {int(ts.ids.max())} from tokenizer {self.tokenizer_path} "
                               f"is outside the model's vocabulary ({lm.vocab_size} embeddings in "
                               f"{self.model_path}); tokenizer and model do not match")
        if lm.max_positions is not None and c["lookback"] > lm.max_positions:
            raise FeatureError(f"language_model extractor: lookback {c['lookback']} exceeds the model's "
                               f"{lm.max_positions} positions ({self.model_path})")
        plan = plan_windows(ts, lookback=c["lookback"], stride=self.stride, context_type=c["context_type"],
                            causal=lm.causal)
        F, labels = self._run(lm, tok, ts, plan)
        _fill_missing(F, ts.has_tokens)
        logger.info("%s: story %s, %d words, %d tokens, %d windows (%d tokens run) in %.1f s", self.modality, story,
                    len(words), ts.ids.size, plan.starts.size, plan.n_tokens, time.perf_counter() - t0)
        attrs = dict(tokenizer=str(self.tokenizer_path), backend=c["backend"], context_type=c["context_type"],
                     lookback=int(c["lookback"]), stride=int(self.stride), hook=c["hook"],
                     last_token=int(bool(c["last_token"])), causal=int(lm.causal), dtype=c["dtype"])
        return make_feature_set(F, times, layers=labels, story=story, extractor=self.modality,
                                model=str(self.model_path), attrs=attrs)

    def _run(self, lm: LoadedModel, tok, ts: TokenizedStory, plan: WindowPlan) -> tuple[np.ndarray, list[int]]:
        """Forward all windows in packed batches; gather each word's row of every layer."""
        import torch

        c = self.config
        if c["backend"] == "transformer_lens":
            names, labels = self.hook_names(lm)
        else:
            names, labels = None, None  # all hidden_states: labels 0 .. len(hidden_states) - 1
        pad_id = tok.pad_token_id if tok.pad_token_id is not None and tok.pad_token_id < lm.vocab_size else 0
        lengths = plan.ends - plan.starts
        batches = pack_batches(lengths, c["batch_size"] * c["lookback"])
        # reads of each window
        order = np.argsort(plan.window, kind="stable")
        bounds = np.searchsorted(plan.window[order], np.arange(plan.starts.size + 1))
        ids_all = torch.from_numpy(ts.ids)
        F: np.ndarray | None = None
        last_token = bool(c["last_token"])
        for batch in batches:
            B, T = len(batch), int(lengths[batch].max())
            ids = torch.full((B, T), pad_id, dtype=torch.long)
            mask = torch.zeros((B, T), dtype=torch.long)
            rb, rp0, rp1, rw = [], [], [], []
            for b, w in enumerate(batch):
                s, e = int(plan.starts[w]), int(plan.ends[w])
                ids[b, : e - s] = ids_all[s:e]
                mask[b, : e - s] = 1
                r = order[bounds[w]:bounds[w + 1]]
                rb.append(np.full(r.size, b))
                rp0.append(plan.p0[r])
                rp1.append(plan.p1[r])
                rw.append(plan.word[r])
            rb, rp0, rp1, rw = (np.concatenate(a) for a in (rb, rp0, rp1, rw))
            states = self._forward(lm, ids.to(lm.device), mask.to(lm.device), names)
            rows = _gather(states, rb, rp0, rp1, last_token, T)
            if F is None:
                F = np.zeros((rows.shape[0], ts.first.size, rows.shape[-1]), dtype=np.float32)
            F[:, rw, :] = rows
        return F, (list(range(F.shape[0])) if labels is None else labels)

    def _forward(self, lm: LoadedModel, ids, mask, names: list[str] | None) -> list:
        """Per layer, the (B, T, D) states of one padded batch."""
        import torch

        B, T = ids.shape
        pos = torch.arange(T, device=ids.device).unsqueeze(0).expand(B, T)
        with torch.inference_mode():
            if names is None:
                kw = {"attention_mask": mask, "output_hidden_states": True}
                if "position_ids" in lm.forward_params:
                    kw["position_ids"] = pos
                if "use_cache" in lm.forward_params:
                    kw["use_cache"] = False
                return list(lm.model(input_ids=ids, **kw).hidden_states)
            wanted = set(names)
            _, cache = lm.bridge.run_with_cache(ids, return_type=None, attention_mask=mask,
                                                names_filter=lambda n: n in wanted)
            out = []
            for n in names:
                a = cache[n]
                if a.shape[:2] != (B, T):
                    raise FeatureError(f"language_model extractor: hook {n} has shape {tuple(a.shape)}, not "
                                       f"(batch, position, ...); choose a per-position hook")
                out.append(a.reshape(B, T, -1))
            return out


def _gather(states: list, rb, rp0, rp1, last_token: bool, T: int) -> np.ndarray:
    """(n_layers, n_reads, D) float32: the last token, or the mean over ``[p0, p1]``, of each read."""
    import torch

    dev = states[0].device
    if last_token:
        b = torch.as_tensor(rb, device=dev)
        p = torch.as_tensor(rp1, device=dev)
        out = torch.stack([h[b, p].float() for h in states])
    else:
        counts = rp1 - rp0 + 1
        seg = np.repeat(np.arange(rb.size), counts)
        offs = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        flat = torch.as_tensor(np.repeat(rb * T + rp0, counts) + offs, device=dev)
        seg_t = torch.as_tensor(seg, device=dev)
        inv = torch.as_tensor(1.0 / counts, dtype=torch.float32, device=dev).unsqueeze(1)
        out = []
        for h in states:
            hf = h.reshape(-1, h.shape[-1])[flat].float()
            acc = torch.zeros((rb.size, hf.shape[1]), dtype=torch.float32, device=dev).index_add_(0, seg_t, hf)
            out.append(acc * inv)
        out = torch.stack(out)
    return out.cpu().numpy()


def _fill_missing(F: np.ndarray, has: np.ndarray) -> None:
    """Rows of words without tokens: the previous word's row (leading ones: the first word's)."""
    if has.all():
        return
    idx = np.where(has, np.arange(has.size), -1)
    idx = np.maximum.accumulate(idx)
    idx[idx < 0] = int(np.argmax(has))
    F[:, :, :] = F[:, idx, :]


__all__ = ["LanguageModelExtractor", "TokenizedStory", "WindowPlan", "clear_model_cache", "default_stride",
           "load_model", "load_tokenizer", "pack_batches", "plan_windows", "tokenize_words"]
