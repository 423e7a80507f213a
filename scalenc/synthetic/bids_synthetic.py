"""Small synthetic BIDS / fMRIPrep trees with known ground truth, in the layouts of
Narratives (ds002345) and Le Petit Prince (ds003643), for the BIDS readers' tests and the
benchmark (nothing can be downloaded here).

:func:`synthetic_bids` writes, under ``out``:

- ``layout="narratives"``: ``sub-001/func/sub-001_task-T_events.tsv`` (a music row, then
  the story row with its onset), ``derivatives/fmriprep/sub-001/func/`` with the 4-D
  float32 ``..._desc-preproc_bold.nii.gz`` and its ``.json`` sidecar, the
  ``desc-brain_mask``, the fMRIPrep confounds TSV + JSON, and (``surface=True``) the
  ``space-fsaverage6_hemi-{L,R}.func.gii`` pair; ``stimuli/gentle/T/align.json`` (with
  some words Gentle failed to align: no times) and ``stimuli/T_audio.wav``;
- ``layout="lpp"``: nine runs with non-consecutive run labels under
  ``derivatives/sub-EN001/func/`` (MNIColin27 names, mask, confounds),
  ``annotation/EN/lppEN_word_information.csv`` (with a leading index column) and the
  per-section TextGrids, ``stimuli/task-lppEN_section-<n>.wav``;
- ``embeddings.w2v.txt``: the word vectors of the generative model.

Generative model (the pipeline's own stages, as in :mod:`scalenc.synthetic.synthetic`):
per story, word rate and a random word vector per word are Lanczos-downsampled onto the
volume times of the reader's convention (TR centres on the audio clock, after the
skipped volumes), FIR-delayed and z-scored; in-mask voxels are pure noise, or driven by
word rate, embeddings or both with random weights; noise is AR(1). A nuisance of known
shape is added: ``confound_strength`` x the six motion regressors of the confounds file
(random loadings) and a linear drift, so that confound cleaning with ``"motion"`` and
detrending remove it exactly. The ground truth (weights, drivers, noise-free signal on
the kept volumes) is returned in memory.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.io.wavfile

from ..align.downsample import lanczos_matrix
from ..align.fir import fir
from ..assembly.textgrid import Interval, Tier
from .synthetic import _ar1, _audio, _word_timing, _write_embeddings, _zscore, corpus_words
from .writers import _fill_gaps, write_textgrid

__all__ = ["BIDSDataset", "synthetic_bids"]

NARRATIVES_TASKS = ("pieman", "tunnel", "lucy", "prettymouth", "milkyway", "slumlordreach")
SPACE_VOL = {"narratives": "MNI152NLin2009cAsym", "lpp": "MNIColin27"}
MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


@dataclasses.dataclass
class BIDSDataset:
    """A written tree and its ground truth.

    Attributes
    ----------
    root : Path
    layout : str
    subject : str
    stories : list of str
        Story names as the reader names them (tasks, or ``section<n>``).
    embeddings_path : Path
    weights : (n_features, n_mask) float64
        Columns delay-major: ``[wordrate, emb_1..emb_d]`` per delay.
    driver : (n_mask,) str
        ``noise`` / ``wordrate`` / ``embeddings`` / ``both`` per in-mask voxel (mask order).
    signal : dict story -> (n_kept_volumes, n_mask) float64
        Noise-free signal on the volumes the reader keeps.
    tr_time : dict story -> (n_kept_volumes,) float64
        Their times on the audio clock (reader's convention).
    mask : (x, y, z) bool
    affine : (4, 4) float64
    n_unaligned : dict story -> int
        Words written without times (Gentle ``not-found-in-audio``).
    """

    root: Path
    layout: str
    subject: str
    stories: list[str]
    embeddings_path: Path
    weights: np.ndarray
    driver: np.ndarray
    signal: dict[str, np.ndarray]
    tr_time: dict[str, np.ndarray]
    mask: np.ndarray
    affine: np.ndarray
    n_unaligned: dict[str, int]
    onsets: dict[str, float]
    n_volumes: dict[str, int]


def _nib():
    import nibabel

    return nibabel


def _confound_table(rng, n: int) -> dict[str, np.ndarray]:
    cols = {}
    for m in MOTION:
        x = np.cumsum(rng.standard_normal(n)) * 0.05
        cols[m] = x - x.mean()
        cols[f"{m}_derivative1"] = np.r_[np.nan, np.diff(cols[m])]
        cols[f"{m}_power2"] = cols[m] ** 2
    cols["framewise_displacement"] = np.r_[np.nan, np.abs(rng.standard_normal(n - 1)) * 0.1]
    for k in ("csf", "white_matter", "global_signal"):
        cols[k] = rng.standard_normal(n)
    for k in range(3):
        cols[f"cosine{k:02d}"] = np.cos(np.pi * (np.arange(n) + 0.5) * (k + 1) / n) * np.sqrt(2 / n)
    for k in range(10):
        cols[f"a_comp_cor_{k:02d}"] = rng.standard_normal(n) * 0.01
    return cols


def _write_confounds(path_stem: Path, cols: dict[str, np.ndarray]) -> None:
    names = list(cols)
    lines = ["\t".join(names)]
    for i in range(len(cols[names[0]])):
        lines.append("\t".join("n/a" if np.isnan(cols[c][i]) else f"{cols[c][i]:.10g}" for c in names))
    path_stem.with_name(path_stem.name + "_desc-confounds_timeseries.tsv").write_text("\n".join(lines) + "\n")
    meta = {f"a_comp_cor_{k:02d}": {"Method": "aCompCor", "Mask": "CSF" if k < 5 else "WM", "Retained": True,
                                    "VarianceExplained": 0.1} for k in range(10)}
    path_stem.with_name(path_stem.name + "_desc-confounds_timeseries.json").write_text(json.dumps(meta, indent=1))


def synthetic_bids(out: str | os.PathLike, layout: str = "narratives", *, n_stories: int = 4,
                   words_per_story: int = 150, grid_shape: Sequence[int] = (6, 6, 5), mask_fraction: float = 0.7,
                   surface: bool = False, n_vertices: int = 40, embedding_dim: int = 8,
                   delays: Sequence[int] = (1, 2, 3, 4), noise_fraction: float = 0.2,
                   snr_range: tuple[float, float] = (1.0, 5.0), ar_rho: float = 0.3,
                   confound_strength: float = 5.0, drift: float = 2.0, audio: bool = True,
                   sample_rate: int = 8000, seed: int = 0) -> BIDSDataset:
    """Write a synthetic tree (module docstring) and return its ground truth.

    Parameters
    ----------
    out : path-like
        Output folder (the tree's root), created; must not exist or be empty.
    layout : {"narratives", "lpp"}
    n_stories : int
        Narratives tasks (<= 6); LPP always has 9 sections.
    words_per_story : int
    grid_shape : (x, y, z)
        Volume grid; ``mask_fraction`` of it is the brain mask.
    surface : bool
        Narratives only: also write fsaverage6-named GIFTI hemispheres of ``n_vertices``
        each, holding the same responses as the first ``2 * n_vertices`` mask voxels.
    confound_strength, drift : float
        Nuisance SD relative to the unit-variance signal (0 disables).
    seed : int
    """
    nib = _nib()
    if layout not in ("narratives", "lpp"):
        raise ValueError(f"layout must be 'narratives' or 'lpp', not {layout!r}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    rng = np.random.default_rng(seed)
    if layout == "narratives":
        if not 1 <= n_stories <= len(NARRATIVES_TASKS):
            raise ValueError(f"n_stories must be in 1..{len(NARRATIVES_TASKS)}")
        sub, tr, skip, names = "sub-001", 1.5, 0, list(NARRATIVES_TASKS[:n_stories])
    else:
        sub, tr, skip, names = "sub-EN001", 2.0, 4, [f"section{k}" for k in range(1, 10)]
    corpus = corpus_words()
    if len(names) * words_per_story > len(corpus):
        raise ValueError("not enough corpus words")
    stories = {}
    for i, name in enumerate(names):
        chunk = corpus[i * words_per_story:(i + 1) * words_per_story]
        ws, we = _word_timing(chunk, rng, start=0.5)
        # Narratives: every 37th word (from the 6th) is one Gentle could not align; it has no
        # time, the reader drops it, so the generative model does not hear it either
        keep = np.array([layout != "narratives" or k % 37 != 5 for k in range(len(chunk))])
        stories[name] = dict(words=[w for w, _ in chunk], start=ws, end=we, keep=keep)
    vocab = sorted({w for s in stories.values() for w in s["words"]})
    emb = rng.standard_normal((len(vocab), embedding_dim)).astype(np.float32)
    index = {w: k for k, w in enumerate(vocab)}

    # volumes: onset, count, times of the kept volumes (centre convention, audio clock)
    X = {}
    for name, s in stories.items():
        onset = 15.0 if layout == "narratives" else 8.0
        n_vol = int(np.ceil((onset + s["end"][-1] + 6.0) / tr))
        t = (np.arange(skip, n_vol) + 0.5) * tr - onset
        k = s["keep"]
        W = lanczos_matrix(((s["start"] + s["end"]) / 2)[k], t, tr=tr)
        events = np.column_stack([np.ones(int(k.sum())), emb[[index[w] for w, kk in zip(s["words"], k) if kk]]])
        X[name] = _zscore(fir(W @ events, delays))
        s.update(onset=onset, n_vol=n_vol, t=t)

    shape = tuple(int(x) for x in grid_shape)
    n_grid = int(np.prod(shape))
    mask = np.zeros(n_grid, bool)
    mask[rng.choice(n_grid, int(round(mask_fraction * n_grid)), replace=False)] = True
    mask = mask.reshape(shape)
    midx = np.flatnonzero(mask.ravel(order="C"))
    n_vox = midx.size
    if surface and 2 * n_vertices > n_vox:
        raise ValueError(f"surface needs 2 * n_vertices <= {n_vox} mask voxels")
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = [-10.0, -12.0, -8.0]

    # voxels: drivers, weights (unit signal variance over all stories), SNR
    p_emb, n_d = embedding_dim, len(delays)
    p = n_d * (1 + p_emb)
    cols_wr = np.arange(n_d) * (1 + p_emb)
    cols_emb = np.setdiff1d(np.arange(p), cols_wr)
    n_noise = int(round(noise_fraction * n_vox))
    driver = np.array(["noise"] * n_noise + list(np.resize(["wordrate", "embeddings", "both"], n_vox - n_noise)),
                      dtype=object)[rng.permutation(n_vox)]
    hrf = np.array([0.5, 1.0, 0.8, 0.4, 0.2, 0.1])[:n_d] if n_d <= 6 else np.ones(n_d)
    weights = np.zeros((p, n_vox))
    for v in range(n_vox):
        if driver[v] in ("wordrate", "both"):
            weights[cols_wr, v] = hrf * rng.choice([-1, 1]) * (2.0 if driver[v] == "both" else 1.0)
        if driver[v] in ("embeddings", "both"):
            base = rng.standard_normal(p_emb)
            weights[cols_emb, v] = np.concatenate([h * base for h in hrf])
    sd = np.vstack([X[s] @ weights for s in names]).std(axis=0)
    weights = np.divide(weights, sd, out=np.zeros_like(weights), where=sd > 0)
    snr = np.exp(rng.uniform(*np.log(snr_range), n_vox))

    space = SPACE_VOL[layout]
    if layout == "narratives":
        func = out / "derivatives" / "fmriprep" / sub / "func"
        raw = out / sub / "func"
        raw.mkdir(parents=True)
    else:
        func = out / "derivatives" / sub / "func"
        labels = sorted(rng.choice(np.arange(10, 40), 9, replace=False))
    func.mkdir(parents=True)
    signal, n_unaligned, table = {}, {}, []
    for i, name in enumerate(names):
        s = stories[name]
        n_vol = s["n_vol"]
        sig = X[name] @ weights
        signal[name] = sig
        noise = _ar1(rng, n_vol, n_vox, ar_rho) / np.sqrt(snr)
        bold_m = noise.copy()
        bold_m[skip:] += np.where(driver == "noise", 0.0, 1.0) * sig
        conf = _confound_table(rng, n_vol)
        motion = np.column_stack([conf[m] for m in MOTION])
        motion = (motion - motion.mean(0)) / motion.std(0)
        bold_m += confound_strength * motion @ rng.standard_normal((6, n_vox)) / np.sqrt(6)
        bold_m += drift * np.linspace(-1, 1, n_vol)[:, None] * rng.standard_normal(n_vox)[None, :]
        bold_m += 100.0  # a baseline, as in real BOLD
        vol = np.full((n_grid, n_vol), 0.0, np.float32)
        vol[midx] = bold_m.T
        vol[~mask.ravel()] = rng.standard_normal((n_grid - n_vox, n_vol))
        vol4 = vol.reshape(*shape, n_vol)
        if layout == "narratives":
            stem = f"{sub}_task-{name}"
        else:
            stem = f"{sub}_task-lppEN_run-{labels[i]:02d}"
        img = nib.Nifti1Image(vol4, affine)
        img.header.set_xyzt_units("mm", "sec")
        img.header["pixdim"][4] = tr
        img.header.set_data_dtype(np.float32)
        bold_path = func / f"{stem}_space-{space}{'_res-native' if layout == 'narratives' else ''}_desc-preproc_bold.nii.gz"
        nib.save(img, bold_path)
        bold_path.with_name(bold_path.name.replace(".nii.gz", ".json")).write_text(
            json.dumps({"RepetitionTime": tr, "SkullStripped": False}))
        mimg = nib.Nifti1Image(mask.astype(np.uint8), affine)
        nib.save(mimg, func / bold_path.name.replace("_desc-preproc_bold", "_desc-brain_mask"))
        _write_confounds(func / stem, conf)
        if surface:
            for h, cols in (("L", slice(0, n_vertices)), ("R", slice(n_vertices, 2 * n_vertices))):
                g = nib.gifti.GiftiImage(darrays=[nib.gifti.GiftiDataArray(row.astype(np.float32))
                                                  for row in bold_m[:, cols]])
                nib.save(g, func / f"{stem}_space-fsaverage6_hemi-{h}.func.gii")
        # words and events
        if layout == "narratives":
            (raw / f"{stem}_events.tsv").write_text(
                "onset\tduration\ttrial_type\tstim_file\n"
                f"0.0\t{s['onset'] - 3.0:.1f}\tmusic\tn/a\n"
                f"{s['onset']:.1f}\t{s['end'][-1]:.3f}\tstory\t{name}_audio.wav\n")
            gdir = out / "stimuli" / "gentle" / name
            gdir.mkdir(parents=True)
            items, off, unaligned = [], 0, 0
            for k, (w, a, b) in enumerate(zip(s["words"], s["start"], s["end"])):
                item = {"word": w, "alignedWord": w, "case": "success", "start": round(float(a), 6),
                        "end": round(float(b), 6), "startOffset": off, "endOffset": off + len(w), "phones": []}
                if not s["keep"][k]:  # Gentle could not align it: no times; the reader drops it
                    item = {"word": w, "case": "not-found-in-audio", "startOffset": off, "endOffset": off + len(w)}
                    unaligned += 1
                items.append(item)
                off += len(w) + 1
            (gdir / "align.json").write_text(json.dumps({"transcript": " ".join(s["words"]), "words": items}))
            n_unaligned[name] = unaligned
            wav = out / "stimuli" / f"{name}_audio.wav"
        else:
            for w, a, b in zip(s["words"], s["start"], s["end"]):
                table.append((w, a, b, i + 1))
            ann = out / "annotation" / "EN"
            ann.mkdir(parents=True, exist_ok=True)
            xmax = float(s["end"][-1] + 1.0)
            ivs = _fill_gaps([Interval(float(a), float(b), w) for w, a, b in zip(s["words"], s["start"], s["end"])],
                             xmax)
            write_textgrid(ann / f"lppEN_section{i + 1}.TextGrid", [Tier("words", "IntervalTier", ivs)], 0.0, xmax)
            n_unaligned[name] = 0
            wav = out / "stimuli" / f"task-lppEN_section-{i + 1}.wav"
        if audio:
            wav.parent.mkdir(parents=True, exist_ok=True)
            y = _audio(s["words"], s["start"], s["end"], float(s["end"][-1] + 1.0), sample_rate)
            scipy.io.wavfile.write(wav, sample_rate, (np.clip(y, -1, 1) * 32767).astype(np.int16))
    if layout == "lpp":
        lines = [",word,onset,offset,section"] + [f"{k},{w},{a:.6f},{b:.6f},{sec}"
                                                  for k, (w, a, b, sec) in enumerate(table)]
        (out / "annotation" / "EN" / "lppEN_word_information.csv").write_text("\n".join(lines) + "\n")
    emb_txt = out / "embeddings.w2v.txt"
    _write_embeddings(vocab, emb, emb_txt, out / "embeddings.w2v.bin")
    return BIDSDataset(root=out, layout=layout, subject=sub, stories=names, embeddings_path=emb_txt,
                       weights=weights, driver=driver.astype(str), signal=signal,
                       tr_time={n: stories[n]["t"] for n in names}, mask=mask, affine=affine,
                       n_unaligned=n_unaligned, onsets={n: stories[n]["onset"] for n in names},
                       n_volumes={n: stories[n]["n_vol"] for n in names})
