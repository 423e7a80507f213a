"""SpeechExtractor: causal sliding windows over tiny random speech models saved to disk.

Every model is built here with a tiny random config, saved with ``save_pretrained`` and
loaded back by path through the extractor (the real loading code). The per-window
references slice the audio themselves and run the feature extractor and the model on a
single window.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
sf = pytest.importorskip("soundfile")
pytest.importorskip("librosa")

from scalenc.features import FeatureCache, FeatureError  # noqa: E402
from scalenc.features.speech import (SpeechExtractor, litcoder_layer_labels, load_speech_model,  # noqa: E402
                                     sliding_windows, whisper_last_frame, whisper_reference_frame)

SR = 16000
CHUNK, CONTEXT = 0.5, 2.0
CFG = {"chunk_size": CHUNK, "context_size": CONTEXT, "batch_size": 4}
N_LAYERS = 2


# ------------------------------------------------------------------------------ fixtures
def _save(model, fe, path):
    model.save_pretrained(path)
    fe.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny random Whisper, HuBERT, wav2vec2 (stable-layer-norm variant) and WavLM folders."""
    from transformers import (HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor,
                              Wav2Vec2Model, WavLMConfig, WavLMModel, WhisperConfig,
                              WhisperFeatureExtractor, WhisperForConditionalGeneration)

    root = tmp_path_factory.mktemp("speech_models")
    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=N_LAYERS, num_attention_heads=2, intermediate_size=37,
                 conv_dim=(16, 16, 16), conv_kernel=(10, 8, 8), conv_stride=(5, 8, 8), num_conv_pos_embeddings=16,
                 num_conv_pos_embedding_groups=2, vocab_size=12)
    wcfg = WhisperConfig(d_model=32, encoder_layers=N_LAYERS, encoder_attention_heads=2, decoder_layers=1,
                         decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                         max_source_positions=1500, max_target_positions=16, vocab_size=64, pad_token_id=0,
                         bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    return {
        # saved from the ASR head class: the extractor must still find the encoder
        "whisper": _save(WhisperForConditionalGeneration(wcfg), WhisperFeatureExtractor(), root / "whisper"),
        "hubert": _save(HubertModel(HubertConfig(**small)), Wav2Vec2FeatureExtractor(), root / "hubert"),
        "wav2vec2": _save(Wav2Vec2Model(Wav2Vec2Config(**small, feat_extract_norm="layer", do_stable_layer_norm=True)),
                          Wav2Vec2FeatureExtractor(), root / "wav2vec2"),
        "wavlm": _save(WavLMModel(WavLMConfig(**small, num_buckets=16, max_bucket_distance=40)),
                       Wav2Vec2FeatureExtractor(), root / "wavlm"),
    }


@pytest.fixture(scope="module")
def audio(synthetic_small, tmp_path_factory):
    """6 s of one synthetic story (tones following the words), and the story's name."""
    asm = synthetic_small.assembly()
    story = asm.stories[0]
    y, sr = sf.read(asm.audio_path(story), dtype="float32")
    assert sr == SR
    y = y[int(1.0 * SR):int(7.0 * SR)]
    assert np.abs(y).max() > 0.05
    path = tmp_path_factory.mktemp("speech_audio") / f"{story}_6s.wav"
    sf.write(path, y, SR, subtype="FLOAT")
    return {"path": str(path), "y": y, "story": story}


def _assembly(synthetic_small, path):
    asm = synthetic_small.assembly()
    asm.story_data[asm.stories[0]].audio_path = str(path)
    return asm


@pytest.fixture
def asm(synthetic_small, audio):
    return _assembly(synthetic_small, audio["path"])


_COMPUTED: dict = {}


@pytest.fixture
def computed(models, asm, audio):
    """Extractor output per (model, pool, whisper_frame), computed once per module."""
    def get(name, pool="last", frame="reference"):
        if (name, pool, frame) not in _COMPUTED:
            ex = SpeechExtractor(models[name], {**CFG, "pool": pool, "whisper_frame": frame})
            _COMPUTED[name, pool, frame] = ex.compute(asm, audio["story"])
        return _COMPUTED[name, pool, frame]
    return get


# ----------------------------------------------------------------------- the reference
def _load_reference(model_dir):
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, WhisperModel

    cfg = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    fe = AutoFeatureExtractor.from_pretrained(model_dir, local_files_only=True)
    if cfg.model_type == "whisper":
        model = WhisperModel.from_pretrained(model_dir, local_files_only=True).encoder
    else:
        model = AutoModel.from_pretrained(model_dir, local_files_only=True)
    return cfg.model_type, fe, model.eval()


def _run_one(model_type, fe, model, window):
    """All hidden states of a single window: (n_layers + 1, frames, d)."""
    with torch.inference_mode():
        if model_type == "whisper":
            x = fe(window, sampling_rate=SR, return_tensors="pt").input_features
            assert x.shape[-1] == 3000
        else:
            x = fe(window, sampling_rate=SR, return_tensors="pt").input_values
        hs = model(x, output_hidden_states=True).hidden_states
    return torch.stack([h[0] for h in hs]).numpy()


def _reference(model_dir, y, pool, frame="reference"):
    """Per-window features computed one window at a time: (n_layers + 1, K, d).

    Whisper: the frame of the scaling-laws reference, (n_mel + 1) // 2 (``frame="reference"``),
    or the last one whose receptive field is inside the audio (``"receptive_field"``)."""
    model_type, fe, model = _load_reference(model_dir)
    K = int(len(y) / SR // CHUNK)
    out = []
    for k in range(1, K + 1):
        t = k * CHUNK
        i0, i1 = round(max(0.0, t - CONTEXT - CHUNK) * SR), round(t * SR)
        window = y[i0:i1]
        hs = _run_one(model_type, fe, model, window)
        if model_type == "whisper":
            n_mel = math.ceil(window.size / 160)
            # reference: extract_speech_features' frame; receptive field: frame m sees mel 2m-2..2m+2
            last = (n_mel + 1) // 2 if frame == "reference" else max(0, (n_mel - 3) // 2)
        else:
            last = hs.shape[1] - 1       # no padding: the last output frame
        out.append(hs[:, last] if pool == "last" else hs[:, :last + 1].mean(1))
    return np.stack(out, axis=1)


# ------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name,pool,frame", [
    ("whisper", "last", "reference"), ("whisper", "mean", "reference"), ("whisper", "last", "receptive_field"),
    ("hubert", "last", "reference"), ("hubert", "mean", "reference"), ("wav2vec2", "last", "reference"),
    ("wavlm", "last", "reference")])
