"""The pipeline: AbstractTrainer against a hand-wired composition, results, loggers, configs."""
from __future__ import annotations

import scalenc

import json
import os
from pathlib import Path

import numpy as np
import pytest

from scalenc import results
from scalenc.align import Downsampler, TrimmingConfig, fir, trim_story, zscore
from scalenc.cli import main
from scalenc.config import ConfigError, load_config
from scalenc.features import FeatureExtractorFactory
from scalenc.models import NestedCVModel
from scalenc.trainer import AbstractTrainer

ALPHAS = np.logspace(-1, 5, 7)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from scalenc.synthetic import synthetic

    return synthetic(tmp_path_factory.mktemp("trainer"), n_stories=5, words_per_story=260, n_voxels=60,
                     embedding_dim=8, n_test_repeats=3, audio=False, seed=3)


def _extractors(data, cache):
    return [FeatureExtractorFactory.create_extractor("wordrate", None, {"include_phonemes": False}, cache),
            FeatureExtractorFactory.create_extractor("embeddings", str(data.embeddings_path), {}, cache)]


def _by_hand(asm, data, trim, delays):
    """The alignment written out from the stages: story, split -> (trimmed FIR design, responses)."""
    ds = Downsampler()
    kv = {}
    for line in open(data.embeddings_path).read().splitlines()[1:]:
        w, *v = line.split()
        kv[w] = np.array(v, float)

    def design(story, split):
        words = [str(w) for w in asm.words(story).word.values]
        t = asm.word_times(story)
        grid = asm.tr_times(story).values
        F = np.column_stack([ds.downsample(np.ones(len(t)), t, grid),
                             ds.downsample(np.stack([kv[w] for w in words]), t, grid)])
        return trim_story(fir(F, delays), asm.bold(story).values, trim, split, story=story)

    return design


