"""scalenc.sweep: subjects x models x layers with shared stimulus-side work equals independent
per-(subject, model) trainer runs, voxel for voxel; the summary table and scaling figure."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scalenc import results
from scalenc.features import FeatureExtractorFactory
from scalenc.models import NestedCVModel
from scalenc.sweep import SUMMARY_COLUMNS, SweepError, fraction_of_ceiling, sweep
from scalenc.trainer import AbstractTrainer

ALPHAS = np.logspace(-1, 5, 7)


def deep_features(words, times):
    """A 3-layer 'network' of the words: hashed one-hot codes through fixed random maps."""
    rng = np.random.default_rng(7)
    W1, W2, W3 = (rng.standard_normal((12, 12)) / np.sqrt(12) for _ in range(3))
    codes = np.stack([np.random.default_rng(sum(map(ord, w))).standard_normal(12) for w in words])
    h1 = np.tanh(codes @ W1)
    h2 = np.tanh(h1 @ W2)
    h3 = np.tanh(h2 @ W3)
    return np.asarray(times), np.stack([h1, h2, h3])


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    """Two subjects who heard the same stories (same words and times), different voxels."""
    from scalenc.synthetic import synthetic

    root = tmp_path_factory.mktemp("sweep")
    a = synthetic(root / "s1", n_stories=4, words_per_story=200, n_voxels=36, embedding_dim=6, n_test_repeats=2,
                  audio=False, voxel_chunk=16, subject="SYN01", seed=11)
    b = synthetic(root / "s2", n_stories=4, words_per_story=200, n_voxels=28, embedding_dim=6, n_test_repeats=2,
                  audio=False, voxel_chunk=16, subject="SYN02", seed=11, snr_range=(0.05, 1.0))
    return a, b


def _models(a, cache):
    make = FeatureExtractorFactory.create_extractor
    return {"wr+emb": [make("wordrate", None, {}, cache), make("embeddings", str(a.embeddings_path), {}, cache)],
            "deep": [make("custom", None, {"function": deep_features, "name": "deep"}, cache)]}


@pytest.mark.slow
def test_sweep_equals_independent_runs(subjects, tmp_path):
    a, b = subjects
    asms = [a.assembly(), b.assembly()]
    ex = _models(a, tmp_path / "cache")["wr+emb"]
    for s in asms[0].stories:  # the premise: one stimulus, so its features are shared
        assert [e.stimulus(asms[0], s) for e in ex] == [e.stimulus(asms[1], s) for e in ex]
    model = NestedCVModel(alphas=ALPHAS, n_inner_folds=3, seed=2)
    res = sweep(asms, _models(a, tmp_path / "cache"), layers={"deep": [0, 1, 2]}, model=model,
                results_dir=tmp_path / "out", name="sw", cache_dir=tmp_path / "cache")

    # shared work: 4 stories x 2 models extracted once for both subjects; one X side per
    # (model, layer) for both subjects; 2 subjects x (1 + 3) layer fits
    t = res.timings
    assert t["n_extract"] == 4 * 2 and t["n_x_side"] == 1 + 3 and t["n_fits"] == 2 * 4
    assert t["n_design"] == 4 * (1 + 3)

    for asm in asms:
        for mname, layers in (("wr+emb", None), ("deep", [0, 1, 2])):
            ref = AbstractTrainer(asm, _models(a, tmp_path / "cache-ref")[mname], None, model,
                                  results_dir=tmp_path / "ref" / asm.subject, run_name=mname, layer_idx=layers,
                                  logger_backend="none").train()
            got = results.load(res.runs[(asm.subject, mname)])
            want = results.load(ref["results_dir"])
            assert got.layers == want.layers == (["0"] if layers is None else ["0", "1", "2"])
            # one engine: the same variables, values and attributes (the run's name and time aside)
            g_ds, w_ds = got.dataset.load(), want.dataset.load()
            assert sorted(g_ds.variables) == sorted(w_ds.variables)
            for var in w_ds.variables:
                np.testing.assert_array_equal(g_ds[var].values, w_ds[var].values,
                                              err_msg=f"{asm.subject} {mname} {var}")
            assert g_ds.attrs == w_ds.attrs
            assert "noise_ceiling" in g_ds and "intercept" not in g_ds and "weights" not in g_ds
            assert got.feature_spaces == want.feature_spaces
            # the run folder's config re-runs it alone
            assert Path(got.config["assembly"]) == Path(asm.path).resolve()

    # the summary table: one row per (subject, model, layer), numbers from the saved runs
    csv = pd.read_csv(res.path / "summary.csv")
    assert list(csv.columns) == list(SUMMARY_COLUMNS) and len(csv) == 2 * 4
    row = csv[(csv.subject == "SYN02") & (csv.model == "deep") & (csv.layer.astype(str) == "2")].iloc[0]
    lay2 = results.load(res.runs[("SYN02", "deep")]).layer("2")
    r2_ = lay2["r"].values
    assert row.median_r == pytest.approx(float(np.median(r2_)))
    frac, n = fraction_of_ceiling(r2_, results.load(res.runs[("SYN02", "deep")]).noise_ceiling)
    assert row.fraction_of_ceiling == pytest.approx(frac) and row.n_ceiling_voxels == n > 0
    # the embeddings model explains these embedding-driven voxels better than the word-hash "network"
    med = csv.groupby("model").median_r.median()
    assert med["wr+emb"] > med["deep"]
    assert (res.path / "scaling.png").stat().st_size > 1000
    meta = json.loads((res.path / "sweep.json").read_text())
    assert meta["subjects"] == ["SYN01", "SYN02"] and meta["layers"]["deep"] == ["0", "1", "2"]


def test_unknown_layer_is_named_plainly(subjects, tmp_path):
    a, _ = subjects
    with pytest.raises(ValueError, match=r"layer_idx 7 not available from custom; layers: \[0, 1, 2\]$"):
        sweep([a.assembly()], {"deep": _models(a, tmp_path / "c")["deep"]}, layers=[7], results_dir=tmp_path)


def test_fraction_of_ceiling_is_a_ratio_of_means():
    r = np.array([0.2, 0.3, 0.05, np.nan])
    c = np.array([0.4, 0.6, 0.05, 0.9])
    assert fraction_of_ceiling(r, c, 0.1) == (pytest.approx((0.2 + 0.3) / 2 / 0.5), 2)
    assert fraction_of_ceiling(r, None)[1] == 0 and np.isnan(fraction_of_ceiling(r, None)[0])


def test_sweep_errors(subjects, tmp_path):
    a, _ = subjects
    asm = a.assembly()
    with pytest.raises(SweepError, match="given more than once"):
        sweep([asm, a.assembly()], _models(a, tmp_path / "c"), results_dir=tmp_path)
    with pytest.raises(SweepError, match=r"subject 'SYN01' .* lacks stories \['nosuchstory'\]"):
        sweep([asm], _models(a, tmp_path / "c"), stories=["nosuchstory"], results_dir=tmp_path)
    with pytest.raises(SweepError, match="model 'x' has no extractor"):
        sweep([asm], {"x": []}, results_dir=tmp_path)
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        sweep([asm], _models(a, tmp_path / "c"), results_dir=tmp_path)
    assert (tmp_path / "sweep" / "keep.txt").read_text() == "mine"


def test_shared_x_side_gives_the_same_fit():
    """NestedCVModel.x_side computed once and passed to fit_dataset: the fit of every
    response set is the one computed without it; outer-CV fits refuse it."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((240, 12))
    Xt = rng.standard_normal((60, 12))
    groups = np.repeat(["a", "b", "c", "d"], 60)
    model = NestedCVModel(alphas=ALPHAS, n_inner_folds=4, folding="story", dtype="float64")
    side = model.x_side(X, groups)
    W = rng.standard_normal((12, 5))
    for seed in (1, 2):  # two "subjects" sharing the design
        noise = np.random.default_rng(seed)
        Y = X @ W + 2 * noise.standard_normal((240, 5))
        Yt = Xt @ W + 2 * noise.standard_normal((60, 5))
        a = model.fit_dataset(X, Y, X_test=Xt, y_test=Yt, stories=groups)
        b = model.fit_dataset(X, Y, X_test=Xt, y_test=Yt, stories=groups, x_side=side)
        for var in ("r", "alpha", "p", "weights"):
            np.testing.assert_array_equal(a[var].values, b[var].values)
    with pytest.raises(ValueError, match="x_side is for fits with a test set"):
        model.fit_dataset(X, Y, stories=groups, x_side=side)


