"""Benchmark: plain ridge (spaces concatenated), banded ridge and stacked ridge on the synthetic
dataset's ground truth (word rate + embeddings extractors, the trainer's designs and folds).

The synthetic generator (:mod:`scalenc.synthetic.synthetic`) knows, per voxel, which space
drives it (word rate, embeddings, both, or none) and its noise-free signal: the ceiling
stored as ``noise_ceiling`` (source "ground truth") is the correlation of that signal with
the observed test response, the best any model of these features can do.

Reported, on the held-out test story, over driven voxels:

- median r and r / ceiling (the fraction of the ideal), and fit seconds;
- the split of variance between the two spaces, as the word-rate share, against the true
  share: the true signal of the test story is ``sum_b X_b W_b`` (ground-truth weights on
  the trainer's own test design), and its true word-rate share is the product measure
  ``<s, s_wr> / <s, s>`` (centred; the parts sum to 1). Estimates: each model's prediction
  split the same way (``<yhat, yhat_wr> / <yhat, yhat>``, all three models); banded
  ridge's and stacking's ``r2_split`` (held-out R² parts, negative parts clipped to 0);
  stacking's weights; and stacking's structured variance partitioning read as the mean of
  the forward and backward parts (for two spaces this is the Shapley value of each space's
  held-out R²). Errors are mean absolute differences from the true share, over driven
  voxels with a ceiling of at least ``--min-ceiling``.

The fits go through the engine's own step (``Plan._fit_layer``: the designs, targets and
ceiling the trainer uses), without saving runs.

    python benchmarks/stacking.py --record
    python benchmarks/stacking.py --stories 6 --voxels 200      # a quick check
"""
from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from _common import emit, machine  # noqa: E402


def _share(whole: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Product-measure share ``<whole, part> / <whole, whole>`` per voxel (centred over rows)."""
    w = whole - whole.mean(0)
    p = part - part.mean(0)
    den = np.einsum("tv,tv->v", w, w)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, np.einsum("tv,tv->v", w, p) / den, np.nan)


def _clipped_share(parts: np.ndarray) -> np.ndarray:
    """First space's share of (k=2, v) parts, negative parts clipped to 0 (NaN if none is positive)."""
    c = np.clip(parts, 0, None)
    tot = c.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tot > 0, c[0] / tot, np.nan)


def _column_map(design_coords, gt_coords) -> np.ndarray:
    """Index into the ground truth's feature axis for each design column, matching
    (feature_space, delay) groups in order."""
    fs_d, dl_d = design_coords
    fs_g, dl_g = gt_coords
    out = np.empty(len(fs_d), np.int64)
    for key in {(str(f), int(d)) for f, d in zip(fs_d, dl_d)}:
        cols_d = [i for i, (f, d) in enumerate(zip(fs_d, dl_d)) if (str(f), int(d)) == key]
        cols_g = [i for i, (f, d) in enumerate(zip(fs_g, dl_g)) if (str(f), int(d)) == key]
        if len(cols_d) != len(cols_g):
            raise RuntimeError(f"design and ground truth disagree on the columns of {key}")
        out[cols_d] = cols_g
    return out


