"""The three LITcoder tutorials (examples/: the seeds' code with ``encoding.`` -> ``scalenc.``)
run end to end and recover the synthetic ground truth.

Setup as a user's machine would have it, offline: the synthetic assembly saved as a
LITcoder-style ``assembly_lebel_uts03.pkl``; a Hugging Face cache (``HF_HOME``,
``HF_HUB_OFFLINE=1``) holding tiny random ``gpt2`` (the tutorial's ``gpt2-small``) and
``openai/whisper-tiny`` laid out as the Hub lays them out; wandb offline. The tutorials
run in this process (``runpy``), so their ``metrics`` (per-voxel test r) are checked
against the ground truth.

The data are small so that the speech tutorial (a forward pass per 0.1 s of audio) stays
fast: 3 stories of 60 words (~30 s of audio each) on a 0.25 s TR grid, so that the
tutorials' LeBel trimming (test features from row 50, targets from row 40) still leaves
~100 test rows.
"""
from __future__ import annotations

import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from scalenc.synthetic import synthetic
    from scalenc.synthetic.litcoder_pickle import write_litcoder_pickle

    root = tmp_path_factory.mktemp("tutorials")
    ds = synthetic(root / "data", n_stories=3, words_per_story=60, n_voxels=60, embedding_dim=8, tr=0.25,
                   seed=5)
    pkl = write_litcoder_pickle(ds.assembly(), root / "assembly_lebel_uts03.pkl")
    return root, ds, pkl


