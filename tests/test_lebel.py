"""LeBel (ds003020) reader on generated trees: timing convention, repeats, bad input."""
from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from scalenc.assembly import Assembly, AssemblyError, lebel
from scalenc.cli import main
from scalenc.synthetic.writers import write_story_files

SUBJ = "UTS01"


def _story(root, name, rng, *, rows=30, n_vox=12, reps=None, fmt="long", enc="utf-8", words=None):
    n_acq = rows + 20
    shape = (rows, n_vox) if reps is None else (reps * rows, n_vox)
    bold = rng.standard_normal(shape)
    words = words or ["so", "it", "began", "there"]
    starts = np.arange(len(words)) * 0.5 + 1.0
    write_story_files(root, SUBJ, name, bold, n_acquired=n_acq, words=words, word_start=starts,
                      word_end=starts + 0.4, phones=(["S", "OW"], [1.0, 1.2], [1.2, 1.4]),
                      textgrid_format=fmt, textgrid_encoding=enc)
    return bold


@pytest.fixture
def tree(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "ds003020"
    data = {
        "alternateithicatom": _story(root, "alternateithicatom", rng, rows=30, fmt="long", enc="utf-8-sig"),
        "souls": _story(root, "souls", rng, rows=25, fmt="short", enc="utf-16"),
        "wheretheressmoke": _story(root, "wheretheressmoke", rng, rows=20, reps=3, fmt="short", enc="utf-8"),
    }
    return root, data


def test_timing_convention_hand_computed():
    g = lebel.grid_times(50)
    # N = 50 acquired TRs -> N - 5 = 45 simulated triggers; centre of TR k at 2k - 10 + 1
    assert g.shape == (45,)
    assert g[0] == -9.0 and g[10] == 11.0 and g[-1] == 79.0
    assert lebel.expected_rows(50) == 30
    np.testing.assert_allclose(lebel.grid_times(50, tr=1.5, sound_onset=6.0, skipped_triggers=2)[:2], [-5.25, -3.75])


def test_build_end_to_end(tree, tmp_path):
    root, data = tree
    out = lebel.build(root, SUBJ, tmp_path / "s.zarr", progress=False)
    a = Assembly(out)
    assert a.stories == ["alternateithicatom", "souls", "wheretheressmoke"]  # test story last
    assert a.test_stories == ["wheretheressmoke"] and a.tr_seconds == 2.0
    np.testing.assert_allclose(a.bold("souls").values, data["souls"].astype(np.float32))
    assert a.bold("alternateithicatom").shape == (30, 12)
    # grid: N - 5 = 45 points; responses are grid rows [10:-5]
    g = a.tr_times("alternateithicatom").values
    assert g.shape == (45,) and g[0] == -9.0
    np.testing.assert_allclose(a.bold("alternateithicatom").tr_time.values, g[10:-5])
    assert a.grid_offset("souls") == 10
    # repeats of the test story: 3 x 20 stacked rows -> repeat dim and mean
    reps = data["wheretheressmoke"].reshape(3, 20, 12)
    assert a.n_repeats("wheretheressmoke") == 3
    np.testing.assert_allclose(a.bold_repeats("wheretheressmoke").values, reps.astype(np.float32))
    np.testing.assert_allclose(a.bold("wheretheressmoke").values, reps.mean(0), atol=1e-6)
    # words from BOM / UTF-16 / short-format TextGrids
    assert list(a.words("souls").word.values) == ["so", "it", "began", "there"]
    np.testing.assert_allclose(a.words("souls").start.values, [1.0, 1.5, 2.0, 2.5])
    assert list(a.phones("souls").phone.values) == ["S", "OW"]
    assert a.attrs["timing"]["trim"] == [10, 5]


def test_three_d_repeats_and_story_selection(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "t"
    _story(root, "souls", rng, rows=25)
    _story(root, "wheretheressmoke", rng, rows=20)
    reps = rng.standard_normal((4, 20, 12))
    with h5py.File(root / "derivative/preprocessed_data" / SUBJ / "wheretheressmoke.hf5", "w") as f:
        f["data"] = reps
    a = Assembly(lebel.build(root, SUBJ, tmp_path / "o.zarr", stories=["wheretheressmoke", "souls"], progress=False))
    assert a.stories == ["souls", "wheretheressmoke"]
    np.testing.assert_allclose(a.bold("wheretheressmoke").values, reps.mean(0), atol=1e-6)
    b = Assembly(lebel.build(root, SUBJ, tmp_path / "p.zarr", stories=["souls"], progress=False))
    assert b.stories == ["souls"] and b.test_stories == []


def test_default_stories_skip_missing_subject_files(tree, tmp_path):
    root, _ = tree
    resp = json.loads((root / "derivative/respdict.json").read_text())
    resp["life"] = 300  # in respdict but no response file for this subject (like UTS04)
    (root / "derivative/respdict.json").write_text(json.dumps(resp))
    with pytest.warns(UserWarning, match=r"1 of 4 stories of respdict.json have no response file and are "
                                         r"skipped: life"):
        a = Assembly(lebel.build(root, SUBJ, tmp_path / "s.zarr", progress=False))
    assert "life" not in a.stories and len(a.stories) == 3
    with pytest.raises(AssemblyError, match=r"story 'life': missing hf5 file .*life.hf5"):
        lebel.build(root, SUBJ, tmp_path / "x.zarr", stories=["souls", "life"], progress=False)
    assert not (tmp_path / "x.zarr").exists()


def _assert_fails(root, tmp_path, match, **kw):
    out = tmp_path / "bad.zarr"
    with pytest.raises(AssemblyError, match=match):
        lebel.build(root, SUBJ, out, progress=False, **kw)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bad.zarr")]


def test_missing_textgrid(tree, tmp_path):
    root, _ = tree
    (root / "derivative/TextGrids/souls.TextGrid").unlink()
    _assert_fails(root, tmp_path, r"story 'souls': missing textgrid file .*souls.TextGrid")


def test_hf5_without_data(tree, tmp_path):
    root, _ = tree
    with h5py.File(root / "derivative/preprocessed_data" / SUBJ / "souls.hf5", "w") as f:
        f["resp"] = np.zeros((25, 12))
    _assert_fails(root, tmp_path, r"story 'souls': .*souls.hf5 has no dataset 'data' \(found: \['resp'\]\)")


def test_not_hdf5(tree, tmp_path):
    root, _ = tree
    (root / "derivative/preprocessed_data" / SUBJ / "souls.hf5").write_bytes(b"not hdf5 at all")
    _assert_fails(root, tmp_path, r"story 'souls': cannot read .*souls.hf5 as HDF5")


def test_row_count_mismatch_names_story_and_counts(tree, tmp_path):
    root, _ = tree
    with h5py.File(root / "derivative/preprocessed_data" / SUBJ / "souls.hf5", "w") as f:
        f["data"] = np.zeros((27, 12))
    _assert_fails(root, tmp_path, r"story 'souls': .*souls.hf5 has 27 rows, expected N - 20 = 25 rows for "
                                  r"N = 45 acquired TRs")


def test_stacked_rows_refused_for_training_story(tree, tmp_path):
    root, _ = tree
    with h5py.File(root / "derivative/preprocessed_data" / SUBJ / "souls.hf5", "w") as f:
        f["data"] = np.zeros((50, 12))
    _assert_fails(root, tmp_path, r"story 'souls'.* has 50 rows, expected N - 20 = 25")


def test_voxel_count_mismatch(tree, tmp_path):
    root, _ = tree
    with h5py.File(root / "derivative/preprocessed_data" / SUBJ / "souls.hf5", "w") as f:
        f["data"] = np.zeros((25, 11))
    _assert_fails(root, tmp_path, r"story 'souls'.* has 11 voxels, the assembly has 12")


def test_undecodable_textgrid(tree, tmp_path):
    root, _ = tree
    (root / "derivative/TextGrids/souls.TextGrid").write_bytes(b"File type = \"ooTextFile\"\n\xff\xfe\xfa\xfb\x00\xc3")
    _assert_fails(root, tmp_path, r"story 'souls': .*souls.TextGrid")


def test_nan_and_constant_voxels_warn_with_file(tree, tmp_path):
    root, _ = tree
    bad = np.random.default_rng(3).standard_normal((25, 12))
    bad[:, 3] = 0.0
    bad[2, 7] = np.nan
    with h5py.File(root / "derivative/preprocessed_data" / SUBJ / "souls.hf5", "w") as f:
        f["data"] = bad
    with pytest.warns(UserWarning, match=r"story 'souls' \(.*souls.hf5\): 1 voxels contain NaN and 1 are constant"):
        a = Assembly(lebel.build(root, SUBJ, tmp_path / "s.zarr", progress=False))
    assert a.n_voxels == 12
    assert list(np.flatnonzero(~a.voxels["voxel_valid"].values)) == [3, 7]


def test_missing_respdict_and_unknown_story(tree, tmp_path):
    root, _ = tree
    with pytest.raises(AssemblyError, match=r"stories \['nosuch'\] are not in .*respdict.json"):
        lebel.build(root, SUBJ, tmp_path / "o.zarr", stories=["nosuch"], progress=False)
    with pytest.raises(AssemblyError, match="respdict.json not found"):
        lebel.build(tmp_path, SUBJ, tmp_path / "o.zarr", progress=False)


def test_cli_build_and_info(tree, tmp_path, capsys):
    root, _ = tree
    out = tmp_path / "cli.zarr"
    assert main(["assembly", "build", "lebel", "--root", str(root), "--subject", SUBJ, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "stories    3 (2 train, test: wheretheressmoke)" in text
    assert main(["assembly", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "TRs        75" in text and "voxels     12 (12 valid)" in text
    assert "wheretheressmoke" in text and "bytes" in text
    assert main(["assembly", "info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_trs"] == 75
    # errors: one line naming the problem, exit code 2, no traceback
    assert main(["assembly", "build", "lebel", "--root", str(root), "--subject", "UTS09", "--out",
                 str(tmp_path / "x.zarr")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("scalenc: error:") and "UTS09" in err and "Traceback" not in err


def test_stale_temporaries_of_a_killed_build_are_removed(tree, tmp_path):
    """A killed build leaves .s.zarr.tmp-*; the next build of the same target removes those
    whose process is gone (and owner-less old-style ones), not a live writer's or another
    target's."""
    import socket
    import subprocess
    import sys

    root, _ = tree
    out = tmp_path / "s.zarr"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    host = socket.gethostname()
    stale = [tmp_path / ".s.zarr.tmp-0123abcd", tmp_path / f".s.zarr.tmp-89abcdef.{dead.stdout.strip()}.{host}",
             tmp_path / f".s.zarr.old-00ff00ff.{dead.stdout.strip()}.{host}"]
    live = tmp_path / f".s.zarr.tmp-deadbeef.{os.getpid()}.{host}"
    other = tmp_path / ".t.zarr.tmp-0123abcd"
    for d in (*stale, live, other):
        (d / "stories").mkdir(parents=True)
    lebel.build(root, SUBJ, out, progress=False)
    assert all(not d.exists() for d in stale)
    assert live.exists() and other.exists() and Assembly(out).n_voxels == 12
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".s.zarr")) == [live.name]


def test_cli_build_prints_each_warning_once(tree, tmp_path):
    """The build's warnings (a skipped story, NaN/constant voxels) are one log line each on the
    command line, not a warning plus a log line of the same text."""
    import subprocess
    import sys
    from pathlib import Path

    root, _ = tree
    resp = json.loads((root / "derivative/respdict.json").read_text())
    resp["life"] = 300
    (root / "derivative/respdict.json").write_text(json.dumps(resp))
    bad = np.random.default_rng(3).standard_normal((25, 12))
    bad[:, 3] = 0.0
    with h5py.File(root / "derivative/preprocessed_data" / SUBJ / "souls.hf5", "w") as f:
        f["data"] = bad
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    p = subprocess.run([sys.executable, "-m", "scalenc.cli", "assembly", "build", "lebel", "--root", str(root),
                        "--subject", SUBJ, "--out", str(tmp_path / "s.zarr")], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stderr.strip().splitlines()
    assert sum("have no response file and are skipped: life" in x for x in lines) == 1, p.stderr
    assert sum("0 voxels contain NaN and 1 are constant" in x for x in lines) == 1, p.stderr
    assert "UserWarning" not in p.stderr and "warnings.warn" not in p.stderr  # log lines, no source lines
