"""Sweeps: subjects x models x layers with the stimulus side computed once.

The scaling-laws analysis fits every layer of several models for several subjects who
heard the same stories. Run one :class:`~scalenc.trainer.AbstractTrainer` per (subject,
model) and each redoes all the work that depends only on the stimulus; :func:`sweep`
does it once:

Both run on the one engine (:mod:`scalenc.engine`): the sweep makes one
:class:`~scalenc.trainer.AbstractTrainer` per (subject, model), takes each one's
:class:`~scalenc.engine.Run` and executes them as one :class:`~scalenc.engine.Plan`, so
features per (model, story, stimulus), designs per (model, layer, story, split, TR grid)
and ridge X sides per (model, layer, training set) are computed once for every subject who
heard the same stories; only the voxel side (``C = X^T Y`` and the voxel blocks) runs per
subject. With a distributed client, failed tasks are retried (``retries``).

Results: each (subject, model) is an ordinary run folder with a ``layer`` dim,
``<results_dir>/<name>/<subject>/<model>/`` (``results.zarr``, ``metrics.json``,
``config.toml`` that re-runs it alone with ``scalenc run``, ``report.png``), what that
independent run writes; the sweep folder adds ``summary.csv`` (one row per (subject,
model, layer), with the scaling-laws paper's "average r²", the mean of ``r * |r|`` over
voxels, next to median r and the ceiling-normalised score), ``scaling.png`` and
``sweep.json`` (settings, timings).

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

import dataclasses
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import engine
from .assembly import Assembly, load_assembly
from .config import ConfigError, RunConfig
from .models import NestedCVModel
from .trainer import AbstractTrainer

logger = logging.getLogger(__name__)

#: columns of ``summary.csv``
SUMMARY_COLUMNS = ("subject", "model", "layer", "n_voxels", "median_r", "mean_r", "mean_r_abs_r",
                   "n_significant", "percent_significant", "median_noise_ceiling", "fraction_of_ceiling",
                   "median_r_norm", "n_ceiling_voxels", "best_layer", "n_train_stories", "train_stories",
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
        Seconds: ``stimulus`` (features, designs, X sides), ``responses`` (the voxel side),
        ``write`` (run folders, summary, figure); counts of tasks: ``n_extract``,
        ``n_design``, ``n_x_side``, ``n_fits``.
    """

    path: Path
    summary: Any
    runs: dict
    figure: Path | None
    timings: dict


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


def mean_r_abs_r(r: np.ndarray) -> float:
    """The scaling-laws paper's "average r²" (Antonello, Vaidya & Huth 2023): the mean over
    voxels of ``r * |r|`` (a signed square, so that negative correlations count against)."""
    r = np.asarray(r, dtype=np.float64)
    r = r[np.isfinite(r)]
    return float(np.mean(r * np.abs(r))) if r.size else float("nan")


