"""The run engine: one plan of stimulus-side and voxel-side work under both
:class:`~scalenc.trainer.AbstractTrainer` (a plan of one subject and one model) and
:func:`scalenc.sweep` (subjects x models x layers), so that a sweep's run folder is what
the single run writes.

A :class:`Plan` holds :class:`Run` s (one per (subject, model): an assembly, extractors,
train/test stories, layers, a run folder) and the settings they share (:class:`Alignment`,
the model, weights, the cluster). :meth:`Plan.execute` runs it:

Stimulus side (depends only on what was heard, shared by every subject who heard it):

1. **features**, one task per (model, story, stimulus digest): ``FeatureExtractor.extract``
   through the feature cache (in-process: one after another with a progress bar; on a Dask
   cluster: one task each, retried);
2. **designs**, one task per (model, layer, story, split, TR grid): :func:`story_design`
   (:func:`scalenc.align.align_story` on the layer's feature spaces), a labeled ``(tr, feature)``
   DataArray with ``story``, ``feature_space`` and ``delay`` coordinates;
3. **X sides**, one task per (model, layer, training set): the stacked labeled design and,
   when the model can share it, its X-side quantities (``model.x_side``).

Voxel side (per subject):

4. per (run, layer): ``model.fit_dataset(X, Y, X_test=..., y_test=...)`` with the labeled
   designs and the subject's responses (:class:`~scalenc.assembly.StackedResponses`, read a
   voxel block at a time), the noise ceiling (the assembly's known signal, else the test
   repeats' ``cc_max`` in voxel blocks), weights kept or dropped;
5. per run: layers stacked on ``layer``, :func:`scalenc.results.save`, the report.

Steps 2-3 are one Dask graph (on the cluster, else the local threaded scheduler).
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
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from . import results as results_mod
from .align import Downsampler, TrimmingConfig, align_story, feature_space_slices, zscore
from .align.story import target_slice
from .assembly import Assembly, load_assembly
from .config import ConfigError, RunConfig, model_kwargs
from .features import FeatureExtractorFactory
from .ridge.scoring import add_normalized_correlation, noise_ceiling

logger = logging.getLogger(__name__)

__all__ = ["Alignment", "Pinned", "Plan", "PlanResult", "Run", "build_objects", "select_layers", "split_stories",
           "story_design", "layer_label"]


class PlanError(ValueError):
    """An invalid plan; the message names the subject, model or story."""


# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Alignment:
    """How features meet responses: the settings of :func:`scalenc.align.align_story`."""

    downsampler: Downsampler = dataclasses.field(default_factory=Downsampler)
    downsample_config: dict = dataclasses.field(default_factory=dict)
    fir_delays: list = dataclasses.field(default_factory=lambda: [1, 2, 3, 4])
    trimming: TrimmingConfig | None = None
    zscore_targets: bool = True

    def targets(self, asm, story: str, split: str, n_rows: int | None = None, *, zscore_rows: bool | None = None,
                where: str = ""):
        """Responses of one story for ``split`` (lazy): the rows :func:`align_story` keeps,
        z-scored per voxel when ``zscore_targets``; ``n_rows`` is checked."""
        Y = (asm.bold_data(story) if hasattr(asm, "bold_data") else asm.bold(story).data)[
            target_slice(self.trimming, split)]
        if n_rows is not None and Y.shape[0] != n_rows:
            raise PlanError(f"{where}story {story!r} ({split}): {Y.shape[0]} response rows after trimming but "
                            f"{n_rows} design rows")
        return zscore(Y) if (self.zscore_targets if zscore_rows is None else zscore_rows) else Y


@dataclasses.dataclass
class Run:
    """One (subject, model) run: what one :class:`~scalenc.trainer.AbstractTrainer` fits.

    ``layers``/``multi`` are resolved by :meth:`Plan.execute` from the first story's
    features (:func:`select_layers`) unless given."""

    subject: str
    name: str
    assembly: Any
    extractors: list
    train: list
    test: list
    run_dir: Path
    layer_idx: Any = None
    config: Mapping[str, Any] | None = None
    layers: list | None = None
    multi: int | None = None

    @property
    def stories(self) -> list[str]:
        return list(self.train) + list(self.test)

    @property
    def key(self) -> tuple[str, str]:
        return (self.subject, self.name)


@dataclasses.dataclass
class PlanResult:
    """What :meth:`Plan.execute` produced: per run the results Dataset (saved) and its folder,
    the designs' feature-space column ranges, timings (s) and task counts."""

    datasets: dict
    run_dirs: dict
    feature_spaces: dict
    timings: dict


