"""Cross-validation splitters: story grouping, chunking, bootstrap, check_cv."""
from __future__ import annotations

import numpy as np
import pytest

from scalenc.ridge.cv import Bootstrap, ChunkKFold, StoryKFold, check_cv, contiguous_chunks

# Six stories of distinct lengths, in this order in time (not sorted by length).
STORY_SIZES = {"D": 5, "A": 10, "F": 3, "C": 7, "B": 8, "E": 4}
GROUPS = np.repeat(list(STORY_SIZES), list(STORY_SIZES.values()))
N = GROUPS.size  # 37


def _check_partition(splits, n):
    """Each split: sorted int64, disjoint, covering; every sample in exactly one test set."""
    counts = np.zeros(n, dtype=int)
    for train, test in splits:
        for idx in (train, test):
            assert idx.dtype == np.int64
            assert np.all(np.diff(idx) > 0)
        assert np.intersect1d(train, test).size == 0
        assert train.size + test.size == n
        counts[test] += 1
    np.testing.assert_array_equal(counts, 1)


def _runs(idx):
    """Number of contiguous runs in a sorted index array."""
    return 1 + int(np.count_nonzero(np.diff(idx) != 1)) if idx.size else 0


# --------------------------------------------------------------------------------------
# StoryKFold
# --------------------------------------------------------------------------------------
def test_story_kfold_balanced_hand_example():
    # Largest first into the currently smallest fold (ties -> lowest fold):
    # A10->f0, B8->f1, C7->f2, D5->f2 (7<8<10), E4->f1 (8<10<12), F3->f0 (10<12=12).
    expected_tests = [{"A", "F"}, {"B", "E"}, {"C", "D"}]
    expected_sizes = [13, 12, 12]
    cv = StoryKFold(n_splits=3)
    splits = list(cv.split(N, GROUPS))
    assert len(splits) == 3 == cv.get_n_splits(N, GROUPS)
    assert [set(GROUPS[te]) for _, te in splits] == expected_tests
    assert [te.size for _, te in splits] == expected_sizes
    # stories in order of first appearance: D, A, F, C, B, E
    np.testing.assert_array_equal(cv.assign_folds(N, GROUPS), [2, 0, 0, 2, 1, 1])
    _check_partition(splits, N)


def test_story_kfold_keeps_stories_whole_interleaved_labels():
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 7, size=200)  # labels not contiguous in time
    splits = list(StoryKFold(n_splits=4, shuffle=True, seed=1).split(200, groups))
    _check_partition(splits, 200)
    for train, test in splits:
        assert set(groups[train]).isdisjoint(set(groups[test]))


@pytest.mark.parametrize("n_splits", [None, 6, 10])
def test_story_kfold_leave_one_story_out(n_splits):
    cv = StoryKFold(n_splits=n_splits)
    splits = list(cv.split(N, GROUPS))
    assert len(splits) == 6 == cv.get_n_splits(N, GROUPS)
    assert [set(GROUPS[te]) for _, te in splits] == [{s} for s in STORY_SIZES]
    _check_partition(splits, N)


