"""Writers of test data in the file formats the readers of :mod:`scalenc.assembly` read.

They make small dataset trees with known content for the synthetic dataset, the tests and
the benchmarks; the readers themselves only read.

- :func:`write_textgrid`: a Praat TextGrid (long or short text format, several encodings);
- :func:`write_story_files`: one story of the LeBel ds003020 tree (hf5 responses,
  TextGrid, ``respdict.json`` entry);
- :func:`write_precomputed`: one story of a model folder in the scaling-laws layout read
  by :class:`scalenc.features.precomputed.PrecomputedExtractor`.
"""
from __future__ import annotations

import codecs
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import h5py
import numpy as np

from ..assembly import lebel
from ..assembly.textgrid import INTERVAL_TIER, _TIER_CLASSES, Interval, Tier

__all__ = ["write_precomputed", "write_story_files", "write_textgrid"]


# ------------------------------------------------------------------------- TextGrid


_ENCODINGS = {
    "utf-8": (b"", "utf-8"),
    "utf-8-sig": (codecs.BOM_UTF8, "utf-8"),
    "utf-16": (codecs.BOM_UTF16_LE, "utf-16-le"),
    "utf-16-le": (b"", "utf-16-le"),
    "utf-16-be": (b"", "utf-16-be"),
}


def _fmt_time(x: float) -> str:
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"times must be finite, got {x}")
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def _quote(s: str) -> str:
    return '"' + str(s).replace('"', '""') + '"'


def _check_tiers(tiers: Iterable[Tier]) -> list[Tier]:
    tiers = list(tiers)
    for t in tiers:
        if t.kind not in _TIER_CLASSES:
            raise ValueError(f"tier {t.name!r}: kind must be 'IntervalTier' or 'TextTier', not {t.kind!r}")
        if t.error is not None:
            raise ValueError(f"tier {t.name!r} could not be parsed when read ({t.error}); refusing to write it")
    return tiers


def _long_text(tiers: list[Tier], xmin: str, xmax: str) -> list[str]:
    out = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", f"xmin = {xmin} ", f"xmax = {xmax} "]
    if not tiers:
        out.append("tiers? <absent> ")
        return out
    out += ["tiers? <exists> ", f"size = {len(tiers)} ", "item []: "]
    for k, t in enumerate(tiers, start=1):
        out += [f"    item [{k}]:", f"        class = {_quote(t.kind)} ", f"        name = {_quote(t.name)} ",
                f"        xmin = {xmin} ", f"        xmax = {xmax} "]
        if t.kind == INTERVAL_TIER:
            out.append(f"        intervals: size = {len(t.intervals)} ")
            for i, iv in enumerate(t.intervals, start=1):
                out += [f"        intervals [{i}]:", f"            xmin = {_fmt_time(iv.start)} ",
                        f"            xmax = {_fmt_time(iv.end)} ", f"            text = {_quote(iv.label)} "]
        else:
            out.append(f"        points: size = {len(t.intervals)} ")
            for i, iv in enumerate(t.intervals, start=1):
                out += [f"        points [{i}]:", f"            number = {_fmt_time(iv.start)} ",
                        f"            mark = {_quote(iv.label)} "]
    return out


def _short_text(tiers: list[Tier], xmin: str, xmax: str) -> list[str]:
    out = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", xmin, xmax]
    if not tiers:
        out.append("<absent>")
        return out
    out += ["<exists>", str(len(tiers))]
    for t in tiers:
        out += [_quote(t.kind), _quote(t.name), xmin, xmax, str(len(t.intervals))]
        for iv in t.intervals:
            if t.kind == INTERVAL_TIER:
                out += [_fmt_time(iv.start), _fmt_time(iv.end), _quote(iv.label)]
            else:
                out += [_fmt_time(iv.start), _quote(iv.label)]
    return out


def write_textgrid(path: str | os.PathLike, tiers: list[Tier], xmin: float, xmax: float, *,
                   format: str = "long", encoding: str = "utf-8") -> None:
    """Write tiers to a TextGrid file in Praat's long or short text format.

    Intervals are written as given (Praat itself expects the intervals of an
    interval tier to tile ``[xmin, xmax]``; fill gaps with empty intervals first if
    the file is meant for Praat). Every tier gets the time domain ``[xmin, xmax]``;
    a ``TextTier`` writes each interval's ``start`` as the point time.

    Parameters
    ----------
    path : str or path-like
    tiers : list of Tier
    xmin, xmax : float
        Time domain, seconds.
    format : {"long", "short"}
    encoding : {"utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"}
        ``"utf-8-sig"`` writes a UTF-8 BOM; ``"utf-16"`` writes a little-endian BOM
        and little-endian text (as Python's codec, but platform-independent);
        ``"utf-16-le"``/``"utf-16-be"`` write no BOM.

    Raises
    ------
    ValueError
        Unknown format or encoding, non-finite times, ``xmax < xmin``, a tier kind
        other than ``"IntervalTier"``/``"TextTier"``, or a tier with ``error`` set.
    """
    if format not in ("long", "short"):
        raise ValueError(f"format must be 'long' or 'short', not {format!r}")
    key = encoding.lower().replace("_", "-")
    key = {"utf8": "utf-8", "utf-8-bom": "utf-8-sig", "utf16": "utf-16"}.get(key, key)
    if key not in _ENCODINGS:
        raise ValueError(f"encoding must be one of {sorted(_ENCODINGS)}, not {encoding!r}")
    if float(xmax) < float(xmin):
        raise ValueError(f"xmax ({xmax}) < xmin ({xmin})")
    tiers = _check_tiers(tiers)
    lo, hi = _fmt_time(xmin), _fmt_time(xmax)
    lines = _long_text(tiers, lo, hi) if format == "long" else _short_text(tiers, lo, hi)
    bom, codec = _ENCODINGS[key]
    Path(path).write_bytes(bom + ("\n".join(lines) + "\n").encode(codec))


