"""The plain-arrays reader (``scalenc assembly build arrays``): a folder of ``<story>.npy``
responses and ``<story>.tsv`` words becomes an assembly holding exactly those numbers."""
from __future__ import annotations

import json

import numpy as np
import pytest

from scalenc.assembly import Assembly
from scalenc.cli import main


def _folder(tmp_path, rng, stories=("alpha", "beta", "gamma"), n_voxels=7):
    root = tmp_path / "arrays"
    root.mkdir()
    (root / "assembly.json").write_text(json.dumps({"subject": "S01", "tr": 2.0, "test_stories": ["gamma"]}))
    data = {}
    for i, s in enumerate(stories):
        bold = rng.standard_normal((30 + i, n_voxels)).astype(np.float32)
        np.save(root / f"{s}.npy", bold)
        onsets = np.sort(rng.uniform(0, 55, 40))
        words = [f"w{j}" for j in range(40)]
        (root / f"{s}.tsv").write_text("word\tonset\toffset\n" + "".join(
            f"{w}\t{a:.3f}\t{a + 0.2:.3f}\n" for w, a in zip(words, onsets)))
        data[s] = (bold, words, np.round(onsets, 3))
    return root, data


def test_arrays_folder_becomes_an_assembly(tmp_path, capsys):
    root, data = _folder(tmp_path, np.random.default_rng(0))
    assert main(["assembly", "build", "arrays", "--root", str(root), "--out", str(tmp_path / "a.zarr")]) == 0
    asm = Assembly(tmp_path / "a.zarr")
    assert asm.subject == "S01" and asm.tr_seconds == 2.0 and asm.test_stories == ["gamma"]
    for s, (bold, words, onsets) in data.items():
        np.testing.assert_array_equal(asm.bold(s).values, bold)
        np.testing.assert_allclose(asm.tr_times(s).values, (np.arange(bold.shape[0]) + 0.5) * 2.0)
        w, start, _ = asm.word_table(s)
        assert list(w) == words
        np.testing.assert_allclose(start, onsets)
    assert "S01" in capsys.readouterr().out


def test_arrays_errors_name_the_file(tmp_path, capsys):
    root, _ = _folder(tmp_path, np.random.default_rng(1))
    (root / "beta.tsv").unlink()
    assert main(["assembly", "build", "arrays", "--root", str(root), "--out", str(tmp_path / "b.zarr")]) == 2
    assert "beta.tsv not found" in capsys.readouterr().err
    assert not (tmp_path / "b.zarr").exists()  # nothing half-written
    (root / "beta.tsv").write_text("token\tstart\tend\nx\t1\t2\n")
    assert main(["assembly", "build", "arrays", "--root", str(root), "--out", str(tmp_path / "b.zarr")]) == 2
    assert "beta.tsv: the first line must be the header" in capsys.readouterr().err
    np.save(root / "beta.npy", np.zeros((10, 3), np.float32))
    from scalenc.assembly import arrays
    from scalenc.assembly.writer import AssemblyError

    with pytest.raises(AssemblyError, match=r"beta.npy: shape \(10, 3\), expected \(n_tr, 7\)"):
        arrays.build(root, tmp_path / "c.zarr")
