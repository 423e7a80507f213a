"""Sweeps: subjects x models x layers with the stimulus side computed once.

The scaling-laws analysis fits every layer of several models for several subjects who
heard the same stories. Run one :class:`~scalenc.trainer.AbstractTrainer` per (subject,
model) and each redoes all the work that depends only on the stimulus; :func:`sweep`
does it once:

1. **Features**, one Dask task per (model, story, stimulus): a story whose words and
   times (or audio) are the same for several subjects (``FeatureExtractor.stimulus``
   digests) is extracted once and shared by all of them (through the feature cache, so
   an interrupted sweep resumes where it stopped).
2. **Design matrices**, one task per (model, layer, story, split, TR grid): downsampling,
   FIR delays, trimming and z-scoring of the features (:func:`scalenc.align.align_story`).
3. **X side of the ridge**, one task per (model, layer, training set): ``G = X^T X``, the
   fold downdates and their eigendecompositions
   (:meth:`scalenc.models.NestedCVModel.x_side`), shared by every subject with the same
   training stories (and TR grids).
4. **Y side**, per (subject, model, layer): only ``C = X^T Y`` and the voxel blocks, with
   the responses read lazily from the subject's assembly (a voxel-chunked dask array:
   memory bounded by the block), through ``NestedCVModel.fit_dataset(..., x_side=...)``.

Steps 1-3 are one Dask graph (on ``client``'s cluster, else the local threaded
scheduler); step 4 maps voxel blocks on the same cluster. With a distributed client,
failed tasks are retried (``retries``).

Results: each (subject, model) is an ordinary run folder with a ``layer`` dim,
``<results_dir>/<name>/<subject>/<model>/`` (``results.zarr``, ``metrics.json``,
``config.toml`` that re-runs it alone with ``scalenc run``, ``report.png``), identical to
what that independent run writes; the sweep folder adds ``summary.csv`` (one row per
(subject, model, layer)), ``scaling.png`` (median r and fraction of the noise ceiling vs
layer, per model and subject) and ``sweep.json`` (settings, timings).

Example::

    from scalenc import sweep
    from scalenc.features import FeatureExtractorFactory as F

    res = sweep(["UTS01.zarr", "UTS02.zarr", "UTS03.zarr"],
                {"gpt2": [F.create_extractor("language_model", "gpt2", {}, "cache")],
                 "opt-125m": [F.create_extractor("language_model", "facebook/opt-125m", {}, "cache")]},
                layers=[0, 3, 6, 9, 12], results_dir="results", name="scaling", client="slurm")
    res.summary                     # pandas DataFrame, also results/scaling/summary.csv
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: columns of ``summary.csv``
SUMMARY_COLUMNS = ("subject", "model", "layer", "n_voxels", "median_r", "mean_r", "n_significant",
                   "percent_significant", "median_noise_ceiling", "fraction_of_ceiling", "n_ceiling_voxels",
                   "results_dir")


class SweepError(ValueError):
    """An invalid sweep specification; the message names the subject, model or story."""


@dataclasses.dataclass
class SweepResult:
    """What :func:`sweep` wrote.

    Attributes
    ----------
    path : Path
        The sweep folder (``summary.csv``, ``scaling.png``, ``sweep.json``, run folders).
    summary : pandas.DataFrame
        One row per (subject, model, layer); columns :data:`SUMMARY_COLUMNS`.
    runs : dict (subject, model) -> Path
        Run folders (:func:`scalenc.results.load` reads them).
    figure : Path or None
        ``scaling.png`` (None if it could not be drawn; the numbers are saved regardless).
    timings : dict
        Seconds: ``stimulus`` (steps 1-3), ``responses`` (step 4), ``write`` (run folders,
        summary, figure); counts of
        tasks: ``n_extract``, ``n_design``, ``n_x_side``, ``n_fits``.
    """

    path: Path
    summary: Any
    runs: dict
    figure: Path | None
    timings: dict


# ---------------------------------------------------------------------------------------------
# task functions (module level: they travel to Dask workers)
def _extract_task(extractors, assembly_path: str, story: str) -> list:
    """FeatureSets of one story, one per extractor of a model (through their caches)."""
    from .assembly import Assembly

    asm = Assembly(assembly_path)
    return [ex.extract(asm, story, layers=None) for ex in extractors]


def _design_task(feature_sets, modalities: Sequence[str], multi: int | None, layer, grid: np.ndarray, n_tr: int,
                 grid_offset: int, split: str, story: str, align: Mapping[str, Any]):
    """The design matrix of one story for one layer: a (tr, feature) DataArray, exactly as
    the trainer builds it (the responses only fix the row count, so none are read)."""
    from .align import align_story

    spaces = {}
    for i, (fs, modality) in enumerate(zip(feature_sets, modalities)):
        F = fs["features"]
        F = F.sel(layer=layer) if (i == multi and layer is not None) else F.isel(layer=0)
        name = str(fs.attrs.get("feature_space") or modality)
        while name in spaces:
            name += "_"
        spaces[name] = F
    X, _ = align_story(spaces, grid, np.empty((n_tr, 0), np.float32), downsampler=align["downsampler"],
                       downsample_config=align["downsample_config"], delays=align["delays"],
                       trimming=align["trimming"], grid_offset=grid_offset, split=split, story=story,
                       zscore_targets=False)
    return X


def _x_side_task(model, designs: Sequence, stories: Sequence[str], with_side: bool):
    """(X, groups, X side) of a training set: the concatenated design, the story of each
    row, and the ridge's X-side quantities (None when ``with_side`` is False)."""
    X = np.concatenate([d.values for d in designs])
    groups = np.concatenate([[s] * d.shape[0] for s, d in zip(stories, designs)])
    side = model.x_side(X, groups) if with_side else None
    return X, groups, side


