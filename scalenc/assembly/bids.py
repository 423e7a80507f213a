"""Generic reader for BIDS / fMRIPrep naturalistic-listening data (NIfTI or GIFTI).

One story is one run: a 4-D BOLD NIfTI with a brain mask (or a pair of GIFTI
hemispheres), the story's onset in the scan (``events.tsv`` or a number), word timings (a
Praat TextGrid, a CSV/TSV of word, onset, offset, or Gentle's ``align.json``) and
optionally the stimulus audio. :func:`build` writes them as a scalenc assembly, one run at
a time (peak memory: about one run's masked responses plus one time block of its image).

Timing conventions (all named parameters of :class:`Run` / :func:`build`)
-------------------------------------------------------------------------
The assembly's clock is the **stimulus clock**: second 0 is the start of the story's audio,
so word times and audio features need no shift. With ``onset`` the story's start in the
scan (seconds from the first volume, the BIDS ``events.tsv`` convention) and TR the
repetition time, volume ``k`` (0-based, counting the volumes of the file) has the time

    ``tr_time[k] = k * TR + volume_time_shift * TR - onset``

with ``volume_time = "centre"`` (shift 1/2, the LeBel reader's convention) or ``"start"``
(shift 0). ``skip_volumes`` drops the first volumes (e.g. Le Petit Prince's 4 volumes
before the stimulus in LITcoder). Word times are taken relative to the audio
(``word_clock="audio"``); ``word_clock="scan"`` says they are seconds from the first
volume, and ``onset`` is subtracted. The feature grid is the response grid
(``grid_offset = 0``).

Checks (each a one-line :class:`BIDSError` naming the file): missing files (all checked
before anything is written); the TR of the ``_bold.json`` sidecar against a ``tr``
parameter; a mask whose shape or affine differs from the image's; GIFTI hemispheres with
different volume counts; a run whose volumes do not cover the story (onset + last word
end, or the ``events.tsv`` duration) or differ from ``expected_volumes``; alignments with
missing times. Unaligned words of a Gentle alignment are dropped and counted (a warning).

Preprocessing per run, in this order: optional confound regression with nilearn
(``confounds``: a strategy for :func:`nilearn.interfaces.fmriprep.load_confounds`, applied
with :func:`nilearn.signal.clean`), optional detrending / high-pass, then z-scoring over
time (``zscore=True``, population SD; constant voxels stay 0 and are flagged).

Voxel coordinates are kept for brain maps: ``mask_indices`` (C-order flat indices into
the volume), and ``voxel_space`` = ``{"kind": "volume", "shape", "affine", "order": "C"}``;
surface data carry ``hemi`` and ``vertex`` per voxel and ``{"kind": "surface", ...}``.
``surface="fsaverage5"`` projects volumes onto nilearn's fsaverage5 pial meshes with
:func:`nilearn.surface.vol_to_surf` (LITcoder's choice), once per run, ``time_block``
volumes at a time (left then right hemisphere, 20,484 vertices).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import re
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .textgrid import TextGridError, read_words
from .writer import DEFAULT_VOXEL_CHUNK, AssemblyError, AssemblyWriter

logger = logging.getLogger(__name__)

VOLUME_TIME_SHIFT = {"centre": 0.5, "center": 0.5, "start": 0.0}
WORD_CLOCKS = ("audio", "scan")
#: Named confound strategies (keyword arguments of nilearn's ``load_confounds``).
CONFOUND_STRATEGIES: dict[str, dict[str, Any]] = {
    # Narratives authors: 6 motion parameters, cosine regressors, 5 + 5 anatomical CompCor
    "narratives": dict(strategy=("motion", "high_pass", "compcor"), motion="basic",
                       compcor="anat_separated", n_compcor=5),
    "motion": dict(strategy=("motion",), motion="basic"),
    "motion+cosine": dict(strategy=("motion", "high_pass"), motion="basic"),
}
TIME_BLOCK = 256
#: TextGrid labels that are not words beyond :data:`scalenc.assembly.textgrid.NON_WORD_LABELS`
#: (Le Petit Prince marks pauses with "#").
TEXTGRID_NON_WORDS = frozenset({"#"})


class BIDSError(AssemblyError):
    """A BIDS input is missing or inconsistent; the message names the file."""


@dataclass
class Run:
    """One story's files.

    Parameters
    ----------
    story : str
        Story name in the assembly.
    bold : path, or (left, right) paths
        A 4-D NIfTI, or GIFTI hemispheres (one data array per volume).
    words : path
        ``.TextGrid``, ``.csv`` / ``.tsv`` (columns word, onset, offset; ``start``/``end``
        accepted; a leading index column is ignored), or Gentle ``.json``.
    onset : float, optional
        Story onset in the scan, seconds from the first volume. Default: from ``events``.
    events : path, optional
        BIDS ``events.tsv``; the row whose ``trial_type`` is ``trial_type`` gives the onset
        (and ``duration``, checked against the volume count).
    trial_type : str
        Which events row is the story (default ``"story"``; a file with one row needs none).
    sidecar : path, optional
        ``_bold.json`` with ``RepetitionTime``. Default: the image's name with ``.json``.
    audio : path, optional
        Stimulus audio (for speech features).
    word_filter : (column, value), optional
        Keep only the rows of a CSV/TSV where ``column == value`` (e.g. ``("section", 3)``).
    expected_volumes : int, optional
        The run's volume count must equal it (e.g. Le Petit Prince's published counts).
    skip_volumes : int
        Volumes dropped from the start of the run.
    """

    story: str
    bold: Any
    words: Any
    onset: float | None = None
    events: Any = None
    trial_type: str | None = "story"
    sidecar: Any = None
    audio: Any = None
    word_filter: tuple[str, Any] | None = None
    expected_volumes: int | None = None
    skip_volumes: int = 0

    @property
    def is_surface(self) -> bool:
        return isinstance(self.bold, (tuple, list))

    @property
    def files(self) -> list[Path]:
        return [Path(b) for b in self.bold] if self.is_surface else [Path(self.bold)]


# ------------------------------------------------------------------------------ words
def read_gentle(path: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray, int]:
    """Words of a Gentle ``align.json``.

    Returns
    -------
    words : list of str
        The transcript's word (``word``), for aligned words only.
    start, end : (n,) float64
        Seconds on the audio clock.
    n_unaligned : int
        Words dropped because Gentle did not align them (``case`` other than
        ``"success"`` or no ``start``/``end``).
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        items = data["words"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BIDSError(f"{p}: not a Gentle alignment (JSON with a 'words' list): {e}") from e
    words, start, end, dropped = [], [], [], 0
    for i, w in enumerate(items):
        if not isinstance(w, Mapping) or "word" not in w:
            raise BIDSError(f"{p}: words[{i}] has no 'word'")
        if w.get("case", "success") != "success" or w.get("start") is None or w.get("end") is None:
            dropped += 1
            continue
        try:
            a, b = float(w["start"]), float(w["end"])
        except (TypeError, ValueError) as e:
            raise BIDSError(f"{p}: words[{i}] ({w['word']!r}) has non-numeric times") from e
        words.append(str(w["word"]))
        start.append(a)
        end.append(b)
    return words, np.asarray(start, np.float64), np.asarray(end, np.float64), dropped


def read_word_table(path: str | os.PathLike, *, word_filter: tuple[str, Any] | None = None
                    ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Words of a CSV/TSV with columns ``word``, ``onset``, ``offset`` (or ``start``,
    ``end``); the delimiter is sniffed, an unnamed leading index column is ignored.
    Rows with an empty word are skipped; a row with a missing or non-numeric time is an
    error naming the file and row."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise BIDSError(f"{p}: cannot read the word table ({e})") from e
    delim = "\t" if p.suffix.lower() == ".tsv" or ("\t" in text.splitlines()[0] if text else False) else ","
    rows = list(csv.reader(text.splitlines(), delimiter=delim))
    if not rows:
        raise BIDSError(f"{p}: empty word table")
    head = [h.strip().lower() for h in rows[0]]

    def col(*names):
        for n in names:
            if n in head:
                return head.index(n)
        raise BIDSError(f"{p}: no column {' / '.join(names)} (columns: {rows[0]})")

    iw, ion, ioff = col("word", "words"), col("onset", "start"), col("offset", "end")
    ifl = col(word_filter[0].lower()) if word_filter else None
    words, start, end = [], [], []
    for r, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if ifl is not None and row[ifl].strip() != str(word_filter[1]):
            continue
        w = row[iw].strip() if iw < len(row) else ""
        if not w:
            continue
        try:
            a, b = float(row[ion]), float(row[ioff])
        except (IndexError, ValueError):
            raise BIDSError(f"{p}: line {r} ({w!r}) has a missing or non-numeric onset/offset") from None
        if not (math.isfinite(a) and math.isfinite(b)):
            raise BIDSError(f"{p}: line {r} ({w!r}) has a missing (NaN) onset/offset")
        words.append(w)
        start.append(a)
        end.append(b)
    return words, np.asarray(start, np.float64), np.asarray(end, np.float64)


def read_any_words(path: str | os.PathLike, *, word_filter: tuple[str, Any] | None = None
                   ) -> tuple[list[str], np.ndarray, np.ndarray, int]:
    """Words from a TextGrid, CSV/TSV or Gentle JSON (by suffix), sorted by onset;
    returns ``(words, start, end, n_unaligned)``."""
    p = Path(path)
    suf = p.suffix.lower()
    dropped = 0
    if suf == ".textgrid":
        try:
            words, start, end = read_words(p)
        except TextGridError as e:
            raise BIDSError(str(e) if str(p) in str(e) else f"{p}: {e}") from e
        keep = [str(w).strip() not in TEXTGRID_NON_WORDS for w in words]
        words = [w for w, k in zip(words, keep) if k]
        start, end = np.asarray(start, float)[keep], np.asarray(end, float)[keep]
    elif suf == ".json":
        words, start, end, dropped = read_gentle(p)
    elif suf in (".csv", ".tsv", ".txt"):
        words, start, end = read_word_table(p, word_filter=word_filter)
    else:
        raise BIDSError(f"{p}: unknown word-timing format {suf!r} (expected .TextGrid, .csv, .tsv or .json)")
    if not words:
        raise BIDSError(f"{p}: no timed words")
    order = np.argsort(start, kind="stable")
    return [words[i] for i in order], start[order], end[order], dropped


# ---------------------------------------------------------------------- onset and TR
def read_onset(events: str | os.PathLike, trial_type: str | None = "story") -> tuple[float, float | None]:
    """``(onset, duration)`` of the story in a BIDS ``events.tsv``: the row whose
    ``trial_type`` is ``trial_type`` (or the only row)."""
    p = Path(events)
    try:
        rows = list(csv.DictReader(p.read_text(encoding="utf-8-sig").splitlines(), delimiter="\t"))
    except (OSError, UnicodeDecodeError) as e:
        raise BIDSError(f"{p}: cannot read events ({e})") from e
    if not rows or "onset" not in rows[0]:
        raise BIDSError(f"{p}: no 'onset' column in events.tsv")
    if trial_type is not None and "trial_type" in rows[0]:
        sel = [r for r in rows if r.get("trial_type") == trial_type]
    else:
        sel = rows
    if len(sel) != 1:
        kinds = sorted({r.get("trial_type", "") for r in rows})
        raise BIDSError(f"{p}: {len(sel)} rows with trial_type {trial_type!r} (trial types: {kinds}); "
                        f"expected exactly one")
    try:
        onset = float(sel[0]["onset"])
        dur = sel[0].get("duration")
        duration = float(dur) if dur not in (None, "", "n/a") else None
    except ValueError as e:
        raise BIDSError(f"{p}: non-numeric onset/duration ({e})") from e
    return onset, duration


def sidecar_of(image: str | os.PathLike) -> Path:
    """The JSON sidecar next to an image: its name with ``.nii[.gz]``/``.func.gii`` ->
    ``.json``."""
    p = Path(image)
    name = p.name
    for suf in (".nii.gz", ".func.gii", ".nii", ".gii"):
        if name.endswith(suf):
            return p.with_name(name[: -len(suf)] + ".json")
    return p.with_suffix(".json")


def resolve_tr(sidecar: str | os.PathLike | None, tr: float | None) -> float:
    """The repetition time: the sidecar's ``RepetitionTime`` and/or ``tr``; they must agree."""
    side = None
    if sidecar is not None and Path(sidecar).exists():
        try:
            side = float(json.loads(Path(sidecar).read_text())["RepetitionTime"])
        except (ValueError, KeyError, TypeError) as e:
            raise BIDSError(f"{sidecar}: no numeric RepetitionTime ({e})") from e
    if side is not None and tr is not None and not math.isclose(side, float(tr), rel_tol=1e-6, abs_tol=1e-9):
        raise BIDSError(f"{sidecar}: RepetitionTime {side} s disagrees with tr={float(tr)} s")
    if side is None and tr is None:
        raise BIDSError(f"no TR: no _bold.json sidecar{f' at {sidecar}' if sidecar else ''} and no tr= given")
    return float(side if side is not None else tr)


# ---------------------------------------------------------------------- images
def _nib():
    try:
        import nibabel
    except ImportError as e:  # optional dependency
        raise ImportError("reading NIfTI/GIFTI needs nibabel: install scalenc[bids]") from e
    return nibabel


def _load_mask(mask):
    """(mask bool (x, y, z), affine, source name) from a path, an image or a fitted nilearn
    masker."""
    nib = _nib()
    if hasattr(mask, "mask_img_"):
        img, name = mask.mask_img_, f"{type(mask).__name__}.mask_img_"
    elif isinstance(mask, (str, os.PathLike)):
        if not Path(mask).exists():
            raise BIDSError(f"mask {mask} not found")
        try:
            img, name = nib.load(str(mask)), str(mask)
        except Exception as e:  # noqa: BLE001 - nibabel raises many types
            raise BIDSError(f"{mask}: cannot read the mask ({e})") from e
    else:
        img, name = mask, "mask image"
    data = np.asarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise BIDSError(f"{name}: a mask must be 3-D, got shape {data.shape}")
    return data != 0, np.asarray(img.affine, np.float64), name


def _nifti_header(path: Path):
    nib = _nib()
    try:
        img = nib.load(str(path))
    except Exception as e:  # noqa: BLE001
        raise BIDSError(f"{path}: cannot read as NIfTI ({e})") from e
    if len(img.shape) != 4:
        raise BIDSError(f"{path}: BOLD must be a 4-D image, got shape {img.shape}")
    return img


def _gifti_series(path: Path) -> np.ndarray:
    """(n_volumes, n_vertices) float32 of a ``.func.gii``."""
    nib = _nib()
    try:
        img = nib.load(str(path))
        arrays = [np.asarray(d.data, np.float32).ravel() for d in img.darrays]
    except Exception as e:  # noqa: BLE001
        raise BIDSError(f"{path}: cannot read as GIFTI ({e})") from e
    if not arrays:
        raise BIDSError(f"{path}: GIFTI without data arrays")
    if len(arrays) == 1 and arrays[0].ndim == 1 and np.asarray(img.darrays[0].data).ndim == 2:
        return np.asarray(img.darrays[0].data, np.float32).T
    n = {a.size for a in arrays}
    if len(n) != 1:
        raise BIDSError(f"{path}: data arrays of different lengths {sorted(n)}")
    return np.stack(arrays)


def _gifti_volumes(path: Path) -> tuple[int, int]:
    nib = _nib()
    try:
        img = nib.load(str(path))
    except Exception as e:  # noqa: BLE001
        raise BIDSError(f"{path}: cannot read as GIFTI ({e})") from e
    d0 = np.asarray(img.darrays[0].data) if img.darrays else np.zeros(0)
    if len(img.darrays) == 1 and d0.ndim == 2:
        return d0.shape[1], d0.shape[0]
    return len(img.darrays), int(d0.size)


def _masked_series(img, mask_idx: np.ndarray, skip: int, time_block: int) -> np.ndarray:
    """(n_volumes - skip, n_mask) float32 from a 4-D image, read ``time_block`` volumes at a
    time (the file is read once; the whole image is never held as floats).

    ``mask_idx`` are C-order flat indices into the volume grid. nibabel returns NIfTI data
    in Fortran order, where each volume is contiguous: the mask voxels of one volume are
    then gathered from a contiguous vector, volume by volume (cache-friendly)."""
    shape = img.shape
    n_t = shape[3]
    out = np.empty((n_t - skip, mask_idx.size), np.float32)
    fidx = np.ravel_multi_index(np.unravel_index(mask_idx, shape[:3], order="C"), shape[:3], order="F")
    proxy = img.dataobj
    for t0 in range(skip, n_t, time_block):
        t1 = min(n_t, t0 + time_block)
        block = np.asarray(proxy[..., t0:t1])  # (x, y, z, tb), stored dtype, scaled
        if block.flags.f_contiguous:
            flat, idx = block.reshape(-1, t1 - t0, order="F"), fidx
        else:
            flat, idx = block.reshape(-1, t1 - t0), mask_idx
        for j in range(t1 - t0):
            out[t0 - skip + j] = flat[idx, j]
        del block, flat
    return out


def _surface_series(img, meshes, skip: int, time_block: int, mask_img=None) -> np.ndarray:
    """(n_volumes - skip, n_vertices) float32: ``vol_to_surf`` per hemisphere, per block."""
    from nilearn import surface
    nib = _nib()
    n_t = img.shape[3]
    n_v = sum(m.n_vertices for m in meshes)
    out = np.empty((n_t - skip, n_v), np.float32)
    for t0 in range(skip, n_t, time_block):
        t1 = min(n_t, t0 + time_block)
        block = nib.Nifti1Image(np.asarray(img.dataobj[..., t0:t1], np.float32), img.affine)
        col = 0
        for m in meshes:
            tex = surface.vol_to_surf(block, m, mask_img=mask_img)
            out[t0 - skip:t1 - skip, col:col + m.n_vertices] = np.asarray(tex, np.float32).reshape(m.n_vertices, -1).T
            col += m.n_vertices
        del block
    return out


def _fsaverage(name: str):
    from nilearn import datasets

    try:
        fs = datasets.load_fsaverage(name)
    except Exception as e:  # noqa: BLE001
        raise BIDSError(f"cannot load nilearn's {name} meshes ({e})") from e
    pial = fs["pial"]
    return [pial.parts["left"], pial.parts["right"]]


# ---------------------------------------------------------------------- cleaning
def _clean(Y: np.ndarray, run: Run, tr: float, skip: int, confounds, detrend: bool,
           high_pass: float | None) -> np.ndarray:
    if confounds is None and not detrend and high_pass is None:
        return Y
    from nilearn import signal

    conf = None
    if confounds is not None:
        conf = _confounds(run, confounds)
        if conf.shape[0] != Y.shape[0] + skip:
            raise BIDSError(f"run {run.story!r}: confounds have {conf.shape[0]} rows, the image "
                            f"{run.files[0]} has {Y.shape[0] + skip} volumes")
        conf = conf[skip:]
    with warnings.catch_warnings():  # nilearn >= 0.14 warns about standardize=False (None later)
        warnings.simplefilter("ignore", FutureWarning)
        out = signal.clean(Y, detrend=detrend, standardize=False, confounds=conf, standardize_confounds=True,
                           high_pass=high_pass, t_r=tr, filter="cosine" if high_pass is not None else False)
    return np.asarray(out, np.float32)


def confounds_file(image: str | os.PathLike) -> Path:
    """The fMRIPrep confounds TSV of an image: ``<entities>_desc-confounds_timeseries.tsv``
    (or the older ``_desc-confounds_regressors.tsv``) in the image's folder, where
    ``<entities>`` is the image name up to ``_space-`` / ``_hemi-`` / ``_desc-``."""
    p = Path(image)
    stem = re.split(r"_(?:space|hemi|desc|res|den)-", p.name, maxsplit=1)[0]
    for kind in ("timeseries", "regressors"):
        c = p.with_name(f"{stem}_desc-confounds_{kind}.tsv")
        if c.exists():
            return c
    raise BIDSError(f"{p}: no fMRIPrep confounds file {stem}_desc-confounds_timeseries.tsv next to it")


def _confounds(run: Run, confounds) -> np.ndarray:
    """Confound matrix of a run through nilearn's ``load_confounds``.

    nilearn finds the confounds from the image's file name and accepts only current
    fMRIPrep names; Narratives' surface files (``space-fsaverage6_hemi-L.func.gii``) and
    older releases are named otherwise. So the run's confounds file (with its JSON) is
    linked into a temporary folder under the name nilearn expects."""
    from nilearn.interfaces.fmriprep import load_confounds

    if isinstance(confounds, str):
        if confounds not in CONFOUND_STRATEGIES:
            raise BIDSError(f"unknown confounds strategy {confounds!r}; named: {sorted(CONFOUND_STRATEGIES)} "
                            f"(or pass a dict of load_confounds arguments)")
        kw = dict(CONFOUND_STRATEGIES[confounds])
    else:
        kw = dict(confounds)
    tsv = confounds_file(run.files[0])
    stem = tsv.name.split("_desc-confounds_")[0]
    with tempfile.TemporaryDirectory(prefix="scalenc-confounds-") as tmp:
        os.symlink(tsv.resolve(), Path(tmp) / f"{stem}_desc-confounds_timeseries.tsv")
        js = tsv.with_suffix(".json")
        if js.exists():
            os.symlink(js.resolve(), Path(tmp) / f"{stem}_desc-confounds_timeseries.json")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
                conf, sample_mask = load_confounds(str(Path(tmp) / f"{stem}_desc-preproc_bold.nii.gz"), **kw)
        except Exception as e:  # noqa: BLE001 - nilearn raises ValueError/FileNotFoundError...
            raise BIDSError(f"{tsv}: cannot load confounds with {kw} ({type(e).__name__}: {e})") from e
    if sample_mask is not None:
        raise BIDSError(f"{tsv}: confound strategy {kw} removes volumes (scrubbing / non-steady-state); "
                        f"the story's time grid needs every volume: use a strategy without them")
    return np.asarray(conf.values, np.float64)


def _zscore_inplace(Y: np.ndarray, block: int = 8192) -> None:
    """Z-score the columns of ``Y`` in place (population SD; constant columns become 0),
    ``block`` columns at a time so that float64 temporaries stay small."""
    for c0 in range(0, Y.shape[1], block):
        sl = Y[:, c0:c0 + block]
        x = sl.astype(np.float64)
        x -= x.mean(axis=0)
        sd = np.sqrt((x * x).mean(axis=0))
        np.divide(x, sd, out=x, where=sd > 0)
        sl[...] = x


# ---------------------------------------------------------------------- build
def _plan(run: Run, tr: float | None, volume_time: str, word_clock: str) -> dict[str, Any]:
    """Read and check everything but the responses of one run."""
    for f in run.files:
        if not f.exists():
            raise BIDSError(f"run {run.story!r}: BOLD file {f} not found")
    for what in ("words", "events", "audio"):
        p = getattr(run, what)
        if p is not None and not Path(p).exists():
            raise BIDSError(f"run {run.story!r}: {what} file {p} not found")
    sidecar = Path(run.sidecar) if run.sidecar is not None else sidecar_of(run.files[0])
    if run.sidecar is not None and not sidecar.exists():
        raise BIDSError(f"run {run.story!r}: sidecar {sidecar} not found")
    try:
        tr_run = resolve_tr(sidecar if sidecar.exists() else None, tr)
    except BIDSError as e:
        raise BIDSError(f"run {run.story!r}: {e}") from None
    duration = None
    if run.onset is not None:
        onset = float(run.onset)
    elif run.events is not None:
        onset, duration = read_onset(run.events, run.trial_type)
    else:
        raise BIDSError(f"run {run.story!r}: no onset: give onset= or an events.tsv")
    words, ws, we, dropped = read_any_words(run.words, word_filter=run.word_filter)
    if dropped:
        msg = f"{run.words}: {dropped} unaligned words dropped ({len(words)} kept)"
        warnings.warn(msg, stacklevel=3)  # once: the command line shows warnings as log lines
    if word_clock == "scan":
        ws, we = ws - onset, we - onset
    if run.is_surface:
        (nl, vl), (nr, vr) = _gifti_volumes(run.files[0]), _gifti_volumes(run.files[1])
        if nl != nr:
            raise BIDSError(f"run {run.story!r}: {run.files[0]} has {nl} volumes but {run.files[1]} has {nr}")
        n_vol, img = nl, None
    else:
        img = _nifti_header(run.files[0])
        n_vol = int(img.shape[3])
    if run.expected_volumes is not None and n_vol != int(run.expected_volumes):
        raise BIDSError(f"run {run.story!r}: {run.files[0]} has {n_vol} volumes, expected {run.expected_volumes}")
    skip = int(run.skip_volumes)
    if not 0 <= skip < n_vol:
        raise BIDSError(f"run {run.story!r}: skip_volumes={skip} leaves no volume of {n_vol} in {run.files[0]}")
    story_end = max(float(we.max()), float(duration) if duration is not None else 0.0)
    need = int(math.ceil((onset + story_end) / tr_run - 1e-6))
    if need > n_vol:
        src = f"onset {onset} s + {'events duration' if duration and duration >= we.max() else 'last word end'} " \
              f"{story_end:.3f} s at TR {tr_run} s"
        raise BIDSError(f"run {run.story!r}: {run.files[0]} has {n_vol} volumes but the story needs {need} ({src})")
    shift = VOLUME_TIME_SHIFT[volume_time]
    t = (np.arange(skip, n_vol) + shift) * tr_run - onset
    return dict(tr=tr_run, onset=onset, duration=duration, words=words, ws=ws, we=we, dropped=dropped,
                n_vol=n_vol, img=img, tr_time=t, sidecar=str(sidecar) if sidecar.exists() else None)


@dataclasses.dataclass
class ReaderOptions:
    """The options every BIDS/fMRIPrep reader shares (:func:`build`, ``narratives.build``,
    ``lpp.build`` and the flags of their ``scalenc assembly build`` subcommands); each may
    also be given as a keyword of its own (``build(..., tr=1.5)``).

    tr : repetition time, s (checked against the sidecars; None: from them)
    test_stories : stories held out as the test set
    confounds : a name of :data:`CONFOUND_STRATEGIES` or ``load_confounds`` keywords
    detrend, high_pass : linear detrending; cosine high-pass cutoff (Hz)
    zscore : z-score each voxel over a run's kept volumes
    surface : project NIfTI runs onto this fsaverage mesh
    volume_time : ``"centre"`` or ``"start"`` of the TR
    voxel_chunk, overwrite, progress : the store's chunk width; replace ``out``; progress bar
    """

    tr: float | None = None
    test_stories: Sequence[str] = ()
    confounds: str | Mapping[str, Any] | None = None
    detrend: bool = False
    high_pass: float | None = None
    zscore: bool = True
    surface: str | None = None
    volume_time: str = "centre"
    voxel_chunk: int = DEFAULT_VOXEL_CHUNK
    overwrite: bool = False
    progress: bool = True

    @classmethod
    def of(cls, options: ReaderOptions | None = None, where: str = "build", **keywords) -> ReaderOptions:
        """``options`` (default: all defaults) with ``keywords`` (its field names) replaced;
        an unknown keyword is one error naming the accepted ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(keywords) - names)
        if unknown:
            raise TypeError(f"{where}() got unexpected keyword(s) {unknown}; reader options: {sorted(names)}")
        return dataclasses.replace(options or cls(), **keywords)


def build(runs: Sequence[Run], out: str | os.PathLike, *, subject: str, dataset: str = "bids",
          mask=None, mesh: str | None = None, word_clock: str = "audio", time_block: int = TIME_BLOCK,
          attrs: Mapping[str, Any] | None = None, options: ReaderOptions | None = None, **reader_options) -> Path:
    """Build an assembly from BIDS runs, one run (story) at a time.

    Parameters
    ----------
    runs : sequence of :class:`Run`
        One per story, in the order to store (test stories are moved last).
    out : path-like
        Output ``.zarr`` (atomic: nothing appears on failure).
    subject : str
    dataset : str
        Recorded in the store.
    mask : path, image or fitted nilearn masker, optional
        Brain mask on the BOLD grid; required for NIfTI runs unless ``surface`` is given.
    options : ReaderOptions, optional
        The options below, grouped (also accepted as keywords of their own).
    tr : float, optional
        Repetition time, s; checked against every run's ``_bold.json`` (one is needed when
        ``tr`` is None).
    test_stories : sequence of str
    confounds : str or dict, optional
        A name of :data:`CONFOUND_STRATEGIES` or keyword arguments of
        :func:`nilearn.interfaces.fmriprep.load_confounds` (the fMRIPrep confounds file is
        found from the image name). Strategies that remove volumes are refused.
    detrend : bool
        Remove a linear trend per run (nilearn ``signal.clean``).
    high_pass : float, optional
        High-pass cutoff, Hz (cosine drift regressors).
    zscore : bool
        Z-score each voxel over the run's kept volumes.
    surface : {"fsaverage5", "fsaverage6", "fsaverage"}, optional
        Project NIfTI runs onto that mesh (``vol_to_surf``; ``mask`` then limits the
        sampled voxels).
    mesh : str, optional
        The mesh of GIFTI runs (e.g. ``"fsaverage6"``), recorded in ``voxel_space``.
    volume_time : {"centre", "start"}
        The time of a volume within its TR (module docstring).
    word_clock : {"audio", "scan"}
        Whether word times count from the audio start or from the first volume.
    time_block : int
        Volumes read (and projected) at a time from an uncompressed ``.nii``; a gzipped
        image is decompressed once, whole (a gzip stream cannot be sliced cheaply).
    voxel_chunk : int
    overwrite : bool

    Returns
    -------
    out : Path
    """
    o = ReaderOptions.of(options, "bids.build", **reader_options)
    tr, test_stories, confounds, detrend, high_pass = o.tr, o.test_stories, o.confounds, o.detrend, o.high_pass
    zscore, surface, volume_time, voxel_chunk, overwrite, progress = (o.zscore, o.surface, o.volume_time,
                                                                      o.voxel_chunk, o.overwrite, o.progress)
    runs = list(runs)
    if not runs:
        raise BIDSError("no runs to build")
    if volume_time not in VOLUME_TIME_SHIFT:
        raise BIDSError(f"volume_time must be one of {sorted(VOLUME_TIME_SHIFT)}, not {volume_time!r}")
    if word_clock not in WORD_CLOCKS:
        raise BIDSError(f"word_clock must be one of {WORD_CLOCKS}, not {word_clock!r}")
    names = [r.story for r in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise BIDSError(f"duplicate story names {dup}")
    unknown = [t for t in test_stories if t not in names]
    if unknown:
        raise BIDSError(f"test stories {unknown} are not among the runs {names}")
    surf = runs[0].is_surface
    if any(r.is_surface != surf for r in runs):
        raise BIDSError("runs mix GIFTI surfaces and NIfTI volumes")
    plans = {r.story: _plan(r, tr, volume_time, word_clock) for r in runs}  # every file checked first
    trs = {s: p["tr"] for s, p in plans.items()}
    if len({round(v, 9) for v in trs.values()}) != 1:
        raise BIDSError(f"runs have different TRs: {trs}")
    tr_run = next(iter(trs.values()))

    mask_idx = voxel_space = meshes = mask_img = None
    coords: dict[str, np.ndarray] = {}
    if surf:
        nl = _gifti_volumes(runs[0].files[0])[1]
        nr = _gifti_volumes(runs[0].files[1])[1]
        for r in runs[1:]:
            ml, mr = _gifti_volumes(r.files[0])[1], _gifti_volumes(r.files[1])[1]
            if (ml, mr) != (nl, nr):
                raise BIDSError(f"run {r.story!r}: {r.files[0]} / {r.files[1]} have {ml} / {mr} vertices, "
                                f"the first run {nl} / {nr}")
        n_vox = nl + nr
        coords = dict(hemi=np.array(["L"] * nl + ["R"] * nr), vertex=np.r_[np.arange(nl), np.arange(nr)])
        voxel_space = dict(kind="surface", mesh=mesh, hemispheres=["left", "right"], n_vertices=[int(nl), int(nr)])
    else:
        ref = plans[runs[0].story]["img"]
        for r in runs[1:]:
            im = plans[r.story]["img"]
            if im.shape[:3] != ref.shape[:3] or not np.allclose(im.affine, ref.affine, atol=1e-4):
                raise BIDSError(f"run {r.story!r}: {r.files[0]} grid {im.shape[:3]} differs from "
                                f"{runs[0].files[0]} {ref.shape[:3]} (shape or affine)")
        if mask is not None:
            m, maff, mname = _load_mask(mask)
            if m.shape != tuple(ref.shape[:3]) or not np.allclose(maff, ref.affine, atol=1e-4):
                raise BIDSError(f"{mname}: mask grid {m.shape} (affine {maff[:3, 3].tolist()}) does not match "
                                f"the image {runs[0].files[0]} {tuple(ref.shape[:3])} "
                                f"(affine {np.asarray(ref.affine)[:3, 3].tolist()})")
            if not m.any():
                raise BIDSError(f"{mname}: the mask is empty")
            mask_idx = np.flatnonzero(m.ravel(order="C"))
            if surface is not None:
                mask_img = _nib().Nifti1Image(m.astype(np.uint8), maff)
        elif surface is None:
            raise BIDSError("NIfTI runs need a mask (mask=) or a surface projection (surface=)")
        if surface is not None:
            meshes = _fsaverage(surface)
            nl, nr = meshes[0].n_vertices, meshes[1].n_vertices
            n_vox = nl + nr
            coords = dict(hemi=np.array(["L"] * nl + ["R"] * nr), vertex=np.r_[np.arange(nl), np.arange(nr)])
            voxel_space = dict(kind="surface", mesh=surface, hemispheres=["left", "right"],
                               n_vertices=[int(nl), int(nr)], projection="nilearn.surface.vol_to_surf (pial)")
            mask_idx_store = None
        else:
            n_vox = int(mask_idx.size)
            named = re.search(r"_space-([A-Za-z0-9]+)", Path(runs[0].files[0]).name)
            voxel_space = dict(kind="volume", shape=[int(x) for x in ref.shape[:3]],
                               affine=np.asarray(ref.affine, float).tolist(), order="C",
                               space=named.group(1) if named else "subject")
            mask_idx_store = mask_idx

    test = [s for s in names if s in set(test_stories)]
    order = [r for r in runs if r.story not in test] + [r for r in runs if r.story in test]
    timing = dict(convention="bids", volume_time=volume_time, word_clock=word_clock, tr=tr_run,
                  onsets={s: p["onset"] for s, p in plans.items()},
                  skip_volumes={r.story: int(r.skip_volumes) for r in runs},
                  unaligned_words={s: p["dropped"] for s, p in plans.items()},
                  confounds=confounds if confounds is None or isinstance(confounds, str) else dict(confounds),
                  detrend=detrend, high_pass=high_pass, zscore=zscore)
    timing = json.loads(json.dumps(timing, default=list))
    with AssemblyWriter(out, dataset=dataset, subject=subject, tr_seconds=tr_run, n_voxels=n_vox,
                        test_stories=test, voxel_chunk=voxel_chunk, timing=timing,
                        mask_indices=None if surf else mask_idx_store, voxel_coords=coords,
                        voxel_space=voxel_space, attrs=dict(attrs or {}), overwrite=overwrite) as w:
        for r in tqdm(order, desc=f"{subject} runs", unit="run", disable=not progress):
            p = plans[r.story]
            skip = int(r.skip_volumes)
            if surf:
                Y = np.concatenate([_gifti_series(f)[skip:] for f in r.files], axis=1)
            elif meshes is not None:
                Y = _surface_series(p["img"], meshes, skip, time_block, mask_img)
            else:
                gz = str(r.files[0]).endswith(".gz")
                Y = _masked_series(p["img"], mask_idx, skip, p["n_vol"] if gz else time_block)
            Y = _clean(Y, r, tr_run, skip, confounds, detrend, high_pass)
            if zscore:
                _zscore_inplace(Y)
            w.add_story(r.story, Y, tr_time=p["tr_time"], words=p["words"], word_start=p["ws"], word_end=p["we"],
                        audio_path=None if r.audio is None else str(r.audio), source=str(r.files[0]))
            del Y
    return Path(out)
