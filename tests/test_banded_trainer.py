"""Banded ridge through the tutorials' API: NestedCVModel(model_name="banded_ridge") in the
trainer, with the extractors' feature spaces as the bands, against the synthetic ground truth."""
from __future__ import annotations

import numpy as np
import pytest

from scalenc import AbstractTrainer, FeatureExtractorFactory, NestedCVModel
from scalenc import results as results_mod


def _trainer(ds, tmp_path, model, name):
    ex = [FeatureExtractorFactory.create_extractor("wordrate", None, {}, str(tmp_path / "cache")),
          FeatureExtractorFactory.create_extractor("embeddings", str(ds.embeddings_path), {}, str(tmp_path / "cache"))]
    return AbstractTrainer(assembly=ds.assembly_path, feature_extractors=ex, model=model,
                           results_dir=tmp_path / "res", run_name=name, logger_backend="none")


def test_banded_split_assigns_voxels_to_their_driver(synthetic_small, tmp_path):
    model = NestedCVModel(model_name="banded_ridge", n_iter=10, pvalue_method="analytic")
    metrics = _trainer(synthetic_small, tmp_path, model, "banded").train()
    res = results_mod.load(tmp_path / "res" / "banded").dataset.isel(layer=0)
    assert list(res["space"].values) == ["wordrate", "embeddings"]
    driver = np.array([str(d) for d in synthetic_small.ground_truth()["driver"].values])
    r2s = res["r2_split"].values
    # the split parts sum to the joint R2 of the (centred) test prediction
    r2_joint = res["r2"].values
    ok = np.isfinite(r2_joint)
    assert np.nanmax(np.abs(r2s.sum(0)[ok] - r2_joint[ok])) < 0.05
    wr, em = driver == "wordrate", driver == "embeddings"
    assert wr.sum() >= 5 and em.sum() >= 5
    # each driven voxel's larger share goes to its own space
    assert np.mean(r2s[0, wr] > r2s[1, wr]) >= 0.9
    assert np.mean(r2s[1, em] > r2s[0, em]) >= 0.9
    g = res["gamma"].values
    np.testing.assert_allclose(g.sum(0), 1.0, atol=1e-9)
    assert np.median(g[0, wr]) > np.median(g[0, em])
    assert metrics["median_score"] > 0.3


def test_banded_with_one_space_equals_ridge(synthetic_small, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 12))
    Y = X @ rng.standard_normal((12, 40)) + rng.standard_normal((300, 40))
    Xt = rng.standard_normal((80, 12))
    Yt = Xt @ rng.standard_normal((12, 40)) + rng.standard_normal((80, 40))
    kw = dict(alphas=np.logspace(-1, 4, 8), pvalue_method="analytic", dtype="float64")
    plain = NestedCVModel(**kw).fit_dataset(X, Y, X_test=Xt, y_test=Yt)
    banded = NestedCVModel(model_name="banded_ridge", **kw).fit_dataset(
        X, Y, X_test=Xt, y_test=Yt, feature_space=np.zeros(12, int))
    np.testing.assert_allclose(banded["alpha"].values, plain["alpha"].values)
    np.testing.assert_allclose(banded["r"].values, plain["r"].values, rtol=1e-8, atol=1e-10)
    # one space: its correlation split is the joint r
    np.testing.assert_allclose(banded["r_split"].values[0], banded["r"].values, atol=1e-8)


def test_banded_needs_feature_space():
    X = np.random.default_rng(1).standard_normal((100, 4))
    with pytest.raises(ValueError, match="feature_space"):
        NestedCVModel(model_name="banded_ridge").fit_dataset(X, X[:, :2], X_test=X[:20], y_test=X[:20, :2])


def test_banded_by_layer_gives_each_layer_a_band(synthetic_small, tmp_path):
    from scalenc.synthetic.tiny_lm import build_tiny_lm

    asm = synthetic_small.assembly()
    words = [str(w) for s in asm.stories for w in asm.words(s).word.values]
    lm = build_tiny_lm(tmp_path / "lm", words, seed=0)
    ex = FeatureExtractorFactory.create_extractor("language_model", str(lm), {"lookback": 16}, str(tmp_path / "c"))
    model = NestedCVModel(model_name="banded_ridge", n_iter=4, pvalue_method="analytic")
    tr = AbstractTrainer(assembly=asm, feature_extractors=[ex], model=model, layer_idx=[1, 2], banded_by="layer",
                         results_dir=tmp_path / "res", run_name="bl", logger_backend="none")
    m = tr.train()
    res = results_mod.load(tmp_path / "res" / "bl").dataset
    assert list(res["layer"].values) == ["1+2"] and m["layer"] == "1+2"
    spaces = [str(s) for s in res["space"].values]
    assert len(spaces) == 2 and spaces[0].endswith("layer 1") and spaces[1].endswith("layer 2")
    np.testing.assert_allclose(res["gamma"].values.sum(1), 1.0, atol=1e-9)
    with pytest.raises(ValueError, match="banded_ridge"):
        AbstractTrainer(assembly=asm, feature_extractors=[ex], model=NestedCVModel(), banded_by="layer",
                        results_dir=tmp_path / "res", run_name="x", logger_backend="none")


def test_a_registered_solver_output_reaches_results_zarr(tmp_path):
    """The ARCHITECTURE recipe "a solver output": one register_solver call (fit + outputs)
    and the output is a variable of the run's results.zarr, through the trainer unchanged."""
    from scalenc import results
    from scalenc.synthetic import synthetic
    from scalenc.features import FeatureExtractorFactory
    from scalenc.models.solvers import SOLVERS, Solver, register_solver

    ridge = SOLVERS["ridge_regression"]

    def best_cv_score(model, res, Xt, yt):  # the inner-CV score of the chosen alpha, per voxel
        best = np.take_along_axis(np.asarray(res.cv_scores), np.asarray(res.best_alpha_index)[None], 0)[0]
        return {"cv_score": ("voxel", best)}, {}

    register_solver(Solver("ridge_with_cv_score", ridge.fit, prepare=ridge.prepare, outputs=best_cv_score))
    try:
        ds = synthetic(tmp_path / "d", n_stories=4, words_per_story=150, n_voxels=12, embedding_dim=4,
                       audio=False, progress=False)
        ex = FeatureExtractorFactory.create_extractor("embeddings", str(ds.embeddings_path), {}, tmp_path / "c")
        model = NestedCVModel("ridge_with_cv_score", alphas=np.logspace(-1, 4, 6), n_inner_folds=3)
        m = AbstractTrainer(ds.assembly(), [ex], model=model, results_dir=tmp_path / "r", run_name="x",
                            logger_backend="none").train()
        saved = results.load(m["results_dir"]).layer().load()
        plain = AbstractTrainer(ds.assembly(), [ex], model=NestedCVModel(alphas=np.logspace(-1, 4, 6),
                                                                         n_inner_folds=3),
                                results_dir=tmp_path / "r", run_name="y", logger_backend="none").train()
        assert "cv_score" in saved and saved["cv_score"].shape == (12,)
        assert np.all(np.isfinite(saved["cv_score"].values)) and np.all(saved["cv_score"].values <= 1)
        np.testing.assert_array_equal(saved["r"].values, plain["correlations"])  # same fit otherwise
    finally:
        SOLVERS.pop("ridge_with_cv_score", None)
