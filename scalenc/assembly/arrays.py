"""Assemblies from plain arrays: a folder a user fills from any preprocessing pipeline.

Layout of ``root``::

    assembly.json            {"subject": "S01", "tr": 2.0, "test_stories": ["wheretheressmoke"],
                              "dataset": "my-lab"}   (dataset and test_stories optional)
    <story>.npy              responses, (n_tr, n_voxels) float, or (n_repeats, n_tr, n_voxels)
    <story>.tsv              words: a header line, then ``word<TAB>onset<TAB>offset`` (seconds
                             on the stimulus clock, which starts with the first volume)
    <story>.wav              optional stimulus audio (for speech features)

Response row ``i`` is taken at ``(i + 0.5) * tr`` (the volume's centre). Every story has a
``.npy`` and a ``.tsv``; errors name the file.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from .writer import DEFAULT_VOXEL_CHUNK, AssemblyError, AssemblyWriter

__all__ = ["build"]


def _words(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    if not rows or [c.strip().lower() for c in rows[0][:3]] != ["word", "onset", "offset"]:
        raise AssemblyError(f"{path}: the first line must be the header word<TAB>onset<TAB>offset")
    words, start, end = [], [], []
    for i, row in enumerate(rows[1:], start=2):
        if len(row) < 3:
            raise AssemblyError(f"{path}: line {i} has {len(row)} columns, expected word, onset, offset")
        try:
            start.append(float(row[1]))
            end.append(float(row[2]))
        except ValueError:
            raise AssemblyError(f"{path}: line {i}: onset/offset {row[1]!r}, {row[2]!r} are not numbers") from None
        words.append(row[0])
    return words, np.asarray(start), np.asarray(end)


def build(root: str | os.PathLike, out: str | os.PathLike, *, voxel_chunk: int = DEFAULT_VOXEL_CHUNK,
          overwrite: bool = False) -> Path:
    """Build an assembly from a folder of ``<story>.npy`` responses and ``<story>.tsv`` words
    (layout in the module docstring); return the store's path."""
    root = Path(root)
    meta_path = root / "assembly.json"
    if not meta_path.exists():
        raise AssemblyError(f"{meta_path} not found: it gives the subject and the TR in seconds")
    try:
        meta = json.loads(meta_path.read_text())
        subject, tr = str(meta["subject"]), float(meta["tr"])
    except (ValueError, KeyError, TypeError) as e:
        raise AssemblyError(f"{meta_path}: needs {{\"subject\": ..., \"tr\": seconds}} ({e})") from None
    stories = sorted(p.stem for p in root.glob("*.npy"))
    if not stories:
        raise AssemblyError(f"{root}: no <story>.npy responses")
    first = np.load(root / f"{stories[0]}.npy", mmap_mode="r")
    with AssemblyWriter(out, dataset=str(meta.get("dataset", "arrays")), subject=subject, tr_seconds=tr,
                        n_voxels=first.shape[-1], test_stories=list(meta.get("test_stories", [])),
                        voxel_chunk=voxel_chunk, overwrite=overwrite) as w:
        for story in stories:
            bold = np.load(root / f"{story}.npy", mmap_mode="r")
            if bold.ndim not in (2, 3) or bold.shape[-1] != first.shape[-1]:
                raise AssemblyError(f"{root / (story + '.npy')}: shape {bold.shape}, expected (n_tr, "
                                    f"{first.shape[-1]}) or (n_repeats, n_tr, {first.shape[-1]})")
            tsv = root / f"{story}.tsv"
            if not tsv.exists():
                raise AssemblyError(f"{tsv} not found: the words of story {story!r}")
            words, start, end = _words(tsv)
            wav = root / f"{story}.wav"
            w.add_story(story, bold, tr_time=(np.arange(bold.shape[-2]) + 0.5) * tr, words=words, word_start=start,
                        word_end=end, audio_path=str(wav.resolve()) if wav.exists() else None,
                        source=str(root / f"{story}.npy"))
    return Path(out)
