"""A LeBel-like synthetic dataset with known ground truth (the demo's and the tests' data).

:func:`synthetic` writes, under ``out``:

- ``lebel/``: a ds003020-layout tree (``derivative/respdict.json``, ``TextGrids/`` in
  several Praat formats and encodings, ``preprocessed_data/<subject>/<story>.hf5``,
  ``stimuli/<story>.wav``), read back through :func:`scalenc.assembly.lebel.build`, so
  the reader is exercised end to end;
- ``<subject>.zarr``: the assembly built from that tree;
- ``embeddings.w2v.txt`` / ``embeddings.w2v.bin``: the word vectors of the generative
  model, in word2vec text and binary formats;
- ``ground_truth.zarr``: weights, per-voxel SNR and driver, noise-free signal per story
  and the ceiling r on the test story.

Generative model (the pipeline's own stages, so the fit can recover it):

1. Text: consecutive passages of real English (the Lee news corpus shipped in gensim's
   test data), lower-cased words; word durations follow word length at a speech rate of
   about 2.5 words/s, with pauses after sentences.
2. Features per word: word rate (1 per word) and a ``embedding_dim``-dim random word vector.
3. Lanczos downsampling (window 3) onto the story's TR grid (LeBel timing), FIR delays
   (``delays``), trimming to the response rows (``[10:-5]``), z-scoring per story.
4. Voxels: a fraction ``noise_fraction`` is pure noise; the rest are driven by word rate
   only, embeddings only, or both, with random weights scaled so the signal has unit
   variance over the training stories; noise is AR(1) (``ar_rho``) with per-voxel SNR
   (signal variance / noise variance) log-uniform in ``snr_range``.
5. The test story is heard ``n_test_repeats`` times (same signal, independent noise) and
   stored as stacked repeats, like the real ``wheretheressmoke``. Responses are z-scored
   per story (per repeat), as in the release.
6. Audio: 16 kHz mono; each word is a sequence of harmonic tones, one per letter (pitch
   set by the letter), so the audio content follows the words.

The ceiling r of a voxel is the correlation of its noise-free signal with its observed
(repeat-mean, z-scored) test response: no model of these features can do better in
expectation.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.io.wavfile
import xarray as xr
import zarr

from .._io import atomic_directory
from ..align.downsample import lanczos_matrix
from ..align.fir import fir
from ..assembly import Assembly, lebel
from ..assembly.writer import DEFAULT_VOXEL_CHUNK
from .writers import write_story_files

logger = logging.getLogger(__name__)

LEBEL_STORIES = (
    "alternateithicatom", "souls", "avatar", "legacy", "odetostepfather", "undertheinfluence",
    "howtodraw", "myfirstdaywiththeyankees", "naked", "life", "stagefright", "tildeath",
    "sloth", "exorcism", "haveyoumethimyet", "adollshouse", "inamoment", "theclosetthatateeverything",
    "adventuresinsayingyes", "buck", "swimmingwithastronauts", "thatthingonmyarm", "eyespy",
    "itsabox", "hangtime", "fromboyhoodtofatherhood",
)
TEST_STORY = "wheretheressmoke"
FEATURE_SPACES = ("wordrate", "embeddings")
_TEXTGRID_VARIANTS = (("long", "utf-8"), ("short", "utf-8-sig"), ("long", "utf-16"), ("long", "utf-8-sig"))


@dataclasses.dataclass(frozen=True)
class SyntheticDataset:
    """Paths of a generated synthetic dataset."""

    out: Path
    root: Path
    assembly_path: Path
    embeddings_path: Path
    embeddings_binary_path: Path
    ground_truth_path: Path
    audio_dir: Path
    subject: str

    def assembly(self):
        """Open the assembly (:class:`scalenc.assembly.Assembly`)."""
        return Assembly(self.assembly_path)

    def ground_truth(self) -> xr.DataTree:
        """Ground truth: ``/`` weights, snr, driver, ceiling_r; ``/stories/<s>`` signal."""
        return xr.open_datatree(str(self.ground_truth_path), engine="zarr", consolidated=False).load()


def corpus_words() -> list[tuple[str, bool]]:
    """Words of the Lee background corpus (gensim test data) as (word, ends_sentence)."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the synthetic dataset takes its English text from gensim's test data: "
                          "install scalenc[embeddings] (or scalenc[all])")
    path = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data" / "lee_background.cor"
    if not path.exists():
        raise FileNotFoundError(f"gensim's test corpus not found at {path}")
    out = []
    for token in path.read_text(encoding="utf-8", errors="strict").split():
        word = re.sub(r"[^a-z0-9']", "", token.lower()).strip("'")
        if word:
            out.append((word, token.endswith((".", "!", "?"))))
    return out


