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
``pool="last"`` keeps, per layer, one output frame per window (below); ``pool="mean"``
averages the output frames from the first up to that one.

- wav2vec2 / HuBERT / WavLM: windows are run at their exact length (no padding), so
  every output frame covers real audio; "last" is the last output frame (as the
  scaling-laws reference).
- Whisper: the feature extractor pads every window with zeros to 30 s (3000 mel
  frames); the window's real mel frames number ``n_mel = ceil(n_samples / hop_length)``
  (hop 160 at 16 kHz). The frame kept is the scaling-laws reference's
  (``extract_speech_features`` of HuthLab/encoding-model-scaling-laws): encoder frame
  ``(n_mel + 1) // 2`` (805 for a 16.1 s window; :func:`whisper_reference_frame`),
  never the padded end (index 1499). Through ``conv1`` (kernel 3, stride 1, padding 1)
  and ``conv2`` (kernel 3, stride 2, padding 1) encoder frame ``m`` sees mel frames
  ``2m - 2 .. 2m + 2``, so the reference frame also sees the first 20-30 ms of the
  zero padding after the audio. ``whisper_frame="receptive_field"`` keeps instead the
  last frame whose receptive field lies inside the real audio, ``max(0, (n_mel - 3) //
  2)`` (:func:`whisper_last_frame`; 803 for 16.1 s, 40 ms earlier).

