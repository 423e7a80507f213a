"""Speech-model features over a causal sliding window (the scaling-laws recipe).

:class:`SpeechExtractor` runs a self-supervised or ASR speech model (Whisper encoder,
HuBERT, wav2vec2, WavLM, through :mod:`transformers`) over a story's audio with a
causal sliding window and keeps every layer.

Windows
-------
With stride ``c = chunk_size`` and context ``C = context_size`` (seconds), a story of
``n`` samples at ``sr`` Hz has ``K = floor(n / (c * sr))`` windows. Window ``k = 1..K``
ends at ``t_k = k * c`` and starts at ``max(0, t_k - C - c)``: the windows grow from the
story start until they reach their full length ``C + c``. In samples (all full-length
windows then have exactly the same length)::

    end_k   = round(t_k * sr)
    start_k = max(0, end_k - round((C + c) * sr))

The feature at ``t_k`` is computed from ``audio[start_k:end_k]`` alone, so audio after
``t_k`` never influences it (causal; with ``librosa`` resampling, when the file's rate
differs from ``target_sample_rate``, the resampling filter's few-millisecond support is
the only exception). FeatureSet rows: ``time = t_k`` (window end, the time used to
downsample), ``time_start = max(0, t_k - C - c)``.

Frames
------
``pool="last"`` keeps, per layer, the output frame of the last frame that saw real audio;
``pool="mean"`` averages the frames that cover real audio.

- wav2vec2 / HuBERT / WavLM: windows are run at their exact length (no padding), so
  every output frame covers real audio; "last" is the last output frame.
- Whisper: the feature extractor pads every window with zeros to 30 s (3000 mel frames).
  The window's real mel frames are those whose centre lies in the audio,
  ``n_mel = ceil(n_samples / hop_length)`` (hop 160 at 16 kHz). The encoder's
  ``conv1`` (kernel 3, stride 1, padding 1) and ``conv2`` (kernel 3, stride 2,
  padding 1) give encoder frame ``m`` the mel frames ``2m - 2 .. 2m + 2``; the last
  frame whose receptive field ends within real audio is
  ``m_last = max(0, (n_mel - 3) // 2)`` (:func:`whisper_last_frame`), never the padded
  end (index 1499). "mean" averages encoder frames ``0..m_last``.

Layers: label 0 is ``hidden_states[0]`` as transformers returns it (the input of the
first transformer layer: conv/feature-projection output with positions), labels
``1..L`` the transformer layers (for Whisper, ``L`` is after the encoder's final layer
norm, as transformers returns it).
"""
from __future__ import annotations

import dataclasses
import logging
import json
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import xarray as xr

from . import _hf
from .base import FeatureError, FeatureExtractor, make_feature_set

logger = logging.getLogger(__name__)

#: ``config.model_type`` values this extractor runs.
SUPPORTED_MODEL_TYPES = ("whisper", "hubert", "wav2vec2", "wavlm")
_DTYPES = ("float32", "float16", "bfloat16")
WHO = "speech extractor"


# --------------------------------------------------------------------------------------
# window and frame arithmetic (pure functions, used by the extractor, the tests and the
# benchmark)
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Windows:
    """The causal sliding windows of one story.

    Attributes
    ----------
    time : (K,) float64
        Window ends ``t_k = k * chunk_size`` (seconds).
    time_start : (K,) float64
        Window starts ``max(0, t_k - context_size - chunk_size)`` (seconds).
    start, end : (K,) int64
        The same in samples: the window is ``audio[start[k]:end[k]]``.
    full_length : int
        Samples of a full-length window, ``round((context_size + chunk_size) * sr)``.
    """

    time: np.ndarray
    time_start: np.ndarray
    start: np.ndarray
    end: np.ndarray
    full_length: int

    def __len__(self) -> int:
        return int(self.time.size)

    @property
    def length(self) -> np.ndarray:
        """(K,) samples per window."""
        return self.end - self.start