def median_r_norm(r: np.ndarray, ceiling: np.ndarray | None, min_ceiling: float = 0.1) -> float:
    """Median over the voxels with a ceiling of at least ``min_ceiling`` of ``r / ceiling``."""
    if ceiling is None:
        return float("nan")
    c = np.asarray(ceiling, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    keep = np.isfinite(c) & np.isfinite(r) & (c >= min_ceiling)
    return float(np.median(r[keep] / c[keep])) if keep.any() else float("nan")


def summary_rows(subject: str, model: str, res, run_dir, train_stories, min_ceiling: float) -> list[dict]:
    """One ``summary.csv`` row per layer of a run's results Dataset."""
    c = np.asarray(res["noise_ceiling"].values, dtype=np.float64) if "noise_ceiling" in res else None
    rows = []
    for label in [str(x) for x in res["layer"].values]:
        r = np.asarray(res["r"].sel(layer=label).values, dtype=np.float64)
        sig = np.asarray(res["significant"].sel(layer=label).values) if "significant" in res else None
        frac, n_c = fraction_of_ceiling(r, c, min_ceiling)
        rows.append({"subject": subject, "model": model, "layer": label, "n_voxels": int(r.size),
                     "median_r": float(np.nanmedian(r)), "mean_r": float(np.nanmean(r)),
                     "mean_r_abs_r": mean_r_abs_r(r),
                     "n_significant": None if sig is None else int(sig.sum()),
                     "percent_significant": None if sig is None else float(100 * sig.mean()),
                     "median_noise_ceiling": float("nan") if c is None else float(np.nanmedian(c)),
                     "fraction_of_ceiling": frac, "median_r_norm": median_r_norm(r, c, min_ceiling),
                     "n_ceiling_voxels": n_c, "best_layer": False, "n_train_stories": len(train_stories),
                     "train_stories": " ".join(train_stories), "results_dir": str(run_dir)})
    if rows:
        best = max(range(len(rows)), key=lambda i: (np.nan_to_num(rows[i]["mean_r_abs_r"], nan=-np.inf)))
        rows[best]["best_layer"] = True
    return rows


def plot_scaling(summary, path: str | os.PathLike, *, parameters: Mapping[str, float] | None = None) -> Path:
    """``scaling.png`` (:func:`scaling_figure`), written atomically."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig = scaling_figure(summary, parameters=parameters)
    tmp = path.with_name(f".tmp-{path.name}")
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def scaling_figure(summary, *, parameters: Mapping[str, float] | None = None):
    """The paper's average r² (mean ``r |r|``), median r and fraction of the noise ceiling vs
    layer (integer layer ticks, y axes from 0), one line per (model, subject), one colour per
    model, a title; with ``parameters`` (model -> parameter count) a fourth panel puts each
    model's best layer on a log-scale model-size axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cols = [("mean_r_abs_r", "average r² (mean r·|r|)"), ("median_r", "median test r"),
            ("fraction_of_ceiling", "fraction of noise ceiling")]
    n_panels = len(cols) + bool(parameters)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.2 * n_panels, 3.8))
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
            for ax, (col, _) in zip(axes, cols):
                ax.plot(x, d[col].values, styles[si % len(styles)], marker="o", ms=3,
                        color=colours[mi % len(colours)], label=f"{model} / {subject}")
    for ax, (col, ylabel) in zip(axes, cols):
        ax.set_xlabel("layer")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        vals = np.asarray(summary[col], dtype=float)
        top = np.nanmax(vals) if np.isfinite(vals).any() else 1.0
        ax.set_ylim(min(0.0, np.nanmin(vals) if np.isfinite(vals).any() else 0.0), max(top * 1.1, 1e-3))
    if parameters:
        ax = axes[-1]
        best = summary.groupby(["model", "subject"])["mean_r_abs_r"].max().groupby("model").mean()
        xs = [(parameters[m], best[m], m) for m in best.index if parameters.get(m)]
        for mi, (n, v, m) in enumerate(sorted(xs)):
            ax.plot([n], [v], "o", color=colours[models.index(m) % len(colours)], label=m)
        ax.set_xscale("log")
        ax.set_xlabel("model parameters")
        ax.set_ylabel("best layer's average r²")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"scaling: {len(models)} model(s), {summary['subject'].nunique()} subject(s)")
    fig.tight_layout()
    return fig


def _stacked_runs(stack: Mapping[str, list], mods: Mapping[str, list], rows: list, runs: Mapping, trainers: Mapping,
                  asms, make_trainer) -> tuple[list, dict]:
    """The runs of ``stack`` (name -> models): per subject, the models' extractors side by
    side, each multi-layer model pinned at its best layer (highest mean ``r |r|`` averaged
    over subjects, from the models' summary ``rows``). Returns ``[(trainer, run)]`` and
    ``{stack name: {model: best layer}}``."""
    import pandas as pd

    table = pd.DataFrame(rows)
    sruns, chosen = [], {}
    for sname, names in stack.items():
        missing = [m for m in names if m not in mods]
        if missing or len(names) < 2 or sname in mods:
            raise SweepError(f"sweep: stack {sname!r} needs two or more of the sweep's models {list(mods)} and a "
                             f"name of its own (unknown: {missing})")
        best = {m: str(table[table.model == m].groupby("layer", sort=False)["mean_r_abs_r"].mean().idxmax())
                for m in names}
        chosen[sname] = best
        for asm in asms:
            subj = str(asm.subject)
            exs, pins = [], []
            for m in names:
                run = runs[(subj, m)]
                if run.multi is not None:
                    layer = next(lay for lay in run.layers if engine.layer_label(lay) == best[m])
                    pins.append((len(exs) + run.multi, layer))
                exs += trainers[(subj, m)].feature_extractors
            tr = make_trainer(asm, exs, sname)
            run = tr.plan().runs[0]
            run.layers, run.multi = [engine.Pinned(pins)], None
            sruns.append((tr, run))
    return sruns, chosen