def _word_timing(words: Sequence[tuple[str, bool]], rng: np.random.Generator, start: float = 1.0):
    """Start/end times at ~2.5 words/s, longer words last longer, pauses after sentences."""
    starts, ends, t = [], [], start
    for w, end_sentence in words:
        dur = 0.12 + 0.045 * len(w) + rng.uniform(0, 0.06)
        starts.append(t)
        ends.append(t + dur)
        t += dur + rng.uniform(0.02, 0.08)
        if end_sentence:
            t += rng.uniform(0.3, 0.8)
        elif rng.random() < 0.04:
            t += rng.uniform(0.2, 0.5)
    return np.array(starts), np.array(ends)


def _zscore(a: np.ndarray, axis: int = 0) -> np.ndarray:
    mu = a.mean(axis=axis, keepdims=True)
    sd = a.std(axis=axis, keepdims=True)
    return np.divide(a - mu, sd, out=np.zeros_like(a, dtype=np.float64), where=sd > 0)


def _ar1(rng: np.random.Generator, n: int, v: int, rho: float) -> np.ndarray:
    e = rng.standard_normal((n, v))
    out = np.empty_like(e)
    out[0] = e[0]
    s = np.sqrt(1 - rho ** 2)
    for i in range(1, n):
        out[i] = rho * out[i - 1] + s * e[i]
    return out


def _audio(words, starts, ends, duration: float, sr: int) -> np.ndarray:
    """Harmonic tones, one per letter of each word, in the word's interval."""
    y = np.zeros(int(np.ceil(duration * sr)), np.float32)
    for w, a, b in zip(words, starts, ends):
        n = len(w)
        edges = np.linspace(a, b, n + 1)
        for c, s0, s1 in zip(w, edges[:-1], edges[1:]):
            i0, i1 = int(s0 * sr), int(s1 * sr)
            if i1 <= i0:
                continue
            t = np.arange(i1 - i0) / sr
            f0 = 110.0 + 12.0 * (ord(c) % 32)
            tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in (1, 2, 3))
            y[i0:i1] += (0.2 * np.hanning(i1 - i0) * tone).astype(np.float32)
    return y


def _write_embeddings(vocab: list[str], vectors: np.ndarray, text_path: Path, bin_path: Path) -> None:
    v, d = vectors.shape
    with open(text_path, "w", encoding="utf-8") as f:
        f.write(f"{v} {d}\n")
        for w, vec in zip(vocab, vectors):
            f.write(w + " " + " ".join(f"{x:.7g}" for x in vec) + "\n")
    with open(bin_path, "wb") as f:
        f.write(f"{v} {d}\n".encode())
        for w, vec in zip(vocab, vectors.astype("<f4")):
            f.write(w.encode("utf-8") + b" " + vec.tobytes() + b"\n")