def sliding_windows(n_samples: int, sample_rate: int, chunk_size: float, context_size: float) -> Windows:
    """Causal sliding windows over ``n_samples`` samples (see the module docstring).

    Parameters
    ----------
    n_samples : int
        Length of the audio.
    sample_rate : int
    chunk_size : float
        Stride in seconds (> 0).
    context_size : float
        Context in seconds (>= 0); full windows last ``context_size + chunk_size``.

    Returns
    -------
    Windows
        ``K = floor(n_samples / (chunk_size * sample_rate))`` windows (may be 0).
    """
    if chunk_size <= 0 or context_size < 0:
        raise FeatureError(f"need chunk_size > 0 and context_size >= 0, got {chunk_size} and {context_size}")
    K = int(math.floor(n_samples / (chunk_size * sample_rate) + 1e-9))
    while K > 0 and int(round(K * chunk_size * sample_rate)) > n_samples:
        K -= 1
    t = np.arange(1, K + 1, dtype=np.float64) * chunk_size
    ts = np.maximum(0.0, t - context_size - chunk_size)
    full = int(round((context_size + chunk_size) * sample_rate))
    end = np.rint(t * sample_rate).astype(np.int64)
    start = np.maximum(0, end - full)
    return Windows(time=t, time_start=ts, start=start, end=end, full_length=full)


