"""``AbstractTrainer``: the tutorials' pipeline wired from scalenc's stages.

extract (per story and extractor, cached, optionally on Dask workers) ->
:func:`scalenc.align.align_story` per story (downsample -> FIR delays -> trim -> z-score)
-> ``model.fit_dataset`` (per-voxel results as an :class:`xarray.Dataset`) -> results on
zarr + metrics.json + config.toml + report.png + logger.

The trainer holds no algorithm of its own: each step is a function of
:mod:`scalenc.features`, :mod:`scalenc.align`, :mod:`scalenc.models` and
:mod:`scalenc.results`. It never changes the objects it is given: extractors that need a
cache folder or the trainer's ``lookback`` are copied.
"""
from __future__ import annotations

import copy
import datetime
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from . import results as results_mod
from .align import Downsampler, TrimmingConfig, align_story, feature_space_slices
from .align.story import target_slice
from .assembly import Assembly, load_assembly
from .config import DEFAULTS, ConfigError, RunConfig, model_kwargs, validate_config
from .datasets.ground_truth import ground_truth_ceiling
from .distributed import client as make_client
from .distributed import has_gpu_workers
from .features import FeatureExtractorFactory
from .loggers import make_logger
from .models import NestedCVModel
from .ridge.scoring import add_normalized_correlation, noise_ceiling, pearson_r

logger = logging.getLogger(__name__)


def _extract_task(extractor, assembly_path: str, story: str) -> str:
    """Worker side: compute (or find) one story's features in the cache; return its key."""
    fs = extractor.extract(Assembly(assembly_path), story, layers=None)
    return str(fs.attrs.get("cache_key", ""))


def _own_extractor(ex, lookback: int | None, cache_dir: Path):
    """``ex``, or a shallow copy of it with the trainer's lookback / default cache folder."""
    set_lookback = lookback is not None and "lookback" in getattr(ex, "defaults", {}) \
        and ex.config.get("lookback") != int(lookback)
    set_cache = getattr(ex, "cache_dir", None) is None
    if not (set_lookback or set_cache):
        return ex
    ex = copy.copy(ex)
    if set_lookback:
        ex.config = {**ex.config, "lookback": int(lookback)}
    if set_cache:
        ex.cache_dir = cache_dir
        logger.info("%s: caching features in %s", ex.modality, cache_dir)
    return ex


