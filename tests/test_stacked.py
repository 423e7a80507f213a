"""StackedResponses: the training targets read a voxel block at a time, equal to the lazy
(dask) path the alignment gives, for any block width, voxel subset and row selection."""
from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from scalenc.align import zscore
from scalenc.assembly import Assembly, AssemblyChunkError, AssemblyWriter
from scalenc.assembly.stacked import StackedResponses
from scalenc.ridge.solver import solve_ridge_cv

TR = 2.0


def _store(path, *, n_vox=23, chunk=5, n_trs=(17, 21, 12)):
    rng = np.random.default_rng(0)
    data = {}
    with AssemblyWriter(path, dataset="unit", subject="S1", tr_seconds=TR, n_voxels=n_vox, voxel_chunk=chunk) as w:
        for i, n in enumerate(n_trs):
            s = f"s{i}"
            grid = np.arange(n + 4) * TR
            # per-voxel offsets and scales differ by story: z-scoring per story matters
            data[s] = (rng.standard_normal((n, n_vox)) * rng.uniform(0.5, 3, n_vox) + rng.normal(0, 5, n_vox))
            w.add_story(s, data[s], tr_time=grid[2:2 + n], grid_time=grid, grid_offset=2, words=["a"],
                        word_start=[1.0], word_end=[1.2])
    return data


def _reference(data, stories, rows, cols=None, z=True):
    parts = []
    for s, r in zip(stories, rows):
        y = data[s].astype(np.float32)[r]
        if cols is not None:
            y = y[:, cols]
        parts.append(zscore(y) if z else y)
    return np.concatenate(parts)


def test_blocks_equal_the_stacked_trimmed_zscored_rows(tmp_path):
    data = _store(tmp_path / "a.zarr")
    asm = Assembly(tmp_path / "a.zarr")
    rows = [slice(3, -2), slice(0, None), slice(1, 10)]
    Y = asm.stacked_bold(["s0", "s1", "s2"], rows)
    ref = _reference(data, ["s0", "s1", "s2"], rows)
    assert Y.shape == ref.shape == (12 + 21 + 9, 23) and Y.dtype == np.float32
    np.testing.assert_allclose(np.asarray(Y), ref, rtol=0, atol=2e-6)
    # every block width: aligned to the 5-voxel chunks when at least one chunk wide
    assert [Y.block_width(b) for b in (None, 3, 5, 7, 8, 12, 100)] == [23, 3, 5, 5, 10, 10, 23]
    for width in (3, 5, 10, 23):
        got = np.empty_like(ref)
        seen = []
        for sl, block in Y.iter_blocks(width):
            assert block.flags.c_contiguous and block.shape == (ref.shape[0], sl.stop - sl.start)
            got[:, sl] = block
            seen.append((sl.start, sl.stop))
        assert seen[0][0] == 0 and seen[-1][1] == 23
        assert all(a[1] == b[0] for a, b in zip(seen, seen[1:]))
        np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6)
    # the dask form (what a distributed cluster's workers compute) holds the same values
    Yd = Y.to_dask()
    assert isinstance(Yd, da.Array)
    np.testing.assert_allclose(Yd.compute(), ref, rtol=0, atol=2e-6)
    # without z-scoring: the raw kept rows
    np.testing.assert_array_equal(np.asarray(asm.stacked_bold(["s2", "s0"], [slice(None), slice(None)],
                                                              zscore=False)),
                                  _reference(data, ["s2", "s0"], [slice(None)] * 2, z=False))


def test_voxel_subset_and_row_selection(tmp_path):
    data = _store(tmp_path / "a.zarr")
    cols = np.array([0, 4, 5, 6, 13, 22])
    sub = Assembly(tmp_path / "a.zarr").subset(voxels=cols)
    Y = sub.stacked_bold(["s1", "s0"])
    ref = _reference(data, ["s1", "s0"], [slice(None)] * 2, cols)
    np.testing.assert_allclose(np.asarray(Y), ref, rtol=0, atol=2e-6)
    np.testing.assert_allclose(Y[:, 2:5], ref[:, 2:5], rtol=0, atol=2e-6)
    # selected rows keep the whole-story z-scoring (as slicing the lazy stacked array would)
    idx = np.array([0, 5, 20, 21, 37])
    np.testing.assert_allclose(np.asarray(Y[idx]), ref[idx], rtol=0, atol=2e-6)
    np.testing.assert_allclose(np.asarray(Y.take_rows(idx).take_rows([1, 3])), ref[idx[[1, 3]]], rtol=0, atol=2e-6)
    np.testing.assert_allclose(Y.take_rows(idx).to_dask().compute(), ref[idx], rtol=0, atol=2e-6)