def write_story_files(root: str | os.PathLike, subject: str, story: str, bold: np.ndarray, *, n_acquired: int,
                      words: Sequence[str], word_start, word_end, phones=None, textgrid_format: str = "long",
                      textgrid_encoding: str = "utf-8", hf5_dtype="f8") -> dict[str, Path]:
    """Write one story in the ds003020 (LeBel) layout read by :func:`scalenc.assembly.lebel.build`
    (used by the synthetic dataset, tests and benchmarks): the response file, the TextGrid (phone + word tiers) and its entry of
    ``respdict.json``.

    Parameters
    ----------
    bold : (rows, voxels) or (repeats, rows, voxels) array
    n_acquired : int
        The story's acquired TR count N (rows should be N - 20).
    words, word_start, word_end
        Word tier intervals, seconds.
    phones : (labels, start, end), optional
        Phone tier; default: one "sp" interval spanning the story.
    """
    p = lebel.paths(root, subject, story)
    for d in (p["hf5"].parent, p["textgrid"].parent):
        d.mkdir(parents=True, exist_ok=True)
    with h5py.File(p["hf5"], "w") as f:
        f.create_dataset("data", data=np.asarray(bold, dtype=hf5_dtype))
    ws, we = np.asarray(word_start, float), np.asarray(word_end, float)
    xmax = float(max(we.max() if we.size else 0.0, (n_acquired - lebel.SKIPPED_TRIGGERS) * lebel.TR_SECONDS))
    word_iv = _fill_gaps([Interval(float(a), float(b), str(t)) for t, a, b in zip(words, ws, we)], xmax)
    if phones is None:
        phone_iv = [Interval(0.0, xmax, "sp")]
    else:
        phone_iv = _fill_gaps([Interval(float(a), float(b), str(t)) for t, a, b in zip(*phones)], xmax)
    write_textgrid(p["textgrid"], [Tier("phone", "IntervalTier", phone_iv), Tier("word", "IntervalTier", word_iv)],
                   0.0, xmax, format=textgrid_format, encoding=textgrid_encoding)
    resp = json.loads(p["respdict"].read_text()) if p["respdict"].exists() else {}
    resp[story] = int(n_acquired)
    p["respdict"].write_text(json.dumps(resp, indent=1))
    return p


def _fill_gaps(intervals, xmax: float):
    """Praat interval tiers tile [0, xmax]: fill gaps with empty intervals."""
    out, t = [], 0.0
    for iv in intervals:
        if iv.start > t + 1e-9:
            out.append(Interval(t, iv.start, ""))
        out.append(iv)
        t = max(t, iv.end)
    if t < xmax - 1e-9:
        out.append(Interval(t, xmax, ""))
    return out


# ------------------------------------------------------------------------- scaling-laws feature folders


def write_precomputed(folder: str | os.PathLike, story: str, features, *, times=None, time_start=None,
                      layers: Sequence[str] | None = None, final_output: bool = True,
                      overwrite: bool = False) -> list[Path]:
    """Write one story in the layout of HuthLab's ``extract_speech_features.py``.

    ::

        <folder>/<layer>/<story>.npz     "features": (t, p) float32, one per layer
        <folder>/<story>.npz             "features": the last layer (the script's final output)
        <folder>/<story>_times.npz       "times": (t, 2) float32, [window start, row time]

    Parameters
    ----------
    features : (t, p) or (n_layers, t, p) array
        A 2-D array without ``layers`` is written as a single-layer folder
        (``<folder>/<story>.npz`` only).
    times : (t,) float, optional
        Each row's time (the second column of the times file); None: no times file
        (features already downsampled, one row per TR).
    time_start : (t,) float, optional
        The first column; default ``times`` (zero-length windows).
    layers : sequence of str, optional
        Layer folder names; default ``encoder.0 .. encoder.{n-1}`` for 3-D features.
    final_output : bool
        With layer folders, also write the last layer as ``<folder>/<story>.npz``.
    overwrite : bool
        Replace existing files of this story (else FileExistsError naming the file).

    Returns
    -------
    The paths written.
    """
    root = Path(folder)
    F = np.asarray(features, dtype=np.float32)
    if F.ndim == 2 and layers is None:
        targets = {root / f"{story}.npz": F}
    else:
        F = F[None] if F.ndim == 2 else F
        if F.ndim != 3:
            raise ValueError(f"story {story!r}: features must be (t, p) or (layers, t, p), got shape {F.shape}")
        names = [f"encoder.{i}" for i in range(F.shape[0])] if layers is None else [str(x) for x in layers]
        if len(names) != F.shape[0]:
            raise ValueError(f"story {story!r}: {F.shape[0]} layers but {len(names)} layer names")
        targets = {root / name / f"{story}.npz": F[i] for i, name in enumerate(names)}
        if final_output:
            targets[root / f"{story}.npz"] = F[-1]
    if times is not None:
        t = np.asarray(times, dtype=np.float64)
        if t.shape != (F.shape[-2],):
            raise ValueError(f"story {story!r}: {t.size} times for {F.shape[-2]} feature rows")
        t0 = t if time_start is None else np.asarray(time_start, dtype=np.float64)
        targets[root / f"{story}_times.npz"] = np.column_stack([t0, t])
    if not overwrite:
        for p in targets:
            if p.exists():
                raise FileExistsError(f"{p} exists; pass overwrite=True to replace it")
    written = []
    for p, a in targets.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        key = "times" if p.name.endswith("_times.npz") else "features"
        tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}.npz")
        np.savez_compressed(tmp, **{key: a})
        os.replace(tmp, p)
        written.append(p)
    return written