def test_story_kfold_shuffle_seeded():
    groups = np.repeat(np.arange(12), 10 + np.arange(12))
    n = groups.size

    def partition(seed):
        return [frozenset(groups[te]) for _, te in StoryKFold(4, shuffle=True, seed=seed).split(n, groups)]

    assert partition(0) == partition(0)
    assert partition(0) != partition(1)
    # without shuffle the seed is irrelevant and the split is deterministic
    a = [te for _, te in StoryKFold(4, seed=0).split(n, groups)]
    b = [te for _, te in StoryKFold(4, seed=1).split(n, groups)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # shuffled dealing still balances to within one story's length
    sizes = [te.size for _, te in StoryKFold(4, shuffle=True, seed=5).split(n, groups)]
    assert max(sizes) - min(sizes) <= 21
    _check_partition(list(StoryKFold(4, shuffle=True, seed=5).split(n, groups)), n)


def test_story_kfold_errors():
    with pytest.raises(ValueError, match="stories"):
        list(StoryKFold(3).split(N))
    with pytest.raises(ValueError, match="n_splits >= 2.*got 1"):
        StoryKFold(n_splits=1)
    with pytest.raises(ValueError, match="at least 2 stories.*found 1"):
        list(StoryKFold(3).split(5, ["a"] * 5))
    with pytest.raises(ValueError, match=r"shape \(37,\)"):
        list(StoryKFold(3).split(N, GROUPS[:-1]))
    assert repr(StoryKFold(3, shuffle=True, seed=2)) == "StoryKFold(n_splits=3, shuffle=True, seed=2)"


# --------------------------------------------------------------------------------------
# ChunkKFold
# --------------------------------------------------------------------------------------
def test_contiguous_chunks_hand_example():
    starts, stops = contiguous_chunks(N, 4, GROUPS)
    # D: 0-5 -> [0,4) [4,5); A: 5-15 -> [5,9) [9,13) [13,15); F: 15-18 -> [15,18);
    # C: 18-25 -> [18,22) [22,25); B: 25-33 -> [25,29) [29,33); E: 33-37 -> [33,37)
    np.testing.assert_array_equal(starts, [0, 4, 5, 9, 13, 15, 18, 22, 25, 29, 33])
    np.testing.assert_array_equal(stops, [4, 5, 9, 13, 15, 18, 22, 25, 29, 33, 37])
    starts, stops = contiguous_chunks(10, 4)
    np.testing.assert_array_equal(starts, [0, 4, 8])
    np.testing.assert_array_equal(stops, [4, 8, 10])


def test_chunk_kfold_chunks_within_stories_and_cover():
    cv = ChunkKFold(chunk_length=4, n_splits=3, seed=0)
    splits = list(cv.split(N, GROUPS))
    assert len(splits) == 3 == cv.get_n_splits()
    _check_partition(splits, N)
    starts, stops = contiguous_chunks(N, 4, GROUPS)
    chunk_of = np.repeat(np.arange(starts.size), stops - starts)
    for _, test in splits:
        # test sets are unions of whole chunks, each chunk inside one story
        held = np.unique(chunk_of[test])
        assert np.sum(stops[held] - starts[held]) == test.size
        for c in held:
            assert len(set(GROUPS[starts[c]:stops[c]])) == 1
    # 11 chunks dealt round-robin into 3 folds: 4, 4, 3 chunks
    assert sorted(np.unique(chunk_of[te]).size for _, te in splits) == [3, 4, 4]


def test_chunk_kfold_without_groups_contiguous_chunks():
    splits = list(ChunkKFold(chunk_length=20, n_splits=5, seed=2).split(1000))
    _check_partition(splits, 1000)
    for _, test in splits:
        assert test.size == 200
        # each test set is a union of aligned 20-TR chunks
        assert np.all(test.reshape(-1, 20) == test.reshape(-1, 20)[:, :1] + np.arange(20))
        assert np.all(test.reshape(-1, 20)[:, 0] % 20 == 0)


def test_chunk_kfold_seeded():
    a = [te for _, te in ChunkKFold(10, 4, seed=7).split(500)]
    b = [te for _, te in ChunkKFold(10, 4, seed=7).split(500)]
    c = [te for _, te in ChunkKFold(10, 4, seed=8).split(500)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_chunk_kfold_too_few_chunks():
    with pytest.raises(ValueError, match="3 chunks.*n_splits=5"):
        list(ChunkKFold(chunk_length=20, n_splits=5).split(50))
    with pytest.raises(ValueError):
        ChunkKFold(n_splits=1)
    assert repr(ChunkKFold(20, 5, 0)) == "ChunkKFold(chunk_length=20, n_splits=5, seed=0)"


# --------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------
def test_bootstrap_holds_out_n_chunks():
    cv = Bootstrap(n_boots=6, chunk_length=40, n_chunks=5, seed=0)
    splits = list(cv.split(40 * 12))
    assert len(splits) == 6 == cv.get_n_splits()
    tests = []
    for train, test in splits:
        assert test.size == 5 * 40
        assert train.size == 480 - 200
        assert np.intersect1d(train, test).size == 0
        np.testing.assert_array_equal(np.union1d(train, test), np.arange(480))
        assert _runs(test) <= 5 and np.all(test.reshape(5, 40)[:, 0] % 40 == 0)
        tests.append(test)
    assert len({t.tobytes() for t in tests}) > 1  # different chunks per bootstrap
    again = [te for _, te in Bootstrap(6, 40, 5, seed=0).split(480)]
    other = [te for _, te in Bootstrap(6, 40, 5, seed=1).split(480)]
    assert all(np.array_equal(x, y) for x, y in zip(tests, again))
    assert not all(np.array_equal(x, y) for x, y in zip(tests, other))


def test_bootstrap_respects_groups():
    groups = np.repeat([0, 1, 2], [45, 50, 33])  # chunks of 10: 5 + 5 + 4 = 14 chunks
    starts, _ = contiguous_chunks(128, 10, groups)
    assert starts.size == 14
    for _, test in Bootstrap(n_boots=20, chunk_length=10, n_chunks=13, seed=3).split(128, groups):
        # only one chunk is left in training: its complement
        train = np.setdiff1d(np.arange(128), test)
        assert 1 <= train.size <= 10
        assert len(set(groups[train])) == 1 and _runs(train) == 1


def test_bootstrap_too_few_chunks():
    with pytest.raises(ValueError, match=r"10 chunks.*n_chunks=10.*at least 11"):
        list(Bootstrap(n_boots=2, chunk_length=40, n_chunks=10).split(400))
    list(Bootstrap(n_boots=2, chunk_length=40, n_chunks=9).split(400))  # 10 chunks: enough
    assert "n_chunks=125" in repr(Bootstrap())


# --------------------------------------------------------------------------------------
# check_cv
# --------------------------------------------------------------------------------------
def test_check_cv_int_with_and_without_groups():
    with_groups = check_cv(3, N, GROUPS)
    expected = list(StoryKFold(3).split(N, GROUPS))
    assert len(with_groups) == 3
    for (tr, te), (etr, ete) in zip(with_groups, expected):
        np.testing.assert_array_equal(tr, etr)
        np.testing.assert_array_equal(te, ete)
    no_groups = check_cv(5, 200)
    expected = list(ChunkKFold(n_splits=5).split(200))
    assert len(no_groups) == 5
    for (tr, te), (etr, ete) in zip(no_groups, expected):
        np.testing.assert_array_equal(te, ete)


def test_check_cv_splitter_and_explicit_pairs():
    splits = check_cv(Bootstrap(3, 10, 2, seed=0), 100)
    assert len(splits) == 3 and all(te.size == 20 for _, te in splits)
    pairs = [([5, 3, 4], [0, 1]), (np.array([0, 1, 2]), np.array([4]))]
    out = check_cv(pairs, 6)
    np.testing.assert_array_equal(out[0][0], [3, 4, 5])
    assert out[0][0].dtype == np.int64
    np.testing.assert_array_equal(out[1][1], [4])


@pytest.mark.parametrize(
    "pairs, match",
    [
        ([([0, 1, 2], [2, 3])], "share 1 indices"),
        ([([0, 1], [2, 10])], r"\[0, 6\).*\[2, 10\]"),
        ([([0, 1], [-1, 2])], r"\[0, 6\)"),
        ([([0, 1], [])], "test indices are empty"),
        ([([0, 0, 1], [2])], "duplicates"),
        ([([0.5, 1.0], [2])], "integers"),
        ([], "no splits"),
    ],
)
def test_check_cv_validation_errors(pairs, match):
    with pytest.raises(ValueError, match=match):
        check_cv(pairs, 6)


def test_check_cv_type_errors():
    with pytest.raises(TypeError):
        check_cv(True, 10)
    with pytest.raises(TypeError):
        check_cv(3.5, 10)