@pytest.mark.slow
def test_sweep_on_a_dask_cluster_equals_in_process(subjects, tmp_path):
    """The distributed path (one graph through the client, retries, voxel blocks on the
    workers) gives the in-process sweep's results."""
    from distributed import Client, LocalCluster, get_task_stream

    a, b = subjects
    model = NestedCVModel(alphas=ALPHAS, n_inner_folds=3, seed=2, voxel_block=8)
    models = {"wr+emb": _models(a, tmp_path / "c1")["wr+emb"]}
    ref = sweep([a.assembly(), b.assembly()], models, model=model, results_dir=tmp_path / "local", name="s",
                cache_dir=tmp_path / "c1")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client, get_task_stream(client) as ts:
        got = sweep([a.assembly(), b.assembly()], {"wr+emb": _models(a, tmp_path / "c2")["wr+emb"]}, model=model,
                    results_dir=tmp_path / "dist", name="s", cache_dir=tmp_path / "c2", client=client)
    keys = [str(r["key"]) for r in ts.data]
    assert sum(k.startswith("xside-") for k in keys) == 1 and sum("ridge-block" in k for k in keys) >= 2 * 2
    assert got.timings["n_extract"] == ref.timings["n_extract"] == len(a.assembly().stories)
    for subj in ("SYN01", "SYN02"):
        g = results.load(got.runs[(subj, "wr+emb")]).layer().load()
        w = results.load(ref.runs[(subj, "wr+emb")]).layer().load()
        for var in ("r", "alpha", "p"):
            np.testing.assert_array_equal(g[var].values, w[var].values)
    pd.testing.assert_frame_equal(got.summary.drop(columns="results_dir"), ref.summary.drop(columns="results_dir"))