def test_trainer_equals_hand_wired_pipeline(data, tmp_path):
    asm = data.assembly()
    trim = TrimmingConfig.lebel()
    model = NestedCVModel(alphas=ALPHAS, seed=1, dtype="float64")
    tr = AbstractTrainer(asm, _extractors(data, tmp_path / "cache"), Downsampler(), model, [1, 2, 3, 4],
                         trim.to_dict(), results_dir=tmp_path / "res", run_name="r", logger_backend="local")
    m = tr.train()
    # the same pipeline written out by hand from the stages
    hand = _by_hand(asm, data, trim, [1, 2, 3, 4])

    def design(story, split):
        X, Y = hand(story, split)
        return zscore(X.astype(np.float32)), zscore(Y)

    train = [design(s, "train") for s in asm.train_stories]
    Xt, Yt = design(asm.test_stories[0], "test")
    groups = np.concatenate([[s] * x.shape[0] for s, (x, _) in zip(asm.train_stories, train)])
    ref, _, alphas = NestedCVModel(alphas=ALPHAS, seed=1, dtype="float64").fit_predict(
        np.vstack([x for x, _ in train]), np.vstack([y for _, y in train]), X_test=Xt, y_test=Yt, stories=groups)
    np.testing.assert_allclose(m["correlations"], ref["correlations"], atol=1e-5)
    np.testing.assert_allclose(m["best_alphas"], alphas)
    for k in ("median_score", "mean_score", "std_score", "min_score", "max_score", "n_significant",
              "percent_significant", "correlations", "best_alphas", "p_values", "corrected_p_values",
              "significant_mask", "noise_ceiling"):
        assert k in m
    assert m["noise_ceiling_source"] == "ground truth"
    assert m["feature_spaces"] == {"wordrate": (0, 1), "embeddings": (1, 9)}
    # the fit recovers the known signal: driven voxels near their ceiling, noise voxels near 0
    driver = data.ground_truth()["driver"].values
    assert np.median(m["correlations"][driver != "noise"]) > 0.7 * np.median(m["noise_ceiling"][driver != "noise"])
    # (12 noise voxels scored on 30 test TRs: r of pure noise spreads widely around 0)
    assert abs(np.median(m["correlations"][driver == "noise"])) < 0.3
    assert np.median(m["correlations"][driver != "noise"]) > np.median(m["correlations"][driver == "noise"]) + 0.3
    # results on disk
    res = results.load(tmp_path / "res" / "r")
    np.testing.assert_allclose(res.layer()["r"].values, m["correlations"])
    np.testing.assert_allclose(res.noise_ceiling, m["noise_ceiling"])
    assert res.feature_spaces == {"wordrate": (0, 1), "embeddings": (1, 9)}
    assert res.config["fir_delays"] == [1, 2, 3, 4] and res.config["trimming"]["test_targets_start"] == 40
    assert json.loads((tmp_path / "res/r/metrics.json").read_text())["layers"]["0"]["n_significant"] == m["n_significant"]
    assert (tmp_path / "res/r/report.png").stat().st_size > 1000
    lines = (tmp_path / "res/r/log.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["median_score"] == pytest.approx(m["median_score"])


def test_resume_reads_cache_and_layers(data, tmp_path, monkeypatch):
    from scalenc.features.embeddings import StaticEmbeddingExtractor

    exs = _extractors(data, tmp_path / "cache")
    AbstractTrainer(data.assembly(), exs, model=NestedCVModel(alphas=ALPHAS), results_dir=tmp_path,
                    run_name="a", logger_backend="none").train()
    calls = []
    orig = StaticEmbeddingExtractor.compute
    monkeypatch.setattr(StaticEmbeddingExtractor, "compute", lambda self, a, s: calls.append(s) or orig(self, a, s))
    AbstractTrainer(data.assembly(), _extractors(data, tmp_path / "cache"), model=NestedCVModel(alphas=ALPHAS),
                    results_dir=tmp_path, run_name="b", logger_backend="none").train()
    assert calls == []  # every story came from the cache


def test_several_layers_from_one_extraction(data, tmp_path):
    from scalenc.synthetic.tiny_lm import build_tiny_lm

    asm = data.assembly()
    lm = build_tiny_lm(tmp_path / "lm", [str(w) for s in asm.stories for w in asm.words(s).word.values],
                       n_layer=2, n_embd=16, n_head=2)
    ex = FeatureExtractorFactory.create_extractor("language_model", str(lm), {"lookback": 32}, tmp_path / "cache")
    tr = AbstractTrainer(asm, [ex], model=NestedCVModel(alphas=ALPHAS), layer_idx=[1, 2], results_dir=tmp_path,
                         run_name="layers", logger_backend="none", lookback=16)
    m = tr.train()
    # the user's extractor is left alone: the trainer's lookback went to its own copy
    assert ex.config["lookback"] == 32 and tr.feature_extractors[0].config["lookback"] == 16
    assert tr.config()["extractors"][0]["config"]["lookback"] == 16
    assert set(m["per_layer"]) == {"1", "2"} and m["layer"] in ("1", "2")
    res = results.load(tmp_path / "layers")
    assert res.layers == ["1", "2"]
    assert res.layer(2)["r"].shape == (60,)


def test_extract_reads_each_story_words_once(data, tmp_path, monkeypatch):
    """A trainer's extract reads the word table of each story once (the first story, then
    all the others in one read), not once per extractor and use; a second extract (cache
    hits) reads none."""
    from scalenc.assembly import core

    reads, original = [], core._read_word_tables

    def counting(path, stories):
        reads.append(list(stories))
        return original(path, stories)

    monkeypatch.setattr(core, "_read_word_tables", counting)
    monkeypatch.setattr(core.Assembly, "_story_group", lambda *a: pytest.fail("extract went through the tree"))
    asm = data.assembly()
    tr = AbstractTrainer(asm, _extractors(data, tmp_path / "cache"), results_dir=tmp_path, logger_backend="none")
    feats = tr.extract()
    assert reads == [asm.stories[:1], asm.stories[1:]] and len(feats) == 2 * len(asm.stories)
    again = AbstractTrainer(asm, _extractors(data, tmp_path / "cache"), results_dir=tmp_path,
                            logger_backend="none").extract()
    assert reads == [asm.stories[:1], asm.stories[1:]]
    for k, fs in feats.items():
        np.testing.assert_array_equal(again[k]["features"].values, fs["features"].values)


def test_trainer_does_not_modify_the_extractors(data, tmp_path):
    ex = FeatureExtractorFactory.create_extractor("wordrate", None, {"include_phonemes": False})
    tr = AbstractTrainer(data.assembly(), [ex], results_dir=tmp_path)
    assert ex.cache_dir is None and tr.feature_extractors[0].cache_dir == tmp_path / "feature_cache"
    assert tr.feature_extractors[0] is not ex and tr.feature_extractors[0].config == ex.config


def test_loggers_tensorboard_and_wandb_offline(data, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for backend in ("tensorboard", "wandb"):
        AbstractTrainer(data.assembly(), _extractors(data, tmp_path / "cache")[:1],
                        model=NestedCVModel(alphas=ALPHAS), results_dir=tmp_path, run_name=backend,
                        logger_backend=backend).train()
    assert list((tmp_path / "tensorboard" / "tensorboard").glob("events.out.tfevents.*"))
    assert list((tmp_path / "wandb" / "wandb").glob("offline-run-*"))
    with pytest.raises(ValueError, match="unknown logger_backend 'mlflow'"):
        AbstractTrainer(data.assembly(), _extractors(data, tmp_path / "cache")[:1],
                        model=NestedCVModel(alphas=ALPHAS), results_dir=tmp_path, run_name="x",
                        logger_backend="mlflow").train()


def test_scalenc_run_toml(data, tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"""
run_name = "toml"
results_dir = "out"
assembly = "{data.assembly_path}"
fir_delays = [1, 2, 3, 4]
logger_backend = "local"

[downsampler]
method = "lanczos"
window = 3

[model]
alphas_logspace = [-1, 5, 7]
n_inner_folds = 4

[[extractors]]
modality = "wordrate"
cache_dir = "cache"
[extractors.config]
include_phonemes = false

[[extractors]]
modality = "embeddings"
model_name = "{data.embeddings_path}"
cache_dir = "cache"
""")
    assert main(["run", str(cfg)]) == 0
    line = capsys.readouterr().out
    assert "run toml: median r" in line and "p-values by" not in line  # the permutation test, as asked
    res = results.load(tmp_path / "out" / "toml")
    # scores against the noise ceiling (here the ground truth's): r / ceiling where the ceiling >= 0.1
    lay = res.layer().load()
    c, r = lay["noise_ceiling"].values, lay["r"].values
    direct = np.where(c >= 0.1, r / np.where(c >= 0.1, c, 1), np.nan)
    np.testing.assert_allclose(lay["r_norm"].values, direct)
    summ = json.loads((tmp_path / "out" / "toml" / "metrics.json").read_text())["layers"]["0"]
    assert summ["median_r_norm"] == pytest.approx(float(np.nanmedian(direct)))
    assert summ["n_ceiling_voxels"] == int(np.isfinite(direct).sum()) > 0
    assert f"median r / ceiling {np.nanmedian(direct):.3f} over {int(np.isfinite(direct).sum())} voxels" in line
    assert res.layer()["r"].shape == (60,)
    # the resolved config written with the results is itself a valid run configuration
    again = load_config(tmp_path / "out" / "toml" / "config.toml")
    assert again["fir_delays"] == [1, 2, 3, 4] and len(again["extractors"]) == 2


def test_short_test_set_summary_line_names_the_pvalue_method(data, tmp_path, capsys):
    """The tutorials' LeBel trimming leaves this test story a few dozen rows: the permutation
    test cannot reach small p there, so the effective-dof test is used, and the run's summary
    line and results say so; strongly predicted voxels get small p."""
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"""
run_name = "short"
results_dir = "out"
assembly = "{data.assembly_path}"
logger_backend = "none"
[trimming]
train_features_start = 10
train_features_end = -5
test_features_start = 50
test_features_end = -5
test_targets_start = 40
[model]
alphas_logspace = [-1, 5, 7]
[[extractors]]
modality = "embeddings"
model_name = "{data.embeddings_path}"
""")
    assert main(["run", str(cfg)]) == 0
    line = capsys.readouterr().out
    res = results.load(tmp_path / "out" / "short")
    assert res.dataset.attrs["pvalue_method"] == "effective_dof"
    assert "p-values by effective_dof (the test set is too short for the permutation test" in line
    lay = res.layer().load()
    n_test = int(res.dataset.attrs["n_test"])
    # a handful of rows: no block permutation could give p below 1/2 here; this test can
    strong = lay["r"].values > 0.8
    assert n_test < 40 and strong.any() and float(lay["p"].values[strong].max()) < 0.05


@pytest.mark.parametrize("text, match", [
    ('assembly = "x.zarr"\nbogus = 1\n[[extractors]]\nmodality = "wordrate"\n', r"unknown key\(s\) \['bogus'\]"),
    ('[[extractors]]\nmodality = "wordrate"\n', "missing required key 'assembly'"),
    ('assembly = "x.zarr"\nextractors = []\n', "non-empty array"),
    ('assembly = "x.zarr"\nfir_delays = [1.5]\n[[extractors]]\nmodality = "wordrate"\n', "fir_delays must be"),
    ('assembly = "x.zarr\n', "not valid TOML"),
])
def test_invalid_configs_name_the_key(tmp_path, text, match):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(p)


def test_bad_model_key_is_a_config_error(data, tmp_path, capsys):
    p = tmp_path / "c.toml"
    p.write_text(f'assembly = "{data.assembly_path}"\n[model]\nfolds = 3\n[[extractors]]\nmodality = "wordrate"\n')
    assert main(["run", str(p)]) == 2
    err = capsys.readouterr().err
    assert "[model]" in err and "folds" in err


@pytest.mark.slow
def test_two_worker_cluster_equals_in_process(data, tmp_path):
    from distributed import Client, LocalCluster

    ref = AbstractTrainer(data.assembly(), _extractors(data, tmp_path / "c1"),
                          model=NestedCVModel(alphas=ALPHAS, dtype="float64"), results_dir=tmp_path,
                          run_name="inproc", logger_backend="none").train()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        m = AbstractTrainer(data.assembly(), _extractors(data, tmp_path / "c2"),
                            model=NestedCVModel(alphas=ALPHAS, dtype="float64"), results_dir=tmp_path,
                            run_name="cluster", logger_backend="none", client=client).train()
    np.testing.assert_allclose(m["correlations"], ref["correlations"], atol=1e-10)
    np.testing.assert_array_equal(m["best_alphas"], ref["best_alphas"])
    assert len(os.listdir(tmp_path / "c2")) == 2 * len(data.assembly().stories)  # written by the workers


def test_missing_logger_package_names_the_extra(monkeypatch, tmp_path):
    import sys

    from scalenc.loggers import make_logger

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match=r"scalenc\[log\]"):
        make_logger("wandb", run_dir=tmp_path, run_name="x")