class AbstractTrainer:
    """Run the encoding-model pipeline on an assembly.

    Parameters (the LITcoder tutorials' names; defaults from :class:`scalenc.config.RunConfig`)
    ----------------------------------------------------------------------------------------
    assembly : Assembly or path
    feature_extractors : list of FeatureExtractor
        Their features are concatenated (the feature spaces are recorded). They are not
        modified: the trainer works on copies where it sets ``lookback`` or a cache folder.
    downsampler : Downsampler, optional
        Default ``Downsampler()`` (lanczos).
    model : NestedCVModel (or any object with ``fit_dataset`` or ``fit_predict``), optional
    fir_delays : list of int
    trimming_config : dict or TrimmingConfig, optional
        The tutorials' keys. Default (and for a split none of whose keys are set):
        features cut to the response rows with the assembly's ``grid_offset`` (for LeBel
        this is features ``[10:-5]``), targets whole.
    use_train_test_split : bool
        True: fit on the training stories, score on the test stories (the assembly's, else
        the last story). False: all stories, nested CV with story-labelled rows.
    logger_backend : {"local", "tensorboard", "wandb", "none"}
    wandb_project_name : str
    dataset_type : str
        Recorded in the config.
    results_dir : path
        Results go to ``results_dir/run_name``.
    downsample_config : dict, optional
        Per-call overrides of the downsampler (e.g. ``{"window": 3}``).
    layer_idx : int or list, optional
        Layers of multi-layer extractors to fit; a list fits every layer from one
        extraction. Default: the extractor's own ``layer_idx``/``layer`` config, else all.
        For a speech extractor the numbers count as LITcoder's (``3`` is the fourth hidden
        state; see :func:`scalenc.features.speech.litcoder_layer_labels`).
    banded_by : {None, "layer"}
        With ``model=NestedCVModel(model_name="banded_ridge")`` the bands are the extractors'
        feature spaces; ``"layer"`` instead makes each selected layer of the multi-layer
        extractor its own band, in one fit (its results' layer is labelled ``"L1+L2+..."``).
    lookback : int, optional
        ``lookback`` of the language-model extractors (set on the trainer's copies).
    story_selection : list of str or int, optional
        Stories to use (an int is a 1-based index, as in LITcoder).
    run_name : str, optional
    client : distributed.Client, address or None
        Extraction tasks and voxel blocks run on this Dask cluster; None: in-process.
    save_weights : bool
        Store the weights in ``results.zarr``.
    zscore_targets : bool
        z-score responses per story after trimming (LITcoder does).
    cache_dir : path, optional
        Feature cache of extractors that have none (default ``results_dir/feature_cache``).
    overwrite : bool
        Replace the results of an existing ``run_name`` (otherwise an error).
    """

    def __init__(self, assembly, feature_extractors, downsampler=None, model=None,
                 fir_delays=tuple(DEFAULTS.fir_delays), trimming_config=DEFAULTS.trimming,
                 use_train_test_split: bool = DEFAULTS.use_train_test_split,
                 logger_backend: str = DEFAULTS.logger_backend, wandb_project_name: str = DEFAULTS.wandb_project_name,
                 dataset_type: str = DEFAULTS.dataset_type, results_dir: str | os.PathLike = DEFAULTS.results_dir,
                 downsample_config: Mapping[str, Any] | None = None, layer_idx=DEFAULTS.layer_idx,
                 lookback: int | None = DEFAULTS.lookback, story_selection=DEFAULTS.stories,
                 run_name: str | None = DEFAULTS.run_name, client=DEFAULTS.cluster,
                 save_weights: bool = DEFAULTS.save_weights, zscore_targets: bool = DEFAULTS.zscore_targets,
                 cache_dir: str | os.PathLike | None = DEFAULTS.cache_dir, overwrite: bool = DEFAULTS.overwrite,
                 banded_by: str | None = DEFAULTS.banded_by):
        self.assembly = assembly if isinstance(assembly, Assembly) else load_assembly(assembly)
        exs = list(feature_extractors) if isinstance(feature_extractors, (list, tuple)) else [feature_extractors]
        if not exs:
            raise ValueError("feature_extractors is empty")
        self.results_dir = Path(results_dir)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.results_dir / "feature_cache"
        self.lookback = lookback
        self.feature_extractors = [_own_extractor(ex, lookback, self.cache_dir) for ex in exs]
        self.downsampler = downsampler if downsampler is not None else Downsampler()
        self.model = model if model is not None else NestedCVModel()
        self.fir_delays = [int(d) for d in fir_delays]
        self.trimming = None if trimming_config is None else TrimmingConfig.from_dict(trimming_config)
        self.use_train_test_split = use_train_test_split
        self.logger_backend = logger_backend
        self.wandb_project_name = wandb_project_name
        self.dataset_type = dataset_type
        self.downsample_config = dict(downsample_config or {})
        self.layer_idx = layer_idx
        self.run_name = run_name or f"run-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        self.save_weights = save_weights
        self.zscore_targets = zscore_targets
        self.overwrite = overwrite
        if banded_by not in (None, "layer"):
            raise ValueError(f"banded_by must be None or 'layer', got {banded_by!r}")
        if banded_by == "layer" and getattr(self.model, "model_name", None) != "banded_ridge":
            raise ValueError("banded_by='layer' needs model=NestedCVModel(model_name='banded_ridge')")
        self.banded_by = banded_by
        self.cluster = client if isinstance(client, (str, os.PathLike)) else None
        self.client = client
        self.stories = self._select(story_selection)
        self.run_dir = self.results_dir / self.run_name

    def _select(self, story_selection) -> list[str]:
        stories = self.assembly.stories
        if story_selection is None:
            return list(stories)
        if isinstance(story_selection, int):
            story_selection = [story_selection]
        out = []
        for s in story_selection:
            if isinstance(s, int) and not isinstance(s, bool):
                if not 1 <= s <= len(stories):
                    raise ValueError(f"stories: index {s} out of range 1..{len(stories)} of {self.assembly.path}")
                out.append(stories[s - 1])
            elif s in stories:
                out.append(s)
            else:
                raise ValueError(f"stories: {s!r} is not a story of {self.assembly.path}; stories: {stories}")
        return out

    @classmethod
    def from_config(cls, rc: RunConfig, *, cluster: Any = None, source: str = "config",
                    overwrite: bool | None = None) -> AbstractTrainer:
        """The trainer of a :class:`RunConfig` (``scalenc run``); errors name the table and ``source``."""
        def wrap(what, fn):
            try:
                return fn()
            except (TypeError, ValueError) as e:
                if isinstance(e, ConfigError):
                    raise
                raise ConfigError(f"{source}: {what} {e}") from e

        extractors = [wrap(f"[[extractors]] #{i + 1}", lambda ex=ex: FeatureExtractorFactory.create_extractor(
            ex["modality"], ex.get("model_name"), ex.get("config") or {}, ex.get("cache_dir")))
            for i, ex in enumerate(rc.extractors)]
        ds_cfg = dict(rc.downsampler)
        down = wrap("[downsampler]", lambda: Downsampler(ds_cfg.pop("method", "lanczos"), **ds_cfg))
        model = wrap("[model]", lambda: NestedCVModel(**model_kwargs(rc.model, NestedCVModel, source=source)))
        trimming = wrap("[trimming]", lambda: None if rc.trimming is None else TrimmingConfig.from_dict(rc.trimming))
        assembly = wrap("assembly", lambda: load_assembly(rc.assembly))
        return wrap("", lambda: cls(
            assembly, extractors, down, model, rc.fir_delays, trimming,
            use_train_test_split=rc.use_train_test_split, logger_backend=rc.logger_backend,
            wandb_project_name=rc.wandb_project_name, dataset_type=rc.dataset_type, results_dir=rc.results_dir,
            downsample_config=rc.downsample_config, layer_idx=rc.layer_idx, lookback=rc.lookback,
            story_selection=rc.stories, run_name=rc.run_name, client=cluster if cluster is not None else rc.cluster,
            save_weights=rc.save_weights, zscore_targets=rc.zscore_targets, cache_dir=rc.cache_dir,
            overwrite=rc.overwrite if overwrite is None else overwrite, banded_by=rc.banded_by))

    # ------------------------------------------------------------------------------------
    def split(self) -> tuple[list[str], list[str]]:
        """(train stories, test stories) of this run."""
        if not self.use_train_test_split:
            return list(self.stories), []
        test = [s for s in self.assembly.test_stories if s in self.stories] or self.stories[-1:]
        train = [s for s in self.stories if s not in test]
        if not train:
            raise ValueError(f"no training story left: stories {self.stories}, test {test}")
        return train, test

    def extract(self) -> dict[tuple[str, int], Any]:
        """FeatureSets of every (story, extractor), all layers, through the cache."""
        jobs = [(s, i) for s in self.stories for i in range(len(self.feature_extractors))]
        client = self._client()
        if client is not None:
            if self.assembly.has_unsaved_changes():  # workers open the store: persist audio paths first
                logger.info("saving the assembly's new audio paths before sending tasks to workers")
                self.assembly.save()
            from distributed import as_completed  # noqa: PLC0415 - only with a cluster

            gpu = has_gpu_workers(client)
            futures = {}
            for s, i in jobs:
                ex = self.feature_extractors[i]
                res = {"GPU": 1} if gpu and getattr(ex, "needs_gpu", False) else None
                futures[client.submit(_extract_task, ex, str(self.assembly.path), s, resources=res,
                                      key=f"extract-{ex.modality}-{i}-{s}-{self.run_name}", pure=False)] = (s, i)
            for fut in tqdm(as_completed(futures), total=len(futures), desc="extract", unit="feature set"):
                fut.result()  # raise worker errors here; the data stays in the cache
        out = {}
        for s, i in tqdm(jobs, desc="features (story x extractor)", unit="feature set",
                         disable=client is not None or None):
            out[(s, i)] = self.feature_extractors[i].extract(self.assembly, s, layers=None)
        return out

    def _client(self):
        if self.client is None:
            return None
        if isinstance(self.client, (str, os.PathLike)):
            self._own_client = self.client
            self.client = make_client(str(self.client))  # logs the dashboard address
        elif not getattr(self, "_announced", False):
            logger.warning("Dask dashboard: %s", getattr(self.client, "dashboard_link", "n/a"))
        self._announced = True
        return self.client

    def _layers(self, feats) -> tuple[list, int | None]:
        """Layer labels to fit and which extractor provides them (None: single-layer fit)."""
        multi = []
        for i, ex in enumerate(self.feature_extractors):
            labels = list(feats[(self.stories[0], i)]["layer"].values)
            if len(labels) > 1:
                multi.append((i, labels))
        if not multi:
            return [None], None
        if len(multi) > 1:
            raise ValueError("more than one multi-layer extractor: choose layers with each extractor's layer_idx "
                             "config so that at most one contributes several layers")
        i, labels = multi[0]
        ex = self.feature_extractors[i]  # layer_idx in the tutorial API's numbering (speech: LITcoder's)
        sel = ex.layer_labels(self.layer_idx, labels) if self.layer_idx is not None else ex.selected_layers(labels)
        if sel is None or sel == "all":
            return labels, i
        sel = list(sel) if isinstance(sel, (list, tuple)) else [sel]
        for lay in sel:
            if lay not in labels:
                raise ValueError(f"layer_idx {lay!r} not available from {self.feature_extractors[i].modality}; "
                                 f"layers: {labels}")
        return sel, i

    def design(self, feats, story: str, split: str, layer=None, multi: int | None = None, *,
               zscore_targets: bool | None = None):
        """(X, Y) of one story (:func:`scalenc.align.align_story`): X a (tr, feature) DataArray
        with ``feature_space`` and ``delay`` coordinates, Y the trimmed, z-scored responses
        (lazy; ``zscore_targets=False``: not z-scored, for callers that only need X)."""
        spaces = {}
        for i, ex in enumerate(self.feature_extractors):
            fs = feats[(story, i)]
            F = fs["features"]
            name = str(fs.attrs.get("feature_space") or ex.modality)
            if i == multi and isinstance(layer, tuple):  # banded_by="layer": each layer its own space
                for lay in layer:
                    spaces[f"{name} layer {lay}"] = F.sel(layer=lay)
                continue
            F = F.sel(layer=layer) if (i == multi and layer is not None) else F.isel(layer=0)
            while name in spaces:
                name += "_"
            spaces[name] = F
        bold = self.assembly.bold_data(story) if hasattr(self.assembly, "bold_data") else self.assembly.bold(story).data
        return align_story(spaces, self.assembly.tr_times(story).values, bold,
                           downsampler=self.downsampler, downsample_config=self.downsample_config,
                           delays=self.fir_delays, trimming=self.trimming, grid_offset=self.assembly.grid_offset(story),
                           split=split, story=story,
                           zscore_targets=self.zscore_targets if zscore_targets is None else zscore_targets)

    def _repeats_ceiling(self, story: str, n_rows: int, block: int = 2000) -> np.ndarray | None:
        """``cc_max`` of the test story's repeats (trimmed as the test targets), read and
        computed in voxel blocks after the fit, so the repeats never sit in memory whole."""
        reps = self.assembly.bold_repeats(story)
        if reps is None:
            return None
        rows = target_slice(self.trimming, "test")
        reps = reps.isel(tr=rows)
        if reps.sizes["tr"] != n_rows:
            return None
        v = reps.shape[-1]
        out = np.empty(v)
        for a in range(0, v, block):
            out[a:a + block] = noise_ceiling(np.asarray(reps[..., a:a + block].values, dtype=np.float64))["cc_max"]
        return out

    def _fit(self, X, Y, **kw) -> xr.Dataset:
        if hasattr(self.model, "fit_dataset"):
            return self.model.fit_dataset(X, Y, **kw)
        metrics, W, _ = self.model.fit_predict(X, Y, **kw)
        return results_mod.from_metrics(metrics, W, alpha_fdr=getattr(self.model, "alpha_fdr", 0.05))

    def fit_layer(self, feats, train_s: list[str], test_s: list[str], layer=None, multi: int | None = None,
                  **model_kwargs) -> tuple[xr.Dataset, dict[str, tuple[int, int]], float]:
        """Per-voxel results of one layer: (Dataset over voxel, feature spaces, alignment seconds)."""
        tick = time.perf_counter()
        stacked = hasattr(self.assembly, "stacked_bold") and hasattr(self.model, "fit_dataset")
        tr = [self.design(feats, s, "train", layer, multi, zscore_targets=False if stacked else None)
              for s in train_s]
        X = np.concatenate([x.values for x, _ in tr])
        if stacked:
            # read a voxel block at a time by the solver (the same rows and z-scoring as the designs' Y)
            Y = self.assembly.stacked_bold(train_s, [target_slice(self.trimming, "train")] * len(train_s),
                                           zscore=self.zscore_targets)
            if Y.shape[0] != X.shape[0]:
                raise ValueError(f"training responses have {Y.shape[0]} rows, the design {X.shape[0]}")
        else:
            Y = da.concatenate([da.asarray(y) for _, y in tr], axis=0)
        groups = np.concatenate([[s] * x.shape[0] for s, (x, _) in zip(train_s, tr)])
        kw = dict(model_kwargs)
        test_rows = None
        if test_s:
            te = [self.design(feats, s, "test", layer, multi) for s in test_s]
            kw["X_test"] = np.concatenate([x.values for x, _ in te])
            kw["y_test"] = np.concatenate([np.asarray(y) for _, y in te])
            if hasattr(self.model, "fit_dataset"):
                kw["groups_test"] = np.concatenate([[s] * x.shape[0] for s, (x, _) in zip(test_s, te)])
            test_rows = kw["y_test"]
            del te
        first = tr[0][0]
        del tr  # the per-story matrices: X and the lazy Y hold the same rows
        align_s = time.perf_counter() - tick
        if getattr(self.model, "model_name", None) == "banded_ridge":  # the bands: the recorded feature spaces
            kw["feature_groups"] = first["feature_space"].values
        ds = self._fit(X, Y, groups=groups, **kw)
        if test_rows is not None and len(test_s) == 1:
            gt = ground_truth_ceiling(self.assembly, test_s[0], test_rows, target_slice(self.trimming, "test"))
            if gt is not None:
                ds["noise_ceiling"] = ("voxel", gt)
                ds.attrs["noise_ceiling_source"] = "ground truth"
            elif "noise_ceiling" not in ds:
                cc = self._repeats_ceiling(test_s[0], test_rows.shape[0])
                if cc is not None:
                    ds["noise_ceiling"] = ("voxel", cc)
                    ds.attrs["noise_ceiling_source"] = "test repeats (cc_max)"
        if "weights" in ds:
            if self.save_weights:
                ds = ds.assign_coords(feature_space=("feature", first["feature_space"].values),
                                      delay=("feature", first["delay"].values))
            else:
                ds = ds.drop_vars(["weights", "intercept"], errors="ignore")
        return ds, feature_space_slices(first), align_s

    # ------------------------------------------------------------------------------------
    def train(self, **model_kwargs) -> dict[str, Any]:
        """Run the pipeline; return the metrics of the fitted layer (or the best of several,
        with ``per_layer`` summaries), built from the saved results Dataset."""
        if self.run_dir.exists() and not self.overwrite:
            raise FileExistsError(f"run {self.run_name!r} already exists in {self.results_dir}: pass "
                                  "overwrite=True (scalenc run --overwrite) or choose another run_name")
        try:
            return self._train(model_kwargs)
        finally:
            self._close_own_client()

    def _close_own_client(self) -> None:
        """Close a cluster this trainer started (from a name or address), so that it shuts down quietly."""
        spec = getattr(self, "_own_client", None)
        if spec is None or isinstance(self.client, (str, os.PathLike)) or self.client is None:
            return
        from .distributed.cluster import close_quietly

        close_quietly(self.client)
        self.client, self._own_client = spec, None

    def _train(self, model_kwargs) -> dict[str, Any]:
        tick = time.perf_counter()
        timings = {"extract": 0.0, "align": 0.0, "fit": 0.0, "write": 0.0}
        train_s, test_s = self.split()
        if self.client is None and hasattr(self.assembly, "read_ahead"):
            # in-process: the disk reads the responses while the features are extracted
            self.assembly.read_ahead(train_s + test_s)
        feats = self.extract()
        timings["extract"] = time.perf_counter() - tick
        layers, multi = self._layers(feats)
        if self.banded_by == "layer":
            if multi is None or len(layers) < 2:
                raise ValueError("banded_by='layer' needs a multi-layer extractor and at least two layers "
                                 "(layer_idx=[...])")
            layers = [tuple(layers)]  # one banded fit, one band per layer
        self._client()
        per_layer, spaces = [], {}
        for layer in tqdm(layers, desc="layers", unit="layer", disable=len(layers) == 1 or None):
            tick = time.perf_counter()
            ds, spaces, align_s = self.fit_layer(feats, train_s, test_s, layer, multi, **model_kwargs)
            timings["align"] += align_s
            timings["fit"] += time.perf_counter() - tick - align_s
            per_layer.append(ds)
            logger.info("layer %s: median r %.4f", "0" if layer is None else layer, float(np.nanmedian(ds["r"])))
        tick = time.perf_counter()
        labels = ["0" if lay is None else "+".join(map(str, lay)) if isinstance(lay, tuple) else str(lay)
                  for lay in layers]
        res = self._stack(per_layer, labels)
        res.attrs["feature_spaces"] = _json_spaces(spaces)
        config = self.config()
        results_mod.save(self.run_dir, res, config=config, overwrite=self.overwrite)
        all_metrics = results_mod.layer_metrics(res)
        exp = make_logger(self.logger_backend, run_dir=self.run_dir, run_name=self.run_name,
                          project=self.wandb_project_name, config=config)
        try:
            for step, m in enumerate(all_metrics.values()):
                exp.log_scalars({k: v for k, v in results_mod.summary(m).items()
                                 if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=step)
            if (self.run_dir / "report.png").exists():
                exp.log_image("report", self.run_dir / "report.png")
        finally:
            exp.close()
        timings["write"] = time.perf_counter() - tick
        self.timings = timings
        self.results_ = res
        best_layer = max(all_metrics, key=lambda k: np.nanmedian(all_metrics[k]["correlations"]))
        out = dict(all_metrics[best_layer])
        out["layer"] = best_layer
        if len(all_metrics) > 1:
            out["per_layer"] = {k: results_mod.summary(m) for k, m in all_metrics.items()}
        out["results_dir"] = str(self.run_dir)
        out["feature_spaces"] = spaces
        out["timings"] = timings
        return out

    def _stack(self, per_layer: list[xr.Dataset], labels: list[str]) -> xr.Dataset:
        """One Dataset with a ``layer`` dim; the noise ceiling (the same for every layer) once."""
        ceiling = per_layer[0]["noise_ceiling"] if "noise_ceiling" in per_layer[0] else None
        res = xr.concat([d.drop_vars("noise_ceiling", errors="ignore") for d in per_layer],
                        dim=pd.Index(labels, name="layer"), combine_attrs="override")
        if ceiling is not None:
            res["noise_ceiling"] = ceiling
            add_normalized_correlation(res)  # r_norm = r / ceiling (CC_norm)
        return res.assign_coords(voxel=("voxel", self.assembly.voxels["voxel"].values))

    def config(self) -> dict[str, Any]:
        """The resolved configuration (written to ``config.toml``; :class:`RunConfig` keys,
        absolute paths, so that the file runs again from any folder)."""
        model = {k: v for k, v in vars(self.model).items()
                 if isinstance(v, (int, float, str, bool)) and not k.endswith("_")}
        if getattr(self.model, "alphas", None) is not None:
            model["alphas"] = [float(a) for a in np.asarray(self.model.alphas).ravel()]
        extractors = []
        for ex in self.feature_extractors:
            name = getattr(ex, "model_name", None)
            if isinstance(name, str) and Path(name).exists():
                name = str(Path(name).resolve())
            extractors.append({
                "modality": ex.modality, "model_name": name,
                "cache_dir": None if ex.cache_dir is None else str(Path(ex.cache_dir).resolve()),
                "config": {k: v for k, v in ex.config.items() if isinstance(v, (int, float, str, bool, list))}})
        rc = RunConfig(
            assembly=str(Path(self.assembly.path).resolve()), extractors=extractors, run_name=self.run_name,
            results_dir=str(self.results_dir.resolve()), cache_dir=str(self.cache_dir.resolve()),
            cluster=None if self.cluster is None else str(self.cluster), fir_delays=self.fir_delays,
            use_train_test_split=self.use_train_test_split, logger_backend=self.logger_backend,
            wandb_project_name=self.wandb_project_name, dataset_type=self.dataset_type, layer_idx=self.layer_idx,
            lookback=self.lookback, stories=self.stories, save_weights=self.save_weights,
            zscore_targets=self.zscore_targets, banded_by=self.banded_by,
            downsampler={"method": self.downsampler.method, **dict(self.downsampler.config)},
            downsample_config=self.downsample_config,
            trimming=None if self.trimming is None else {k: v for k, v in self.trimming.to_dict().items()
                                                          if v is not None},
            model=model)
        cfg = rc.to_dict()
        cfg.pop("overwrite")
        return cfg


def predict(run, assembly=None, stories=None, *, layer=None, split: str = "train", client=None) -> xr.Dataset:
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

    Returns
    -------
    Dataset
        ``prediction`` (tr, voxel) for all stories one after another, with ``tr_story`` and
        ``tr_time`` coordinates on ``tr``; ``response`` (tr, voxel), the aligned (trimmed,
        z-scored as in training) responses; ``r`` (story, voxel) per story and ``r_all``
        (voxel) over all rows; attrs ``run``, ``layer``, ``split``.
    """
    res = run if isinstance(run, results_mod.Results) else results_mod.load(run)
    if "weights" not in res.dataset:
        raise ValueError(f"{res.path}: the run saved no weights; run it again with save_weights = true "
                         "(save_weights=True)")
    if not res.config:
        raise ValueError(f"{res.path}: no config.toml, so the run's alignment settings are unknown")
    label = res.best_layer if layer is None else str(layer)
    saved = res.layer(label).load()
    cfg = {k: v for k, v in res.config.items() if k != "cluster"}
    if assembly is not None:
        cfg["assembly"] = str(assembly.path if isinstance(assembly, Assembly) else assembly)
    cfg.update(stories=None if stories is None else list(stories), logger_backend="none")
    source = str(res.path / "config.toml")
    tr = AbstractTrainer.from_config(RunConfig.from_dict(validate_config(cfg, source=source), source=source),
                                     cluster=client, source=source)
    feats = tr.extract()
    layers, multi = tr._layers(feats)
    match = [lay for lay in layers if ("0" if lay is None else str(lay)) == label]
    if not match:
        raise ValueError(f"layer {label!r} is not produced by the run's extractors (layers: {layers})")
    W = np.asarray(saved["weights"].values, dtype=np.float64)
    b = np.asarray(saved["intercept"].values, dtype=np.float64) if "intercept" in saved else 0.0
    preds, resps, names, times, r = [], [], [], [], []
    for s in tr.stories:
        X, Y = tr.design(feats, s, split, match[0], multi)
        if X.shape[1] != W.shape[0]:
            raise ValueError(f"story {s!r}: {X.shape[1]} features but the run's weights have {W.shape[0]}")
        P = X.values.astype(np.float64) @ W + b
        Y = np.asarray(Y, dtype=np.float64)
        preds.append(P)
        resps.append(Y)
        names += [s] * P.shape[0]
        times.append(X["tr_time"].values)
        r.append(pearson_r(Y, P))
    P, Y = np.concatenate(preds), np.concatenate(resps)
    voxel = saved["voxel"].values
    return xr.Dataset({"prediction": (("tr", "voxel"), P.astype(np.float32)),
                       "response": (("tr", "voxel"), Y.astype(np.float32)),
                       "r": (("story", "voxel"), np.asarray(r)), "r_all": ("voxel", pearson_r(Y, P))},
                      coords={"story": np.asarray(tr.stories, dtype=object), "voxel": voxel,
                              "tr_story": ("tr", np.asarray(names, dtype=object)),
                              "tr_time": ("tr", np.concatenate(times))},
                      attrs={"run": str(res.path), "layer": label, "split": split})


def _json_spaces(spaces: Mapping[str, tuple[int, int]]) -> str:
    return json.dumps({k: list(v) for k, v in spaces.items()})