def whisper_n_mel_frames(n_samples: int, hop_length: int = 160) -> int:
    """Mel frames of a Whisper input that lie in real audio: frames whose centre
    ``i * hop_length`` is a sample of the window, i.e. ``ceil(n_samples / hop_length)``."""
    return -(-int(n_samples) // int(hop_length))


def whisper_last_frame(n_samples: int, hop_length: int = 160) -> int:
    """Index of the last Whisper encoder frame whose receptive field ends within real
    audio, for a window of ``n_samples`` samples padded to 30 s.

    conv1 (kernel 3, stride 1, padding 1) maps mel frames ``j-1..j+1`` to frame ``j``;
    conv2 (kernel 3, stride 2, padding 1) maps conv1 frames ``2m-1..2m+1`` to encoder
    frame ``m``, which therefore sees mel frames ``2m-2..2m+2``. With ``n_mel`` real mel
    frames (:func:`whisper_n_mel_frames`) the last such ``m`` with ``2m + 2 <= n_mel - 1``
    is ``(n_mel - 3) // 2`` (0 for windows shorter than 3 mel frames).
    """
    return max(0, (whisper_n_mel_frames(n_samples, hop_length) - 3) // 2)


def conv_output_length(n_samples: int, kernels, strides) -> int:
    """Frames out of a wav2vec2-style convolutional feature encoder (no padding)."""
    n = int(n_samples)
    for k, s in zip(kernels, strides):
        n = (n - int(k)) // int(s) + 1
        if n <= 0:
            return 0
    return n


# --------------------------------------------------------------------------------------
# model loading (cached per process)
# --------------------------------------------------------------------------------------
@dataclasses.dataclass
class _LoadedModel:
    model: Any            # torch module: the Whisper encoder or the wav2vec2-family model
    feature_extractor: Any
    model_type: str
    n_layers: int
    hidden_size: int
    device: Any
    dtype: Any


def load_speech_model(model_name, *, device: str = "cpu", dtype: str = "float32") -> _LoadedModel:
    """Load (once per process) a speech model and its feature extractor.

    Parameters
    ----------
    model_name : str or path-like
        Resolved by :func:`scalenc.features._hf.resolve_model` (model + feature extractor
        config).
    device : str
        ``"cpu"`` or ``"cuda[:N]"``.
    dtype : {"float32", "float16", "bfloat16"}

    Returns
    -------
    _LoadedModel
        For Whisper the encoder only (the decoder is dropped).
    """
    where = _hf.resolve_model(model_name, what="model", who=WHO)
    dev = _hf.pick_device(device, who=WHO)
    tdtype = _hf.torch_dtype(dtype, who=WHO, allowed=_DTYPES)
    key = ("speech", json.dumps(where.identity(), sort_keys=True), str(dev), dtype)
    return _hf.MODELS.get(key, lambda: _load(where, dev, dtype, tdtype))


def _load(where: _hf.ResolvedModel, dev, dtype: str, tdtype) -> _LoadedModel:
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

    cfg = _hf.from_pretrained(AutoConfig, where, what="transformers config (config.json)", who=WHO)
    mtype = getattr(cfg, "model_type", None)
    if mtype not in SUPPORTED_MODEL_TYPES:
        raise FeatureError(f"{WHO}: model at {where} has config.model_type {mtype!r}; "
                           f"supported: {list(SUPPORTED_MODEL_TYPES)}")
    fe = _hf.from_pretrained(AutoFeatureExtractor, where, who=WHO,
                             what="feature extractor config (preprocessor_config.json; save it next to the model "
                                  "with feature_extractor.save_pretrained())")
    if mtype == "whisper":
        from transformers import WhisperModel

        full = _hf.from_pretrained(WhisperModel, where, what="model weights", who=WHO, dtype=tdtype)
        model = full.get_encoder()
        del full
        expected = model.config.max_source_positions * model.conv1.stride[0] * model.conv2.stride[0]
        if expected != fe.nb_max_frames:
            raise FeatureError(f"{WHO}: Whisper model at {where} expects {expected} mel frames but its "
                               f"feature extractor produces {fe.nb_max_frames} (n_samples {fe.n_samples}, "
                               f"hop_length {fe.hop_length})")
        hidden = int(cfg.d_model)
        n_layers = int(cfg.encoder_layers)
    else:
        model = _hf.from_pretrained(AutoModel, where, what="model weights", who=WHO, dtype=tdtype)
        hidden = int(cfg.hidden_size)
        n_layers = int(cfg.num_hidden_layers)
    model.eval().to(dev)
    logger.info("%s: loaded %s model from %s on %s (%s)", WHO, mtype, where, dev, dtype)
    return _LoadedModel(model=model, feature_extractor=fe, model_type=mtype, n_layers=n_layers,
                        hidden_size=hidden, device=dev, dtype=tdtype)


def clear_model_cache() -> None:
    """Forget the models loaded in this process (:data:`scalenc.features._hf.MODELS`)."""
    _hf.clear_model_cache()


# --------------------------------------------------------------------------------------
# the extractor
# --------------------------------------------------------------------------------------
class SpeechExtractor(FeatureExtractor):
    """Hidden states of a local speech model over a causal sliding window.

    Parameters
    ----------
    model_name : path-like
        A local folder written by ``save_pretrained`` holding a Whisper
        (``WhisperModel`` / ``WhisperForConditionalGeneration``: the encoder is used),
        HuBERT, wav2vec2 or WavLM model together with its feature extractor config
        (``preprocessor_config.json``). The architecture is read from
        ``config.model_type``. Nothing is ever downloaded.
    config : dict, optional
        ``chunk_size`` : float, default 0.1
            Stride in seconds: window ``k`` ends at ``t_k = k * chunk_size``.
        ``context_size`` : float, default 16.0
            Seconds of context before each chunk: full windows cover
            ``context_size + chunk_size`` seconds (<= 30 s for Whisper).
        ``layer`` : int, list of int or "all", default "all"
            Layers returned by :meth:`extract` (0 = input of the first transformer
            layer, 1..L = layers). Selection only: all layers are computed and cached.
        ``pool`` : {"last", "mean"}, default "last"
            "last": the output frame of the last frame that saw real audio; "mean":
            the mean over the frames covering real audio (module docstring).
        ``batch_size`` : int, default 16
            Windows per forward pass. Only windows of equal input length are batched
            (all Whisper windows; full-length windows for the wav2vec2 family), so no
            window is ever padded and batched results equal per-window ones.
        ``device`` : str, default "cpu"
            "cpu" or "cuda[:N]" (an error without CUDA).
        ``target_sample_rate`` : int, default 16000
            Audio is loaded with ``librosa.load(path, sr=target_sample_rate, mono=True)``;
            must equal the feature extractor's ``sampling_rate``.
        ``dtype`` : {"float32", "float16", "bfloat16"}, default "float32"
            Model weights and inputs; features are stored as float32.
    cache_dir : path-like, optional
        Feature cache root; the key covers the config (not layer, batch_size, device),
        the model folder's files and the audio file's bytes.

    Notes
    -----
    The output FeatureSet has ``features (layer, time, feature)`` with layers
    ``0..L``, ``time`` the window ends and ``time_start`` the window starts;
    attrs ``model_type``, ``chunk_size``, ``context_size``, ``pool``, ``sample_rate``.
    """

    modality: ClassVar[str] = "speech"
    defaults: ClassVar[dict[str, Any]] = {
        "chunk_size": 0.1,
        "context_size": 16.0,
        "layer": "all",
        "pool": "last",
        "batch_size": 16,
        "device": "cpu",
        "target_sample_rate": 16000,
        "dtype": "float32",
    }
    types: ClassVar[dict[str, tuple[type, ...]]] = {
        "layer": (int, np.integer, list, tuple, str),
    }
    uses_audio: ClassVar[bool] = True
    needs_gpu: ClassVar[bool] = True

    def __init__(self, model_name=None, config=None, cache_dir=None):
        super().__init__(model_name, config, cache_dir)
        c = self.config
        if not c["chunk_size"] > 0:
            raise FeatureError(f"speech extractor: chunk_size must be > 0 seconds, got {c['chunk_size']}")
        if not c["context_size"] >= 0:
            raise FeatureError(f"speech extractor: context_size must be >= 0 seconds, got {c['context_size']}")
        if c["pool"] not in ("last", "mean"):
            raise FeatureError(f"speech extractor: pool must be 'last' or 'mean', got {c['pool']!r}")
        if c["batch_size"] < 1:
            raise FeatureError(f"speech extractor: batch_size must be >= 1, got {c['batch_size']}")
        if c["target_sample_rate"] <= 0:
            raise FeatureError(f"speech extractor: target_sample_rate must be > 0, got {c['target_sample_rate']}")
        if c["dtype"] not in _DTYPES:
            raise FeatureError(f"speech extractor: dtype must be one of {_DTYPES}, got {c['dtype']!r}")
        if isinstance(c["layer"], str) and c["layer"] != "all":
            raise FeatureError(f"speech extractor: layer must be an int, a list of ints or 'all', got {c['layer']!r}")

    # identity / loading ----------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        where = _hf.resolve_model(self.model_name, what="model", who=WHO)
        ident["model"] = str(where)
        ident["model_files"] = where.identity()
        return ident

    def load(self) -> _LoadedModel:
        """The model and feature extractor (cached per process), checked against the config."""
        m = load_speech_model(self.model_name, device=self.config["device"], dtype=self.config["dtype"])
        sr = int(self.config["target_sample_rate"])
        fe_sr = getattr(m.feature_extractor, "sampling_rate", None)
        if fe_sr is not None and int(fe_sr) != sr:
            raise FeatureError(f"speech extractor: target_sample_rate {sr} differs from the sampling rate "
                               f"{fe_sr} of the feature extractor in {self.model_name}; set "
                               f"target_sample_rate={fe_sr}")
        c = self.config
        if m.model_type == "whisper":
            limit = m.feature_extractor.n_samples / sr
            full = sliding_windows(0, sr, c["chunk_size"], c["context_size"]).full_length
            if c["context_size"] > limit or full > m.feature_extractor.n_samples:
                raise FeatureError(f"speech extractor: Whisper takes at most {limit:g} s of audio per window but "
                                   f"context_size + chunk_size = {c['context_size']} + {c['chunk_size']} s; "
                                   f"set context_size <= {limit - c['chunk_size']:g}")
        else:
            cfgm = m.model.config
            n_first = int(round(c["chunk_size"] * sr))
            if conv_output_length(n_first, cfgm.conv_kernel, cfgm.conv_stride) < 1:
                raise FeatureError(f"speech extractor: chunk_size {c['chunk_size']} s ({n_first} samples) is "
                                   f"shorter than the receptive field of {m.model_type}'s convolutional "
                                   "feature encoder; use a larger chunk_size")
        return m

    def load_audio(self, assembly, story: str) -> np.ndarray:
        """(n_samples,) float32 mono audio of ``story`` at ``target_sample_rate``."""
        path = assembly.audio_path(story)
        if path is None:
            raise FeatureError(f"speech extractor: story {story!r} has no audio file; set "
                               f"assembly.story_data[{story!r}].audio_path = '/path/to/{story}.wav'")
        p = Path(path)
        if not p.is_file():
            raise FeatureError(f"speech extractor: audio file of story {story!r} not found: {p} (set "
                               f"assembly.story_data[{story!r}].audio_path to an existing file)")
        import librosa

        y, _ = librosa.load(str(p), sr=int(self.config["target_sample_rate"]), mono=True)
        return np.ascontiguousarray(y, dtype=np.float32)

    # computation -----------------------------------------------------------------------
    def compute(self, assembly, story: str) -> xr.Dataset:
        """All layers of ``story``: (L + 1, K, hidden) features at the window ends."""
        audio = self.load_audio(assembly, story)
        m = self.load()
        c = self.config
        sr = int(c["target_sample_rate"])
        win = sliding_windows(audio.size, sr, c["chunk_size"], c["context_size"])
        if len(win) == 0:
            raise FeatureError(f"speech extractor: story {story!r} has {audio.size / sr:.3f} s of audio, "
                               f"shorter than one chunk ({c['chunk_size']} s)")
        feats = self.compute_windows(audio, win, m)
        return make_feature_set(
            feats, win.time, time_start=win.time_start, layers=list(range(m.n_layers + 1)), story=story,
            extractor="speech", model=str(self.model_name),
            attrs=dict(model_type=m.model_type, chunk_size=float(c["chunk_size"]),
                       context_size=float(c["context_size"]), pool=c["pool"], sample_rate=sr))

    def compute_windows(self, audio: np.ndarray, win: Windows, m: _LoadedModel | None = None) -> np.ndarray:
        """Features of the given windows of ``audio``.

        Returns
        -------
        (L + 1, K, hidden) float32
        """
        m = self.load() if m is None else m
        bs = int(self.config["batch_size"])
        out = np.empty((m.n_layers + 1, len(win), m.hidden_size), dtype=np.float32)
        # group windows by model input length: Whisper pads every window to 30 s, so all
        # windows share one input shape; the wav2vec2 family runs windows unpadded, so
        # only equal-length windows share a batch.
        keys = np.zeros(len(win), np.int64) if m.model_type == "whisper" else win.length
        for length in np.unique(keys):
            idx = np.flatnonzero(keys == length)
            for b0 in range(0, idx.size, bs):
                sel = idx[b0:b0 + bs]
                chunks = [audio[win.start[k]:win.end[k]] for k in sel]
                for lay, h in enumerate(self._forward(m, chunks)):
                    out[lay, sel] = h
        return out

    def _forward(self, m: _LoadedModel, windows: list[np.ndarray]) -> list[np.ndarray]:
        """One forward pass over equal-input-length windows; per layer (B, hidden)."""
        import torch

        sr = int(self.config["target_sample_rate"])
        fe = m.feature_extractor
        n = np.array([w.size for w in windows])
        with torch.inference_mode():
            if m.model_type == "whisper":
                kw = {"device": str(m.device)} if m.device.type != "cpu" else {}
                x = fe(windows, sampling_rate=sr, return_tensors="pt", **kw)["input_features"]
                hs = m.model(x.to(m.device, m.dtype), output_hidden_states=True).hidden_states
                last = np.array([whisper_last_frame(k, fe.hop_length) for k in n])
            else:
                if np.any(n != n[0]):  # never padded: batched == per-window
                    raise RuntimeError("internal: wav2vec2-family batch with unequal window lengths")
                inp = fe(windows, sampling_rate=sr, return_tensors="pt")
                am = inp.get("attention_mask")
                hs = m.model(inp["input_values"].to(m.device, m.dtype),
                             attention_mask=None if am is None else am.to(m.device),
                             output_hidden_states=True).hidden_states
                last = np.full(len(windows), hs[0].shape[1] - 1)
            last_t = torch.as_tensor(last, device=m.device)
            rows = torch.arange(len(windows), device=m.device)
            res = []
            if self.config["pool"] == "last":
                for h in hs:
                    res.append(h[rows, last_t].float().cpu().numpy())
            else:
                T = hs[0].shape[1]
                mask = (torch.arange(T, device=m.device)[None, :] <= last_t[:, None]).float()
                count = mask.sum(1, keepdim=True)
                for h in hs:
                    res.append(((h.float() * mask[:, :, None]).sum(1) / count).cpu().numpy())
        return res
