"""Assembly writer/reader: round trips, lazy voxel-chunked reads, atomic writes, errors."""
from __future__ import annotations

import re

import dask.array as da
import numpy as np
import pytest

from scalenc.assembly import Assembly, AssemblyChunkError, AssemblyError, AssemblyWriter, load_assembly
from scalenc.cli import main

TR = 2.0


def _grid(n):
    return np.arange(n) * TR - 9.0


def _write(path, rng, *, n_vox=10, chunk=4, stories=("a", "b", "t"), n_tr=15, reps=3, **kw):
    data = {}
    with AssemblyWriter(path, dataset="unit", subject="S1", tr_seconds=TR, n_voxels=n_vox, voxel_chunk=chunk,
                        test_stories=["t"] if "t" in stories else [], mask_indices=np.arange(n_vox) * 7, **kw) as w:
        for s in stories:
            grid = _grid(n_tr + 15)
            b = rng.standard_normal((reps, n_tr, n_vox) if s == "t" else (n_tr, n_vox))
            data[s] = b
            w.add_story(s, b, tr_time=grid[10:10 + n_tr], grid_time=grid, grid_offset=10,
                        words=["the", "cat", "sat"], word_start=[1.0, 1.5, 2.0], word_end=[1.4, 1.9, 2.6],
                        phones=(["DH", "AH"], [1.0, 1.2], [1.2, 1.4]))
    return data


def test_round_trip_values_and_metadata(tmp_path):
    rng = np.random.default_rng(0)
    data = _write(tmp_path / "a.zarr", rng)
    a = Assembly(tmp_path / "a.zarr")
    assert a.stories == ["a", "b", "t"]
    assert a.train_stories == ["a", "b"] and a.test_stories == ["t"]
    assert a.n_voxels == 10 and a.tr_seconds == TR and a.subject == "S1"
    np.testing.assert_allclose(a.bold("a").values, data["a"].astype(np.float32), rtol=0, atol=0)
    # repeated story: mean as response, repeats kept
    np.testing.assert_allclose(a.bold("t").values, data["t"].mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a.bold_repeats("t").values, data["t"].astype(np.float32))
    assert a.n_repeats("t") == 3 and a.n_repeats("a") == 1 and a.bold_repeats("a") is None
    np.testing.assert_allclose(a.tr_times("a").values, _grid(30))
    np.testing.assert_allclose(a.bold("a").tr_time.values, _grid(30)[10:25])
    assert a.grid_offset("a") == 10
    w = a.words("b")
    assert list(w.word.values) == ["the", "cat", "sat"]
    np.testing.assert_allclose(a.word_times("b"), [1.2, 1.7, 2.3])
    assert list(a.phones("a").phone.values) == ["DH", "AH"]
    np.testing.assert_array_equal(a.voxels["mask_indices"].values, np.arange(10) * 7)


def test_word_tables_read_once_and_equal_to_the_tree(tmp_path):
    """``words`` / ``word_table`` read a story's words once (the first story, then all the
    others in one go) and give what the xarray tree holds; callers get copies (the kept
    tables are read-only)."""
    _write(tmp_path / "a.zarr", np.random.default_rng(2))
    a = Assembly(tmp_path / "a.zarr")
    a.word_table("b")
    assert list(a._word_tables) == ["b"]  # one story asked: one story read
    for s in a.stories:
        node = a.tree[f"stories/{s}"].to_dataset()
        w = a.words(s)
        assert w["word"].dtype == object and w["start"].dtype == np.float64
        assert list(w["word"].values) == [str(x) for x in node["word"].values]
        np.testing.assert_array_equal(w["start"].values, node["word_start"].values)
        np.testing.assert_array_equal(w["end"].values, node["word_end"].values)
    assert set(a._word_tables) == set(a.stories)
    word, start, _ = a.word_table("a")
    assert not word.flags.writeable and not start.flags.writeable
    w = a.words("a")
    w["start"].values[0] = -1.0  # a caller's copy
    assert a.word_table("a")[1][0] == 1.0 and a.word_times("a")[0] == pytest.approx(1.2)
    sub = a.subset(["b"])
    assert sub.word_table("b") is a.word_table("b")  # a subset keeps the tables already read
    with pytest.raises(KeyError, match="not in assembly"):
        sub.word_table("a")