# ---------------------------------------------------------------------------------------------
def sweep(assemblies, models, layers=None, *, model=None, alignment: engine.Alignment | None = None,
          use_train_test_split: bool = True, stories=None, results_dir: str | os.PathLike = "results",
          name: str = "sweep", cache_dir: str | os.PathLike | None = None, client=None, retries: int = 2,
          save_weights: bool = False, lookback: int | None = None, min_ceiling: float = 0.1,
          overwrite: bool = False, parameters: Mapping[str, float] | None = None,
          stack: Mapping[str, list] | None = None, stack_model=None, **align_options) -> SweepResult:
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
    alignment : scalenc.engine.Alignment, optional
        Downsampler, ``downsample_config``, ``fir_delays``, ``trimming`` and
        ``zscore_targets``; each may also be given as a keyword of its own (as for
        :class:`~scalenc.trainer.AbstractTrainer`).
    use_train_test_split, lookback, save_weights
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
        Voxels whose noise ceiling is at least this enter ``fraction_of_ceiling`` and
        ``median_r_norm``.
    overwrite : bool
        Replace an existing sweep folder ``results_dir/name``.
    parameters : mapping model name -> parameter count, optional
        Adds a log-scale model-size panel to ``scaling.png``.
    stack : mapping name -> list of model names, optional
        After the models' fits, one stacked fit per subject and entry: the listed models'
        extractors side by side, each multi-layer model at its best layer (highest mean
        ``r |r|``, averaged over subjects), fitted with ``stack_model`` (default: ``model``
        with ``model_name="stacking"``, :mod:`scalenc.ridge.stacking`). Its run folder is
        ``<subject>/<name>/``, its summary rows have ``model = name`` and the layers as
        ``"L_a+L_b"``; ``sweep.json`` records which layers were stacked. (Its
        ``config.toml`` names the extractors and model; the layers are the sweep's choice.)

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
    import pandas as pd

    t_start = time.perf_counter()
    fields = {f.name for f in dataclasses.fields(engine.Alignment)} | {"downsampler", "trimming"}
    unknown = sorted(set(align_options) - fields)
    if unknown:
        raise TypeError(f"sweep() got unexpected keyword(s) {unknown}")
    align = dataclasses.replace(alignment or engine.Alignment(), **align_options)
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

    def trainer_of(asm, exs, run_name: str, fit_model, layer_idx=None) -> AbstractTrainer:
        """The trainer of one (subject, model): its run is what the single run would fit."""
        return AbstractTrainer(asm, exs, align.downsampler, fit_model, align.fir_delays, align.trimming,
                               use_train_test_split=use_train_test_split, logger_backend="none",
                               results_dir=root / str(asm.subject), downsample_config=align.downsample_config,
                               layer_idx=layer_idx, lookback=lookback, story_selection=stories, run_name=run_name,
                               client=None, save_weights=save_weights, zscore_targets=align.zscore_targets,
                               cache_dir=cache_dir, overwrite=True)

    trainers: dict[tuple[str, str], AbstractTrainer] = {}
    for subj, asm in zip(subjects, asms):
        if stories is not None:
            missing = [s for s in stories if s not in asm.stories]
            if missing:
                raise SweepError(f"subject {subj!r} ({asm.path}) lacks stories {missing}")
        for mname, exs in mods.items():
            trainers[(subj, mname)] = trainer_of(asm, exs, mname, model, _layers_for(layers, mname))
    train_sets = {tuple(tr.split()[0]) for tr in trainers.values()}
    if len(train_sets) > 1:
        logger.warning("sweep %s: the subjects' training sets differ (%d different sets); compare their scores "
                       "with care (summary.csv has a train_stories column)", name, len(train_sets))
    runs = {key: tr.plan().runs[0] for key, tr in trainers.items()}
    plan = engine.Plan(list(runs.values()), align, model, save_weights=save_weights,
                       client=client, retries=retries, overwrite=True, name=name)
    out = plan.execute()
    t = out.timings

    rows = []
    for (subj, mname), tr in trainers.items():
        rows += summary_rows(subj, mname, out.datasets[(subj, mname)], out.run_dirs[(subj, mname)],
                             tr.split()[0], min_ceiling)
    stacked = {}
    if stack:
        stack_model = stack_model if stack_model is not None else \
            type(model)(**{**model.get_params(), "model_name": "stacking"})
        sruns, stacked = _stacked_runs(stack, mods, rows, runs, trainers, asms,
                                       lambda asm, exs, sname: trainer_of(asm, exs, sname, stack_model))
        sout = engine.Plan([r for _, r in sruns], align, stack_model, save_weights=save_weights, client=client,
                           retries=retries, overwrite=True, name=f"{name}-stack").execute()
        for tr, run in sruns:
            rows += summary_rows(run.subject, run.name, sout.datasets[run.key], sout.run_dirs[run.key],
                                 tr.split()[0], min_ceiling)
            out.run_dirs[run.key] = sout.run_dirs[run.key]
        for k in ("extract", "align", "fit", "write", "n_extract", "n_design", "n_x_side", "n_fits"):
            t[k] += sout.timings[k]

    # ---- summary table, figure, settings -----------------------------------------------------
    t0 = time.perf_counter()
    summary = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / ".tmp-summary.csv"
    summary.to_csv(tmp, index=False)
    os.replace(tmp, root / "summary.csv")
    try:
        figure = plot_scaling(summary, root / "scaling.png", parameters=parameters)
    except Exception as e:  # noqa: BLE001 - the numbers are saved; a plot must not lose them
        logger.warning("could not draw %s/scaling.png (%s); the summary is saved", root, e)
        figure = None
    timings = {"stimulus": t["extract"] + t["align"], "responses": t["fit"],
               "write": t["write"] + time.perf_counter() - t0, "total": time.perf_counter() - t_start,
               **{k: int(t[k]) for k in ("n_extract", "n_design", "n_x_side", "n_fits")}}
    meta = {"subjects": subjects, "assemblies": [str(Path(a.path).resolve()) for a in asms],
            "models": {m: [ex.modality for ex in exs] for m, exs in mods.items()},
            "layers": {m: [engine.layer_label(x) for x in runs[(subjects[0], m)].layers] for m in mods},
            "timings": timings, "min_ceiling": min_ceiling, "stack": stacked,
            "parameters": dict(parameters or {})}
    tmp = root / ".tmp-sweep.json"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, root / "sweep.json")
    logger.info("sweep %s: %d fits; stimulus %.1f s, responses %.1f s", name, timings["n_fits"],
                timings["stimulus"], timings["responses"])
    return SweepResult(path=root, summary=summary, runs=dict(out.run_dirs), figure=figure, timings=timings)


