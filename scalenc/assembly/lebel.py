"""Reader for the LeBel et al. (2023) dataset, OpenNeuro ds003020.

Layout read (relative to ``root``)::

    derivative/respdict.json                          story -> acquired TR count N
    derivative/TextGrids/<story>.TextGrid             phone and word tiers
    derivative/preprocessed_data/<subject>/<story>.hf5   dataset "data": (rows, voxels)
    stimuli/<story>.wav                               optional audio

Timing convention of the dataset's public loader (all named parameters of :func:`build`):

- ``skipped_triggers`` = 5: per story, ``N - 5`` TR triggers are simulated;
- ``sound_onset`` = 10 s: the sound starts 10 s after the first trigger, so TR ``k`` has
  its centre at ``k * tr - sound_onset + tr / 2`` on the TextGrid clock;
- ``trim`` = (10, 5): features are computed on those ``N - 5`` grid times and rows
  ``[10:-5]`` are kept, ``N - 20`` rows: exactly the row count of each response file.

The assembly stores the full grid (``tr_times(story)``, N - 5 points) and the responses
with ``grid_offset = 10``, so the tutorials' ``trimming_config`` (features ``[10:-5]``,
targets ``[0:]``) lines features up with responses. Every response file's row count is
checked against ``N - 20``. The repeated test story may hold ``k`` repeats, stacked as
``k * (N - 20)`` rows or as a 3-D (repeat, tr, voxel) dataset: they are kept as a
``repeat`` dimension and their mean is the story's response.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from .textgrid import TextGridError, read_phones, read_words
from .writer import DEFAULT_VOXEL_CHUNK, AssemblyError, AssemblyWriter

logger = logging.getLogger(__name__)

TR_SECONDS = 2.0
SOUND_ONSET = 10.0
SKIPPED_TRIGGERS = 5
TRIM = (10, 5)
TEST_STORIES = ("wheretheressmoke",)


def grid_times(n_acquired: int, *, tr: float = TR_SECONDS, sound_onset: float = SOUND_ONSET,
               skipped_triggers: int = SKIPPED_TRIGGERS) -> np.ndarray:
    """TR-centre times of the simulated trigger grid of one story.

    Parameters
    ----------
    n_acquired : int
        Acquired TR count N of the story (``respdict.json``).

    Returns
    -------
    t : (N - skipped_triggers,) float64
        ``k * tr - sound_onset + tr / 2`` seconds on the TextGrid clock.
    """
    n = int(n_acquired) - int(skipped_triggers)
    if n <= 0:
        raise AssemblyError(f"acquired TR count {n_acquired} leaves no grid after {skipped_triggers} skipped triggers")
    return np.arange(n) * float(tr) - float(sound_onset) + float(tr) / 2


def expected_rows(n_acquired: int, *, skipped_triggers: int = SKIPPED_TRIGGERS, trim=TRIM) -> int:
    """Response rows of a story: ``N - skipped_triggers - trim[0] - trim[1]`` (N - 20)."""
    return int(n_acquired) - int(skipped_triggers) - int(trim[0]) - int(trim[1])


def paths(root: str | os.PathLike, subject: str, story: str) -> dict[str, Path]:
    """The files of one story in a ds003020 tree."""
    root = Path(root)
    der = root / "derivative"
    return dict(respdict=der / "respdict.json", textgrid=der / "TextGrids" / f"{story}.TextGrid",
                hf5=der / "preprocessed_data" / subject / f"{story}.hf5", wav=root / "stimuli" / f"{story}.wav")


def read_respdict(root: str | os.PathLike) -> dict[str, int]:
    p = Path(root) / "derivative" / "respdict.json"
    if not p.exists():
        raise AssemblyError(f"{p} not found: is {root} a ds003020 (LeBel) tree?")
    try:
        d = json.loads(p.read_text())
        return {str(k): int(v) for k, v in d.items()}
    except (ValueError, TypeError, AttributeError) as e:
        raise AssemblyError(f"{p}: not a JSON object story -> TR count ({e})") from e


class _StackedRepeats:
    """View (k * n, v) rows as (k, n, v) repeats, reading one repeat at a time."""

    def __init__(self, ds, k: int, n: int):
        self._ds, self._n = ds, n
        self.shape = (k, n, ds.shape[1])

    def __getitem__(self, r: int) -> np.ndarray:
        return self._ds.astype("f4")[r * self._n:(r + 1) * self._n]


def build(root: str | os.PathLike, subject: str, out: str | os.PathLike, stories: Sequence[str] | None = None,
          test_stories: Sequence[str] = TEST_STORIES, *, tr: float = TR_SECONDS, sound_onset: float = SOUND_ONSET,
          skipped_triggers: int = SKIPPED_TRIGGERS, trim: tuple[int, int] = TRIM,
          voxel_chunk: int = DEFAULT_VOXEL_CHUNK, audio_dir: str | os.PathLike | None = None,
          overwrite: bool = False, progress: bool = True) -> Path:
    """Build a scalenc assembly of one subject from a ds003020 tree, story by story.

    Parameters
    ----------
    root : path-like
        Dataset root (holds ``derivative/``).
    subject : str
        E.g. ``"UTS03"``.
    out : path-like
        Output ``.zarr`` store (written atomically: nothing appears on failure).
    stories : sequence of str, optional
        Stories to read. Default: every story of ``respdict.json`` that has a response
        file for ``subject`` (stories without one are skipped with a warning listing them). Listed
        stories must all exist.
    test_stories : sequence of str
        Held-out stories (default ``("wheretheressmoke",)``); they are written last.
        Test stories absent from the selection are ignored.
    tr, sound_onset, skipped_triggers, trim
        Timing convention (module docstring).
    voxel_chunk : int
        Voxels per zarr chunk.
    audio_dir : path-like, optional
        Folder of ``<story>.wav``; default ``root/stimuli`` when it exists.
    overwrite : bool
        Replace an existing ``out``.

    Returns
    -------
    out : Path
    """
    root = Path(root)
    resp = read_respdict(root)
    subj_dir = root / "derivative" / "preprocessed_data" / subject
    if stories is None:
        if not subj_dir.is_dir():
            raise AssemblyError(f"{subj_dir} not found: no responses for subject {subject!r}")
        stories = [s for s in resp if (subj_dir / f"{s}.hf5").exists()]
        skipped = [s for s in resp if s not in stories]
        if skipped:
            msg = (f"{subj_dir}: {len(skipped)} of {len(resp)} stories of respdict.json have no response file "
                   f"and are skipped: {', '.join(skipped)}")
            warnings.warn(msg, stacklevel=2)  # once: the command line shows warnings as log lines
        if not stories:
            raise AssemblyError(f"{subj_dir}: no <story>.hf5 file for any story of respdict.json")
    stories = list(stories)
    unknown = [s for s in stories if s not in resp]
    if unknown:
        raise AssemblyError(f"stories {unknown} are not in {root / 'derivative' / 'respdict.json'}")
    test = [s for s in test_stories if s in stories]
    order = [s for s in stories if s not in test] + test
    # check every file exists before writing anything
    for s in order:
        p = paths(root, subject, s)
        for key in ("hf5", "textgrid"):
            if not p[key].exists():
                raise AssemblyError(f"story {s!r}: missing {key} file {p[key]}")
    audio_root = Path(audio_dir) if audio_dir is not None else root / "stimuli"

    first = paths(root, subject, order[0])["hf5"]
    n_vox = _data_shape(first, order[0])[-1]
    timing = dict(convention="ds003020 public loader", tr=tr, sound_onset=sound_onset,
                  skipped_triggers=skipped_triggers, trim=list(trim))
    with AssemblyWriter(out, dataset="lebel", subject=subject, tr_seconds=tr, n_voxels=n_vox,
                        test_stories=test, voxel_chunk=voxel_chunk, timing=timing,
                        attrs=dict(source_root=str(root)), overwrite=overwrite) as w:
        for s in tqdm(order, desc=f"{subject} stories", unit="story", disable=not progress):
            p = paths(root, subject, s)
            n_acq = resp[s]
            grid = grid_times(n_acq, tr=tr, sound_onset=sound_onset, skipped_triggers=skipped_triggers)
            n_rows = expected_rows(n_acq, skipped_triggers=skipped_triggers, trim=trim)
            try:
                words, ws, we = read_words(p["textgrid"])
            except TextGridError as e:
                raise AssemblyError(f"story {s!r}: {e}") from e
            try:
                phones = read_phones(p["textgrid"])
            except (TextGridError, ValueError) as e:
                warnings.warn(f"story {s!r}: phone tier unreadable, phones not stored ({e})", stacklevel=2)
                phones = None
            wav = audio_root / f"{s}.wav"
            try:
                f = h5py.File(p["hf5"], "r")
            except OSError as e:
                raise AssemblyError(f"story {s!r}: cannot read {p['hf5']} as HDF5 ({e})") from e
            with f:
                data = _get_data(f, p["hf5"], s)
                bold = _as_story_responses(data, s, p["hf5"], n_rows, n_acq, repeated_ok=s in test)
                w.add_story(s, bold, tr_time=grid[trim[0]:trim[0] + n_rows], grid_time=grid, grid_offset=trim[0],
                            words=words, word_start=ws, word_end=we, phones=phones,
                            audio_path=str(wav) if wav.exists() else None, source=str(p["hf5"]))
    return Path(out)


def _data_shape(path: Path, story: str) -> tuple[int, ...]:
    try:
        with h5py.File(path, "r") as f:
            return tuple(_get_data(f, path, story).shape)
    except OSError as e:
        raise AssemblyError(f"story {story!r}: cannot read {path} as HDF5 ({e})") from e


def _get_data(f: h5py.File, path: Path, story: str):
    if "data" not in f:
        raise AssemblyError(f"story {story!r}: {path} has no dataset 'data' (found: {sorted(f.keys())})")
    ds = f["data"]
    if ds.ndim not in (2, 3) or ds.dtype.kind != "f":
        raise AssemblyError(f"story {story!r}: {path} 'data' must be a 2-D (tr, voxel) or 3-D (repeat, tr, voxel) "
                            f"float array, found shape {ds.shape} dtype {ds.dtype}")
    return ds


def _as_story_responses(ds, story: str, path: Path, n_rows: int, n_acq: int, *, repeated_ok: bool):
    """Check the row count against the timing convention; return the 2-D dataset or a
    (repeat, tr, voxel) view for a repeated test story."""
    how = f"expected N - 20 = {n_rows} rows for N = {n_acq} acquired TRs (respdict.json)"
    if ds.ndim == 3:
        if ds.shape[1] != n_rows:
            raise AssemblyError(f"story {story!r}: {path} has {ds.shape[1]} rows per repeat, {how}")
        if not repeated_ok:
            raise AssemblyError(f"story {story!r}: {path} has {ds.shape[0]} repeats but is not a test story")
        return ds
    rows = ds.shape[0]
    if rows == n_rows:
        return ds
    if repeated_ok and rows > n_rows and rows % n_rows == 0:
        k = rows // n_rows
        logger.info("story %s: %d rows = %d repeats of %d; keeping the repeats and their mean", story, rows, k, n_rows)
        return _StackedRepeats(ds, k, n_rows)
    raise AssemblyError(f"story {story!r}: {path} has {rows} rows, {how}")
