"""``AbstractTrainer``: the tutorials' pipeline wired from scalenc's stages.

``train()`` runs a :class:`scalenc.engine.Plan` of one subject and one model (the engine
that :func:`scalenc.sweep` runs too): extract (per story and extractor, cached, optionally
on Dask workers) -> :func:`scalenc.align.align_story` per story (downsample -> FIR delays
-> trim -> z-score) -> ``model.fit_dataset`` on the labeled design (per-voxel results as
an :class:`xarray.Dataset`) -> results on zarr + metrics.json + config.toml + report ->
logger.

The trainer holds no algorithm of its own: it turns the tutorials' arguments into a plan
and its results into the tutorials' metrics dict. It never changes the objects it is
given: extractors that need a cache folder or the trainer's ``lookback`` are copied.
"""
from __future__ import annotations

import copy
import datetime
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import engine
from . import results as results_mod
from .align import Downsampler, TrimmingConfig
from .assembly import Assembly, load_assembly
from .config import DEFAULTS, ConfigError, RunConfig
from .loggers import make_logger
from .models import NestedCVModel

logger = logging.getLogger(__name__)

#: the trainer's run options (keywords after the tutorials' ones) -> their RunConfig key
RUN_OPTIONS = {"story_selection": "stories", "run_name": "run_name", "client": "cluster",
               "save_weights": "save_weights", "zscore_targets": "zscore_targets", "cache_dir": "cache_dir",
               "overwrite": "overwrite", "banded_by": "banded_by"}


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
    lookback : int, optional
        ``lookback`` of the language-model extractors (set on the trainer's copies).

    Run options (keywords only; :data:`RUN_OPTIONS` names their :class:`RunConfig` keys, and
    :meth:`from_config` builds a trainer from a whole RunConfig)
    ----------------------------------------------------------------------------------------
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
    banded_by : {None, "layer"}
        With ``model=NestedCVModel(model_name="banded_ridge")`` the bands are the extractors'
        feature spaces; ``"layer"`` instead makes each selected layer of the multi-layer
        extractor its own band, in one fit (its results' layer is labelled ``"L1+L2+..."``).
    """

    def __init__(self, assembly, feature_extractors, downsampler=None, model=None,
                 fir_delays=tuple(DEFAULTS.fir_delays), trimming_config=DEFAULTS.trimming,
                 use_train_test_split: bool = DEFAULTS.use_train_test_split,
                 logger_backend: str = DEFAULTS.logger_backend, wandb_project_name: str = DEFAULTS.wandb_project_name,
                 dataset_type: str = DEFAULTS.dataset_type, results_dir: str | os.PathLike = DEFAULTS.results_dir,
                 downsample_config: Mapping[str, Any] | None = None, layer_idx=DEFAULTS.layer_idx,
                 lookback: int | None = DEFAULTS.lookback, **options):
        unknown = sorted(set(options) - set(RUN_OPTIONS))
        if unknown:
            raise TypeError(f"AbstractTrainer got unexpected keyword(s) {unknown}; its run options are "
                            f"{sorted(RUN_OPTIONS)} (RunConfig keys {sorted(set(RUN_OPTIONS.values()))})")
        opt = {key: options.get(key, getattr(DEFAULTS, field)) for key, field in RUN_OPTIONS.items()}
        story_selection, run_name, client = opt["story_selection"], opt["run_name"], opt["client"]
        save_weights, zscore_targets, cache_dir = opt["save_weights"], opt["zscore_targets"], opt["cache_dir"]
        overwrite, banded_by = opt["overwrite"], opt["banded_by"]
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
        self.fir_delays = fir_delays  # checked below, once the stories are known
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
        from .align.story import check_delays  # integers, non-empty, each reaching the kept rows of every story
        self.fir_delays = check_delays(fir_delays, self.assembly, self.stories, self.trimming,
                                       self.assembly.test_stories if self.use_train_test_split else ())
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
        objs = engine.build_objects(rc, source=source)
        try:
            assembly = load_assembly(rc.assembly)
            return cls(assembly, objs["extractors"], objs["downsampler"], objs["model"], rc.fir_delays,
                       objs["trimming"], use_train_test_split=rc.use_train_test_split,
                       logger_backend=rc.logger_backend, wandb_project_name=rc.wandb_project_name,
                       dataset_type=rc.dataset_type, results_dir=rc.results_dir,
                       downsample_config=rc.downsample_config, layer_idx=rc.layer_idx, lookback=rc.lookback,
                       story_selection=rc.stories, run_name=rc.run_name,
                       client=cluster if cluster is not None else rc.cluster, save_weights=rc.save_weights,
                       zscore_targets=rc.zscore_targets, cache_dir=rc.cache_dir,
                       overwrite=rc.overwrite if overwrite is None else overwrite, banded_by=rc.banded_by)
        except (TypeError, ValueError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"{source}: {e}") from e

    # ------------------------------------------------------------------------------------
    def split(self) -> tuple[list[str], list[str]]:
        """(train stories, test stories) of this run."""
        return engine.split_stories(self.assembly, self.stories, self.use_train_test_split)

    @property
    def alignment(self) -> engine.Alignment:
        """The alignment settings of this run (:class:`scalenc.engine.Alignment`)."""
        return engine.Alignment(self.downsampler, dict(self.downsample_config), list(self.fir_delays),
                                self.trimming, self.zscore_targets)

    def plan(self) -> engine.Plan:
        """This run as a :class:`scalenc.engine.Plan` of one subject and one model."""
        train, test = self.split()
        run = engine.Run(str(self.assembly.subject), self.run_name, self.assembly, self.feature_extractors, train,
                         test, self.run_dir, self.layer_idx, config=self.config())
        return engine.Plan([run], self.alignment, self.model, banded_by=self.banded_by,
                           save_weights=self.save_weights, client=self.client, overwrite=self.overwrite,
                           name=self.run_name)

    def extract(self) -> dict[tuple[str, int], Any]:
        """FeatureSets of every (story, extractor), all layers, through the cache."""
        plan = self.plan()
        with engine.cluster(self.client, announce=False) as cl:
            feats, feat_of = plan._extract(cl)
            if cl is not None:
                feats = {k: v.result() for k, v in feats.items()}
        run = plan.runs[0]
        return {(s, i): fs for s in self.stories for i, fs in enumerate(feats[feat_of[(*run.key, s)]])}

    # ------------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run the pipeline (:class:`scalenc.engine.Plan` of this subject and model); return
        the metrics of the fitted layer (or the best of several, with ``per_layer``
        summaries), built from the saved results Dataset."""
        if self.run_dir.exists() and not self.overwrite:
            raise FileExistsError(f"run {self.run_name!r} already exists in {self.results_dir}: pass "
                                  "overwrite=True (scalenc run --overwrite) or choose another run_name")
        out = self.plan().execute()
        key = next(iter(out.datasets))
        res, spaces, t = out.datasets[key], out.feature_spaces[key], out.timings
        timings = {"extract": t["extract"], "align": t["align"], "fit": t["fit"], "write": t["write"]}
        tick = time.perf_counter()
        all_metrics = results_mod.layer_metrics(res)
        exp = make_logger(self.logger_backend, run_dir=self.run_dir, run_name=self.run_name,
                          project=self.wandb_project_name, config=self.config())
        try:
            for step, m in enumerate(all_metrics.values()):
                exp.log_scalars({k: v for k, v in results_mod.summary(m).items()
                                 if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=step)
            if (self.run_dir / "report.png").exists():
                exp.log_image("report", self.run_dir / "report.png")
        finally:
            exp.close()
        timings["write"] += time.perf_counter() - tick
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

    def config(self) -> dict[str, Any]:
        """The resolved configuration (written to ``config.toml``; :class:`RunConfig` keys,
        absolute paths, so that the file runs again from any folder)."""
        params = self.model.get_params() if hasattr(self.model, "get_params") else vars(self.model)
        model = {k: v for k, v in params.items() if isinstance(v, (int, float, str, bool)) and not k.endswith("_")}
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
            model=model, extractor_identities=engine.extractor_identities(self.feature_extractors))
        cfg = rc.to_dict()
        cfg.pop("overwrite")
        return cfg


predict = engine.predict
