"""Cross-validation splitters over TRs: story-grouped K-fold, chunked K-fold, bootstrap.

Every splitter follows the scikit-learn protocol loosely: ``split(n_samples, stories)``
yields ``(train_idx, test_idx)`` pairs of sorted ``int64`` indices into the TR axis,
``get_n_splits`` says how many pairs ``split`` yields. All randomness comes from
:func:`numpy.random.default_rng` seeded by the splitter's ``seed``, so calling ``split``
twice on the same input yields the same folds (LITcoder's folds were unseeded).

``stories`` is always a per-TR story label, shape ``(n_samples,)``. Chunk-based
splitters cut the time axis into contiguous chunks that never straddle a story boundary
(a boundary is any place where the label changes between consecutive TRs), so a held-out
chunk never contains the end of one story and the start of the next.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Bootstrap",
    "ChunkKFold",
    "Splitter",
    "StoryKFold",
    "check_cv",
    "contiguous_chunks",
]

Split = tuple[np.ndarray, np.ndarray]


@runtime_checkable
class Splitter(Protocol):
    """What :func:`check_cv` accepts as a splitter object."""

    def split(self, n_samples: int, stories: Any = None) -> Iterator[Split]: ...

    def get_n_splits(self, n_samples: int | None = None, stories: Any = None) -> int: ...


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _check_n_samples(n_samples: Any) -> int:
    if isinstance(n_samples, (bool, np.bool_)) or not isinstance(n_samples, (int, np.integer)):
        raise TypeError(f"n_samples must be an int (the number of TRs), got {type(n_samples).__name__}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    return int(n_samples)


def _check_stories(stories: Any, n_samples: int) -> np.ndarray:
    g = np.asarray(stories)
    if g.ndim != 1 or g.shape[0] != n_samples:
        raise ValueError(
            f"stories must be a 1-D array of story labels with one entry per sample "
            f"(shape ({n_samples},)), got shape {g.shape}"
        )
    return g


def _check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _segments(n_samples: int, stories: Any) -> tuple[np.ndarray, np.ndarray]:
    """Starts and stops of the maximal runs of equal consecutive story labels.

    Returns
    -------
    starts, stops : (n_segments,) int64 arrays
        Without ``stories`` the whole axis is one segment ``[0, n_samples)``.
    """
    if stories is None:
        return np.array([0], dtype=np.int64), np.array([n_samples], dtype=np.int64)
    g = _check_stories(stories, n_samples)
    change = np.flatnonzero(g[1:] != g[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    stops = np.concatenate([change, [n_samples]]).astype(np.int64)
    return starts, stops


def contiguous_chunks(n_samples: int, chunk_length: int, stories: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``[0, n_samples)`` into contiguous chunks that never straddle a story boundary.

    Parameters
    ----------
    n_samples : int
        Number of TRs.
    chunk_length : int
        Chunk length in TRs; the last chunk of each story (or of the whole axis when
        ``stories`` is None) may be shorter.
    stories : (n_samples,) array-like or None
        Story label of each TR; chunks are cut within each run of equal labels.

    Returns
    -------
    starts, stops : (n_chunks,) int64 arrays
        Chunk ``c`` covers TRs ``starts[c]:stops[c]``, in time order.
    """
    n_samples = _check_n_samples(n_samples)
    chunk_length = _check_positive_int(chunk_length, "chunk_length")
    seg_starts, seg_stops = _segments(n_samples, stories)
    lengths = seg_stops - seg_starts
    n_per_seg = -(-lengths // chunk_length)  # ceil
    seg_of_chunk = np.repeat(np.arange(len(lengths)), n_per_seg)
    first_chunk = np.cumsum(n_per_seg) - n_per_seg
    rank = np.arange(seg_of_chunk.size) - first_chunk[seg_of_chunk]
    starts = seg_starts[seg_of_chunk] + rank * chunk_length
    stops = np.minimum(starts + chunk_length, seg_stops[seg_of_chunk])
    return starts.astype(np.int64), stops.astype(np.int64)


def _indices_of_chunks(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Sorted int64 indices covered by the chunks ``[starts[c], stops[c])``."""
    order = np.argsort(starts, kind="stable")
    starts, stops = starts[order], stops[order]
    lengths = stops - starts
    if lengths.sum() == 0:
        return np.empty(0, dtype=np.int64)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return (np.repeat(starts, lengths) + offsets).astype(np.int64)


def _complement(test: np.ndarray, n_samples: int) -> np.ndarray:
    mask = np.ones(n_samples, dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask).astype(np.int64)


# --------------------------------------------------------------------------------------
# splitters
# --------------------------------------------------------------------------------------
class StoryKFold:
    """K-fold cross-validation grouped by story, balanced by TR count.

    Each story goes wholly into one test fold. Stories are dealt one by one into the
    fold with the fewest TRs so far (ties: lowest fold index). With ``shuffle=False``
    stories are dealt largest first (ties in story order of first appearance), the
    classic longest-processing-time rule, which gives close-to-equal TR counts and is
    deterministic. With ``shuffle=True`` the story order is shuffled by
    ``np.random.default_rng(seed)`` and stories are dealt in that shuffled order (still
    into the currently smallest fold): the folds stay balanced to within one story's
    length, and different seeds give different partitions. (Shuffling and then sorting
    largest-first would only reorder stories of equal length, so the shuffle is not
    followed by a sort.)

    With ``n_splits=None`` or ``n_splits >= n_stories`` this is leave-one-story-out:
    one split per story, in order of first appearance (shuffled when ``shuffle=True``).

    Parameters
    ----------
    n_splits : int or None, default 5
        Number of folds (>= 2), or None for leave-one-story-out.
    shuffle : bool, default False
        Deal stories in a seeded random order instead of largest first.
    seed : int or None, default None
        Seed of the shuffle; None draws fresh entropy (not reproducible).
    """

    def __init__(self, n_splits: int | None = 5, shuffle: bool = False, seed: int | None = None) -> None:
        if n_splits is not None:
            if isinstance(n_splits, (bool, np.bool_)) or not isinstance(n_splits, (int, np.integer)):
                raise TypeError(f"StoryKFold n_splits must be an int or None, got {type(n_splits).__name__}")
            if n_splits < 2:
                raise ValueError(f"StoryKFold needs n_splits >= 2 (or None for leave-one-story-out), got {n_splits}")
            n_splits = int(n_splits)
        self.n_splits = n_splits
        self.shuffle = bool(shuffle)
        self.seed = seed

    def __repr__(self) -> str:
        return f"StoryKFold(n_splits={self.n_splits}, shuffle={self.shuffle}, seed={self.seed})"

    def _stories(self, n_samples: int, stories: Any) -> tuple[np.ndarray, np.ndarray]:
        """Story index of each sample (in order of first appearance) and story sizes."""
        if stories is None:
            raise ValueError(
                "StoryKFold needs stories: a (n_samples,) array giving the story label of every TR"
            )
        g = _check_stories(stories, n_samples)
        _, first, inverse, counts = np.unique(g, return_index=True, return_inverse=True, return_counts=True)
        order = np.argsort(first, kind="stable")  # unique labels -> order of first appearance
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        story = rank[inverse.reshape(-1)]
        sizes = counts[order]
        if sizes.size < 2:
            raise ValueError(f"StoryKFold needs at least 2 stories in stories, found {sizes.size}")
        return story.astype(np.int64), sizes.astype(np.int64)

    def assign_folds(self, n_samples: int, stories: Any) -> np.ndarray:
        """Fold of each story.

        Parameters
        ----------
        n_samples : int
        stories : (n_samples,) array-like
            Story label of each TR.

        Returns
        -------
        fold_of_story : (n_stories,) int64 array
            Fold index of each story, stories in order of first appearance in ``stories``.
        """
        n_samples = _check_n_samples(n_samples)
        _, sizes = self._stories(n_samples, stories)
        return self._assign(sizes)

    def _assign(self, sizes: np.ndarray) -> np.ndarray:
        n_stories = sizes.size
        rng = np.random.default_rng(self.seed) if self.shuffle else None
        if self.n_splits is None or self.n_splits >= n_stories:
            order = rng.permutation(n_stories) if rng is not None else np.arange(n_stories)
            fold = np.empty(n_stories, dtype=np.int64)
            fold[order] = np.arange(n_stories)
            return fold
        if rng is not None:
            order = rng.permutation(n_stories)
        else:
            order = np.argsort(-sizes, kind="stable")
        totals = np.zeros(self.n_splits, dtype=np.int64)
        fold = np.empty(n_stories, dtype=np.int64)
        for s in order:  # loop over stories (tens), not voxels or TRs
            f = int(np.argmin(totals))
            fold[s] = f
            totals[f] += sizes[s]
        return fold

    def get_n_splits(self, n_samples: int | None = None, stories: Any = None) -> int:
        """Number of splits; needs ``stories`` when ``n_splits`` is None.

        Parameters
        ----------
        n_samples : int, optional
        stories : (n_samples,) array-like, optional
            Story labels; when given the result is ``min(n_splits, n_stories)``.
        """
        if stories is None:
            if self.n_splits is None:
                raise ValueError("StoryKFold(n_splits=None) is leave-one-story-out: pass stories to count the splits")
            return self.n_splits
        g = np.asarray(stories)
        n_stories = np.unique(g).size
        return n_stories if self.n_splits is None else min(self.n_splits, n_stories)

    def split(self, n_samples: int, stories: Any = None) -> Iterator[Split]:
        """Yield ``(train_idx, test_idx)``, one pair per fold.

        Parameters
        ----------
        n_samples : int
            Number of TRs.
        stories : (n_samples,) array-like
            Story label of each TR (required).

        Yields
        ------
        train_idx, test_idx : sorted int64 arrays
        """
        n_samples = _check_n_samples(n_samples)
        story, sizes = self._stories(n_samples, stories)
        fold_of_sample = self._assign(sizes)[story]
        for f in range(int(fold_of_sample.max()) + 1):
            test_mask = fold_of_sample == f
            yield np.flatnonzero(~test_mask).astype(np.int64), np.flatnonzero(test_mask).astype(np.int64)


class ChunkKFold:
    """K-fold over shuffled contiguous chunks of TRs (LITcoder's inner folds, seeded).

    The time axis is cut into chunks of ``chunk_length`` TRs (within each story when
    ``stories`` is given: a story's last chunk may be shorter, and no chunk straddles a
    story boundary). The chunks are shuffled with ``np.random.default_rng(seed)`` and
    dealt round-robin into ``n_splits`` folds, so fold sizes differ by at most one chunk.

    Parameters
    ----------
    chunk_length : int, default 20
        Chunk length in TRs.
    n_splits : int, default 5
        Number of folds (>= 2).
    seed : int or None, default 0
        Seed of the chunk shuffle.
    """

    def __init__(self, chunk_length: int = 20, n_splits: int = 5, seed: int | None = 0) -> None:
        self.chunk_length = _check_positive_int(chunk_length, "ChunkKFold chunk_length")
        self.n_splits = _check_positive_int(n_splits, "ChunkKFold n_splits", minimum=2)
        self.seed = seed

    def __repr__(self) -> str:
        return f"ChunkKFold(chunk_length={self.chunk_length}, n_splits={self.n_splits}, seed={self.seed})"

    def get_n_splits(self, n_samples: int | None = None, stories: Any = None) -> int:
        """Number of splits (``n_splits``)."""
        return self.n_splits

    def split(self, n_samples: int, stories: Any = None) -> Iterator[Split]:
        """Yield ``(train_idx, test_idx)``, one pair per fold.

        Parameters
        ----------
        n_samples : int
            Number of TRs.
        stories : (n_samples,) array-like, optional
            Story label of each TR; chunks never straddle a story boundary.

        Yields
        ------
        train_idx, test_idx : sorted int64 arrays
        """
        n_samples = _check_n_samples(n_samples)
        starts, stops = contiguous_chunks(n_samples, self.chunk_length, stories)
        n_chunks = starts.size
        if n_chunks < self.n_splits:
            raise ValueError(
                f"ChunkKFold: {n_samples} samples in chunks of {self.chunk_length} TRs give {n_chunks} chunks, "
                f"fewer than n_splits={self.n_splits}"
            )
        perm = np.random.default_rng(self.seed).permutation(n_chunks)
        for f in range(self.n_splits):
            held = perm[f::self.n_splits]
            test = _indices_of_chunks(starts[held], stops[held])
            yield _complement(test, n_samples), test


class Bootstrap:
    """HuthLab-style bootstrap: hold out random chunks, train on the rest.

    The time axis is cut into chunks of ``chunk_length`` TRs (within each story when
    ``stories`` is given, as in :class:`ChunkKFold`). Each of the ``n_boots`` splits holds
    out ``n_chunks`` distinct chunks drawn without replacement and trains on all other
    TRs. One ``np.random.default_rng(seed)`` drives all splits, so ``split`` is
    reproducible; test sets of different splits may overlap.

    Parameters
    ----------
    n_boots : int, default 50
        Number of splits.
    chunk_length : int, default 40
        Chunk length in TRs.
    n_chunks : int, default 125
        Chunks held out per split; at least ``n_chunks + 1`` chunks must exist.
    seed : int or None, default 0
    """

    def __init__(self, n_boots: int = 50, chunk_length: int = 40, n_chunks: int = 125, seed: int | None = 0) -> None:
        self.n_boots = _check_positive_int(n_boots, "Bootstrap n_boots")
        self.chunk_length = _check_positive_int(chunk_length, "Bootstrap chunk_length")
        self.n_chunks = _check_positive_int(n_chunks, "Bootstrap n_chunks")
        self.seed = seed

    def __repr__(self) -> str:
        return (f"Bootstrap(n_boots={self.n_boots}, chunk_length={self.chunk_length}, "
                f"n_chunks={self.n_chunks}, seed={self.seed})")

    def get_n_splits(self, n_samples: int | None = None, stories: Any = None) -> int:
        """Number of splits (``n_boots``)."""
        return self.n_boots

    def split(self, n_samples: int, stories: Any = None) -> Iterator[Split]:
        """Yield ``(train_idx, test_idx)``, one pair per bootstrap.

        Parameters
        ----------
        n_samples : int
            Number of TRs.
        stories : (n_samples,) array-like, optional
            Story label of each TR; chunks never straddle a story boundary.

        Yields
        ------
        train_idx, test_idx : sorted int64 arrays
        """
        n_samples = _check_n_samples(n_samples)
        starts, stops = contiguous_chunks(n_samples, self.chunk_length, stories)
        total = starts.size
        if total < self.n_chunks + 1:
            raise ValueError(
                f"Bootstrap: {n_samples} samples in chunks of {self.chunk_length} TRs give {total} chunks; "
                f"holding out n_chunks={self.n_chunks} needs at least {self.n_chunks + 1}"
            )
        rng = np.random.default_rng(self.seed)
        for _ in range(self.n_boots):
            held = rng.choice(total, size=self.n_chunks, replace=False)
            test = _indices_of_chunks(starts[held], stops[held])
            yield _complement(test, n_samples), test


# --------------------------------------------------------------------------------------
# check_cv
# --------------------------------------------------------------------------------------
def _validate_pair(pair: Any, k: int, n_samples: int) -> Split:
    try:
        train, test = pair
    except (TypeError, ValueError):
        raise ValueError(f"cv split {k} must be a (train_idx, test_idx) pair, got {type(pair).__name__}") from None
    out = []
    for name, idx in (("train", train), ("test", test)):
        a = np.asarray(idx)
        if a.ndim != 1:
            raise ValueError(f"cv split {k}: {name} indices must be 1-D, got shape {a.shape}")
        if a.size == 0:
            raise ValueError(f"cv split {k}: {name} indices are empty")
        if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"cv split {k}: {name} indices must be integers, got dtype {a.dtype}")
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= n_samples:
            raise ValueError(
                f"cv split {k}: {name} indices must lie in [0, {n_samples}), found range [{lo}, {hi}]"
            )
        s = np.sort(a.astype(np.int64))
        if np.any(s[1:] == s[:-1]):
            raise ValueError(f"cv split {k}: {name} indices contain duplicates")
        out.append(s)
    overlap = np.intersect1d(out[0], out[1], assume_unique=True)
    if overlap.size:
        raise ValueError(
            f"cv split {k}: train and test share {overlap.size} indices (first: {overlap[:5].tolist()})"
        )
    return out[0], out[1]


def check_cv(cv: int | Splitter | Iterable[Any], n_samples: int, stories: Any = None) -> list[Split]:
    """Turn a cross-validation specification into an explicit list of splits.

    Parameters
    ----------
    cv : int, splitter object, or iterable of (train_idx, test_idx) pairs
        - int: ``StoryKFold(n_splits=cv)`` when ``stories`` is given, else
          ``ChunkKFold(n_splits=cv)`` (20-TR chunks, seed 0).
        - an object with ``split(n_samples, stories)`` (:class:`StoryKFold`,
          :class:`ChunkKFold`, :class:`Bootstrap`, or your own).
        - explicit pairs of integer index arrays.
    n_samples : int
        Number of TRs.
    stories : (n_samples,) array-like, optional
        Story label of each TR.

    Returns
    -------
    splits : list of (train_idx, test_idx)
        Sorted int64 arrays; every pair is checked: indices in ``[0, n_samples)``, no
        duplicates, train and test non-empty and disjoint.
    """
    n_samples = _check_n_samples(n_samples)
    if stories is not None:
        _check_stories(stories, n_samples)
    if isinstance(cv, (bool, np.bool_)):
        raise TypeError("cv must be an int, a splitter or a list of (train, test) pairs, got a bool")
    if isinstance(cv, (int, np.integer)):
        splitter: Any = StoryKFold(n_splits=int(cv)) if stories is not None else ChunkKFold(n_splits=int(cv))
        pairs: Iterable[Any] = splitter.split(n_samples, stories)
    elif hasattr(cv, "split") and callable(cv.split):
        pairs = cv.split(n_samples, stories)
    elif isinstance(cv, Iterable) and not isinstance(cv, (str, bytes, np.ndarray)):
        pairs = cv
    else:
        raise TypeError(
            f"cv must be an int, a splitter with split(n_samples, stories), or a list of (train, test) pairs; "
            f"got {type(cv).__name__}"
        )
    splits = [_validate_pair(p, k, n_samples) for k, p in enumerate(pairs)]
    if not splits:
        raise ValueError("cv gave no splits")
    return splits