def test_reads_are_lazy_and_voxel_chunked(tmp_path):
    _write(tmp_path / "a.zarr", np.random.default_rng(1), n_vox=10, chunk=4)
    b = Assembly(tmp_path / "a.zarr").bold("a")
    assert isinstance(b.data, da.Array)
    assert b.data.chunks == ((15,), (4, 4, 2))
    assert b.dims == ("tr", "voxel")


def test_story_data_compat_and_audio_path_persisted(tmp_path):
    _write(tmp_path / "a.zarr", np.random.default_rng(2))
    a = load_assembly(tmp_path / "a.zarr")
    sd = a.story_data["a"]
    assert sd.brain_data.shape == (15, 10)
    assert sd.words == ["the", "cat", "sat"]
    np.testing.assert_allclose(sd.tr_times, _grid(30))
    assert sd.audio_path is None
    sd.audio_path = "/x/y.wav"
    assert a.story_data["a"].audio_path == "/x/y.wav"
    assert Assembly(tmp_path / "a.zarr").audio_path("a") is None  # not yet saved
    a.save()
    assert load_assembly(tmp_path / "a.zarr").story_data["a"].audio_path == "/x/y.wav"
    # split indices: first word of each TR of the grid (word midpoints 1.2, 1.7, 2.3 s)
    # TR boundaries at grid + 1 s = -8, -6, ..., 0, 2, 4: words 0-1 fall before 2 s, word 2 before 4 s
    si = sd.split_indices
    assert si[4] == 0 and si[5] == 2 and si[6] == 3
    with pytest.raises(KeyError, match="nosuch"):
        a.story_data["nosuch"]


def test_subset_and_save_copy(tmp_path):
    data = _write(tmp_path / "a.zarr", np.random.default_rng(3))
    a = Assembly(tmp_path / "a.zarr")
    s = a.subset(stories=["b", "t"], voxels=[1, 3, 5])
    assert s.stories == ["b", "t"] and s.n_voxels == 3
    np.testing.assert_allclose(s.bold("b").values, data["b"][:, [1, 3, 5]].astype(np.float32))
    np.testing.assert_array_equal(s.bold("b").voxel.values, [1, 3, 5])
    ss = s.subset(voxels=np.array([False, True, True]))
    np.testing.assert_array_equal(ss.bold("b").voxel.values, [3, 5])
    s.set_audio_path("b", "/b.wav")
    out = s.save(tmp_path / "sub.zarr")
    c = Assembly(out)
    assert c.stories == ["b", "t"] and c.test_stories == ["t"] and c.n_voxels == 3
    np.testing.assert_allclose(c.bold_repeats("t").values, data["t"][:, :, [1, 3, 5]].astype(np.float32))
    np.testing.assert_array_equal(c.voxels["mask_indices"].values, [7, 21, 35])
    assert c.audio_path("b") == "/b.wav"
    with pytest.raises(AssemblyError, match="new path"):
        s.save()


def test_nan_and_constant_voxels_flagged_not_dropped(tmp_path):
    rng = np.random.default_rng(4)
    b = rng.standard_normal((15, 6))
    b[:, 2] = 3.0
    b[4, 5] = np.nan
    grid = _grid(15)
    with pytest.warns(UserWarning, match=r"story 'a' \(src.hf5\): 1 voxels contain NaN and 1 are constant"):
        with AssemblyWriter(tmp_path / "n.zarr", dataset="u", subject="s", tr_seconds=TR, n_voxels=6) as w:
            w.add_story("a", b, tr_time=grid, words=[], word_start=[], word_end=[], source="src.hf5")
    a = Assembly(tmp_path / "n.zarr")
    assert a.n_voxels == 6
    np.testing.assert_array_equal(a.voxels["voxel_valid"].values, [True, True, False, True, True, False])
    np.testing.assert_array_equal(a.voxels["voxel_has_nan"].values, [0, 0, 0, 0, 0, 1])
    assert np.isnan(a.bold("a").values[4, 5])