def test_disabled_wandb_is_not_started(monkeypatch, tmp_path):
    import sys

    from scalenc.loggers import NullLogger, make_logger

    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setitem(sys.modules, "wandb", None)              # not imported: any import would fail
    with pytest.raises(ImportError, match=r"scalenc\[log\]"):   # ... and a missing wandb is still named
        make_logger("wandb", run_dir=tmp_path, run_name="x")
    monkeypatch.delitem(sys.modules, "wandb")
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object() if name == "wandb" else None)
    exp = make_logger("wandb", run_dir=tmp_path, run_name="x")
    assert isinstance(exp, NullLogger)
    exp.log_scalars({"r": 1.0})
    exp.close()
    assert not list(tmp_path.iterdir())


def test_predict_applies_saved_weights_and_alignment(data, tmp_path, capsys):
    from scalenc.ridge import pearson_r, ridge_closed_form

    asm = data.assembly()
    trim = TrimmingConfig.lebel()
    tr = AbstractTrainer(asm, _extractors(data, tmp_path / "cache"), Downsampler(),
                         NestedCVModel(alphas=ALPHAS, seed=1, dtype="float64"), [1, 2], trim.to_dict(),
                         results_dir=tmp_path / "res", run_name="w", logger_backend="none", save_weights=True)
    m = tr.train()
    # direct computation: the stages by hand, the closed-form ridge with the chosen alphas
    hand = _by_hand(asm, data, trim, [1, 2])

    def design(story, split):
        X, Y = hand(story, split)
        return zscore(X.astype(np.float32)).astype(np.float64), zscore(Y).astype(np.float64)

    train = [design(s, "train") for s in asm.train_stories]
    W, b = ridge_closed_form(np.vstack([x for x, _ in train]), np.vstack([y for _, y in train]), m["best_alphas"])
    stories = [asm.train_stories[1], asm.test_stories[0]]
    pred = scalenc.predict(tmp_path / "res" / "w", stories=stories)
    for s in stories:
        X, Y = design(s, "train")
        rows = pred["tr_story"].values == s
        np.testing.assert_allclose(pred["prediction"].values[rows], X @ W + b, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(pred["r"].sel(story=s).values, pearson_r(Y, X @ W + b), atol=1e-4)
    # the command line: same numbers, written to zarr
    out = tmp_path / "pred.zarr"
    assert main(["predict", str(tmp_path / "res" / "w"), "--stories", *stories, "--out", str(out)]) == 0
    assert "median r" in capsys.readouterr().out
    import xarray as xr

    np.testing.assert_allclose(xr.open_zarr(out, consolidated=False)["r"].values, pred["r"].values)
    # a run without weights cannot predict: one line naming the setting
    AbstractTrainer(asm, _extractors(data, tmp_path / "cache"), model=NestedCVModel(alphas=ALPHAS),
                    results_dir=tmp_path / "res", run_name="now", logger_backend="none").train()
    assert main(["predict", str(tmp_path / "res" / "now")]) == 2
    assert "save_weights = true" in capsys.readouterr().err


def test_noise_ceiling_from_test_repeats_without_ground_truth(data, tmp_path, monkeypatch):
    from scalenc.assembly import Assembly
    from scalenc.ridge import noise_ceiling

    monkeypatch.setattr(Assembly, "known_signal", lambda *a, **k: None)
    asm = data.assembly()
    m = AbstractTrainer(asm, _extractors(data, tmp_path / "cache"), model=NestedCVModel(alphas=ALPHAS),
                        trimming_config=TrimmingConfig.lebel(), results_dir=tmp_path, run_name="reps",
                        logger_backend="none").train()
    reps = asm.bold_repeats(asm.test_stories[0]).values[:, 40:]
    assert m["noise_ceiling_source"] == "test repeats (cc_max)"
    np.testing.assert_allclose(m["noise_ceiling"], noise_ceiling(reps)["cc_max"], rtol=1e-12)


def test_run_options_are_keywords_checked_against_runconfig(data, tmp_path):
    with pytest.raises(TypeError, match="unexpected keyword.*'runname'.*run_name"):
        AbstractTrainer(data.assembly(), _extractors(data, tmp_path / "cache"), runname="x")
    tr = AbstractTrainer(data.assembly(), _extractors(data, tmp_path / "cache"), run_name="x", save_weights=True,
                         story_selection=[1, 2, 3], results_dir=tmp_path)
    cfg = tr.config()
    assert cfg["run_name"] == "x" and cfg["save_weights"] is True and len(cfg["stories"]) == 3


def test_predict_refuses_other_features_or_voxels(data, tmp_path, capsys):
    """A run records each extractor's identity: prediction with other vectors behind the
    same file name, or on an assembly with another voxel set, is one error (unless asked)."""
    import shutil

    emb = tmp_path / "vectors" / Path(data.embeddings_path).name
    emb.parent.mkdir()
    shutil.copy2(data.embeddings_path, emb)  # keeps the mtime: the identity is path, size, mtime
    make = FeatureExtractorFactory.create_extractor
    exs = [make("embeddings", str(emb), {}, tmp_path / "cache")]
    asm = data.assembly()
    AbstractTrainer(asm, exs, model=NestedCVModel(alphas=ALPHAS, seed=1), results_dir=tmp_path / "res", run_name="w",
                    logger_backend="none", save_weights=True).train()
    run = tmp_path / "res" / "w"
    stories = asm.train_stories[:2]
    good = scalenc.predict(run, stories=stories)
    # the same words with other vectors (rows permuted): same file name and size
    lines = emb.read_text().splitlines()
    head, body = (lines[:1], lines[1:]) if len(lines[0].split()) == 2 else ([], lines)
    words = [ln.split(" ", 1)[0] for ln in body]
    vecs = [ln.split(" ", 1)[1] for ln in body]
    perm = np.random.default_rng(0).permutation(len(vecs))
    emb.write_text("\n".join(head + [f"{w} {vecs[j]}" for w, j in zip(words, perm)]) + "\n")
    with pytest.raises(ValueError, match=r"extractor\(s\) #1 embeddings .* differ"):
        scalenc.predict(run, stories=stories)
    assert main(["predict", str(run), "--stories", *stories]) == 2
    assert "allow-mismatch" in capsys.readouterr().err
    swapped = scalenc.predict(run, stories=stories, allow_mismatch=True)
    assert np.nanmedian(swapped["r_all"]) < np.nanmedian(good["r_all"]) - 0.1
    # another voxel set (the run's own vectors back): refused before anything is predicted
    shutil.copy2(data.embeddings_path, emb)
    fewer = asm.subset(voxels=np.arange(asm.n_voxels - 3)).save(tmp_path / "fewer.zarr")
    with pytest.raises(ValueError, match=r"fewer.zarr: \d+ voxels, but the run .* was fitted on \d+"):
        scalenc.predict(run, assembly=fewer, stories=stories, allow_mismatch=False)