def run_tutorial(name: str, data, hub_home, monkeypatch, capsys, *, default_assembly_path: bool = False) -> dict:
    """Run ``examples/<name>.py`` in this process in a fresh folder; its ``metrics``."""
    root, ds, pkl = data
    work = root / name
    work.mkdir()
    monkeypatch.chdir(work)
    shutil.copy(pkl, work / "assembly_lebel_uts03.pkl")
    env = dict(HF_HOME=str(hub_home.home), HF_HUB_OFFLINE="1", WANDB_MODE="offline", WANDB_SILENT="true",
               SCALENC_VECTORS=str(ds.embeddings_binary_path), SCALENC_AUDIO_DIR=str(ds.audio_dir))
    if not default_assembly_path:  # else the tutorial's own "assembly_lebel_uts03.pkl" in the working folder
        env["SCALENC_ASSEMBLY"] = str(work / "assembly_lebel_uts03.pkl")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = runpy.run_path(str(ROOT / "examples" / f"{name}.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert f"Median correlation: {out['metrics']['median_score']:.4f}" in printed
    runs = list((work / "results").glob("run-*"))
    assert len(runs) == 1
    assert list((runs[0] / "wandb").glob("offline-run-*")), "wandb ran offline and kept its run"
    return out


def ground_truth_recovery(ds, metrics: dict) -> dict[str, dict[str, float]]:
    """Per ground-truth driver (noise, wordrate, embeddings, both): the median test-story r
    of the fit and the median ceiling r (noise-free signal vs observed response)."""
    gt = ds.ground_truth()
    r = np.asarray(metrics["correlations"], dtype=np.float64)
    driver = np.array([str(d) for d in gt["driver"].values])
    ceiling = gt["ceiling_r"].values
    assert r.shape == driver.shape
    rec = {d: {"r": float(np.median(r[driver == d])), "ceiling": float(np.median(ceiling[driver == d]))}
           for d in ("noise", "wordrate", "embeddings", "both")}
    print("ground-truth recovery:", rec)
    return rec


def assert_word_rate_recovered(rec) -> None:
    """Features that carry word rate predict the word-rate voxels (a good part of their
    ceiling) far better than the pure-noise ones, which stay at chance."""
    assert abs(rec["noise"]["r"]) < 0.1, rec
    assert rec["wordrate"]["r"] > max(0.3 * rec["wordrate"]["ceiling"], rec["noise"]["r"] + 0.15), rec
    assert rec["both"]["r"] > rec["noise"]["r"] + 0.1, rec


@pytest.mark.slow
def test_tutorial_embeddings(data, hub_home, monkeypatch, capsys):
    out = run_tutorial("tutorial_embeddings", data, hub_home, monkeypatch, capsys)
    rec = ground_truth_recovery(data[1], out["metrics"])
    # the generative word vectors themselves: the embedding voxels reach most of their ceiling,
    # the word-rate-only voxels (no word-rate column here) and the noise voxels stay near 0
    assert abs(rec["noise"]["r"]) < 0.1, rec
    assert rec["embeddings"]["r"] > 0.7 * rec["embeddings"]["ceiling"], rec
    assert rec["both"]["r"] > 0.4 * rec["both"]["ceiling"], rec
    assert rec["wordrate"]["r"] < 0.2, rec
    assert any((data[0] / "tutorial_embeddings" / "cache").iterdir())


@pytest.mark.slow
def test_tutorial_language_model(data, hub_home, monkeypatch, capsys):
    out = run_tutorial("tutorial_language_model", data, hub_home, monkeypatch, capsys, default_assembly_path=True)
    ex = out["extractor"]
    # "gpt2-small" -> the Hub model "gpt2" at the cached commit; layer 9 of its hidden states
    assert ex.identity()["model_files"] == {"hub_id": "gpt2", "commit": hub_home.commits["gpt2"]}
    assert out["metrics"]["feature_spaces"] == {"language_model": (0, 32)}  # one layer of width 32
    assert_word_rate_recovered(ground_truth_recovery(data[1], out["metrics"]))
    assert any((data[0] / "tutorial_language_model" / "cache_language_model").iterdir())


@pytest.mark.slow
def test_tutorial_speech(data, hub_home, monkeypatch, capsys):
    import torch

    if torch.cuda.is_available():
        out = run_tutorial("tutorial_speech", data, hub_home, monkeypatch, capsys)
    else:  # the tutorial's "device": "cuda": a warning, then the CPU
        with pytest.warns(RuntimeWarning, match="CUDA is not available.*running on the CPU"):
            out = run_tutorial("tutorial_speech", data, hub_home, monkeypatch, capsys)
    ex = out["extractor"]
    assert ex.identity()["model_files"] == {"hub_id": "openai/whisper-tiny",
                                            "commit": hub_home.commits["openai/whisper-tiny"]}
    # "layer": 3 as LITcoder counts it: hidden_states[4], the last of whisper-tiny's 4 encoder layers
    assert ex.selected_layers() == [4]
    # A random Whisper's last (layer-normed) encoder layer at the window end carries word rate
    # weakly (the synthetic audio is nearly continuous tones, so word boundaries are all there is):
    # the word-rate voxels stay clearly above the pure-noise ones (measured: median r 0.15 vs 0.005,
    # ceiling 0.79), less than with the language model.
    rec = ground_truth_recovery(data[1], out["metrics"])
    assert abs(rec["noise"]["r"]) < 0.1, rec
    assert rec["wordrate"]["r"] > max(0.1, rec["noise"]["r"] + 0.08), rec
    assert any((data[0] / "tutorial_speech" / "cache_speech").iterdir())


@pytest.mark.slow
def test_scaling_laws_sweep_config(data, hub_home, monkeypatch, capsys, tmp_path):
    """examples/scaling_laws_sweep.toml (the paper's layout: LM x layers x subjects, a speech
    model, stacking of the best LM layer with the best speech layer) runs as shipped on two
    synthetic subjects with tiny random models; the summary has the paper's metric."""
    import json

    import pandas as pd

    from scalenc.cli import main
    from scalenc.synthetic import synthetic

    root, ds, _ = data
    other = synthetic(tmp_path / "s2", n_stories=3, words_per_story=60, n_voxels=40, embedding_dim=8, tr=0.25,
                      seed=5, subject="SYN02")
    text = (ROOT / "examples" / "scaling_laws_sweep.toml").read_text()
    text = text.replace('assembly = ["UTS01.zarr", "UTS02.zarr", "UTS03.zarr"]',
                        f'assembly = ["{ds.assembly_path}", "{other.assembly_path}"]')
    assert str(other.assembly_path) in text
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(text.replace("alphas_logspace = [0, 4, 9]", "alphas_logspace = [0, 4, 5]")
                   .replace("n_inner_folds = 5", "n_inner_folds = 3"))
    monkeypatch.chdir(tmp_path)
    for k, v in dict(HF_HOME=str(hub_home.home), HF_HUB_OFFLINE="1").items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert main(["run", str(cfg)]) == 0
    out = tmp_path / "results" / "scaling-laws"
    csv = pd.read_csv(out / "summary.csv")
    subjects = sorted(csv.subject.unique())
    assert len(subjects) == 2
    for subj in subjects:
        mine = csv[csv.subject == subj]
        assert sorted(mine[mine.model == "gpt2"].layer.astype(str)) == ["3", "6", "9"]
        assert len(mine[mine.model == "whisper-tiny"]) == 5  # the embeddings and 4 encoder layers
        stacked = mine[mine.model == "gpt2+whisper-tiny"]
        assert len(stacked) == 1
        # the stacked layers are each model's best (by mean r|r| over subjects)
        best = {m: csv[csv.model == m].groupby("layer").mean_r_abs_r.mean().idxmax()
                for m in ("gpt2", "whisper-tiny")}
        assert stacked.layer.iloc[0] == f"{best['gpt2']}+{best['whisper-tiny']}"
        for m in ("gpt2", "whisper-tiny"):
            rows = mine[mine.model == m]
            assert rows.best_layer.sum() == 1
            r = results_r(out / subj / m, str(rows[rows.best_layer].layer.iloc[0]))
            assert rows[rows.best_layer].mean_r_abs_r.iloc[0] == pytest.approx(float(np.mean(r * np.abs(r))))
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["parameters"] == {"gpt2": 124e6, "whisper-tiny": 39e6}
    assert set(meta["stack"]["gpt2+whisper-tiny"]) == {"gpt2", "whisper-tiny"}
    assert (out / "scaling.png").stat().st_size > 10_000


def results_r(run_dir, layer: str) -> np.ndarray:
    from scalenc import results

    return np.asarray(results.load(run_dir).layer(layer)["r"].values, dtype=np.float64)
