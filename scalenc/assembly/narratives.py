"""Reader for the Narratives dataset (Nastase et al., OpenNeuro ds002345).

Layout read (relative to ``root``; ``S`` the subject, ``T`` the task = story)::

    S/func/S_task-T[_run-N]_events.tsv             story onset (trial_type "story")
    derivatives/fmriprep/S/func/
        S_task-T[_run-N]_space-<space>_res-native_desc-preproc_bold.nii.gz   (+ .json sidecar)
        S_task-T[_run-N]_space-<space>_res-native_desc-brain_mask.nii.gz
        S_task-T[_run-N]_desc-confounds_{timeseries,regressors}.tsv
        S_task-T[_run-N]_space-fsaverage6_hemi-{L,R}.func.gii   (surface data; or fMRIPrep's
                                                               newer ..._hemi-L_space-fsaverage6_bold.func.gii)
    derivatives/afni-nosmooth/S/func/S_task-T..._space-<space>_res-native_desc-clean_bold.nii.gz
    stimuli/gentle/T/align.json                     Gentle word alignment (audio clock)
    stimuli/T_audio.wav                             optional audio

Timing conventions (named parameters): TR 1.5 s (checked against the ``_bold.json``
sidecar when there is one, looked up next to the image, then in ``S/func`` and at the
root as ``task-T_bold.json``); the story onset is the ``events.tsv`` row with
``trial_type == "story"`` (e.g. pieman 15 s); Gentle times count from the audio start
(``word_clock="audio"``), so a word's scan time is onset + start; volume times are TR
centres. Unaligned Gentle words are dropped and counted. Everything else is
:func:`scalenc.assembly.bids.build`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import bids
from .bids import BIDSError, Run

TR_SECONDS = 1.5
DEFAULT_SPACE = "MNI152NLin2009cAsym"
DERIVATIVES = {"fmriprep": "desc-preproc_bold", "afni-nosmooth": "desc-clean_bold", "afni-smooth": "desc-clean_bold"}


def _sub(subject: str) -> str:
    return subject if subject.startswith("sub-") else f"sub-{subject}"


def _one(paths: list[Path], what: str, where: Path) -> Path:
    if not paths:
        raise BIDSError(f"{where}: no {what}")
    if len(paths) > 1:
        raise BIDSError(f"{where}: {len(paths)} files match {what} ({', '.join(p.name for p in paths)}); "
                        f"pass run= to choose")
    return paths[0]


def run_files(root: str | os.PathLike, subject: str, task: str, *, derivatives: str = "fmriprep",
              space: str = DEFAULT_SPACE, run: int | None = None) -> dict[str, Any]:
    """The files of one task (story) of one subject: ``bold`` (path or (L, R) paths),
    ``mask``, ``events``, ``words``, ``sidecar``, ``audio`` (None when absent)."""
    root = Path(root)
    sub = _sub(subject)
    func = root / "derivatives" / derivatives / sub / "func"
    if derivatives not in DERIVATIVES:
        raise BIDSError(f"unknown derivatives {derivatives!r}; known: {sorted(DERIVATIVES)}")
    if not func.is_dir():
        raise BIDSError(f"{func} not found: no {derivatives} derivatives for {sub}")
    run_part = "" if run is None else f"_run-{int(run)}"
    stem = f"{sub}_task-{task}{run_part}"
    if space.startswith("fsaverage"):
        hemis = []
        for h in ("L", "R"):
            pat = f"{stem}*_hemi-{h}*.func.gii"
            hemis.append(_one(sorted(f for f in func.glob(pat) if f"_space-{space}" in f.name), pat, func))
        bold: Any = tuple(hemis)
        mask = None
        first = hemis[0]
    else:
        pat = f"{stem}*_space-{space}*_{DERIVATIVES[derivatives]}.nii*"
        bold = first = _one(sorted(func.glob(pat)), pat, func)
        mpat = f"{stem}*_space-{space}*_desc-brain_mask.nii*"
        masks = sorted(func.glob(mpat))
        if not masks:  # afni derivatives: the fMRIPrep mask
            masks = sorted((root / "derivatives" / "fmriprep" / sub / "func").glob(mpat))
        mask = masks[0] if masks else None
    epat = f"{stem}*_events.tsv"
    events = sorted((root / sub / "func").glob(epat))
    if not events:
        raise BIDSError(f"{root / sub / 'func'}: no {epat} (the story onset)")
    side = bids.sidecar_of(first)
    for cand in (side, *sorted((root / sub / "func").glob(f"{stem}*_bold.json")), root / f"task-{task}_bold.json"):
        if cand.exists():
            side = cand
            break
    else:
        side = None
    words = root / "stimuli" / "gentle" / task / "align.json"
    audio = root / "stimuli" / f"{task}_audio.wav"
    return dict(bold=bold, mask=mask, events=events[0], words=words, sidecar=side,
                audio=audio if audio.exists() else None)


def build(root: str | os.PathLike, subject: str, tasks: Sequence[str], out: str | os.PathLike | None = None, *,
          derivatives: str = "fmriprep", space: str = DEFAULT_SPACE, runs: Mapping[str, int] | None = None,
          mask=None, trial_type: str = "story", options: bids.ReaderOptions | None = None,
          **reader_options) -> Path:
    """Build an assembly of one Narratives subject; one story per task.

    Parameters
    ----------
    root : path-like
        The ds002345 tree.
    subject : str
        ``"sub-001"`` or ``"001"``.
    tasks : sequence of str
        Tasks (stories), e.g. ``["pieman", "21styear"]``.
    out : path-like, optional
        Default ``<root>/derivatives/scalenc/<subject>.zarr``.
    derivatives : {"fmriprep", "afni-nosmooth", "afni-smooth"}
    space : str
        ``"MNI152NLin2009cAsym"`` (NIfTI + brain mask) or ``"fsaverage6"`` (GIFTI).
    runs : dict task -> run number, optional
        For tasks with several runs.
    mask : optional
        Overrides the fMRIPrep ``desc-brain_mask`` (path, image or fitted nilearn masker).
    options : scalenc.assembly.bids.ReaderOptions, optional
        The options shared by the BIDS readers (also accepted as keywords of their own), here
        with ``tr`` 1.5 s by default (checked against the sidecar; None trusts the sidecar);
        ``confounds`` e.g. ``"narratives"`` (6 motion + cosine + 5 + 5 aCompCor, the authors'
        choice; see :data:`scalenc.assembly.bids.CONFOUND_STRATEGIES`).
    trial_type : str
        The ``events.tsv`` row that is the story.
    """
    o = bids.ReaderOptions.of(options or bids.ReaderOptions(tr=TR_SECONDS), "narratives.build", **reader_options)
    root = Path(root)
    if not tasks:
        raise BIDSError("tasks is empty: name the stories to read, e.g. tasks=['pieman']")
    sub = _sub(subject)
    run_list, masks = [], []
    for task in tasks:
        f = run_files(root, sub, task, derivatives=derivatives, space=space, run=(runs or {}).get(task))
        run_list.append(Run(story=task, bold=f["bold"], words=f["words"], events=f["events"], trial_type=trial_type,
                            sidecar=f["sidecar"], audio=f["audio"]))
        masks.append(f["mask"])
    if mask is None and not space.startswith("fsaverage"):
        if masks[0] is None:
            raise BIDSError(f"no desc-brain_mask for {sub} in {root / 'derivatives'}; pass mask=")
        mask = masks[0]
    out = Path(out) if out is not None else root / "derivatives" / "scalenc" / f"{sub}.zarr"
    return bids.build(run_list, out, subject=sub, dataset="narratives", mask=mask,
                      mesh=space if space.startswith("fsaverage") else None, word_clock="audio",
                      attrs=dict(source_root=str(root), derivatives=derivatives, space=space), options=o)