def test_scalenc_run_with_a_list_of_assemblies_is_a_sweep(subjects, tmp_path, capsys):
    """`scalenc run CONFIG.toml` with several assemblies and [[models]] runs the sweep; its
    per-subject results equal the Python API's."""
    from scalenc.cli import main

    a, b = subjects
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(f"""
run_name = "toml-sweep"
results_dir = "out"
cache_dir = "cache"
assembly = ["{a.assembly_path}", "{b.assembly_path}"]
logger_backend = "none"

[model]
alphas = {json.dumps([float(x) for x in ALPHAS])}
n_inner_folds = 3
seed = 2

[[models]]
name = "wr+emb"
[[models.extractors]]
modality = "wordrate"
[[models.extractors]]
modality = "embeddings"
model_name = "{a.embeddings_path}"
""")
    assert main(["run", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "summary.csv" in out and "SYN01" in out and "SYN02" in out
    model = NestedCVModel(alphas=ALPHAS, n_inner_folds=3, seed=2)
    ref = sweep([a.assembly(), b.assembly()], {"wr+emb": _models(a, tmp_path / "c2")["wr+emb"]}, model=model,
                results_dir=tmp_path / "ref", name="ref", cache_dir=tmp_path / "c2")
    for subj in ("SYN01", "SYN02"):
        got = results.load(tmp_path / "out" / "toml-sweep" / subj / "wr+emb").layer("0").load()
        want = results.load(ref.runs[(subj, "wr+emb")]).layer("0").load()
        np.testing.assert_array_equal(got["r"].values, want["r"].values)
        np.testing.assert_array_equal(got["alpha"].values, want["alpha"].values)
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace('name = "wr+emb"\n', ""))
    assert main(["run", str(bad)]) == 2
    assert "[[models]] #1 needs a 'name'" in capsys.readouterr().err


def test_scaling_figure_reads_at_a_glance():
    """Integer layer ticks (not 1.0, 1.2, ...), y axes from 0, a title, a model-size axis."""
    import matplotlib.pyplot as plt

    from scalenc.sweep import mean_r_abs_r, scaling_figure

    rows = []
    for model, base in (("small", 0.1), ("large", 0.2)):
        for layer in range(4):
            r = np.full(10, base + 0.01 * layer)
            rows.append({"subject": "S1", "model": model, "layer": str(layer), "median_r": float(np.median(r)),
                         "mean_r_abs_r": mean_r_abs_r(r), "fraction_of_ceiling": base * 2})
    fig = scaling_figure(pd.DataFrame(rows), parameters={"small": 1e6, "large": 1e8})
    assert "scaling" in fig._suptitle.get_text()
    for ax in fig.axes[:3]:
        ticks = [t for t in ax.get_xticks() if 0 <= t <= 3]
        assert ticks and all(float(t).is_integer() for t in ticks)
        assert ax.get_ylim()[0] == 0.0
    assert fig.axes[3].get_xscale() == "log"
    plt.close(fig)
    assert mean_r_abs_r(np.array([0.5, -0.5, np.nan, 0.2])) == pytest.approx((0.25 - 0.25 + 0.04) / 3)


def test_subjects_with_different_story_sets_are_noted(subjects, tmp_path, caplog):
    import logging

    a, b = subjects
    fewer = b.assembly().subset(stories=b.assembly().stories[1:])
    model = NestedCVModel(alphas=ALPHAS, n_inner_folds=3, seed=2)
    with caplog.at_level(logging.WARNING, logger="scalenc.sweep"):
        res = sweep([a.assembly(), fewer], {"wr+emb": _models(a, tmp_path / "c")["wr+emb"]}, model=model,
                    results_dir=tmp_path, name="mixed")
    assert "training sets differ" in caplog.text
    n = res.summary.set_index("subject").n_train_stories
    assert n["SYN01"] == n["SYN02"] + 1
    assert res.summary.set_index("subject").train_stories["SYN02"] in \
        res.summary.set_index("subject").train_stories["SYN01"]