Layers
------
FeatureSet labels are the indices of transformers' ``hidden_states``: label 0 is the
input of the first transformer layer (conv/feature-projection output with positions,
the scaling-laws files' ``encoder.0``), labels ``1..L`` the transformer layers (for
Whisper, ``L`` is after the encoder's final layer norm, as transformers returns it).
The tutorial API's ``layer`` (config) and the trainer's ``layer_idx`` count as LITcoder
does, from the first transformer block with the embeddings excluded (``layer=3`` is
label 4, ``"last"`` label ``L``): :func:`litcoder_layer_labels` is the one mapping.

Models
------
``model_name`` may be a local folder, a Hugging Face Hub id (``openai/whisper-tiny``,
``facebook/hubert-base-ls960``, ``microsoft/wavlm-base-plus``,
``facebook/wav2vec2-base-960h``; optional ``revision``) from the standard cache or the
Hub; device ``"auto"`` (CUDA, MPS, CPU), an unavailable device warns and uses the CPU
unless ``strict_device``: all through :mod:`scalenc.features._hf`, shared with the
language-model extractor.
"""
from __future__ import annotations

import dataclasses
import logging
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
#: ``whisper_frame`` values: the scaling-laws reference's frame (default) or the last frame
#: whose receptive field lies inside the real audio
WHISPER_FRAMES = ("reference", "receptive_field")
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


def whisper_reference_frame(n_samples: int, hop_length: int = 160, n_frames: int = 1500) -> int:
    """Index of the Whisper encoder frame the scaling-laws reference reads for a window of
    ``n_samples`` samples: ``(n_mel + 1) // 2`` with ``n_mel`` real log-mel frames
    (:func:`whisper_n_mel_frames`; 805 for 16.1 s), at most ``n_frames - 1``.

    That frame sees mel frames ``n_mel - 2 .. n_mel + 2`` (``n_mel`` even) or
    ``n_mel - 1 .. n_mel + 3`` (odd): the end of the audio and the first frames of the
    zero padding after it; :func:`whisper_last_frame` is the stricter frame two frames
    (40 ms) earlier.
    """
    return min(int(n_frames) - 1, (whisper_n_mel_frames(n_samples, hop_length) + 1) // 2)


def whisper_frame(n_samples: int, hop_length: int = 160, which: str = "reference", n_frames: int = 1500) -> int:
    """The encoder frame of a window: ``which="reference"`` (:func:`whisper_reference_frame`,
    the default) or ``"receptive_field"`` (:func:`whisper_last_frame`)."""
    if which == "reference":
        return whisper_reference_frame(n_samples, hop_length, n_frames)
    if which == "receptive_field":
        return whisper_last_frame(n_samples, hop_length)
    raise FeatureError(f"whisper_frame must be one of {WHISPER_FRAMES}, got {which!r}")


def litcoder_layer_labels(layer, available=None) -> list | None:
    """FeatureSet layer labels of a speech ``layer`` given in the tutorial API's numbering.

    The one place where the two numberings meet. LITcoder (and so the ``layer`` config of
    :class:`SpeechExtractor` and the trainer's ``layer_idx`` for speech) counts transformer
    blocks from 0 with the embeddings excluded: ``layer=L`` is ``hidden_states[L + 1]``,
    ``"last"`` the final one. scalenc's FeatureSet labels are the ``hidden_states``
    indices, so label 0 is the embedding (conv/feature-projection) output, as the
    scaling-laws files' ``encoder.N`` name it:

    ============================  ======================
    tutorial ``layer`` / LITcoder  FeatureSet label
    ============================  ======================
    ``L >= 0``                     ``L + 1``
    ``L < 0``                      ``L`` (from the end)
    ``"last"``                     the last label
    ``"all"`` / None               every label
    ============================  ======================

    Parameters
    ----------
    layer : int, list of int, "last", "all" or None
    available : list of labels, optional
        The FeatureSet's labels; without them ``"last"`` is ``-1`` (the last, counted from
        the end by :func:`scalenc.features.base.select_layers`).

    Returns
    -------
    list or None
        None for all layers.
    """
    if layer is None or (isinstance(layer, str) and layer == "all"):
        return None
    out = []
    for lay in (list(layer) if isinstance(layer, (list, tuple)) else [layer]):
        if isinstance(lay, str):
            if lay != "last":
                raise FeatureError(f"speech layer must be an int, 'last' or 'all', got {lay!r}")
            out.append(list(available)[-1] if available is not None else -1)
        elif int(lay) >= 0:
            out.append(int(lay) + 1)
        else:
            out.append(list(available)[int(lay)] if available is not None else int(lay))
    return out


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


def load_speech_model(model_name, *, device: str = "auto", dtype: str = "float32", revision: str | None = None,
                      strict_device: bool = False, device_map=None) -> _LoadedModel:
    """Load (once per process) a speech model and its feature extractor.

    Parameters
    ----------
    model_name : str or path-like
        A folder, a Hub id (e.g. ``openai/whisper-tiny``) or a cached Hub model, resolved
        by :func:`scalenc.features._hf.resolve_model` (model + feature extractor config).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda[:N]"`` or ``"mps"`` (:func:`scalenc.features._hf.pick_device`).
    dtype : {"float32", "float16", "bfloat16"}
    revision : str, optional
        Hub revision.
    strict_device : bool
        An unavailable device is an error instead of a warning and the CPU.
    device_map : str or dict, optional
        Passed to ``from_pretrained`` (``"auto"``: spread over the node's GPUs); the
        inputs then go to the device of the model's first parameters.

    Returns
    -------
    _LoadedModel
        For Whisper the encoder only (the decoder is dropped).
    """
    where = (model_name if isinstance(model_name, _hf.ResolvedModel)
             else _hf.resolve_model(model_name, revision=revision, what="model", who=WHO))
    dev = _hf.pick_device(device, strict=strict_device, who=WHO)
    tdtype = _hf.torch_dtype(dtype, who=WHO, allowed=_DTYPES)
    key = _hf.model_key("speech", where, str(dev), dtype, device_map)
    return _hf.MODELS.get(key, lambda: _load(where, dev, dtype, tdtype, device_map))


def _load(where: _hf.ResolvedModel, dev, dtype: str, tdtype, device_map=None) -> _LoadedModel:
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

        full = _hf.from_pretrained(WhisperModel, where, what="model weights", who=WHO, dtype=tdtype,
                                   **_hf.device_map_kwargs(device_map))
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
        model = _hf.from_pretrained(AutoModel, where, what="model weights", who=WHO, dtype=tdtype,
                                    **_hf.device_map_kwargs(device_map))
        hidden = int(cfg.hidden_size)
        n_layers = int(cfg.num_hidden_layers)
    _hf.place(model, dev, device_map)
    dev = _hf.input_device(model, dev, device_map)
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
    """Hidden states of a speech model over a causal sliding window.

    Parameters
    ----------
    model_name : str or path-like
        A local folder written by ``save_pretrained`` or a Hugging Face Hub id (module
        docstring, "Models") of a Whisper (``WhisperModel`` /
        ``WhisperForConditionalGeneration``: the encoder is used), HuBERT, wav2vec2 or
        WavLM model with its feature extractor config (``preprocessor_config.json``).
        The architecture is read from ``config.model_type``.
    config : dict, optional
        ``chunk_size`` : float, default 0.1
            Stride in seconds: window ``k`` ends at ``t_k = k * chunk_size``.
        ``context_size`` : float, default 16.0
            Seconds of context before each chunk: full windows cover
            ``context_size + chunk_size`` seconds (<= 30 s for Whisper).
        ``layer`` : int, list of int, "last" or "all", default "all"
            Layers returned by :meth:`extract`, counted as LITcoder does: ``L`` is
            transformer block ``L`` (FeatureSet label ``L + 1``; label 0, the embedding
            output, is only reached with "all"), "last" the final one
            (:func:`litcoder_layer_labels`). Selection only: all layers are computed and
            cached.
        ``pool`` : {"last", "mean"}, default "last"
            "last": one output frame per window; "mean": the mean over the output
            frames up to it (module docstring, "Frames").
        ``whisper_frame`` : {"reference", "receptive_field"}, default "reference"
            Whisper only: the scaling-laws reference's frame ``(n_mel + 1) // 2``, or
            the last frame whose receptive field lies inside the real audio.
        ``batch_size`` : int, default 16
            Windows per forward pass. Only windows of equal input length are batched
            (all Whisper windows; full-length windows for the wav2vec2 family), so no
            window is ever padded and batched results equal per-window ones.
        ``device`` : str, default "auto"
            "auto" (CUDA, then MPS, then CPU), "cpu", "cuda[:N]" or "mps"; an
            unavailable device gives a warning and the CPU.
        ``strict_device`` : bool, default False
            An unavailable ``device`` is a FeatureError instead.
        ``revision`` : str, optional
            Hub revision of a Hub ``model_name`` (the cache key holds the commit).
        ``target_sample_rate`` : int, default 16000
            Audio is loaded with ``librosa.load(path, sr=target_sample_rate, mono=True)``;
            must equal the feature extractor's ``sampling_rate``.
        ``dtype`` : {"float32", "float16", "bfloat16"}, default "float32"
            Model weights and inputs; features are stored as float32 (bfloat16 on the
            CPU: largest difference about 2 % of the largest feature on a tiny HuBERT,
            ``benchmarks/gpu.py``).
        ``prefetch`` : int, default 2
            Batches whose CPU side (window slicing, log-mel / normalisation, padding) a
            producer thread prepares ahead of the model (0: none).
        ``device_map`` : str or dict, optional
            Passed to ``from_pretrained`` (``"auto"``: a model too big for one GPU spread
            over the node's GPUs by accelerate).
    cache_dir : path-like, optional
        Feature cache root; the key covers the config (not layer, batch_size, device, prefetch, device_map),
        the model folder's files (or Hub id and commit) and the audio file's bytes.

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
        "device": "auto",
        "strict_device": False,
        "target_sample_rate": 16000,
        "dtype": "float32",
        "whisper_frame": "reference",
        "revision": None,
        "prefetch": 2,
        "device_map": None,
    }
    types: ClassVar[dict[str, tuple[type, ...]]] = {
        "layer": (int, np.integer, list, tuple, str),
        "revision": (str,),
    }
    uses_audio: ClassVar[bool] = True
    needs_gpu: ClassVar[bool] = True

    def __init__(self, model_name=None, config=None, cache_dir=None):
        super().__init__(model_name, config, cache_dir)
        c = self.config
        self._where: _hf.ResolvedModel | None = None
        if c["whisper_frame"] not in WHISPER_FRAMES:
            raise FeatureError(f"speech extractor: whisper_frame must be one of {WHISPER_FRAMES}, "
                               f"got {c['whisper_frame']!r}")
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
        if isinstance(c["layer"], str) and c["layer"] not in ("all", "last"):
            raise FeatureError(f"speech extractor: layer must be an int, a list of ints, 'last' or 'all', "
                               f"got {c['layer']!r}")

    # layers ----------------------------------------------------------------------------
    def layer_labels(self, selection, available=None) -> list | None:
        """FeatureSet labels of a tutorial-API ``layer`` (LITcoder's numbering): see
        :func:`litcoder_layer_labels`."""
        return litcoder_layer_labels(selection, available)

    # identity / loading ----------------------------------------------------------------
    @property
    def where(self) -> _hf.ResolvedModel:
        """Where the model is (resolved once per extractor)."""
        if self._where is None:
            self._where = _hf.resolve_model(self.model_name, revision=self.config["revision"], what="model",
                                            who=WHO)
        return self._where

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        where = self.where
        ident["model"] = str(where)
        ident["config"].pop("revision", None)  # the resolved commit is in model_files
        ident["model_files"] = where.identity()
        return ident

    def load(self) -> _LoadedModel:
        """The model and feature extractor (cached per process), checked against the config."""
        m = load_speech_model(self.where, device=self.config["device"], dtype=self.config["dtype"],
                              strict_device=self.config["strict_device"], device_map=self.config["device_map"])
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
        """(n_samples,) float32 mono audio of ``story`` at ``target_sample_rate``.

        Raises
        ------
        FeatureError
            No audio path, a missing file, or a file that is empty or not audio (one line
            naming the story and the file).
        """
        path = assembly.audio_path(story)
        if path is None:
            raise FeatureError(f"speech extractor: story {story!r} has no audio file; set "
                               f"assembly.story_data[{story!r}].audio_path = '/path/to/{story}.wav'")
        p = Path(path)
        if not p.is_file():
            raise FeatureError(f"speech extractor: audio file of story {story!r} not found: {p} (set "
                               f"assembly.story_data[{story!r}].audio_path to an existing file)")
        if p.stat().st_size == 0:
            raise FeatureError(f"speech extractor: audio file of story {story!r} is empty (0 bytes): {p}")
        import warnings

        import librosa

        try:
            with warnings.catch_warnings():  # librosa warns before falling back to audioread: we raise instead
                warnings.simplefilter("ignore")
                y, _ = librosa.load(str(p), sr=int(self.config["target_sample_rate"]), mono=True)
        except Exception as e:  # soundfile, audioread (NoBackendError), EOFError, ...: all mean "not audio"
            detail = " ".join(str(e).split()) or type(e).__name__
            raise FeatureError(f"speech extractor: cannot read the audio file of story {story!r}: {p} is not "
                               f"a readable audio file ({type(e).__name__}: {detail[:200]})") from None
        if y.size == 0:
            raise FeatureError(f"speech extractor: audio file of story {story!r} has no samples: {p}")
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

        The CPU side of a batch (slicing the windows, the feature extractor's log-mel
        spectrograms or normalisation, padding) runs in a producer thread ``prefetch``
        batches ahead of the model; on a GPU the pooled frames of every batch and layer are
        gathered into one device tensor and copied to the host once, at the end.

        Returns
        -------
        (L + 1, K, hidden) float32
        """
        import torch

        m = self.load() if m is None else m
        bs = int(self.config["batch_size"])
        shape = (m.n_layers + 1, len(win), m.hidden_size)
        on_host = m.device.type == "cpu"
        out = (np.empty(shape, dtype=np.float32) if on_host
               else torch.empty(shape, dtype=torch.float32, device=m.device))
        # group windows by model input length: Whisper pads every window to 30 s, so all
        # windows share one input shape; the wav2vec2 family runs windows unpadded, so
        # only equal-length windows share a batch.
        keys = np.zeros(len(win), np.int64) if m.model_type == "whisper" else win.length
        batches = [idx[b0:b0 + bs] for length in np.unique(keys) for idx in [np.flatnonzero(keys == length)]
                   for b0 in range(0, idx.size, bs)]
        pinned = not on_host and m.device.type == "cuda"
        with torch.inference_mode():
            for sel, inputs in _prefetched(batches, lambda sel: self._inputs(m, audio, win, sel, pinned),
                                           int(self.config["prefetch"])):
                rows = torch.as_tensor(sel, device=m.device) if not on_host else sel
                for lay, h in enumerate(self._run(m, inputs)):
                    out[lay, rows] = h.numpy() if on_host else h
        return out if on_host else out.cpu().numpy()

    def _inputs(self, m: _LoadedModel, audio: np.ndarray, win: Windows, sel: np.ndarray, pinned: bool) -> dict:
        """The model inputs of one batch of equal-input-length windows, built on the CPU
        (the producer thread's work): tensors (pinned for an asynchronous copy to a CUDA
        device) and the encoder frame each window is read at."""
        sr = int(self.config["target_sample_rate"])
        fe = m.feature_extractor
        windows = [audio[win.start[k]:win.end[k]] for k in sel]
        n = np.array([w.size for w in windows])
        if m.model_type == "whisper" and not pinned:
            x = {"x": fe(windows, sampling_rate=sr, return_tensors="pt")["input_features"]}
        elif m.model_type == "whisper":  # log-mel on the GPU (in _run): faster than the CPU's STFTs
            return {"windows": windows, "n": n}
        else:
            if np.any(n != n[0]):  # never padded: batched == per-window
                raise RuntimeError("internal: wav2vec2-family batch with unequal window lengths")
            inp = fe(windows, sampling_rate=sr, return_tensors="pt")
            x = {"x": inp["input_values"], "attention_mask": inp.get("attention_mask")}
        if pinned:
            x = {k: None if v is None else v.pin_memory() for k, v in x.items()}
        return {**x, "n": n}

    def _run(self, m: _LoadedModel, inputs: dict) -> list:
        """One forward pass; per layer the pooled (B, hidden) float32 frames, left on the
        model's device."""
        import torch

        fe = m.feature_extractor
        n = inputs["n"]
        if "windows" in inputs:
            inputs["x"] = fe(inputs["windows"], sampling_rate=int(self.config["target_sample_rate"]),
                             return_tensors="pt", device=str(m.device))["input_features"]
        x = inputs["x"].to(m.device, m.dtype, non_blocking=True)
        if m.model_type == "whisper":
            hs = m.model(x, output_hidden_states=True).hidden_states
            last = np.array([whisper_frame(k, fe.hop_length, self.config["whisper_frame"], hs[0].shape[1])
                             for k in n])
        else:
            am = inputs["attention_mask"]
            hs = m.model(x, attention_mask=None if am is None else am.to(m.device, non_blocking=True),
                         output_hidden_states=True).hidden_states
            last = np.full(len(n), hs[0].shape[1] - 1)
        last_t = torch.as_tensor(last, device=m.device)
        rows = torch.arange(len(n), device=m.device)
        if self.config["pool"] == "last":
            return [h[rows, last_t].float() for h in hs]
        T = hs[0].shape[1]
        mask = (torch.arange(T, device=m.device)[None, :] <= last_t[:, None]).float()
        count = mask.sum(1, keepdim=True)
        return [(h.float() * mask[:, :, None]).sum(1) / count for h in hs]

    def no_cache_keys(self) -> set[str]:
        return super().no_cache_keys() | {"prefetch", "device_map"}


def _prefetched(items: list, prepare, ahead: int):
    """``(item, prepare(item))`` for each item, in order; with ``ahead > 0`` a producer
    thread prepares up to ``ahead`` items ahead of the consumer (an error in it is raised
    here; the thread stops when the consumer does)."""
    if ahead <= 0 or len(items) < 2:
        for it in items:
            yield it, prepare(it)
        return
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def produce():
        try:
            for it in items:
                if stop.is_set():
                    return
                q.put((it, prepare(it), None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put((None, None, e))

    t = threading.Thread(target=produce, name="scalenc-speech-prefetch", daemon=True)
    t.start()
    try:
        for _ in items:
            it, prepared, err = q.get()
            if err is not None:
                raise err
            yield it, prepared
    finally:
        stop.set()
        while t.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            t.join(timeout=0.05)