def synthetic(out: str | os.PathLike, *, n_stories: int = 6, words_per_story: int = 300, n_voxels: int = 200,
              embedding_dim: int = 16, n_test_repeats: int = 3, delays: Sequence[int] = (1, 2, 3, 4),
              noise_fraction: float = 0.2, snr_range: tuple[float, float] = (0.1, 3.0), ar_rho: float = 0.3,
              subject: str = "SYN01", tr: float = lebel.TR_SECONDS, audio: bool = True, sample_rate: int = 16000,
              voxel_chunk: int = DEFAULT_VOXEL_CHUNK, seed: int = 0, overwrite: bool = False, progress: bool = False,
              layout: str | None = None) -> SyntheticDataset:
    """Generate the synthetic dataset (see the module docstring) and build its assembly.

    Parameters
    ----------
    out : path-like
        Output folder; an existing non-empty one needs ``overwrite=True``.
    n_stories : int
        Stories in all, the last being the repeated test story ``"wheretheressmoke"``.
    words_per_story : int
        Words per story (about 0.4 s each: 300 words ~ 2 minutes, ~ 55 TRs).
    n_voxels, embedding_dim : int
    n_test_repeats : int
        Repeats of the test story (>= 1).
    delays : sequence of int
        FIR delays of the generative model, in TRs.
    noise_fraction : float
        Fraction of pure-noise voxels.
    snr_range : (float, float)
        Range of the per-voxel SNR (signal variance / noise variance), log-uniform.
    ar_rho : float
        AR(1) coefficient of the noise.
    seed : int
        Everything is reproducible from it.
    layout : {None, "mni", "fsaverage5"}
        Place the voxels on a template (:mod:`scalenc.synthetic.layout`: ``mask_indices``,
        ``roi`` and space attrs in the assembly's ``voxels``) so that maps can be drawn;
        the responses are the same with or without a layout. Needs nilearn.

    Returns
    -------
    SyntheticDataset
    """
    if n_stories < 2:
        raise ValueError(f"n_stories must be >= 2 (training stories + the test story), got {n_stories}")
    if words_per_story < 60:
        raise ValueError(f"words_per_story must be >= 60 so that each story outlasts the trimmed TRs, "
                         f"got {words_per_story}")
    if n_test_repeats < 1 or not 0 <= noise_fraction <= 1 or n_voxels < 1:
        raise ValueError("need n_test_repeats >= 1, 0 <= noise_fraction <= 1 and n_voxels >= 1")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass overwrite=True")
    rng = np.random.default_rng(seed)
    words_all = corpus_words()
    need = n_stories * words_per_story
    if need > len(words_all):
        raise ValueError(f"{need} words requested but the corpus has {len(words_all)}")
    names = [*LEBEL_STORIES[:n_stories - 1]] if n_stories - 1 <= len(LEBEL_STORIES) else \
        [f"story{i:02d}" for i in range(n_stories - 1)]
    names.append(TEST_STORY)

    # text, timing, vocabulary
    stories = {}
    for i, name in enumerate(names):
        chunk = words_all[i * words_per_story:(i + 1) * words_per_story]
        ws, we = _word_timing(chunk, rng)
        stories[name] = dict(words=[w for w, _ in chunk], start=ws, end=we)
    vocab = sorted({w for s in stories.values() for w in s["words"]})
    emb = rng.standard_normal((len(vocab), embedding_dim)).astype(np.float32)
    index = {w: k for k, w in enumerate(vocab)}

    # design matrices, exactly as the pipeline builds them
    n_delays = len(delays)
    trim0, trim1 = lebel.TRIM
    X = {}
    for name, s in stories.items():
        dur = s["end"][-1] + 1.0
        n_acq = int(np.ceil((dur + lebel.SOUND_ONSET) / tr)) + lebel.SKIPPED_TRIGGERS + trim1 + 2
        grid = lebel.grid_times(n_acq, tr=tr)
        mid = (s["start"] + s["end"]) / 2
        W = lanczos_matrix(mid, grid, tr=tr)
        events = np.column_stack([np.ones(len(mid)), emb[[index[w] for w in s["words"]]]])
        feats = W @ events
        Xd = fir(feats, delays)[trim0:len(grid) - trim1]
        s.update(n_acquired=n_acq, grid=grid, duration=float(grid[-1] + tr / 2))
        X[name] = _zscore(Xd)
    p_wr, p_emb = 1, embedding_dim
    cols_wr = np.concatenate([np.arange(k * (1 + p_emb), k * (1 + p_emb) + p_wr) for k in range(n_delays)])
    cols_emb = np.setdiff1d(np.arange(n_delays * (1 + p_emb)), cols_wr)

    # voxels: drivers, weights, SNR
    n_noise = int(round(noise_fraction * n_voxels))
    driven = n_voxels - n_noise
    driver = np.array(["noise"] * n_noise + list(np.resize(["wordrate", "embeddings", "both"], driven)), dtype=object)
    driver = driver[rng.permutation(n_voxels)]
    p = n_delays * (1 + p_emb)
    weights = np.zeros((p, n_voxels))
    hrf = np.array([0.5, 1.0, 0.8, 0.4, 0.2, 0.1])[:n_delays] if n_delays <= 6 else np.ones(n_delays)
    for v in range(n_voxels):
        if driver[v] == "noise":
            continue
        w = np.zeros(p)
        if driver[v] in ("wordrate", "both"):
            w[cols_wr] = hrf * rng.choice([-1, 1]) * (2.0 if driver[v] == "both" else 1.0)
        if driver[v] in ("embeddings", "both"):
            base = rng.standard_normal(p_emb)
            w[cols_emb] = np.concatenate([h * base for h in hrf])
        weights[:, v] = w
    train = names[:-1]
    sig_train = np.vstack([X[s] @ weights for s in train])
    scale = sig_train.std(axis=0)
    weights = np.divide(weights, scale, out=np.zeros_like(weights), where=scale > 0)
    snr = np.where(driver == "noise", 0.0, np.exp(rng.uniform(*np.log(snr_range), n_voxels)))
    noise_sd = np.where(snr > 0, 1 / np.sqrt(np.where(snr > 0, snr, 1)), 1.0)
    if layout is not None:  # before anything is written: a bad name or a missing nilearn fails here
        from .layout import make_layout

        voxel_layout = make_layout(layout, driver, snr, seed=seed)

    root = out / "lebel"
    audio_dir = root / "stimuli"
    out.mkdir(parents=True, exist_ok=True)
    signal, ceiling = {}, None
    for i, name in enumerate(names):
        s = stories[name]
        sig = X[name] @ weights
        signal[name] = sig
        k = n_test_repeats if name == TEST_STORY else 1
        reps = []
        for _ in range(k):
            noise = _ar1(rng, sig.shape[0], n_voxels, ar_rho) * noise_sd
            reps.append(_zscore(np.where(snr > 0, sig, 0.0) + noise))
        bold = np.vstack(reps)
        if name == TEST_STORY:
            mean = np.mean(reps, axis=0)
            ceiling = np.array([np.corrcoef(sig[:, v], mean[:, v])[0, 1] if snr[v] > 0 else 0.0
                                for v in range(n_voxels)])
        fmt, enc = _TEXTGRID_VARIANTS[i % len(_TEXTGRID_VARIANTS)]
        phones = _letter_phones(s["words"], s["start"], s["end"])
        write_story_files(root, subject, name, bold, n_acquired=s["n_acquired"], words=s["words"],
                          word_start=s["start"], word_end=s["end"], phones=phones,
                          textgrid_format=fmt, textgrid_encoding=enc)
        if audio:
            audio_dir.mkdir(parents=True, exist_ok=True)
            y = _audio(s["words"], s["start"], s["end"], s["duration"], sample_rate)
            scipy.io.wavfile.write(audio_dir / f"{name}.wav", sample_rate, (np.clip(y, -1, 1) * 32767).astype(np.int16))

    emb_txt, emb_bin = out / "embeddings.w2v.txt", out / "embeddings.w2v.bin"
    _write_embeddings(vocab, emb, emb_txt, emb_bin)
    asm = lebel.build(root, subject, out / f"{subject}.zarr", stories=names, test_stories=(TEST_STORY,),
                      tr=tr, voxel_chunk=voxel_chunk, overwrite=overwrite, progress=progress)

    feature_space = np.array(["wordrate" if c in set(cols_wr) else "embeddings" for c in range(p)], dtype=object)
    delay_of = np.repeat(np.asarray(delays), 1 + p_emb)
    gt = xr.DataTree(xr.Dataset(
        {"weights": (("feature", "voxel"), weights), "snr": ("voxel", snr), "noise_sd": ("voxel", noise_sd),
         "driver": ("voxel", driver.astype(object)), "ceiling_r": ("voxel", ceiling)},
        coords={"feature_space": ("feature", feature_space), "delay": ("feature", delay_of),
                "voxel": np.arange(n_voxels)},
        attrs=dict(seed=seed, delays=list(map(int, delays)), embedding_dim=embedding_dim,
                   test_story=TEST_STORY, n_test_repeats=n_test_repeats, ar_rho=ar_rho,
                   feature_spaces=list(FEATURE_SPACES),
                   description="design = zscore(trim(fir(lanczos([wordrate, embedding])))) per story; "
                               "columns delay-major: [wordrate, emb_1..emb_d] per delay")))
    for name in names:
        gt[f"stories/{name}"] = xr.DataTree(xr.Dataset({"signal": (("tr", "voxel"), signal[name].astype(np.float32))}))
    gt_path = out / "ground_truth.zarr"
    with atomic_directory(gt_path, overwrite=True) as tmp:
        gt.to_zarr(str(tmp), mode="w", consolidated=False)
    zarr.open_group(str(asm), mode="r+").attrs["ground_truth"] = str(gt_path.resolve())
    if layout is not None:
        from .layout import write_layout

        write_layout(asm, voxel_layout)
    logger.info("synthetic dataset: %d stories, %d voxels, vocabulary %d, at %s", n_stories, n_voxels, len(vocab), out)
    return SyntheticDataset(out=out, root=root, assembly_path=Path(asm), embeddings_path=emb_txt,
                            embeddings_binary_path=emb_bin, ground_truth_path=gt_path, audio_dir=audio_dir,
                            subject=subject)


def _letter_phones(words, starts, ends):
    """A phone tier: one 'phone' per letter of each word, splitting the word interval."""
    labels, s0, s1 = [], [], []
    for w, a, b in zip(words, starts, ends):
        edges = np.linspace(a, b, len(w) + 1)
        labels += [c.upper() for c in w]
        s0 += list(edges[:-1])
        s1 += list(edges[1:])
    return labels, np.array(s0), np.array(s1)