def test_solver_reads_stacked_targets_block_by_block_with_the_same_result(tmp_path):
    data = _store(tmp_path / "a.zarr", n_vox=37, chunk=8)
    asm = Assembly(tmp_path / "a.zarr")
    stories, rows = ["s0", "s1", "s2"], [slice(2, None), slice(None, -3), slice(None)]
    Y = asm.stacked_bold(stories, rows)
    ref = _reference(data, stories, rows)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((ref.shape[0], 4))
    folds = [(np.setdiff1d(np.arange(ref.shape[0]), te), te) for te in np.array_split(np.arange(ref.shape[0]), 3)]
    alphas = np.logspace(-2, 3, 6)
    want = solve_ridge_cv(X, ref.astype(np.float64), alphas, folds, dtype="float64")
    for vb in (8, 11, 16, None):
        got = solve_ridge_cv(X, Y, alphas, folds, voxel_block=vb, dtype="float64")
        np.testing.assert_array_equal(got.best_alpha_index, want.best_alpha_index)
        np.testing.assert_allclose(got.coef, want.coef, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.cv_scores, want.cv_scores, rtol=1e-5, atol=1e-6)


def test_missing_chunk_is_one_line_naming_story_and_chunk(tmp_path):
    _store(tmp_path / "a.zarr")
    (tmp_path / "a.zarr/stories/s1/bold/c/0/2").unlink()
    Y = Assembly(tmp_path / "a.zarr").stacked_bold(["s0", "s1"])
    np.asarray(Y[:, 0:10])  # chunks 0 and 1 are intact
    with pytest.raises(AssemblyChunkError, match=r"story 's1': chunk bold/c/0/2 is missing") as ei:
        for _ in Y.iter_blocks(5):
            pass
    assert "\n" not in str(ei.value)


def test_bad_arguments():
    with pytest.raises(ValueError, match="one row slice per source"):
        StackedResponses([np.zeros((3, 2))], [])
    with pytest.raises(ValueError, match="different voxel counts"):
        StackedResponses([np.zeros((3, 2)), np.zeros((3, 4))], [slice(None)] * 2)


def test_bold_data_is_bold_without_coordinates(tmp_path):
    _store(tmp_path / "a.zarr")
    a = Assembly(tmp_path / "a.zarr").subset(voxels=[1, 7, 8])
    d = a.bold_data("s1")
    assert isinstance(d, da.Array)
    np.testing.assert_array_equal(d.compute(), a.bold("s1").values)


def test_read_ahead_hints_the_response_chunks(tmp_path):
    _store(tmp_path / "a.zarr")
    a = Assembly(tmp_path / "a.zarr")
    chunks = [f for s in ("s0", "s2") for f in (tmp_path / "a.zarr" / "stories" / s / "bold").rglob("*")
              if f.is_file() and f.name != "zarr.json"]
    assert len(chunks) == 2 * 5  # 23 voxels in chunks of 5, one row chunk
    assert a.read_ahead(["s0", "s2"]) == sum(f.stat().st_size for f in chunks)
    assert a.read_ahead(["s0"], max_fraction=0.0) == 0  # larger than the allowed share of memory: skipped
    with pytest.raises(KeyError, match="nope"):
        a.read_ahead(["nope"])


