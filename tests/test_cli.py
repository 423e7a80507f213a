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
    a = Assembly(tmp_path / "d" / "data" / "SYN01.zarr")
    assert a.n_voxels == 80 and a.n_repeats("wheretheressmoke") == 3
    assert list((tmp_path / "d" / "results").glob("*/report.png"))


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
