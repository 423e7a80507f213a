"""The `scalenc` command: demo, import-pickle, errors."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from test_legacy import _dump, _specs

from scalenc.assembly import Assembly
from scalenc.cli import main


@pytest.mark.slow
def test_demo_recovers_the_known_signal(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--stories", "5", "--voxels", "80"]) == 0
    out = capsys.readouterr().out
    assert "stories    5 (4 train, test: wheretheressmoke)" in out
    rows = {line[:26].strip(): line[26:].split() for line in out.splitlines()
            if line.startswith(("wordrate", "embeddings", "tiny GPT-2", "ground-truth ceiling"))}
    full = [float(x) for x in rows["wordrate + embeddings"]]
    ceiling = [float(x) for x in rows["ground-truth ceiling"]]
    # columns: wordrate, embeddings, both, noise voxels, driven, n significant
    assert full[4] > 0.6 * ceiling[4]          # the full model gets most of the ceiling
    assert abs(full[3]) < 0.3                  # pure-noise voxels stay near 0
    wr = [float(x) for x in rows["wordrate"]]
    assert wr[0] > wr[1] + 0.2                 # word rate explains word-rate voxels, not embedding voxels
    assert "the full model recovers" in out
    banded = [float(x) for x in rows_b["banded: wordrate, emb."]] if (rows_b := {
        line[:26].strip(): line[26:].split() for line in out.splitlines() if line.startswith("banded:")}) else None
    assert banded is not None and banded[4] > 0.6 * ceiling[4]   # banded fit recovers the signal too
    split = {line.split()[1]: [float(x) for x in line.split()[2:]] for line in out.splitlines()
             if line.startswith("  split ")}
    assert split["wordrate"][0] > split["embeddings"][0]          # word-rate voxels: word-rate share larger
    assert split["embeddings"][1] > split["wordrate"][1]          # embedding voxels: embedding share larger
    assert list((tmp_path / "d" / "results").glob("*/maps/*.png"))  # brain maps drawn (MNI layout)
    a = Assembly(tmp_path / "d" / "data" / "SYN01.zarr")
    assert a.n_voxels == 80 and a.n_repeats("wheretheressmoke") == 3
    assert list((tmp_path / "d" / "results").glob("*/report.png"))
    # the demo owns its folder: running it again replaces its runs
    assert main(["demo", "--out", str(tmp_path / "d"), "--stories", "5", "--voxels", "80"]) == 0


def test_import_pickle_command(tmp_path, capsys):
    specs = _specs(np.random.default_rng(0))
    p = _dump(tmp_path / "lit.pkl", specs)
    assert main(["assembly", "import-pickle", str(p), str(tmp_path / "lit.zarr")]) == 0
    assert "test: wheretheressmoke" in capsys.readouterr().out
    a = Assembly(tmp_path / "lit.zarr")
    np.testing.assert_allclose(a.bold("alpha").values, specs[0]["brain_data"].astype(np.float32))
    assert main(["assembly", "info", str(p)]) == 0  # info on the .pkl itself
    # second import without --overwrite: a clear one-line error
    assert main(["assembly", "import-pickle", str(p), str(tmp_path / "lit.zarr")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_console_script_entry_point(tmp_path):
    r = subprocess.run([sys.executable, "-m", "scalenc.cli", "assembly", "info", str(tmp_path / "none.zarr")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "scalenc: error: assembly not found" in r.stderr and "Traceback" not in r.stderr


def test_broken_pipe_is_quiet(tmp_path):
    specs = _specs(np.random.default_rng(1))
    p = _dump(tmp_path / "lit.pkl", specs)
    # the reader of stdout is gone before scalenc writes (as with `scalenc ... | head`)
    proc = subprocess.Popen([sys.executable, "-m", "scalenc.cli", "assembly", "info", str(p), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 141
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err


def test_error_messages_name_cli_flags(tmp_path, capsys):
    specs = _specs(np.random.default_rng(2))
    p = _dump(tmp_path / "lit.pkl", specs)
    assert main(["assembly", "import-pickle", str(p), str(tmp_path / "x.zarr")]) == 0
    capsys.readouterr()
    assert main(["assembly", "import-pickle", str(p), str(tmp_path / "x.zarr")]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "overwrite=True" not in err


def test_features_progress_bar_counts_feature_sets(monkeypatch, tmp_path):
    import scalenc.engine as engine_mod
    import scalenc.trainer as trainer_mod
    from scalenc.synthetic import synthetic
    from scalenc.features import FeatureExtractorFactory

    bars = []
    monkeypatch.setattr(engine_mod, "tqdm", lambda it, **kw: bars.append(kw) or it)
    ds = synthetic(tmp_path / "d", n_stories=3, words_per_story=120, n_voxels=10, embedding_dim=4, audio=False,
                   progress=False)
    make = FeatureExtractorFactory.create_extractor
    exs = [make("wordrate", None, {"include_phonemes": False}), make("embeddings", str(ds.embeddings_path), {})]
    feats = trainer_mod.AbstractTrainer(ds.assembly(), exs, results_dir=tmp_path).extract()
    assert len(feats) == 6  # 3 stories x 2 extractors
    assert bars[0]["unit"] != "story" and "extractor" in bars[0]["desc"]


@pytest.mark.slow
def test_local_cluster_run_is_quiet_by_default(tmp_path):
    from scalenc.synthetic import synthetic

    ds = synthetic(tmp_path / "d", n_stories=4, words_per_story=200, n_voxels=20, embedding_dim=4,
                   n_test_repeats=2, audio=False, progress=False)
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'run_name = "q"\nresults_dir = "out"\nassembly = "{ds.assembly_path}"\n'
                   '[model]\nalphas_logspace = [-1, 5, 7]\n[[extractors]]\nmodality = "wordrate"\n'
                   '[extractors.config]\ninclude_phonemes = false\n')
    r = subprocess.run([sys.executable, "-m", "scalenc.cli", "run", str(cfg), "--cluster", "local"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    noisy = [line for line in r.stderr.splitlines() if " INFO " in line or line.startswith("INFO")
             or "distributed.nanny" in line or "distributed.scheduler" in line or "distributed.worker" in line]
    assert noisy == [], noisy
    assert "run q: median r" in r.stdout