@pytest.mark.parametrize("bad, match", [
    (dict(n_vox=9), r"story 'b'.* has 9 voxels, the assembly has 10"),
    (dict(rows=14), r"story 'b'.* 14 response rows but 15 TR times"),
    (dict(step=2.5), r"story 'b'.*TR spacing 2.5 s disagrees with the assembly's tr_seconds=2.0"),
    (dict(words_end=[1.0, 0.5]), r"story 'b'.*word 1 \('y'\) ends at 0.5 before it starts at 1.5"),
    (dict(offset=20), r"story 'b'.*grid_offset 20 \+ 15 rows exceeds the 30-point TR grid"),
])
def test_inconsistent_story_refused_and_nothing_written(tmp_path, bad, match):
    rng = np.random.default_rng(5)
    out = tmp_path / "x.zarr"
    with pytest.raises(AssemblyError, match=match):
        with AssemblyWriter(out, dataset="u", subject="s", tr_seconds=TR, n_voxels=10) as w:
            g = _grid(30)
            w.add_story("a", rng.standard_normal((15, 10)), tr_time=g[10:25], grid_time=g, grid_offset=10,
                        words=["x"], word_start=[1.0], word_end=[2.0])
            rows = bad.get("rows", 15)
            step = bad.get("step", TR)
            g2 = np.arange(30) * step - 9
            off = bad.get("offset", 10)
            w.add_story("b", rng.standard_normal((rows, bad.get("n_vox", 10))), tr_time=g2[10:25],
                        grid_time=g2, grid_offset=off, words=["x", "y"], word_start=[0.5, 1.5],
                        word_end=bad.get("words_end", [1.0, 2.0]))
    assert not out.exists()
    assert not list(tmp_path.iterdir())  # no temporary store left either


def test_failure_in_block_leaves_existing_store_untouched(tmp_path):
    _write(tmp_path / "a.zarr", np.random.default_rng(6))
    before = Assembly(tmp_path / "a.zarr").bold("a").values
    with pytest.raises(RuntimeError, match="boom"):
        with AssemblyWriter(tmp_path / "a.zarr", dataset="u", subject="s", tr_seconds=TR, n_voxels=10,
                            overwrite=True) as w:
            g = _grid(15)
            w.add_story("a", np.zeros((15, 10)) + np.arange(15)[:, None], tr_time=g, words=[], word_start=[],
                        word_end=[])
            raise RuntimeError("boom")
    np.testing.assert_array_equal(Assembly(tmp_path / "a.zarr").bold("a").values, before)
    with pytest.raises(FileExistsError, match="a.zarr already exists"):
        AssemblyWriter(tmp_path / "a.zarr", dataset="u", subject="s", tr_seconds=TR, n_voxels=10).__enter__()


def test_info_counts(tmp_path):
    _write(tmp_path / "a.zarr", np.random.default_rng(7))
    info = Assembly(tmp_path / "a.zarr").info()
    assert info["n_stories"] == 3 and info["n_trs"] == 45 and info["n_voxels"] == 10
    assert info["test_stories"] == ["t"]
    assert info["bold_bytes"] == 45 * 10 * 4
    assert info["stored_bytes"] > 0
    assert [r["n_repeats"] for r in info["stories"]] == [1, 1, 3]