class Pinned(tuple):
    """Layers pinned per extractor, ``((extractor index, layer), ...)``: one fit whose
    multi-layer extractors each contribute their own layer (hashable, so it can label a
    plan's designs)."""


def layer_label(layer) -> str:
    """The ``layer`` coordinate of a fitted layer (``"0"`` for a single-layer fit, ``"L1+L2"``
    for one banded fit over several layers)."""
    if layer is None:
        return "0"
    if isinstance(layer, Pinned):
        return "+".join(str(lay) for _, lay in layer)
    if isinstance(layer, tuple):
        return "+".join(map(str, layer))
    return str(layer)


def split_stories(asm, stories: Sequence[str], use_train_test_split: bool) -> tuple[list[str], list[str]]:
    """(train stories, test stories): the assembly's test stories among ``stories`` (else
    the last one); all stories for training without a split."""
    stories = list(stories)
    if not use_train_test_split:
        return stories, []
    test = [s for s in asm.test_stories if s in stories] or stories[-1:]
    train = [s for s in stories if s not in test]
    if not train:
        raise ValueError(f"no training story left: stories {stories}, test {test}")
    return train, test


def select_layers(extractors, first_sets, layer_idx=None, banded_by: str | None = None) -> tuple[list, int | None]:
    """Layer labels to fit and which extractor provides them (None: a single-layer fit).

    ``first_sets``: one FeatureSet per extractor (any story). ``layer_idx`` in the tutorial
    API's numbering (a speech extractor counts as LITcoder); ``banded_by="layer"`` makes the
    selected layers one banded fit (a single tuple label)."""
    multi = [(i, np.asarray(fs["layer"].values).tolist()) for i, fs in enumerate(first_sets)
             if fs.sizes["layer"] > 1]  # plain Python labels: messages show 3, not np.int64(3)
    if len(multi) > 1:
        raise ValueError("more than one multi-layer extractor: choose layers with each extractor's layer_idx "
                         "config so that at most one contributes several layers")
    if not multi:
        layers, which = [None], None
    else:
        which, labels = multi[0]
        ex = extractors[which]
        sel = ex.layer_labels(layer_idx, labels) if layer_idx is not None else ex.selected_layers(labels)
        if sel is None or sel == "all":
            layers = labels
        else:
            layers = list(sel) if isinstance(sel, (list, tuple)) else [sel]
            for lay in layers:
                if lay not in labels:
                    raise ValueError(f"layer_idx {lay!r} not available from {ex.modality}; layers: {labels}")
    if banded_by == "layer":
        if which is None or len(layers) < 2:
            raise ValueError("banded_by='layer' needs a multi-layer extractor and at least two layers "
                             "(layer_idx=[...])")
        layers = [tuple(layers)]
    return layers, which


def design_spaces(feature_sets, modalities: Sequence[str], multi: int | None, layer) -> dict[str, xr.DataArray]:
    """The named feature spaces of one story for one layer: each extractor's space (named by
    its FeatureSet's ``feature_space``, else its modality), the multi-layer extractor's at
    ``layer`` (a tuple: one space per layer, for a banded fit over layers; a :class:`Pinned`:
    each of several multi-layer extractors at its own layer, e.g. a stacked fit of two
    models' best layers)."""
    spaces: dict[str, xr.DataArray] = {}
    for i, (fs, modality) in enumerate(zip(feature_sets, modalities)):
        F = fs["features"]
        name = str(fs.attrs.get("feature_space") or modality)
        if isinstance(layer, Pinned):
            pins = dict(layer)
            F = F.sel(layer=pins[i]) if i in pins else F.isel(layer=0)
            while name in spaces:
                name += "_"
            spaces[name] = F
            continue
        if i == multi and isinstance(layer, tuple):
            for lay in layer:
                spaces[f"{name} layer {lay}"] = F.sel(layer=lay)
            continue
        F = F.sel(layer=layer) if (i == multi and layer is not None) else F.isel(layer=0)
        while name in spaces:
            name += "_"
        spaces[name] = F
    return spaces