def run(args) -> str:
    import dask

    from scalenc import AbstractTrainer, FeatureExtractorFactory, NestedCVModel
    from scalenc.align.story import target_slice
    from scalenc.ridge.scoring import pearson_r
    from scalenc.synthetic import synthetic

    work = Path(args.workdir or tempfile.mkdtemp(prefix="scalenc-stacking-"))
    ds = synthetic(work / "data", n_stories=args.stories, words_per_story=args.words, n_voxels=args.voxels,
                   embedding_dim=args.embedding_dim, audio=False, seed=args.seed, overwrite=True)
    cache = work / "cache"
    ex = [FeatureExtractorFactory.create_extractor("wordrate", None, {}, str(cache)),
          FeatureExtractorFactory.create_extractor("embeddings", str(ds.embeddings_path), {}, str(cache))]
    kw = dict(alphas=np.logspace(-1, 5, 13), pvalue_method="analytic", seed=args.seed)
    models = {"plain ridge (concatenated)": NestedCVModel(**kw),
              "banded ridge": NestedCVModel(model_name="banded_ridge", n_iter=args.n_iter, **kw),
              "stacking": NestedCVModel(model_name="stacking", **kw)}
    trainer = AbstractTrainer(assembly=ds.assembly_path, feature_extractors=ex, model=models["stacking"],
                              results_dir=work / "res", run_name="bench", logger_backend="none", save_weights=True)
    plan = trainer.plan()
    feats, feat_of = plan._extract(None)
    plan._resolve_layers(feats, feat_of, None)
    graph, side_of, test_of, _ = plan._stimulus_graph(feats, feat_of)
    stim = dask.compute(graph, scheduler="sync")[0]
    run_ = plan.runs[0]
    layer = run_.layers[0]
    X, _ = stim["sides"][side_of[(*run_.key, layer)]]
    Xt = stim["tests"][test_of[(*run_.key, layer)]]

    gt = ds.ground_truth()
    driver = np.array([str(d) for d in gt["driver"].values])
    W = gt["weights"]
    cols = _column_map((Xt["feature_space"].values, Xt["delay"].values),
                       (W["feature_space"].values, W["delay"].values))
    Wd = W.values[cols]                                          # ground truth in design column order
    space = np.asarray([str(s) for s in Xt["feature_space"].values])
    wr = space == "wordrate"
    Xtv = np.asarray(Xt.values, np.float64)
    s_wr, s_all = Xtv[:, wr] @ Wd[wr], Xtv @ Wd
    true_share = _share(s_all, s_wr)
    # the design reproduces the generator's: the signal it gives matches the stored one on the scored rows
    sig = np.asarray(run_.assembly.known_signal(run_.test[0])[target_slice(plan.align.trimming, "test")], np.float64)
    driven = driver != "noise"
    check = float(np.min(pearson_r(sig[:, driven], s_all[:, driven])))

    fits, secs = {}, {}
    for name, model in models.items():
        plan.model = model
        t0 = time.perf_counter()
        fits[name] = plan._fit_layer(run_, X, None, Xt)
        secs[name] = time.perf_counter() - t0
    ceiling = fits["stacking"]["noise_ceiling"].values
    source = fits["stacking"].attrs.get("noise_ceiling_source", "?")
    good = driven & (ceiling >= args.min_ceiling)

    lines = [f"### stacking vs banded vs plain ridge on the synthetic ground truth: {args.stories} stories x "
             f"{args.words} words, {args.voxels} voxels ({int(driven.sum())} driven), word rate + embeddings "
             f"(dim {args.embedding_dim}) x {len(trainer.fir_delays)} delays, {datetime.date.today().isoformat()}",
             "", f"machine: {machine()} (shared with other jobs: times are indicative)", "",
             f"ceiling: `noise_ceiling` ({source}); design check: min over driven voxels of "
             f"r(signal from the design, stored signal) = {check:.4f}", "",
             "| model | median r (driven) | median r / ceiling (driven) | mean r / ceiling (driven) | fit s |",
             "|---|---:|---:|---:|---:|"]
    for name, res in fits.items():
        r = res["r"].values
        frac = r[driven] / ceiling[driven]
        lines.append(f"| {name} | {np.median(r[driven]):.3f} | {np.median(frac):.3f} | {np.mean(frac):.3f} | "
                     f"{secs[name]:.1f} |")

    estimates = {}
    for name, res in fits.items():
        coef = res["weights"].values
        pred = Xtv @ coef
        estimates[f"{name}: prediction split"] = _share(pred, Xtv[:, wr] @ coef[wr])
    estimates["banded ridge: r2_split"] = _clipped_share(fits["banded ridge"]["r2_split"].values)
    st = fits["stacking"]
    estimates["stacking: r2_split"] = _clipped_share(st["r2_split"].values)
    estimates["stacking: weights"] = st["stack_weight"].values[0]
    estimates["stacking: structured VP (mean of forward and backward parts)"] = _clipped_share(
        (st["svp_forward"].values + st["svp_backward"].values) / 2)
    groups = {k: good & (driver == k) for k in ("wordrate", "embeddings", "both")}
    head = " | ".join(f"{k}-driven (n={int(m.sum())}, true {np.mean(true_share[m]):.2f})" for k, m in groups.items())
    lines += ["", f"Word-rate share of the explained variance vs the true share, driven voxels with ceiling >= "
                  f"{args.min_ceiling} (n={int(good.sum())}); mean estimated share per driver class:", "",
              f"| estimate | mean abs. error vs true share | {head} |", "|---|---:|---:|---:|---:|"]
    for name, est in estimates.items():
        ok = good & np.isfinite(est)
        err = np.mean(np.abs(est[ok] - true_share[ok]))
        cells = " | ".join(f"{np.nanmean(est[m]):.3f}" for m in groups.values())
        lines.append(f"| {name} | {err:.3f} (n={int(ok.sum())}) | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stories", type=int, default=16)
    ap.add_argument("--words", type=int, default=500)
    ap.add_argument("--voxels", type=int, default=2000)
    ap.add_argument("--embedding-dim", type=int, default=16)
    ap.add_argument("--n-iter", type=int, default=20, help="banded ridge's Dirichlet draws")
    ap.add_argument("--min-ceiling", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    emit(run(args), args.record)


if __name__ == "__main__":
    main()
