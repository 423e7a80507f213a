"""Reader for Le Petit Prince (Li et al., OpenNeuro ds003643).

Layout read (relative to ``root``; ``S`` = ``sub-EN057`` etc., ``L`` the language)::

    derivatives/S/func/S_task-lppL_run-NN_space-MNIColin27_desc-preproc_bold.nii.gz
    derivatives/S/func/S_task-lppL_run-NN_space-MNIColin27_desc-brain_mask.nii.gz   (or mask=)
    annotation/L/lppL_word_information.csv     word, onset, offset (s, within section), section
    annotation/L/lppL_section{1..9}.TextGrid   alternative word timings (words_from="textgrid")
    stimuli/task-lppL_section-<n>.wav          optional audio

Timing conventions (named parameters of :func:`build`): the nine sections are the runs in
sorted order of their run labels (labels are not 1-9); TR 2.0 s (checked against a
``_bold.json`` sidecar when present); the stimulus starts ``stimulus_onset`` = 8 s (4 TRs)
after the first volume and the first ``skip_volumes`` = 4 volumes are dropped (LITcoder
keeps ``brain_data[4:]``); word times count from the section's audio start; volume times
are TR centres. ``expected_volumes`` checks each section's volume count (for the English
release :data:`EN_VOLUMES`). Everything else is :func:`scalenc.assembly.bids.build`.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import bids
from .bids import BIDSError, Run

TR_SECONDS = 2.0
STIMULUS_ONSET = 8.0
SKIP_VOLUMES = 4
N_SECTIONS = 9
SPACE = "MNIColin27"
#: Volumes per section of the English release (REFERENCE.md).
EN_VOLUMES = (282, 298, 340, 303, 265, 343, 325, 292, 368)


def _sub(subject: str) -> str:
    return subject if subject.startswith("sub-") else f"sub-{subject}"


def section_runs(root: str | os.PathLike, subject: str, language: str = "EN", *, space: str = SPACE) -> list[Path]:
    """The subject's BOLD files, sorted by run label: section ``i + 1`` is element ``i``."""
    sub = _sub(subject)
    func = Path(root) / "derivatives" / sub / "func"
    if not func.is_dir():
        raise BIDSError(f"{func} not found: no derivatives for {sub}")
    pat = re.compile(rf"^{re.escape(sub)}_task-lpp{re.escape(language)}_run-(\d+)_space-{re.escape(space)}"
                     r"_desc-preproc_bold\.nii(\.gz)?$")
    found = sorted(((int(m.group(1)), f) for f in func.iterdir() if (m := pat.match(f.name))), key=lambda t: t[0])
    if len(found) != N_SECTIONS:
        raise BIDSError(f"{func}: {len(found)} lpp{language} runs in space {space}, expected {N_SECTIONS} "
                        f"(labels found: {[k for k, _ in found]})")
    return [f for _, f in found]


def build(root: str | os.PathLike, subject: str, language: str = "EN", out: str | os.PathLike | None = None, *,
          sections: Sequence[int] | None = None, words_from: str = "csv", mask=None,
          stimulus_onset: float = STIMULUS_ONSET, skip_volumes: int = SKIP_VOLUMES,
          expected_volumes: Sequence[int] | Mapping[int, int] | None = None, space: str = SPACE,
          options: bids.ReaderOptions | None = None, **reader_options) -> Path:
    """Build an assembly of one Le Petit Prince subject; stories ``section1`` .. ``section9``.

    Parameters
    ----------
    root : path-like
        The ds003643 tree.
    subject : str
        ``"sub-EN057"`` or ``"EN057"``.
    language : {"EN", "FR", "CN"}
    out : path-like, optional
        Default ``<root>/derivatives/scalenc/<subject>.zarr``.
    sections : sequence of int, optional
        Sections to keep (1-9), default all.
    words_from : {"csv", "textgrid"}
        ``annotation/L/lppL_word_information.csv`` or the per-section TextGrids.
    mask : optional
        Brain mask (path, image, fitted nilearn masker); default the
        ``desc-brain_mask`` next to the first run.
    stimulus_onset : float
        Seconds from the first volume to the section's audio start (8 s).
    skip_volumes : int
        Volumes dropped at the start of each run (4, LITcoder's ``brain_data[4:]``).
    expected_volumes : sequence of 9 int or dict section -> int, optional
        Checked volume counts, e.g. :data:`EN_VOLUMES` for the English release.
    options : scalenc.assembly.bids.ReaderOptions, optional
        The options shared by the BIDS readers (also accepted as keywords of their own), here
        with ``tr`` 2.0 s by default (checked against the sidecar; None trusts the sidecar).
    """
    o = bids.ReaderOptions.of(options or bids.ReaderOptions(tr=TR_SECONDS), "lpp.build", **reader_options)
    surface = o.surface
    root = Path(root)
    sub = _sub(subject)
    files = section_runs(root, sub, language, space=space)
    keep = list(range(1, N_SECTIONS + 1)) if sections is None else [int(s) for s in sections]
    bad = [s for s in keep if not 1 <= s <= N_SECTIONS]
    if bad:
        raise BIDSError(f"sections {bad} out of 1..{N_SECTIONS}")
    if expected_volumes is not None and not isinstance(expected_volumes, Mapping):
        expected_volumes = dict(zip(range(1, N_SECTIONS + 1), expected_volumes))
    ann = root / "annotation" / language
    if words_from not in ("csv", "textgrid"):
        raise BIDSError(f"words_from must be 'csv' or 'textgrid', not {words_from!r}")
    table = ann / f"lpp{language}_word_information.csv"
    runs = []
    for s in keep:
        words = table if words_from == "csv" else ann / f"lpp{language}_section{s}.TextGrid"
        wav = root / "stimuli" / f"task-lpp{language}_section-{s}.wav"
        runs.append(Run(story=f"section{s}", bold=files[s - 1], words=words, onset=stimulus_onset,
                        word_filter=("section", s) if words_from == "csv" else None, audio=wav if wav.exists() else None,
                        expected_volumes=None if expected_volumes is None else expected_volumes.get(s),
                        skip_volumes=skip_volumes))
    if mask is None and surface is None:
        name = files[0].name.replace("_desc-preproc_bold", "_desc-brain_mask")
        cand = files[0].with_name(name)
        if not cand.exists():
            raise BIDSError(f"no brain mask {cand}; pass mask=")
        mask = cand
    out = Path(out) if out is not None else root / "derivatives" / "scalenc" / f"{sub}.zarr"
    return bids.build(runs, out, subject=sub, dataset=f"lpp{language}", mask=mask, word_clock="audio",
                      attrs=dict(source_root=str(root), language=language), options=o)