def story_design(feature_sets, modalities: Sequence[str], multi: int | None, layer, grid: np.ndarray, n_tr: int,
                 grid_offset: int, split: str, story: str, align: Alignment) -> xr.DataArray:
    """One story's design matrix for one layer: a ``(tr, feature)`` DataArray with ``story``
    and ``tr_time`` on ``tr``, ``feature_space`` and ``delay`` on ``feature`` (the responses
    only fix the row count, so none are read)."""
    X, _ = align_story(design_spaces(feature_sets, modalities, multi, layer), grid,
                       np.empty((n_tr, 0), np.float32), downsampler=align.downsampler,
                       downsample_config=align.downsample_config, delays=align.fir_delays, trimming=align.trimming,
                       grid_offset=grid_offset, split=split, story=story, zscore_targets=False)
    return X.assign_coords(story=("tr", np.full(X.shape[0], story, dtype=object)))


def stack_designs(designs: Sequence[xr.DataArray]) -> xr.DataArray:
    """Stories' designs one after another on ``tr`` (their columns must agree)."""
    first = designs[0]
    coords = {k: ("feature", first[k].values) for k in first.coords if first[k].dims == ("feature",)}
    coords.update({k: ("tr", np.concatenate([d[k].values for d in designs]))
                   for k in first.coords if first[k].dims == ("tr",)})
    return xr.DataArray(np.concatenate([d.values for d in designs]), dims=("tr", "feature"), coords=coords, name="X")


# ---------------------------------------------------------------------------------------------
# task functions (module level: they travel to Dask workers)
def _extract_task(extractors, assembly_path: str, story: str) -> list:
    """FeatureSets of one story, one per extractor (through their caches)."""
    asm = Assembly(assembly_path)
    return [ex.extract(asm, story, layers=None) for ex in extractors]


def _x_side_task(model, designs: Sequence[xr.DataArray], shared: bool):
    """(stacked labeled design, the model's X side or None) of a training set."""
    X = stack_designs(designs)
    return X, (model.x_side(X) if shared else None)


def _grid_key(asm, story: str) -> tuple:
    grid = np.ascontiguousarray(asm.tr_times(story).values, dtype="<f8")
    rows = asm.bold_data(story).shape[0] if hasattr(asm, "bold_data") else asm.bold(story).shape[0]
    return (grid.tobytes(), int(asm.grid_offset(story)), int(rows))


def _shares_x_side(model) -> bool:
    return bool(getattr(model, "shares_x_side", False)) and hasattr(model, "x_side")


@contextlib.contextmanager
def cluster(spec, *, announce: bool = True):
    """The Dask client of ``spec`` (None: in-process; a client: used as is; a name, address
    or YAML: started here and closed quietly on exit)."""
    if spec is None:
        yield None
        return
    if not isinstance(spec, (str, os.PathLike)):
        if announce:
            logger.warning("Dask dashboard: %s", getattr(spec, "dashboard_link", "n/a"))
        yield spec
        return
    from .distributed import client as make_client
    from .distributed.cluster import close_quietly

    cl = make_client(str(spec))  # logs the dashboard address
    try:
        yield cl
    finally:
        close_quietly(cl)


# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Plan:
    """Runs sharing alignment settings, a model and a cluster; :meth:`execute` runs them.

    Parameters
    ----------
    runs : list of Run
    align : Alignment
    model : NestedCVModel or any object with ``fit_dataset`` (or LITcoder's ``fit_predict``)
    banded_by : {None, "layer"}
    save_weights : bool
    client : Dask client, cluster spec or None
    retries : int
        Retries of failed tasks on a distributed cluster.
    overwrite : bool
        Replace existing run folders.
    report : bool
        Draw each run's report after saving it.
    """

    runs: list
    align: Alignment
    model: Any
    banded_by: str | None = None
    save_weights: bool = False
    client: Any = None
    retries: int = 0
    overwrite: bool = True
    report: bool = True
    name: str = "run"

    # -- stimulus side ------------------------------------------------------------------------
    def _extract(self, cl) -> tuple[dict, dict]:
        """Step 1: {extract key: [FeatureSet per extractor] (or a future)}, {(subject, model,
        story): extract key}."""
        feat_of: dict[tuple, tuple] = {}
        jobs: dict[tuple, tuple] = {}
        for run in self.runs:
            for story in run.stories:
                stim = tuple(ex.stimulus(run.assembly, story) for ex in run.extractors)
                key = (run.name, story, stim)
                jobs.setdefault(key, (run, story))
                feat_of[(*run.key, story)] = key
        out: dict[tuple, Any] = {}
        if cl is None:
            todo = [(key, i) for key, (run, _) in jobs.items() for i in range(len(run.extractors))]
            for key, i in tqdm(todo, desc="features (story x extractor)", unit="feature set", disable=None):
                run, story = jobs[key]
                out.setdefault(key, []).append(run.extractors[i].extract(run.assembly, story, layers=None))
            return out, feat_of
        from distributed import as_completed

        from .distributed import has_gpu_workers

        for run in self.runs:
            if run.assembly.has_unsaved_changes():  # workers open the store: persist audio paths first
                logger.info("saving the assembly's new audio paths before sending tasks to workers")
                run.assembly.save()
        gpu = has_gpu_workers(cl)
        futures = {}
        for n, (key, (run, story)) in enumerate(jobs.items()):
            res = {"GPU": 1} if gpu and any(getattr(ex, "needs_gpu", False) for ex in run.extractors) else None
            futures[cl.submit(_extract_task, run.extractors, str(run.assembly.path), story, resources=res,
                              retries=int(self.retries), key=f"extract-{run.name}-{story}-{n}-{self.name}",
                              pure=False)] = key
        for fut in tqdm(as_completed(list(futures)), total=len(futures), desc="extract", unit="story"):
            fut.result()  # raise worker errors here
        return {key: fut for fut, key in futures.items()}, feat_of

    def _resolve_layers(self, feats, feat_of, cl) -> None:
        for run in self.runs:
            if run.layers is not None:
                continue
            first = feats[feat_of[(*run.key, run.stories[0])]]
            if cl is not None and not isinstance(first, list):
                first = first.result()
            run.layers, run.multi = select_layers(run.extractors, first, run.layer_idx, self.banded_by)

    def _stimulus_graph(self, feats, feat_of):
        """Steps 2-3 as Dask delayed objects: {(subject, model, layer): X-side key},
        {(subject, model, layer): test key}, the graph's dicts, and counts."""
        import dask

        designs: dict[tuple, Any] = {}
        sides: dict[tuple, Any] = {}
        tests: dict[tuple, Any] = {}
        side_of: dict[tuple, tuple] = {}
        test_of: dict[tuple, tuple] = {}
        shared = _shares_x_side(self.model)
        for run in self.runs:
            modalities = [ex.modality for ex in run.extractors]
            for layer in run.layers:
                keys = {}
                for split, stories in (("train", run.train), ("test", run.test)):
                    for story in stories:
                        g = _grid_key(run.assembly, story)
                        fkey = feat_of[(*run.key, story)]
                        dkey = (run.name, layer, story, split, fkey, g)
                        if dkey not in designs:
                            designs[dkey] = dask.delayed(story_design, pure=True)(
                                feats[fkey], modalities, run.multi, layer, run.assembly.tr_times(story).values,
                                g[2], g[1], split, story, self.align,
                                dask_key_name=f"design-{run.name}-{layer_label(layer)}-{story}-{split}-{len(designs)}")
                        keys[(story, split)] = dkey
                skey = (run.name, layer, tuple(keys[(s, "train")] for s in run.train))
                if skey not in sides:
                    sides[skey] = dask.delayed(_x_side_task, pure=True)(
                        self.model, [designs[keys[(s, "train")]] for s in run.train], shared and bool(run.test),
                        dask_key_name=f"xside-{run.name}-{layer_label(layer)}-{len(sides)}")
                side_of[(*run.key, layer)] = skey
                if run.test:
                    tkey = (run.name, layer, tuple(keys[(s, "test")] for s in run.test))
                    if tkey not in tests:
                        tests[tkey] = dask.delayed(stack_designs, pure=True)(
                            [designs[keys[(s, "test")]] for s in run.test],
                            dask_key_name=f"xtest-{run.name}-{layer_label(layer)}-{len(tests)}")
                    test_of[(*run.key, layer)] = tkey
        return {"sides": sides, "tests": tests}, side_of, test_of, len(designs)

    # -- voxel side ---------------------------------------------------------------------------
    def _fit_layer(self, run: Run, X: xr.DataArray, side, Xt: xr.DataArray | None) -> xr.DataArray:
        asm, align, model = run.assembly, self.align, self.model
        where = f"subject {run.subject!r}, "
        stories = np.asarray(X["story"].values)
        counts = [int((stories == s).sum()) for s in run.train]
        stacked = hasattr(asm, "stacked_bold") and hasattr(model, "fit_dataset")
        parts = [align.targets(asm, s, "train", n, zscore_rows=False if stacked else None, where=where)
                 for s, n in zip(run.train, counts)]  # row counts checked here
        if stacked:  # read a voxel block at a time by the solver
            Y = asm.stacked_bold(run.train, [target_slice(align.trimming, "train")] * len(run.train),
                                 zscore=align.zscore_targets)
        else:
            import dask.array as da

            Y = da.concatenate([da.asarray(y) for y in parts], axis=0)
        kw: dict[str, Any] = {}
        yt = None
        if Xt is not None:
            tstories = np.asarray(Xt["story"].values)
            yt = np.concatenate([np.asarray(align.targets(asm, s, "test", int((tstories == s).sum()), where=where))
                                 for s in run.test])
            kw.update(X_test=Xt, y_test=yt)
            if side is not None:
                kw["x_side"] = side
        if hasattr(model, "fit_dataset"):
            ds = model.fit_dataset(X, Y, **kw)
        else:  # LITcoder's interface: a metrics dict
            metrics, W, _ = model.fit_predict(X.values, Y, **{k: getattr(v, "values", v) for k, v in kw.items()})
            ds = results_mod.from_metrics(metrics, W, alpha_fdr=getattr(model, "alpha_fdr", 0.05))
        if yt is not None and len(run.test) == 1 and "noise_ceiling" not in ds:
            known = _ceiling(asm, run.test[0], yt, align)
            if known is not None:
                ds["noise_ceiling"] = ("voxel", known[0])
                ds.attrs["noise_ceiling_source"] = known[1]
        if "weights" in ds:
            if self.save_weights:
                ds = ds.assign_coords(feature_space=("feature", X["feature_space"].values),
                                      delay=("feature", X["delay"].values))
            else:
                ds = ds.drop_vars(["weights", "intercept"], errors="ignore")
        return ds

    def execute(self) -> PlanResult:
        """Run every step; return the saved results (see the module docstring)."""
        import dask

        timings = {"extract": 0.0, "align": 0.0, "x_side": 0.0, "fit": 0.0, "write": 0.0}
        t0 = time.perf_counter()
        with cluster(self.client) as cl:
            if cl is None:  # in-process: the disk reads the responses while features are extracted
                for run in self.runs:
                    if hasattr(run.assembly, "read_ahead"):
                        run.assembly.read_ahead(run.stories)
            feats, feat_of = self._extract(cl)
            self._resolve_layers(feats, feat_of, cl)
            timings["extract"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            graph, side_of, test_of, n_design = self._stimulus_graph(feats, feat_of)
            if cl is not None:
                stim = cl.compute(dask.delayed(graph), retries=int(self.retries)).result()
            else:
                stim = dask.compute(graph, scheduler="threads")[0]
            timings["align"] = time.perf_counter() - t0
            logger.info("%s: stimulus side (%d feature sets, %d designs, %d X sides) in %.1f s", self.name,
                        len(feats), n_design, len(graph["sides"]), timings["extract"] + timings["align"])
            datasets, run_dirs, spaces_of, n_fits = {}, {}, {}, 0
            for run in self.runs:
                per_layer = []
                for layer in tqdm(run.layers, desc=f"layers ({run.subject}, {run.name})", unit="layer",
                                  disable=len(run.layers) == 1 or None):
                    t0 = time.perf_counter()
                    X, side = stim["sides"][side_of[(*run.key, layer)]]
                    Xt = stim["tests"][test_of[(*run.key, layer)]] if run.test else None
                    ds = self._fit_layer(run, X, side, Xt)
                    n_fits += 1
                    timings["fit"] += time.perf_counter() - t0
                    per_layer.append(ds)
                    logger.info("%s %s layer %s: median r %.4f", run.subject, run.name, layer_label(layer),
                                float(np.nanmedian(ds["r"])))
                t0 = time.perf_counter()
                res = stack_layers(per_layer, [layer_label(lay) for lay in run.layers], run.assembly)
                spaces = feature_space_slices(stim["sides"][side_of[(*run.key, run.layers[0])]][0])
                res.attrs["feature_spaces"] = json.dumps({k: list(v) for k, v in spaces.items()})
                run_dirs[run.key] = save_run(run.run_dir, res, config=run.config, overwrite=self.overwrite,
                                             report=self.report)
                datasets[run.key], spaces_of[run.key] = res, spaces
                timings["write"] += time.perf_counter() - t0
        timings.update(n_extract=len(feats), n_design=n_design, n_x_side=len(graph["sides"]), n_fits=n_fits)
        return PlanResult(datasets=datasets, run_dirs=run_dirs, feature_spaces=spaces_of, timings=timings)


def stack_layers(per_layer: Sequence[xr.Dataset], labels: Sequence[str], assembly) -> xr.Dataset:
    """One Dataset with a ``layer`` dim; the noise ceiling (the same for every layer) once;
    the assembly's voxel labels."""
    ceiling = per_layer[0]["noise_ceiling"] if "noise_ceiling" in per_layer[0] else None
    res = xr.concat([d.drop_vars("noise_ceiling", errors="ignore") for d in per_layer],
                    dim=pd.Index(list(labels), name="layer"), combine_attrs="override")
    if ceiling is not None:
        res["noise_ceiling"] = ceiling
        add_normalized_correlation(res)  # r_norm = r / ceiling (CC_norm), low-ceiling voxels left out
    return res.assign_coords(voxel=("voxel", assembly.voxels["voxel"].values))


def save_run(run_dir, res: xr.Dataset, *, config=None, overwrite: bool = True, report: bool = True) -> Path:
    """:func:`scalenc.results.save`, then the report (a drawing failure is logged: the
    results are on disk already)."""
    run_dir = results_mod.save(run_dir, res, config=config, overwrite=overwrite)
    if report:
        try:
            from .plot.report import report as draw_report

            draw_report(run_dir)
        except Exception as e:  # noqa: BLE001 - results are saved; a plot must not lose them
            logger.warning("could not draw %s/report.png (%s); results are saved", run_dir, e)
    return run_dir


def _ceiling(asm, story: str, y_test: np.ndarray, align: Alignment, block: int = 2000):
    """(ceiling per voxel, its source) of the test story, or None: r with the noise-free
    signal when the assembly knows it (simulations), else ``cc_max`` of the test repeats
    (trimmed as the test targets), computed in voxel blocks so the repeats never sit in
    memory whole."""
    rows = target_slice(align.trimming, "test")
    signal = asm.known_signal(story) if hasattr(asm, "known_signal") else None
    if signal is not None:
        sig = np.asarray(signal[rows])
        if sig.shape == y_test.shape:
            from .ridge.scoring import pearson_r

            return pearson_r(y_test, sig), "ground truth"
    reps = asm.bold_repeats(story)
    if reps is None:
        return None
    reps = reps.isel(tr=rows)
    if reps.sizes["tr"] != y_test.shape[0]:
        return None
    v = reps.shape[-1]
    out = np.empty(v)
    for a in range(0, v, block):
        out[a:a + block] = noise_ceiling(np.asarray(reps[..., a:a + block].values, dtype=np.float64))["cc_max"]
    return out, "test repeats (cc_max)"


# ---------------------------------------------------------------------------------------------
def build_objects(rc: RunConfig, *, source: str = "config") -> dict[str, Any]:
    """The objects of a :class:`RunConfig`: ``downsampler``, ``model``, ``trimming`` and the
    extractors of each model (``models``: name -> list; ``extractors``: the single model's),
    with errors naming the table and ``source``."""
    def wrap(what, fn):
        try:
            return fn()
        except (TypeError, ValueError, KeyError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"{source}: {what} {e}") from e

    def make(items, prefix):
        return [wrap(f"{prefix}[[extractors]] #{i + 1}", lambda ex=ex: FeatureExtractorFactory.create_extractor(
            ex["modality"], ex.get("model_name"), ex.get("config") or {}, ex.get("cache_dir")))
            for i, ex in enumerate(items)]

    from .models import NestedCVModel

    ds_cfg = dict(rc.downsampler)
    out = {"downsampler": wrap("[downsampler]", lambda: Downsampler(ds_cfg.pop("method", "lanczos"), **ds_cfg)),
           "model": wrap("[model]", lambda: NestedCVModel(**model_kwargs(rc.model, NestedCVModel, source=source))),
           "trimming": wrap("[trimming]", lambda: None if rc.trimming is None
                            else TrimmingConfig.from_dict(rc.trimming))}
    if rc.models:
        out["models"] = {m["name"]: make(m["extractors"], f"[[models]] {m['name']!r} ") for m in rc.models}
    else:
        out["extractors"] = make(rc.extractors, "")
    return out


def predict(run, assembly=None, stories=None, *, layer=None, split: str = "train", client=None,
            allow_mismatch: bool = False) -> xr.Dataset:
    """Apply a saved run to (new) stories: its weights, its extractors and its alignment
    settings (downsampler, FIR delays, trimming, z-scoring) from ``config.toml``.

    Parameters
    ----------
    run : path or :class:`scalenc.results.Results`
        A run saved with ``save_weights=True``.
    assembly : Assembly or path, optional
        Where the stories are (default: the run's assembly).
    stories : list of str, optional
        Default: every story of ``assembly``.
    layer : label, optional
        Default: the run's best layer (highest median r).
    split : {"train", "test"}
        Which trimming of the run to apply to the stories.
    client : Dask client or address, optional
        Extraction on a cluster, as in training.
    allow_mismatch : bool
        Predict even when an extractor's identity (model or file) or the voxel set differs
        from the run's (otherwise an error naming them).

    Returns
    -------
    Dataset
        ``prediction`` (tr, voxel) for all stories one after another, with ``tr_story`` and
        ``tr_time`` coordinates on ``tr``; ``response`` (tr, voxel), the aligned (trimmed,
        z-scored as in training) responses; ``r`` (story, voxel) per story and ``r_all``
        (voxel) over all rows; attrs ``run``, ``layer``, ``split``.
    """
    from .config import validate_config
    from .ridge.scoring import pearson_r

    res = run if isinstance(run, results_mod.Results) else results_mod.load(run)
    if "weights" not in res.dataset:
        raise ValueError(f"{res.path}: the run saved no weights; run it again with save_weights = true "
                         "(save_weights=True)")
    if not res.config:
        raise ValueError(f"{res.path}: no config.toml, so the run's alignment settings are unknown")
    label = res.best_layer if layer is None else str(layer)
    saved = res.layer(label).load()
    cfg = {k: v for k, v in res.config.items() if k not in ("cluster", "extractor_identities")}
    if assembly is not None:
        cfg["assembly"] = str(assembly.path if isinstance(assembly, Assembly) else assembly)
    cfg.update(stories=None if stories is None else list(stories), logger_backend="none")
    source = str(res.path / "config.toml")
    rc = RunConfig.from_dict(validate_config(cfg, source=source), source=source)
    objs = build_objects(rc, source=source)
    asm = load_assembly(rc.assembly)
    extractors = objs["extractors"]
    _check_identities(res, extractors, allow_mismatch)
    voxel = saved["voxel"].values
    if not allow_mismatch:
        have = asm.voxels["voxel"].values
        if have.shape != voxel.shape or not np.array_equal(np.asarray(have).astype(str), np.asarray(voxel).astype(str)):
            raise ValueError(f"{asm.path}: {have.size} voxels, but the run {res.path} was fitted on {voxel.size} "
                             "other voxels; pass allow_mismatch=True (scalenc predict --allow-mismatch) to predict anyway")
    align = Alignment(objs["downsampler"], dict(rc.downsample_config or {}), [int(d) for d in rc.fir_delays],
                      objs["trimming"], rc.zscore_targets)
    story_list = list(asm.stories) if rc.stories is None else list(rc.stories)
    for s in story_list:
        if s not in asm.stories:
            raise ValueError(f"stories: {s!r} is not a story of {asm.path}")
    with cluster(client, announce=False) as cl:
        plan = Plan([Run(asm.subject, "predict", asm, extractors, story_list, [], res.path, rc.layer_idx)],
                    align, None, client=cl, report=False)
        feats, feat_of = plan._extract(cl)
        if cl is not None:
            feats = {k: v.result() for k, v in feats.items()}
    first = feats[feat_of[(asm.subject, "predict", story_list[0])]]
    layers, multi = select_layers(extractors, first, rc.layer_idx, rc.banded_by)
    match = [lay for lay in layers if layer_label(lay) == label]
    if not match:
        raise ValueError(f"layer {label!r} is not produced by the run's extractors (layers: {layers})")
    W = np.asarray(saved["weights"].values, dtype=np.float64)
    b = np.asarray(saved["intercept"].values, dtype=np.float64) if "intercept" in saved else 0.0
    from .ridge.solver import predict_linear

    modalities = [ex.modality for ex in extractors]
    preds, resps, names, times, r = [], [], [], [], []
    for s in story_list:
        X = story_design(feats[feat_of[(asm.subject, "predict", s)]], modalities, multi, match[0],
                         asm.tr_times(s).values, int(asm.bold(s).shape[0]), asm.grid_offset(s), split, s, align)
        if X.shape[1] != W.shape[0]:
            raise ValueError(f"story {s!r}: {X.shape[1]} features but the run's weights have {W.shape[0]}")
        P = predict_linear(X.values.astype(np.float64), W, b)
        Y = np.asarray(align.targets(asm, s, split, X.shape[0]), dtype=np.float64)
        preds.append(P)
        resps.append(Y)
        names += [s] * P.shape[0]
        times.append(X["tr_time"].values)
        r.append(pearson_r(Y, P))
    P, Y = np.concatenate(preds), np.concatenate(resps)
    return xr.Dataset({"prediction": (("tr", "voxel"), P.astype(np.float32)),
                       "response": (("tr", "voxel"), Y.astype(np.float32)),
                       "r": (("story", "voxel"), np.asarray(r)), "r_all": ("voxel", pearson_r(Y, P))},
                      coords={"story": np.asarray(story_list, dtype=object), "voxel": voxel,
                              "tr_story": ("tr", np.asarray(names, dtype=object)),
                              "tr_time": ("tr", np.concatenate(times))},
                      attrs={"run": str(res.path), "layer": label, "split": split})


def extractor_identities(extractors) -> list[str]:
    """A digest of each extractor's identity (model, files, settings: what its cache key
    hashes), recorded in a run's config so that prediction can refuse other features."""
    from .features.base import cache_key

    return [cache_key(ex.identity(), "") for ex in extractors]


def _check_identities(res, extractors, allow_mismatch: bool) -> None:
    saved = res.config.get("extractor_identities")
    if not saved:
        return
    now = extractor_identities(extractors)
    bad = [i for i, (a, b) in enumerate(zip(saved, now)) if a != b]
    if len(saved) != len(now):
        bad = list(range(max(len(saved), len(now))))
    if bad and not allow_mismatch:
        names = [f"#{i + 1} {extractors[i].modality} {getattr(extractors[i], 'model_name', '') or ''}".rstrip()
                 for i in bad if i < len(extractors)]
        raise ValueError(f"{res.path / 'config.toml'}: extractor(s) {', '.join(names)} differ from the ones the run "
                         "was fitted with (another model or file behind the same name); pass allow_mismatch=True "
                         "(scalenc predict --allow-mismatch) to predict anyway")
