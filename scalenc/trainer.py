"""``AbstractTrainer``: the tutorials' pipeline wired from scalenc's stages.

extract (per story and extractor, cached, optionally on Dask workers) -> downsample to
the story's TR grid -> FIR delays -> trim -> z-score per story -> model.fit_predict ->
results on zarr + metrics.json + report.png + logger.

The trainer holds no algorithm of its own: each step is a function of
:mod:`scalenc.features`, :mod:`scalenc.align`, :mod:`scalenc.models` and
:mod:`scalenc.results`.
"""
from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .align import Downsampler, TrimmingConfig, fir, trim_story, zscore
from .assembly import Assembly, load_assembly

logger = logging.getLogger(__name__)


def _extract_task(extractor, assembly_path: str, story: str) -> str:
    """Worker side: compute (or find) one story's features in the cache; return its key."""
    fs = extractor.extract(Assembly(assembly_path), story, layers=None)
    return str(fs.attrs.get("cache_key", ""))


class AbstractTrainer:
    """Run the encoding-model pipeline on an assembly.

    Parameters (the LITcoder tutorials' names)
    ------------------------------------------
    assembly : Assembly or path
    feature_extractors : list of FeatureExtractor
        Their features are concatenated (the feature spaces are recorded).
    downsampler : Downsampler, optional
        Default ``Downsampler()`` (lanczos).
    model : NestedCVModel (or any object with ``fit_predict``), optional
    fir_delays : list of int
    trimming_config : dict or TrimmingConfig, optional
        The tutorials' keys. Default: features cut to the response rows with the
        assembly's ``grid_offset`` (for LeBel this is features ``[10:-5]``), targets whole.
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
    lookback : int, optional
        Sets ``lookback`` of the language-model extractors.
    story_selection : list of str or int, optional
        Stories to use (an int is a 1-based index, as in LITcoder).
    run_name : str, optional
    client : distributed.Client, address or None
        Extraction tasks and voxel blocks run on this Dask cluster; None: in-process.
    save_weights : bool
        Store the weights in ``results.zarr``.
    zscore_targets : bool
        z-score responses per story after trimming (LITcoder does).
    """

    def __init__(self, assembly, feature_extractors, downsampler=None, model=None, fir_delays=(1, 2, 3, 4),
                 trimming_config=None, use_train_test_split: bool = True, logger_backend: str = "local",
                 wandb_project_name: str = "scalenc", dataset_type: str = "unknown",
                 results_dir: str | os.PathLike = "results", downsample_config: Mapping[str, Any] | None = None,
                 layer_idx=None, lookback: int | None = None, story_selection=None, run_name: str | None = None,
                 client=None, save_weights: bool = False, zscore_targets: bool = True):
        from .models import NestedCVModel

        self.assembly = assembly if isinstance(assembly, Assembly) else load_assembly(assembly)
        self.feature_extractors = list(feature_extractors) if isinstance(feature_extractors, (list, tuple)) \
            else [feature_extractors]
        if not self.feature_extractors:
            raise ValueError("feature_extractors is empty")
        self.downsampler = downsampler if downsampler is not None else Downsampler()
        self.model = model if model is not None else NestedCVModel()
        self.fir_delays = [int(d) for d in fir_delays]
        self.trimming = None if trimming_config is None else (
            trimming_config if isinstance(trimming_config, TrimmingConfig) else TrimmingConfig.from_dict(trimming_config))
        self.use_train_test_split = use_train_test_split
        self.logger_backend = logger_backend
        self.wandb_project_name = wandb_project_name
        self.dataset_type = dataset_type
        self.results_dir = Path(results_dir)
        self.downsample_config = dict(downsample_config or {})
        self.layer_idx = layer_idx
        self.lookback = lookback
        self.run_name = run_name or f"run-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        self.save_weights = save_weights
        self.zscore_targets = zscore_targets
        self.client = client
        stories = self.assembly.stories
        if story_selection is None:
            self.stories = list(stories)
        elif isinstance(story_selection, int):
            self.stories = [stories[story_selection - 1]]
        else:
            missing = [s for s in story_selection if s not in stories]
            if missing:
                raise KeyError(f"story_selection: {missing} not in the assembly; stories: {stories}")
            self.stories = list(story_selection)
        if lookback is not None:
            for ex in self.feature_extractors:
                if "lookback" in getattr(ex, "defaults", {}):
                    ex.config["lookback"] = int(lookback)
        self.run_dir = self.results_dir / self.run_name

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

    def _cache_dirs(self) -> None:
        for ex in self.feature_extractors:
            if getattr(ex, "cache_dir", None) is None:
                ex.cache_dir = self.results_dir / "feature_cache"
                logger.info("%s: caching features in %s", ex.modality, ex.cache_dir)

    def extract(self) -> dict[tuple[str, int], Any]:
        """FeatureSets of every (story, extractor), all layers, through the cache."""
        self._cache_dirs()
        jobs = [(s, i) for s in self.stories for i in range(len(self.feature_extractors))]
        client = self._client()
        if client is not None:
            from .distributed import has_gpu_workers

            if self.assembly._pending_audio:  # workers open the store: persist audio paths first
                logger.info("saving the assembly's new audio paths before sending tasks to workers")
                self.assembly.save()

            gpu = has_gpu_workers(client)
            futures = {}
            for s, i in jobs:
                ex = self.feature_extractors[i]
                res = {"GPU": 1} if gpu and getattr(ex, "needs_gpu", False) else None
                futures[client.submit(_extract_task, ex, str(self.assembly.path), s, resources=res,
                                      key=f"extract-{ex.modality}-{i}-{s}-{self.run_name}", pure=False)] = (s, i)
            from distributed import as_completed

            for fut in tqdm(as_completed(futures), total=len(futures), desc="extract", unit="task"):
                fut.result()  # raise worker errors here; the data stays in the cache
        out = {}
        for s, i in tqdm(jobs, desc="features", unit="story", disable=client is not None):
            out[(s, i)] = self.feature_extractors[i].extract(self.assembly, s, layers=None)
        return out

    def _client(self):
        if self.client is None:
            return None
        if isinstance(self.client, str):
            from .distributed import client as make_client

            self.client = make_client(self.client)  # logs the dashboard address
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

    def design(self, feats, story: str, split: str, layer=None, multi: int | None = None):
        """(X, Y, feature_spaces) of one story: downsampled, delayed, trimmed, z-scored."""
        grid = self.assembly.tr_times(story).values
        blocks, spaces, col = [], {}, 0
        for i, ex in enumerate(self.feature_extractors):
            fs = feats[(story, i)]
            F = fs["features"]
            F = F.sel(layer=layer) if (i == multi and layer is not None) else F.isel(layer=0)
            vals = np.asarray(F.values, dtype=np.float64)
            ds = self.downsampler.downsample(vals, fs["time"].values, grid, **self.downsample_config)
            blocks.append(np.asarray(ds).reshape(len(grid), -1))
            name = str(fs.attrs.get("feature_space") or ex.modality)
            while name in spaces:
                name += "_"
            spaces[name] = (col, col + blocks[-1].shape[1])
            col += blocks[-1].shape[1]
        Xs = fir(np.concatenate(blocks, axis=1), self.fir_delays)
        bold = self.assembly.bold(story).data
        trim = self.trimming
        if trim is None:  # features on the response rows of the grid
            off, n = self.assembly.grid_offset(story), bold.shape[0]
            X, Y = Xs[off:off + n], bold
        else:
            X, Y = trim_story(Xs, bold, trim, split, story=story)
        X = zscore(X.astype(np.float32))
        if self.zscore_targets:
            Y = zscore(Y)
        return X, Y, spaces

    def _test_repeats(self, story: str, n_rows: int):
        reps = self.assembly.bold_repeats(story)
        if reps is None:
            return None
        r = np.asarray(reps.values, dtype=np.float64)
        if self.trimming is not None:
            r = r[:, self.trimming.slices("test")[1]]
        return r if r.shape[1] == n_rows else None

    def _ground_truth_ceiling(self, story: str, y_test) -> np.ndarray | None:
        gt = self.assembly.attrs.get("ground_truth")
        if not gt or not Path(gt).exists():
            return None
        import xarray as xr

        tree = xr.open_datatree(gt, engine="zarr", consolidated=False)
        sig = tree[f"stories/{story}"]["signal"].values
        if self.trimming is not None:
            sig = sig[self.trimming.slices("test")[1]]
        if sig.shape != y_test.shape:
            return None
        from .ridge.scoring import pearson_r

        return pearson_r(np.asarray(y_test), sig)

    # ------------------------------------------------------------------------------------
    def train(self, **model_kwargs) -> dict[str, Any]:
        """Run the pipeline; return the metrics of the fitted layer (or the best of several,
        with ``per_layer`` summaries)."""
        import dask.array as da

        from . import results as results_mod
        from .loggers import make_logger

        import time

        tick = time.perf_counter()
        timings = {"extract": 0.0, "align": 0.0, "fit": 0.0, "write": 0.0}
        train_s, test_s = self.split()
        feats = self.extract()
        timings["extract"] = time.perf_counter() - tick
        layers, multi = self._layers(feats)
        client = self._client()
        all_metrics, weights, spaces_out, ceiling = {}, {}, {}, None
        for layer in tqdm(layers, desc="layers", unit="layer", disable=len(layers) == 1):
            tick = time.perf_counter()
            tr = [self.design(feats, s, "train", layer, multi) for s in train_s]
            X = np.concatenate([t[0] for t in tr])
            Y = da.concatenate([da.asarray(t[1]) for t in tr], axis=0)
            groups = np.concatenate([[s] * t[0].shape[0] for s, t in zip(train_s, tr)])
            spaces_out = tr[0][2]
            kw = dict(model_kwargs)
            if test_s:
                te = [self.design(feats, s, "test", layer, multi) for s in test_s]
                Xt = np.concatenate([t[0] for t in te])
                Yt = np.concatenate([np.asarray(t[1]) for t in te])
                reps = self._test_repeats(test_s[0], Yt.shape[0]) if len(test_s) == 1 else None
                if reps is not None and "test_repeats" not in kw:
                    kw["test_repeats"] = reps
                timings["align"] += time.perf_counter() - tick
                tick = time.perf_counter()
                metrics, W, best = self.model.fit_predict(X, Y, X_test=Xt, y_test=Yt, groups=groups, **kw)
                if len(test_s) == 1:
                    gt_ceiling = self._ground_truth_ceiling(test_s[0], Yt)
                    if gt_ceiling is not None:
                        metrics["noise_ceiling"] = gt_ceiling
                        metrics["noise_ceiling_source"] = "ground truth"
                    elif "noise_ceiling" in metrics:
                        metrics["noise_ceiling_source"] = "test repeats (cc_max)"
            else:
                timings["align"] += time.perf_counter() - tick
                tick = time.perf_counter()
                metrics, W, best = self.model.fit_predict(X, Y, groups=groups, **kw)
            timings["fit"] += time.perf_counter() - tick
            ceiling = metrics.get("noise_ceiling", ceiling)
            label = "0" if layer is None else str(layer)
            all_metrics[label] = metrics
            weights[label] = W if self.save_weights else None
            logger.info("layer %s: median r %.4f", label, float(metrics["median_score"]))
        del client
        tick = time.perf_counter()
        best_layer = max(all_metrics, key=lambda k: np.nanmedian(all_metrics[k]["correlations"]))
        config = self.config()
        results_mod.save(self.run_dir, all_metrics, config=config, weights=weights, feature_spaces=spaces_out,
                         noise_ceiling=ceiling,
                         voxel_coords={"voxel": self.assembly.voxels["voxel"].values})
        exp = make_logger(self.logger_backend, run_dir=self.run_dir, run_name=self.run_name,
                          project=self.wandb_project_name, config=config)
        try:
            for step, (label, m) in enumerate(all_metrics.items()):
                exp.log_scalars({k: v for k, v in results_mod.summary(m).items() if isinstance(v, (int, float))},
                                step=step)
            if (self.run_dir / "report.png").exists():
                exp.log_image("report", self.run_dir / "report.png")
        finally:
            exp.close()
        timings["write"] = time.perf_counter() - tick
        self.timings = timings
        out = dict(all_metrics[best_layer])
        out["layer"] = best_layer
        if len(all_metrics) > 1:
            out["per_layer"] = {k: results_mod.summary(m) for k, m in all_metrics.items()}
        out["results_dir"] = str(self.run_dir)
        out["feature_spaces"] = spaces_out
        out["timings"] = timings
        return out

    def config(self) -> dict[str, Any]:
        """The resolved configuration (written to ``config.toml``)."""
        cfg: dict[str, Any] = {
            "run_name": self.run_name, "assembly": str(self.assembly.path), "dataset_type": self.dataset_type,
            "fir_delays": self.fir_delays, "use_train_test_split": self.use_train_test_split,
            "stories": self.stories, "logger_backend": self.logger_backend,
            "downsampler": {"method": self.downsampler.method, **dict(self.downsampler.config),
                            **self.downsample_config},
            "trimming": {} if self.trimming is None else {k: v for k, v in self.trimming.to_dict().items()},
            "model": {k: v for k, v in vars(self.model).items()
                      if isinstance(v, (int, float, str, bool)) or v is None},
        }
        cfg["extractors"] = [
            {"modality": ex.modality, "model_name": getattr(ex, "model_name", None),
             **{k: v for k, v in ex.config.items() if isinstance(v, (int, float, str, bool, list))}}
            for ex in self.feature_extractors]
        if self.layer_idx is not None:
            cfg["layer_idx"] = self.layer_idx
        return cfg


def _seq(x) -> Sequence:
    return x if isinstance(x, (list, tuple)) else [x]