def test_not_an_assembly(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.zarr"):
        load_assembly(tmp_path / "nowhere.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(AssemblyError, match="empty.zarr"):
        Assembly(tmp_path / "empty.zarr")


# --------------------------------------------------------------------------------------
# damaged stores: zarr's fill value must never stand in for data
def test_missing_chunk_refused_with_one_line_naming_store_story_chunk(tmp_path, capsys):
    rng = np.random.default_rng(3)
    data = _write(tmp_path / "a.zarr", rng)
    assert main(["assembly", "check", str(tmp_path / "a.zarr")]) == 0
    assert "all" in capsys.readouterr().out
    (tmp_path / "a.zarr/stories/b/bold/c/0/1").unlink()
    a = Assembly(tmp_path / "a.zarr")
    want = rf"{tmp_path / 'a.zarr'}: story 'b': chunk bold/c/0/1 is missing"
    with pytest.raises(AssemblyChunkError, match=want) as ei:
        a.bold("b").values
    assert "\n" not in str(ei.value)
    with pytest.raises(AssemblyChunkError, match=want):  # a lazy dask reduction, as the fit runs it
        a.bold("b").data.sum().compute()
    with pytest.raises(AssemblyChunkError, match=want):  # a voxel subset covering the chunk
        a.subset(voxels=[5]).bold("b").values
    # chunks that are present still read (only the damaged one is refused)
    np.testing.assert_array_equal(a.bold("b").isel(voxel=slice(0, 4)).values, data["b"][:, :4].astype(np.float32))
    assert main(["assembly", "check", str(tmp_path / "a.zarr")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"scalenc: error: {tmp_path / 'a.zarr'}: story 'b': chunk bold/c/0/1 is missing"
    assert re.fullmatch(r".*a\.zarr: 1 of \d+ chunks missing or unreadable", err[-1]) and len(err) == 2


def test_truncated_chunk_refused_with_one_line(tmp_path, capsys):
    rng = np.random.default_rng(4)
    _write(tmp_path / "a.zarr", rng)
    f = tmp_path / "a.zarr/stories/t/bold_repeats/c/1/0/2"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    a = Assembly(tmp_path / "a.zarr")
    with pytest.raises(AssemblyChunkError, match=r"story 't': chunk bold_repeats/c/1/0/2 cannot be decoded") as ei:
        a.bold_repeats("t").data.compute()
    assert "\n" not in str(ei.value)
    assert main(["assembly", "check", str(tmp_path / "a.zarr")]) == 2
    err = capsys.readouterr().err
    assert "story 't': chunk bold_repeats/c/1/0/2 cannot be decoded" in err and "Traceback" not in err
    # the CLI reports a read of it in one line too
    assert main(["assembly", "info", str(tmp_path / "a.zarr")]) == 0  # metadata only: no bold read


def test_all_nan_chunk_is_written_and_reads_back(tmp_path):
    """Every chunk is written, even one equal to the fill value, so absence always means damage."""
    bold = np.random.default_rng(0).standard_normal((15, 8)).astype(np.float32)
    bold[:, 4:] = np.nan
    with pytest.warns(UserWarning, match="4 voxels contain NaN"):
        with AssemblyWriter(tmp_path / "n.zarr", dataset="u", subject="S", tr_seconds=TR, n_voxels=8,
                            voxel_chunk=4) as w:
            w.add_story("a", bold, tr_time=_grid(15), words=["x"], word_start=[0.0], word_end=[0.5])
    assert (tmp_path / "n.zarr/stories/a/bold/c/0/1").is_file()
    a = Assembly(tmp_path / "n.zarr")
    np.testing.assert_array_equal(a.bold("a").values, bold)
    assert a.check()[1] == []


def test_grids_read_once_for_all_stories_and_equal_to_the_tree(tmp_path):
    _write(tmp_path / "a.zarr", np.random.default_rng(11))
    a = Assembly(tmp_path / "a.zarr")
    assert a.grid_offset("b") == 10 and list(a._grids) == ["b"]  # one story asked: one story read
    np.testing.assert_allclose(a.tr_times("a").values, _grid(30))
    assert set(a._grids) == set(a.stories)  # the next story: all the others at once
    for s in a.stories:
        ds = a.tree[f"stories/{s}"].to_dataset(inherit=False)
        np.testing.assert_array_equal(a.tr_times(s).values, ds["grid_time"].values)
        assert a.grid_offset(s) == int(a.tree[f"stories/{s}"].attrs["grid_offset"])
    t = a.tr_times("a")
    t.values[0] = 99.0  # callers get copies
    assert a.tr_times("a").values[0] == _grid(30)[0]
    assert set(a.subset(stories=["a"])._grids) == {"a"}


# damaged metadata: every zarr.json the schema expects is checked, and the file is named
@pytest.mark.parametrize("damage, named", [
    ("rm -r stories/b", "stories/b/zarr.json is missing"),
    ("rm stories/b/zarr.json", "stories/b/zarr.json is missing"),
    ("rm stories/b/bold/zarr.json", "stories/b/bold/zarr.json is missing"),
    ("rm stories/b/word_start/zarr.json", "stories/b/word_start/zarr.json is missing"),
    ("rm stories/t/bold_repeats/zarr.json", "stories/t/bold_repeats/zarr.json is missing"),
    ("rm stories/b/phone/zarr.json", "stories/b/phone/zarr.json is missing"),  # not in the schema, but a node
    ("rm voxels/voxel_valid/zarr.json", "voxels/voxel_valid/zarr.json is missing"),
    ("corrupt stories/b/zarr.json", "stories/b/zarr.json is not valid JSON"),
    ("corrupt stories/a/bold/zarr.json", "stories/a/bold/zarr.json is not valid JSON"),
    ("corrupt stories/zarr.json", "stories/zarr.json is not valid JSON"),
    ("corrupt zarr.json", "a.zarr/zarr.json is not valid JSON"),
])
def test_damaged_metadata_named_by_check_info_and_open(tmp_path, capsys, damage, named):
    import shutil

    _write(tmp_path / "a.zarr", np.random.default_rng(5))
    store = tmp_path / "a.zarr"
    op, rel = damage.split(" ", 1)
    target = store / rel.removeprefix("-r ")
    if op == "rm" and target.is_dir():
        shutil.rmtree(target)
    elif op == "rm":
        target.unlink()
    else:  # an editor's stray control character, as in the report
        target.write_text(target.read_text().replace('"node_type"', '"node\x01_type"'))
    full = re.escape(str(store / named.removeprefix("a.zarr/")))
    assert main(["assembly", "check", str(store)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any(re.search(full, line) for line in err), err
    assert "metadata files (zarr.json) missing or unreadable" in err[-1] and "Traceback" not in "\n".join(err)
    assert main(["assembly", "info", str(store)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(full, err[0]) and "scalenc assembly check" in err[0], err
    with pytest.raises(AssemblyError, match=full) as ei:
        load_assembly(store)
    assert "\n" not in str(ei.value)


def test_whole_store_metadata_passes(tmp_path, capsys):
    from scalenc.assembly.chunks import check_metadata

    _write(tmp_path / "a.zarr", np.random.default_rng(5))
    problems, arrays = check_metadata(tmp_path / "a.zarr")
    assert problems == []
    # every array of the store, found independently by its zarr.json files
    want = sorted(str(f.parent.relative_to(tmp_path / "a.zarr")) for f in (tmp_path / "a.zarr").rglob("zarr.json")
                  if '"array"' in f.read_text())
    assert sorted(arrays) == want
    assert main(["assembly", "check", str(tmp_path / "a.zarr")]) == 0
    assert "metadata whole" in capsys.readouterr().out


def test_run_on_a_damaged_store_names_the_file(tmp_path, capsys):
    import shutil

    _write(tmp_path / "a.zarr", np.random.default_rng(6))
    shutil.rmtree(tmp_path / "a.zarr/stories/b")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'assembly = "{tmp_path / "a.zarr"}"\nresults_dir = "{tmp_path / "res"}"\n'
                   '[[extractors]]\nmodality = "wordrate"\n')
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"story 'b': {tmp_path / 'a.zarr/stories/b/zarr.json'} is missing" in err[0], err
    assert not (tmp_path / "res").exists() or not any((tmp_path / "res").iterdir())