def _stack(designs) -> tuple[np.ndarray, list[int]]:
    """The test design (stories stacked) and each story's row count."""
    return np.concatenate([d.values for d in designs]), [int(d.shape[0]) for d in designs]


# ---------------------------------------------------------------------------------------------
def _as_models(models) -> dict[str, list]:
    if isinstance(models, Mapping):
        out = {str(k): (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in models.items()}
    else:
        out = {}
        for m in models:
            exs = list(m) if isinstance(m, (list, tuple)) else [m]
            name = "+".join(Path(str(getattr(e, "model_name", None) or e.modality)).name for e in exs)
            while name in out:
                name += "_"
            out[name] = exs
    if not out:
        raise SweepError("sweep: no models (extractors) given")
    for name, exs in out.items():
        if not exs:
            raise SweepError(f"sweep: model {name!r} has no extractor")
        if "/" in name or name in (".", ".."):
            raise SweepError(f"sweep: model name {name!r} cannot be a folder name")
    return out


def _layers_for(layers, name: str):
    if isinstance(layers, Mapping):
        return layers.get(name)
    return layers


def _grid_key(asm, story: str) -> tuple:
    grid = np.ascontiguousarray(asm.tr_times(story).values, dtype="<f8")
    return (grid.tobytes(), int(asm.grid_offset(story)), int(asm.bold(story).shape[0]))


def _targets(asm, story: str, split: str, trimming, zscore_targets: bool, n_rows: int, subject: str):
    """Responses of one story for one split, lazily: the rows :func:`align_story` keeps."""
    from .align import zscore
    from .align.story import target_slice

    Y = (asm.bold_data(story) if hasattr(asm, "bold_data") else asm.bold(story).data)[target_slice(trimming, split)]
    if Y.shape[0] != n_rows:
        raise SweepError(f"subject {subject!r}, story {story!r} ({split}): {Y.shape[0]} response rows after "
                         f"trimming but {n_rows} design rows")
    return zscore(Y) if zscore_targets else Y


def _train_targets(asm, stories, trimming, zscore_targets: bool, groups, subject: str):
    """The training responses, as the trainer takes them: stacked story responses read a
    voxel block at a time (a dask array on a distributed client), or lazily concatenated."""
    from .align.story import target_slice

    parts = [_targets(asm, s, "train", trimming, zscore_targets and not hasattr(asm, "stacked_bold"),
                      int((groups == s).sum()), subject) for s in stories]  # row counts checked here
    if hasattr(asm, "stacked_bold"):
        return asm.stacked_bold(stories, [target_slice(trimming, "train")] * len(stories), zscore=zscore_targets)
    return da.concatenate([da.asarray(y) for y in parts], axis=0)


def _test_repeats(asm, story: str, trimming, n_rows: int):
    from .align.story import target_slice

    reps = asm.bold_repeats(story)
    if reps is None:
        return None
    r = np.asarray(reps.values, dtype=np.float64)[:, target_slice(trimming, "test")]
    return r if r.shape[1] == n_rows else None


def fraction_of_ceiling(r: np.ndarray, ceiling: np.ndarray | None, min_ceiling: float = 0.1) -> tuple[float, int]:
    """Mean r over the voxels whose noise ceiling is at least ``min_ceiling``, divided by
    their mean ceiling (a ratio of means, stable where single voxels' ratios are not).

    Returns
    -------
    (fraction, n_voxels) : (nan, 0) without a ceiling or such voxels.
    """
    if ceiling is None:
        return float("nan"), 0
    c = np.asarray(ceiling, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    keep = np.isfinite(c) & np.isfinite(r) & (c >= min_ceiling)
    if not keep.any():
        return float("nan"), 0
    return float(r[keep].mean() / c[keep].mean()), int(keep.sum())


def plot_scaling(summary, path: str | os.PathLike) -> Path:
    """``scaling.png``: median r and fraction of the noise ceiling vs layer, one line per
    (model, subject), one colour per model. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    models = list(dict.fromkeys(summary["model"]))
    styles = ["-", "--", ":", "-."]
    for mi, model in enumerate(models):
        sub_m = summary[summary["model"] == model]
        for si, subject in enumerate(dict.fromkeys(sub_m["subject"])):
            d = sub_m[sub_m["subject"] == subject]
            labels = list(d["layer"].astype(str))
            try:
                x = np.asarray([float(v) for v in labels])
            except ValueError:
                x = np.arange(len(labels), dtype=float)
            for ax, col in zip(axes, ("median_r", "fraction_of_ceiling")):
                ax.plot(x, d[col].values, styles[si % len(styles)], marker="o", ms=3,
                        color=colours[mi % len(colours)], label=f"{model} / {subject}")
    axes[0].set_ylabel("median test r")
    axes[1].set_ylabel("fraction of noise ceiling")
    for ax in axes:
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    tmp = path.with_name(f".tmp-{path.name}")
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------
def sweep(assemblies, models, layers=None, *, model=None, downsampler=None, downsample_config=None,
          fir_delays=(1, 2, 3, 4), trimming=None, use_train_test_split: bool = True, zscore_targets: bool = True,
          stories=None, results_dir: str | os.PathLike = "results", name: str = "sweep",
          cache_dir: str | os.PathLike | None = None, client=None, retries: int = 2, save_weights: bool = False,
          lookback: int | None = None, min_ceiling: float = 0.1, overwrite: bool = False) -> SweepResult:
    """Fit every (subject, model, layer) with the stimulus side computed once.

    Parameters
    ----------
    assemblies : sequence of Assembly or paths
        One per subject (their ``subject`` attributes must differ).
    models : mapping name -> extractor or list of extractors, or a sequence of them
        Each model is one feature space (its extractors' features side by side), as the
        trainer's ``feature_extractors``; at most one of its extractors has several layers.
    layers : list, or mapping model name -> list, optional
        Layers of each model's multi-layer extractor to fit (the trainer's ``layer_idx``);
        default: the extractor's own selection, else all its layers.
    model : NestedCVModel, optional
        The ridge model (default ``NestedCVModel()``); the same for every fit.
    downsampler, downsample_config, fir_delays, trimming, use_train_test_split, zscore_targets,
    lookback, save_weights
        As :class:`~scalenc.trainer.AbstractTrainer`.
    stories : list of str, optional
        Stories to use (default: each subject's own). A subject lacking one is an error.
    results_dir, name : path, str
        Results go to ``results_dir/name``.
    cache_dir : path, optional
        Feature cache of extractors that have none (default ``results_dir/feature_cache``).
    client : distributed.Client, address, jobqueue YAML, "local", or None
        The Dask cluster (:func:`scalenc.distributed.client`); None: in-process.
    retries : int
        Retries of failed tasks on a distributed cluster.
    min_ceiling : float
        Voxels whose noise ceiling is at least this enter ``fraction_of_ceiling``.
    overwrite : bool
        Replace an existing sweep folder ``results_dir/name``.

    Returns
    -------
    SweepResult

    Raises
    ------
    SweepError
        Duplicate subjects, unknown stories, models without extractors.
    FileExistsError
        ``results_dir/name`` exists and ``overwrite`` is False.
    """
    import dask
    import dask.array as da
    import pandas as pd
    import xarray as xr

    from . import results as results_mod
    from .align import feature_space_slices
    from .align.story import target_slice
    from .assembly import Assembly, load_assembly
    from .datasets.ground_truth import ground_truth_ceiling
    from .models import NestedCVModel
    from .trainer import AbstractTrainer

    t_start = time.perf_counter()
    root = Path(results_dir) / name
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise FileExistsError(f"sweep folder {root} exists: pass overwrite=True or choose another name")
    asms = [a if isinstance(a, Assembly) else load_assembly(a) for a in assemblies]
    if not asms:
        raise SweepError("sweep: no assemblies (subjects) given")
    subjects = [str(a.subject) for a in asms]
    dup = sorted({s for s in subjects if subjects.count(s) > 1})
    if dup:
        raise SweepError(f"sweep: subject(s) {dup} given more than once (assemblies: "
                         f"{[str(a.path) for a in asms]})")
    model = model if model is not None else NestedCVModel()
    mods = _as_models(models)
    cache_dir = Path(cache_dir) if cache_dir is not None else Path(results_dir) / "feature_cache"

    # one trainer per (subject, model): story selection, split, owned extractors, config.toml
    trainers: dict[tuple[str, str], AbstractTrainer] = {}
    for subj, asm in zip(subjects, asms):
        if stories is not None:
            missing = [s for s in stories if s not in asm.stories]
            if missing:
                raise SweepError(f"subject {subj!r} ({asm.path}) lacks stories {missing}")
        for mname, exs in mods.items():
            trainers[(subj, mname)] = AbstractTrainer(
                asm, exs, downsampler, model, fir_delays, trimming, use_train_test_split=use_train_test_split,
                logger_backend="none", results_dir=root / subj, downsample_config=downsample_config,
                layer_idx=_layers_for(layers, mname), lookback=lookback, story_selection=stories, run_name=mname,
                client=None, save_weights=save_weights, zscore_targets=zscore_targets, cache_dir=cache_dir,
                overwrite=True)

    from .distributed import client as make_client

    cl = None
    if client is not None:
        cl = client if not isinstance(client, (str, os.PathLike)) else make_client(str(client))
        for asm in asms:
            if asm.has_unsaved_changes():  # workers open the stores: persist audio paths first
                asm.save()

    # ---- 1. features: one task per (model, story, stimulus) -----------------------------------
    extract: dict[tuple, Any] = {}
    feat_of: dict[tuple[str, str, str], tuple] = {}     # (subject, model, story) -> extract key

    def annotate():
        return dask.annotate(retries=int(retries)) if cl is not None else contextlib.nullcontext()

    def compute(obj):
        if cl is not None:
            return cl.compute(dask.delayed(obj), retries=int(retries)).result()
        return dask.compute(obj, scheduler="threads")[0]

    with annotate():
        for (subj, mname), tr in trainers.items():
            exs = tr.feature_extractors
            for story in tr.stories:
                stim = tuple(ex.stimulus(tr.assembly, story) for ex in exs)
                key = (mname, story, stim)
                if key not in extract:
                    extract[key] = dask.delayed(_extract_task, pure=True)(
                        exs, str(tr.assembly.path), story,
                        dask_key_name=f"sweep-extract-{mname}-{story}-{len(extract)}")
                feat_of[(subj, mname, story)] = key

    # layers of each model, from its first story's features (computed first; the graph's task
    # for that story then finds them in the cache)
    layer_plan: dict[str, tuple[list, int | None]] = {}
    t_stim0 = time.perf_counter()
    firsts = compute({m: extract[feat_of[(subjects[0], m, trainers[(subjects[0], m)].stories[0])]] for m in mods})
    for mname, first in firsts.items():
        s0 = trainers[(subjects[0], mname)].stories[0]
        layer_plan[mname] = trainers[(subjects[0], mname)]._layers({(s0, i): fs for i, fs in enumerate(first)})

    # ---- 2. designs: one task per (model, layer, story, split, grid) ---------------------------
    align = {"downsampler": trainers[(subjects[0], next(iter(mods)))].downsampler,
             "downsample_config": dict(downsample_config or {}), "delays": [int(d) for d in fir_delays],
             "trimming": trainers[(subjects[0], next(iter(mods)))].trimming}
    designs: dict[tuple, Any] = {}
    sides: dict[tuple, Any] = {}
    side_of: dict[tuple, tuple] = {}     # (subject, model, layer) -> x-side key
    tests: dict[tuple, Any] = {}
    test_of: dict[tuple, tuple] = {}
    with annotate():
        for (subj, mname), tr in trainers.items():
            train_s, test_s = tr.split()
            lay_list, multi = layer_plan[mname]
            modalities = [ex.modality for ex in tr.feature_extractors]
            for layer in lay_list:
                keys = {}
                for split, ss in (("train", train_s), ("test", test_s)):
                    for story in ss:
                        g = _grid_key(tr.assembly, story)
                        dkey = (mname, layer, story, split, feat_of[(subj, mname, story)], g)
                        if dkey not in designs:
                            designs[dkey] = dask.delayed(_design_task, pure=True)(
                                extract[feat_of[(subj, mname, story)]], modalities, multi, layer,
                                tr.assembly.tr_times(story).values, g[2], g[1], split, story, align,
                                dask_key_name=f"sweep-design-{mname}-{layer}-{story}-{split}-{len(designs)}")
                        keys[(story, split)] = dkey
                skey = (mname, layer, tuple(keys[(s, "train")] for s in train_s))
                if skey not in sides:
                    sides[skey] = dask.delayed(_x_side_task, pure=True)(
                        model, [designs[keys[(s, "train")]] for s in train_s], list(train_s), bool(test_s),
                        dask_key_name=f"sweep-xside-{mname}-{layer}-{len(sides)}")
                side_of[(subj, mname, layer)] = skey
                if test_s:
                    tkey = (mname, layer, tuple(keys[(s, "test")] for s in test_s))
                    if tkey not in tests:
                        tests[tkey] = dask.delayed(_stack, pure=True)(
                            [designs[keys[(s, "test")]] for s in test_s],
                            dask_key_name=f"sweep-xtest-{mname}-{layer}-{len(tests)}")
                    test_of[(subj, mname, layer)] = tkey

    # the stimulus side: one graph, computed on the cluster (retried) or here
    first_design: dict[tuple, tuple] = {}   # (model, layer) -> one design key (its column layout)
    for dkey in designs:
        first_design.setdefault((dkey[0], dkey[1]), dkey)
    graph = {"sides": sides, "tests": tests, "layout": {ml: designs[k] for ml, k in first_design.items()}}
    stim = compute(graph)
    t_stim = time.perf_counter() - t_stim0
    space_of = {ml: feature_space_slices(v) for ml, v in stim["layout"].items()}
    design_coords = stim["layout"]
    logger.info("sweep %s: stimulus side (%d extractions, %d designs, %d X sides) in %.1f s", name, len(extract),
                len(designs), len(sides), t_stim)

    # ---- 4. responses: per (subject, model, layer) only C = X^T Y and the voxel blocks ----------
    t0 = time.perf_counter()
    runs: dict[tuple[str, str], Path] = {}
    rows = []
    n_fits = 0
    t_write = 0.0
    for (subj, mname), tr in trainers.items():
        train_s, test_s = tr.split()
        lay_list, _ = layer_plan[mname]
        per_layer = []
        for layer in lay_list:
            X, groups, side = stim["sides"][side_of[(subj, mname, layer)]]
            Y = _train_targets(tr.assembly, train_s, tr.trimming, zscore_targets, groups, subj)
            kw: dict[str, Any] = {"groups": groups}
            if test_s:
                Xt, n_te = stim["tests"][test_of[(subj, mname, layer)]]
                Yt = np.concatenate([np.asarray(_targets(tr.assembly, s, "test", tr.trimming, zscore_targets, n,
                                                         subj)) for s, n in zip(test_s, n_te)])
                kw.update(X_test=Xt, y_test=Yt)
                if len(test_s) == 1:
                    reps = _test_repeats(tr.assembly, test_s[0], tr.trimming, Yt.shape[0])
                    if reps is not None:
                        kw["test_repeats"] = reps
                kw["x_side"] = side
            with annotate():
                ds = model.fit_dataset(X, Y, **kw)
            n_fits += 1
            if test_s and len(test_s) == 1:
                gt = ground_truth_ceiling(tr.assembly, test_s[0], kw["y_test"], target_slice(tr.trimming, "test"))
                if gt is not None:
                    ds["noise_ceiling"] = ("voxel", gt)
                    ds.attrs["noise_ceiling_source"] = "ground truth"
            if "weights" in ds:
                if save_weights:
                    dc = design_coords[(mname, layer)]
                    ds = ds.assign_coords(feature_space=("feature", dc["feature_space"].values),
                                          delay=("feature", dc["delay"].values))
                else:
                    ds = ds.drop_vars("weights")
            per_layer.append(ds)
        labels = ["0" if lay is None else str(lay) for lay in lay_list]
        ceiling = per_layer[0]["noise_ceiling"] if "noise_ceiling" in per_layer[0] else None
        res = xr.concat([d.drop_vars("noise_ceiling", errors="ignore") for d in per_layer],
                        dim=pd.Index(labels, name="layer"), combine_attrs="override")
        if ceiling is not None:
            res["noise_ceiling"] = ceiling
        res = res.assign_coords(voxel=("voxel", tr.assembly.voxels["voxel"].values))
        res.attrs["feature_spaces"] = json.dumps({k: list(v) for k, v in space_of[(mname, lay_list[0])].items()})
        tw = time.perf_counter()
        run_dir = results_mod.save(tr.run_dir, res, config=tr.config(), overwrite=True)
        t_write += time.perf_counter() - tw
        runs[(subj, mname)] = run_dir
        c = None if ceiling is None else np.asarray(ceiling.values, dtype=np.float64)
        for label in labels:
            r = np.asarray(res["r"].sel(layer=label).values, dtype=np.float64)
            sig = np.asarray(res["significant"].sel(layer=label).values) if "significant" in res else None
            frac, n_c = fraction_of_ceiling(r, c, min_ceiling)
            rows.append({"subject": subj, "model": mname, "layer": label, "n_voxels": int(r.size),
                         "median_r": float(np.nanmedian(r)), "mean_r": float(np.nanmean(r)),
                         "n_significant": None if sig is None else int(sig.sum()),
                         "percent_significant": None if sig is None else float(100 * sig.mean()),
                         "median_noise_ceiling": float("nan") if c is None else float(np.nanmedian(c)),
                         "fraction_of_ceiling": frac, "n_ceiling_voxels": n_c, "results_dir": str(run_dir)})
    t_resp = time.perf_counter() - t0 - t_write

    # ---- summary table, figure, settings -----------------------------------------------------
    t0 = time.perf_counter()
    summary = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / ".tmp-summary.csv"
    summary.to_csv(tmp, index=False)
    os.replace(tmp, root / "summary.csv")
    try:
        figure = plot_scaling(summary, root / "scaling.png")
    except Exception as e:  # noqa: BLE001 - the numbers are saved; a plot must not lose them
        logger.warning("could not draw %s/scaling.png (%s); the summary is saved", root, e)
        figure = None
    timings = {"stimulus": t_stim, "responses": t_resp, "write": t_write + time.perf_counter() - t0,
               "total": time.perf_counter() - t_start, "n_extract": len(extract), "n_design": len(designs),
               "n_x_side": len(sides), "n_fits": n_fits}
    meta = {"subjects": subjects, "assemblies": [str(Path(a.path).resolve()) for a in asms],
            "models": {m: [ex.modality for ex in exs] for m, exs in mods.items()},
            "layers": {m: ["0" if x is None else str(x) for x in ls] for m, (ls, _) in layer_plan.items()},
            "timings": timings, "min_ceiling": min_ceiling}
    tmp = root / ".tmp-sweep.json"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, root / "sweep.json")
    logger.info("sweep %s: %d fits; stimulus %.1f s, responses %.1f s", name, n_fits, t_stim, t_resp)
    return SweepResult(path=root, summary=summary, runs=runs, figure=figure, timings=timings)


__all__ = ["SUMMARY_COLUMNS", "SweepError", "SweepResult", "fraction_of_ceiling", "plot_scaling", "sweep"]