def from_config(cfg: dict[str, Any], *, cluster: Any = None, source: str = "config",
                overwrite: bool | None = None) -> SweepResult:
    """Run a sweep configuration (``scalenc run``): ``assembly`` a list of subjects'
    assemblies, ``[[models]]`` (``name`` and ``[[models.extractors]]``) or one model's
    ``extractors``, ``layer_idx`` the layers; the other keys as for one run."""
    rc = RunConfig.from_dict(cfg, source=source)
    if rc.banded_by is not None:
        raise ConfigError(f"{source}: banded_by is not available in a sweep")
    objs = engine.build_objects(rc, source=source)
    assemblies = rc.assembly if isinstance(rc.assembly, list) else [rc.assembly]
    models = objs.get("models") or {rc.run_name or "model": objs["extractors"]}
    parameters = {m["name"]: float(m["parameters"]) for m in (rc.models or []) if m.get("parameters")}
    stack = {s_["name"]: list(s_["models"]) for s_ in (rc.stack or [])}
    try:
        return sweep(assemblies, models, rc.layer_idx, model=objs["model"],
                     alignment=engine.Alignment(objs["downsampler"], dict(rc.downsample_config or {}),
                                                [int(d) for d in rc.fir_delays], objs["trimming"],
                                                rc.zscore_targets),
                     use_train_test_split=rc.use_train_test_split, stories=rc.stories,
                     results_dir=rc.results_dir, name=rc.run_name or "sweep", cache_dir=rc.cache_dir,
                     client=cluster if cluster is not None else rc.cluster, save_weights=rc.save_weights,
                     lookback=rc.lookback, overwrite=rc.overwrite if overwrite is None else overwrite,
                     parameters=parameters or None, stack=stack or None)
    except (TypeError, KeyError) as e:
        raise ConfigError(f"{source}: {e}") from e


__all__ = ["SUMMARY_COLUMNS", "SweepError", "SweepResult", "fraction_of_ceiling", "from_config", "mean_r_abs_r",
           "median_r_norm", "plot_scaling", "scaling_figure", "sweep"]