def test_sliding_window_equals_per_window_reference(models, audio, computed, name, pool, frame):
    """Each window's feature equals the per-window forward pass at the reference frame."""
    fs = computed(name, pool, frame)
    F = fs["features"].values
    ref = _reference(models[name], audio["y"], pool, frame)
    assert F.shape == ref.shape == (N_LAYERS + 1, 12, 32)
    np.testing.assert_allclose(F, ref, atol=1e-5, rtol=1e-5)
    assert fs.attrs["model_type"] == name and fs.attrs["pool"] == pool


def test_times_layers_and_attrs(computed):
    fs = computed("hubert")
    K = 12  # 6 s / 0.5 s
    t = np.arange(1, K + 1) * CHUNK
    np.testing.assert_array_equal(fs["time"].values, t)
    np.testing.assert_array_equal(fs["time_start"].values, np.maximum(0.0, t - CONTEXT - CHUNK))
    assert fs["time_start"].values[4] == 0.0 and fs["time_start"].values[5] == 0.5  # full length from t=2.5
    assert list(fs["layer"].values) == list(range(N_LAYERS + 1))
    assert fs.attrs["chunk_size"] == CHUNK and fs.attrs["context_size"] == CONTEXT
    assert fs.attrs["extractor"] == "speech" and fs.attrs["sample_rate"] == SR


