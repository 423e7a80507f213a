"""The `scalenc` command: demo, import-pickle, errors."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
from test_legacy import _dump, _specs

from scalenc.assembly import Assembly
from scalenc.cli import main


def test_demo_builds_and_reports(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--stories", "3", "--voxels", "50"]) == 0
    out = capsys.readouterr().out
    assert "stories    3 (2 train, test: wheretheressmoke)" in out
    assert "median ceiling r" in out
    a = Assembly(tmp_path / "d" / "SYN01.zarr")
    assert a.n_voxels == 50 and a.n_repeats("wheretheressmoke") == 3


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