def test_in_process_and_dask_blocks_give_identical_results(tmp_path):
    """Where the voxel blocks run changes nothing, bit for bit (float32 products): the dask
    form z-scores with the same code, the blocks have the same boundaries, every numpy
    block runs with one BLAS thread, and one candidate's X side is computed by the caller."""
    import dask

    from scalenc.ridge.banded import solve_banded_ridge_cv

    data = _store(tmp_path / "a.zarr", n_vox=203, chunk=16, n_trs=(70, 64, 58))
    asm = Assembly(tmp_path / "a.zarr")
    Y = asm.stacked_bold(["s0", "s1", "s2"], [slice(2, -3)] * 3)
    np.testing.assert_array_equal(Y.to_dask().compute(), np.asarray(Y))
    rng = np.random.default_rng(1)
    X = rng.standard_normal((Y.shape[0], 9))
    n = Y.shape[0]
    folds = [(np.setdiff1d(np.arange(n), t), t) for t in np.array_split(np.arange(n), 4)]
    alphas = np.logspace(-2, 4, 9)
    for vb in (40, 64):  # (voxel_block=None: a dask array keeps its own chunks)
        ref = solve_ridge_cv(X, Y, alphas, folds, voxel_block=vb)          # StackedResponses blocks, threads
        mem = solve_ridge_cv(X, np.asarray(Y), alphas, folds, voxel_block=vb if vb != 40 else 48)
        with dask.config.set(scheduler="threads"):
            lazy = solve_ridge_cv(X, Y.to_dask(), alphas, folds, voxel_block=vb)
        for got in (lazy,) + ((mem,) if vb == 64 else ()):
            np.testing.assert_array_equal(got.fold_scores, ref.fold_scores)
            np.testing.assert_array_equal(got.best_alpha_index, ref.best_alpha_index)
            np.testing.assert_array_equal(got.coef, ref.coef)
    # banded ridge: several candidates, decomposed in threads here and as tasks on dask
    groups = np.repeat(["a", "b", "c"], 3)
    kw = dict(n_iter=6, random_state=0, voxel_block=64)
    ref = solve_banded_ridge_cv(X, Y, groups, alphas, folds, **kw)
    with dask.config.set(scheduler="threads"):
        lazy = solve_banded_ridge_cv(X, Y.to_dask(), groups, alphas, folds, **kw)
    np.testing.assert_array_equal(lazy.cv_scores, ref.cv_scores)
    np.testing.assert_array_equal(lazy.best_candidate, ref.best_candidate)
    np.testing.assert_array_equal(lazy.coef, ref.coef)


def test_degenerate_voxels_in_stored_responses_are_flagged_not_fatal(tmp_path):
    """A constant and a partly-NaN voxel in the store (read block by block, never in memory
    whole): the fit runs, they get NaN r and p = 1, and every other voxel is exactly as in the
    same store with ordinary data in their place."""
    from scalenc.models import NestedCVModel

    rng = np.random.default_rng(3)
    n_trs, v = (90, 80, 70), 24
    X = {f"s{i}": rng.standard_normal((n, 5)) for i, n in enumerate(n_trs)}
    W = rng.standard_normal((5, v))
    clean = {s: x @ W + rng.standard_normal((len(x), v)) for s, x in X.items()}
    damaged = {s: y.copy() for s, y in clean.items()}
    for s in damaged:
        damaged[s][:, 3] = 7.0                       # constant (outside the brain)
    damaged["s1"][10, 11] = np.nan                   # a dropped volume

    def fit(data, name):
        with AssemblyWriter(tmp_path / name, dataset="unit", subject="S1", tr_seconds=TR, n_voxels=v,
                            voxel_chunk=8) as w:
            for s, y in data.items():
                grid = np.arange(len(y) + 4) * TR
                w.add_story(s, y, tr_time=grid[2:2 + len(y)], grid_time=grid, grid_offset=2, words=["a"],
                            word_start=[1.0], word_end=[1.2])
        Y = Assembly(tmp_path / name).stacked_bold(["s0", "s1"])
        Xtr = np.concatenate([X["s0"], X["s1"]])
        yte = data["s2"] - data["s2"].mean(0)
        model = NestedCVModel(alphas=np.logspace(-1, 3, 5), n_inner_folds=3, n_permutations=99)
        return model.fit_dataset(Xtr, Y, X_test=X["s2"], y_test=yte)

    ref, got = fit(clean, "clean.zarr"), fit(damaged, "damaged.zarr")
    bad = np.array([3, 11])
    others = np.setdiff1d(np.arange(v), bad)
    assert np.all(np.isnan(got["r"].values[bad])) and np.all(got["p"].values[bad] == 1.0)
    assert got.attrs["n_degenerate"] == 2 and not got["significant"].values[bad].any()
    for name in ("r", "alpha", "p"):
        np.testing.assert_array_equal(got[name].values[others], ref[name].values[others], err_msg=name)