def test_sliding_windows_arithmetic():
    w = sliding_windows(int(6.3 * SR), SR, 0.1, 1.0)
    assert len(w) == 63
    np.testing.assert_array_equal(w.end, np.arange(1, 64) * 1600)
    np.testing.assert_array_equal(w.start, np.maximum(0, np.arange(1, 64) * 1600 - 17600))
    assert w.full_length == 17600 and set(w.length[10:]) == {17600}
    assert len(sliding_windows(SR // 20, SR, 0.1, 1.0)) == 0


def test_pool_mean_differs_from_last(computed):
    a, b = computed("whisper", "last")["features"].values, computed("whisper", "mean")["features"].values
    assert np.abs(a - b).max() > 1e-3
    a, b = computed("hubert", "last")["features"].values, computed("hubert", "mean")["features"].values
    assert np.abs(a - b).max() > 1e-3


def test_whisper_last_frame_arithmetic():
    # n_mel = ceil(n / 160); encoder frame m sees mel frames 2m-2 .. 2m+2; last m with 2m+2 <= n_mel-1
    assert whisper_last_frame(16000) == 48        # 100 mel frames: frame 48 sees 94..98, 49 would see 100
    assert whisper_last_frame(8000) == 23         # 50 mel frames (0..49): 23 sees 44..48
    assert whisper_last_frame(8001) == 24         # 51 mel frames: 24 sees 46..50
    assert whisper_last_frame(641) == 1           # 5 mel frames: 1 sees 0..4
    assert whisper_last_frame(480) == 0           # 3 mel frames
    assert whisper_last_frame(100) == 0           # shorter than the receptive field: the first frame
    assert whisper_last_frame(257600) == 803      # 16.1 s: 1610 mel frames, not the padded end 1499
    assert whisper_last_frame(480000) == 1498     # 30 s: 1499 would see the conv's zero padding


def test_whisper_reference_frame_arithmetic():
    # the scaling-laws reference: (n_mel + 1) // 2 with n_mel = ceil(n / 160), 2 frames after the strict one
    assert whisper_reference_frame(257600) == 805  # 16.1 s: 1610 mel frames
    assert whisper_reference_frame(16000) == 50
    assert whisper_reference_frame(8001) == 26     # 51 mel frames
    assert whisper_reference_frame(480000) == 1499  # 30 s: capped at the last frame
    for n in (257600, 16000, 8000, 8001, 40000):
        assert whisper_reference_frame(n) - whisper_last_frame(n) == 2


def test_whisper_last_frame_matches_conv_receptive_field(models):
    """Changing mel frames from n_mel on leaves encoder frames <= m_last unchanged and
    changes m_last + 1 (checked on the model's own convolutions)."""
    _, _, enc = _load_reference(models["whisper"])
    g = torch.Generator().manual_seed(0)
    for n in (8000, 8001, 16000, 641):
        n_mel = math.ceil(n / 160)
        m = whisper_last_frame(n)
        x = torch.randn(1, 80, 3000, generator=g)
        x2 = x.clone()
        x2[..., n_mel:] += 5.0
        with torch.inference_mode():
            a = enc.conv2(torch.nn.functional.gelu(enc.conv1(x)))
            b = enc.conv2(torch.nn.functional.gelu(enc.conv1(x2)))
        assert torch.equal(a[..., :m + 1], b[..., :m + 1]), n
        assert not torch.allclose(a[..., m + 1], b[..., m + 1]), n


def test_whisper_last_is_not_padded_end(models, audio, computed):
    fs = computed("whisper", "last")
    model_type, fe, model = _load_reference(models["whisper"])
    k = 8  # window ending at 4.0 s, full length 2.5 s = 40000 samples
    y = audio["y"][round(1.5 * SR):round(4.0 * SR)]
    hs = _run_one(model_type, fe, model, y)
    assert hs.shape[1] == 1500
    idx = 125  # ceil(40000 / 160) = 250 mel frames -> (250 + 1) // 2, the scaling-laws reference's frame
    assert whisper_reference_frame(y.size) == idx and whisper_last_frame(y.size) == idx - 2
    got = fs["features"].values[:, k - 1]
    np.testing.assert_allclose(got, hs[:, idx], atol=1e-5, rtol=1e-5)
    assert np.abs(got - hs[:, 1499]).max() > 1e-2  # LITcoder's padded end
    assert np.abs(got - hs[:, idx - 1]).max() > 1e-4
    strict = computed("whisper", "last", "receptive_field")["features"].values[:, k - 1]
    np.testing.assert_allclose(strict, hs[:, idx - 2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["whisper", "hubert", "wav2vec2"])
def test_causal(models, audio, synthetic_small, tmp_path, computed, name):
    cut = 3.2
    y2 = audio["y"].copy()
    rng = np.random.default_rng(0)
    y2[int(cut * SR):] = 0.3 * rng.standard_normal(y2.size - int(cut * SR)).astype(np.float32)
    p2 = tmp_path / "changed.wav"
    sf.write(p2, y2, SR, subtype="FLOAT")
    a = computed(name, "last")["features"].values
    b = SpeechExtractor(models[name], CFG).compute(_assembly(synthetic_small, p2), audio["story"])
    b = b["features"].values
    t = np.arange(1, a.shape[1] + 1) * CHUNK
    before = t <= cut
    assert before.sum() == 6
    np.testing.assert_allclose(b[:, before], a[:, before], atol=1e-6, rtol=0)
    assert np.abs(b[:, ~before] - a[:, ~before]).max(axis=(0, 2)).min() > 1e-4  # every later window changed


def test_layer_selection_counts_as_litcoder(models, asm, audio, computed):
    """config ``layer`` = LITcoder's block index (embeddings excluded): layer L is label L + 1."""
    full = computed("hubert", "last")
    one = SpeechExtractor(models["hubert"], {**CFG, "layer": 0}).extract(asm, audio["story"])
    assert list(one["layer"].values) == [1]
    np.testing.assert_array_equal(one["features"].values[0], full["features"].values[1])
    two = SpeechExtractor(models["hubert"], {**CFG, "layer": [0, 1]}).extract(asm, audio["story"])
    assert list(two["layer"].values) == [1, 2]
    np.testing.assert_array_equal(two["features"].values, full["features"].values[[1, 2]])
    last = SpeechExtractor(models["hubert"], {**CFG, "layer": "last"}).extract(asm, audio["story"])
    assert list(last["layer"].values) == [N_LAYERS]
    np.testing.assert_array_equal(last["features"].values[0], full["features"].values[N_LAYERS])
    with pytest.raises(FeatureError, match="layer 6 not available"):
        SpeechExtractor(models["hubert"], {**CFG, "layer": 5}).extract(asm, audio["story"])


def test_litcoder_layer_mapping():
    assert litcoder_layer_labels(3) == [4]                      # the tutorial's layer 3: hidden_states[4]
    assert litcoder_layer_labels([0, 3], [0, 1, 2, 3, 4]) == [1, 4]
    assert litcoder_layer_labels("last", [0, 1, 2, 3, 4]) == [4] and litcoder_layer_labels("last") == [-1]
    assert litcoder_layer_labels(-1, [0, 1, 2, 3, 4]) == [4]
    assert litcoder_layer_labels("all") is None and litcoder_layer_labels(None) is None
    ex = SpeechExtractor("unused", {"layer": 3})
    assert ex.selected_layers() == [4] and ex.layer_labels(3, [0, 1, 2, 3, 4]) == [4]


def test_cache_hit_and_audio_edit_miss(models, synthetic_small, audio, tmp_path, monkeypatch):
    wav = tmp_path / "story.wav"
    sf.write(wav, audio["y"][:3 * SR], SR, subtype="FLOAT")
    asm = _assembly(synthetic_small, wav)
    calls = []
    orig = SpeechExtractor.compute

    def counting(self, assembly, story):
        calls.append(story)
        return orig(self, assembly, story)

    monkeypatch.setattr(SpeechExtractor, "compute", counting)
    cache = tmp_path / "cache"
    ex = SpeechExtractor(models["hubert"], {**CFG, "layer": 1}, cache_dir=cache)  # LITcoder's 1: label 2
    a = ex.extract(asm, audio["story"])
    assert len(calls) == 1 and list(a["layer"].values) == [2]
    # a different layer selection and batch size read the same entry (all layers are cached)
    b = SpeechExtractor(models["hubert"], {**CFG, "batch_size": 1}, cache_dir=cache).extract(asm, audio["story"])
    assert len(calls) == 1 and b.attrs["cache_key"] == a.attrs["cache_key"]
    assert b.sizes["layer"] == N_LAYERS + 1
    np.testing.assert_array_equal(b["features"].values[2], a["features"].values[0])
    assert len(FeatureCache(cache).keys()) == 1
    # edit the audio bytes: a miss
    y = audio["y"][:3 * SR].copy()
    y[-1] += 0.01
    sf.write(wav, y, SR, subtype="FLOAT")
    c = ex.extract(asm, audio["story"])
    assert len(calls) == 2 and c.attrs["cache_key"] != a.attrs["cache_key"]
    assert len(FeatureCache(cache).keys()) == 2


def test_model_loaded_once_per_process(models):
    a = load_speech_model(models["hubert"])
    b = load_speech_model(models["hubert"])
    assert a is b and a.model_type == "hubert" and a.n_layers == N_LAYERS


def test_whisper_encoder_weights_come_from_the_checkpoint(models):
    """Saved from WhisperForConditionalGeneration ("model.encoder.*"): the encoder gets those weights."""
    from pathlib import Path

    from safetensors.torch import load_file

    saved = load_file(str(Path(models["whisper"]) / "model.safetensors"))
    enc = load_speech_model(models["whisper"]).model
    assert type(enc).__name__ == "WhisperEncoder"
    own = enc.state_dict()
    names = [k for k in own if k != "embed_positions.weight"]
    assert names and all(torch.equal(own[k], saved["model.encoder." + k]) for k in names)


def test_missing_audio_errors(models, synthetic_small, audio, tmp_path):
    asm = _assembly(synthetic_small, tmp_path / "nope.wav")
    with pytest.raises(FeatureError, match=rf"{audio['story']}.*not found"):
        SpeechExtractor(models["hubert"], CFG).compute(asm, audio["story"])
    asm.story_data[audio["story"]].audio_path = None
    with pytest.raises(FeatureError, match=r"no audio file.*story_data\[.*\]\.audio_path"):
        SpeechExtractor(models["hubert"], CFG).compute(asm, audio["story"])


def test_cuda_without_cuda_warns_then_cpu(models, asm, audio, computed):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.warns(RuntimeWarning, match="CUDA is not available.*running on the CPU"):
        fs = SpeechExtractor(models["hubert"], {**CFG, "device": "cuda"}).compute(asm, audio["story"])
    np.testing.assert_array_equal(fs["features"].values, computed("hubert")["features"].values)
    with pytest.raises(FeatureError, match="CUDA is not available.*strict_device=True"):
        SpeechExtractor(models["hubert"], {**CFG, "device": "cuda", "strict_device": True}).compute(
            asm, audio["story"])


@pytest.mark.gpu
def test_cuda_matches_cpu(models, asm, audio, computed):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    for name in ("whisper", "hubert"):
        gpu = SpeechExtractor(models[name], {**CFG, "device": "cuda", "strict_device": True}).compute(
            asm, audio["story"])
        np.testing.assert_allclose(gpu["features"].values, computed(name)["features"].values, atol=1e-3, rtol=1e-3)


def test_nonexistent_model_errors(asm, audio, tmp_path, monkeypatch):
    ex = SpeechExtractor(str(tmp_path / "openai" / "whisper-tiny"), CFG)
    with pytest.raises(FeatureError, match="does not exist"):
        ex.compute(asm, audio["story"])
    with pytest.raises(FeatureError, match="does not exist"):
        ex.identity()
    with pytest.raises(FeatureError, match="model name is required"):
        SpeechExtractor(None, CFG).compute(asm, audio["story"])
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(FeatureError, match=r"'facebook/hubert-base-ls960' is not in the Hugging Face cache .*empty.*"
                                           r"`hf download facebook/hubert-base-ls960`"):
        SpeechExtractor("facebook/hubert-base-ls960", CFG).compute(asm, audio["story"])


def test_whisper_tiny_from_the_hub_cache(models, asm, audio, use_hub_home):
    """The tutorial's "openai/whisper-tiny" resolves through the Hub cache (offline) and gives
    the features of the same snapshot loaded as a folder; the cache key holds the commit."""
    from scalenc.synthetic.hub_cache import repo_folder

    cfg = {**CFG, "layer": 3}
    ex = SpeechExtractor("openai/whisper-tiny", cfg)
    assert ex.identity()["model_files"] == {"hub_id": "openai/whisper-tiny",
                                            "commit": use_hub_home.commits["openai/whisper-tiny"]}
    fs = ex.extract(asm, audio["story"])
    assert list(fs["layer"].values) == [4]  # LITcoder's layer 3 = hidden_states[4], the last of 4 layers
    snap = repo_folder(use_hub_home.cache, "openai/whisper-tiny") / "snapshots" / use_hub_home.commits[
        "openai/whisper-tiny"]
    ref = SpeechExtractor(str(snap), cfg).extract(asm, audio["story"])
    np.testing.assert_array_equal(fs["features"].values, ref["features"].values)


@pytest.mark.parametrize("kind", ["empty", "text", "header_only"])
def test_unreadable_audio_is_one_line_naming_the_file(models, synthetic_small, audio, tmp_path, kind):
    p = tmp_path / f"{kind}.wav"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("this is not audio\n" * 20)
    else:
        sf.write(p, np.zeros(0, np.float32), SR, subtype="PCM_16")
    asm = _assembly(synthetic_small, p)
    with pytest.raises(FeatureError) as e:
        SpeechExtractor(models["hubert"], CFG).compute(asm, audio["story"])
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and audio["story"] in msg, msg


def test_sample_rate_mismatch_errors(models, asm, audio):
    with pytest.raises(FeatureError, match="target_sample_rate 8000 differs .* 16000"):
        SpeechExtractor(models["wav2vec2"], {**CFG, "target_sample_rate": 8000}).compute(asm, audio["story"])


def test_whisper_context_over_30s_errors(models, asm, audio):
    with pytest.raises(FeatureError, match="Whisper takes at most 30 s"):
        SpeechExtractor(models["whisper"], {"context_size": 31.0}).compute(asm, audio["story"])
    with pytest.raises(FeatureError, match="context_size <= 29.9"):
        SpeechExtractor(models["whisper"], {"context_size": 30.0, "chunk_size": 0.1}).compute(asm, audio["story"])


def test_config_errors(models):
    with pytest.raises(FeatureError, match="pool"):
        SpeechExtractor(models["hubert"], {"pool": "max"})
    with pytest.raises(FeatureError, match="unknown config key"):
        SpeechExtractor(models["hubert"], {"window": 3})
    with pytest.raises(FeatureError, match="chunk_size"):
        SpeechExtractor(models["hubert"], {"chunk_size": 0})
    with pytest.raises(FeatureError, match="layer"):
        SpeechExtractor(models["hubert"], {"layer": "first"})
    with pytest.raises(FeatureError, match="whisper_frame"):
        SpeechExtractor(models["whisper"], {"whisper_frame": "padded_end"})


@pytest.mark.parametrize("name,expected", [
    # 12 windows, batch_size 4: Whisper pads every window to 30 s, so any windows share a batch;
    # the wav2vec2 family batches only equal lengths: 4 growing windows alone, then 8 full ones
    ("whisper", [4, 4, 4]),
    ("hubert", [1, 1, 1, 1, 4, 4]),
])
def test_batching_groups(models, asm, audio, monkeypatch, name, expected):
    sizes = []
    orig = SpeechExtractor._inputs

    def spy(self, m, y, win, sel, pinned):
        sizes.append(len(sel))
        assert len({int(win.length[k]) for k in sel}) == 1 or m.model_type == "whisper"
        return orig(self, m, y, win, sel, pinned)

    monkeypatch.setattr(SpeechExtractor, "_inputs", spy)
    SpeechExtractor(models[name], CFG).compute(asm, audio["story"])
    assert sorted(sizes) == sorted(expected)


@pytest.mark.parametrize("name", ["whisper", "hubert"])
def test_prefetch_thread_gives_the_sequential_features(models, asm, audio, computed, name):
    """The CPU side of the batches (log-mel / normalisation) prepared by a producer thread
    gives bit-identical features to preparing each batch just before its forward pass."""
    seq = SpeechExtractor(models[name], {**CFG, "prefetch": 0}).compute(asm, audio["story"])
    for ahead in (1, 3):
        got = SpeechExtractor(models[name], {**CFG, "prefetch": ahead}).compute(asm, audio["story"])
        np.testing.assert_array_equal(got["features"].values, seq["features"].values)
    np.testing.assert_array_equal(seq["features"].values, computed(name)["features"].values)


def test_prefetch_error_reaches_the_caller_and_the_producer_stops():
    import threading

    from scalenc.features.speech import _prefetched

    assert [(i, p) for i, p in _prefetched([1, 2, 3], lambda i: 10 * i, 2)] == [(1, 10), (2, 20), (3, 30)]

    def bad(i):
        if i == 3:
            raise ValueError("bad batch 3")
        return i

    seen = []
    with pytest.raises(ValueError, match="bad batch 3"):
        for i, _ in _prefetched(list(range(10)), bad, 2):
            seen.append(i)
    assert seen == [0, 1, 2]
    gen = _prefetched(list(range(100)), lambda i: i, 2)
    next(gen)
    gen.close()  # the consumer stops early: the producer thread ends
    assert not any(t.name == "scalenc-speech-prefetch" for t in threading.enumerate())


def test_bfloat16_features_close_to_float32(models, asm, audio, computed):
    """``dtype="bfloat16"`` runs on the CPU; its features differ from float32 by bfloat16
    rounding (8 significant bits) through the layers."""
    got = SpeechExtractor(models["hubert"], {**CFG, "dtype": "bfloat16"}).compute(asm, audio["story"])
    ref = computed("hubert")["features"].values
    diff = np.abs(got["features"].values - ref).max() / np.abs(ref).max()
    assert 0 < diff < 0.1


def test_device_map_reaches_from_pretrained(models, asm, audio, computed, monkeypatch):
    """``device_map`` is passed to ``from_pretrained`` (accelerate places the model; on
    this CPU-only machine everything lands on the CPU) and the features do not change."""
    from scalenc.features import _hf

    seen = []
    orig = _hf.from_pretrained

    def spy(cls, model, **kw):
        seen.append((cls.__name__, kw.get("device_map")))
        return orig(cls, model, **kw)

    monkeypatch.setattr(_hf, "from_pretrained", spy)
    _hf.clear_model_cache()
    got = SpeechExtractor(models["hubert"], {**CFG, "device_map": "auto"}).compute(asm, audio["story"])
    assert ("AutoModel", "auto") in seen
    np.testing.assert_allclose(got["features"].values, computed("hubert")["features"].values, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_benchmark_script_small(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "benchmarks" / "features_speech.py"), "--seconds", "2",
                        "--context", "0.5", "--chunk", "0.5", "--d-model", "32", "--layers", "1", "--heads", "2",
                        "--batch-size", "2", "--loop-windows", "2", "--models", "whisper", "--workdir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "| whisper | per-window loop (batch 1; 2 random windows timed, extrapolated x2) | 4 |" in r.stdout
    assert "| whisper | `SpeechExtractor.compute` (batch 2) | 4 |" in r.stdout
    diff = float(r.stdout.split("max |loop - batched| = ")[1].split()[0])
    assert diff < 1e-5


def test_trainer_layer_idx_counts_as_litcoder_for_speech(synthetic_small):
    """The trainer's layer_idx for a multi-layer speech extractor is LITcoder's block index too."""
    import xarray as xr

    from scalenc.engine import select_layers

    first = [xr.Dataset(coords={"layer": [0, 1, 2, 3, 4]})]
    ex = SpeechExtractor("unused", {"layer": "all"})
    assert select_layers([ex], first, 3) == ([4], 0)
    assert select_layers([ex], first, "last") == ([4], 0)
    assert select_layers([ex], first, [0, 2]) == ([1, 3], 0)
    assert select_layers([ex], first) == ([0, 1, 2, 3, 4], 0)
