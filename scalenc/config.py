"""TOML run configurations for ``scalenc run`` (mirroring the Python API).

Example::

    run_name = "uts03-gpt2"
    results_dir = "results"
    assembly = "UTS03.zarr"              # or a LITcoder .pkl
    cluster = "local"                    # optional: "local", an address, "slurm", a jobqueue .yaml
    fir_delays = [1, 2, 3, 4]
    use_train_test_split = true
    logger_backend = "local"             # "local", "tensorboard", "wandb", "none"
    layer_idx = [3, 6, 9]                # optional: fit these layers from one extraction
    save_weights = false

    [downsampler]                        # Downsampler(method, **rest)
    method = "lanczos"
    window = 3

    [trimming]                           # the tutorials' trimming_config keys (optional)
    train_features_start = 10
    train_features_end = -5

    [model]                              # NestedCVModel(**model); alphas or alphas_logspace
    alphas_logspace = [-1, 8, 10]
    n_inner_folds = 5

    [[extractors]]                       # FeatureExtractorFactory.create_extractor(...)
    modality = "language_model"
    model_name = "/models/gpt2"
    cache_dir = "cache"
    [extractors.config]
    lookback = 256

Relative paths are resolved against the config file's folder. Unknown keys are errors
that name the key (and its table).
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

TOP_KEYS = {"run_name", "results_dir", "assembly", "cluster", "fir_delays", "use_train_test_split",
            "logger_backend", "wandb_project_name", "dataset_type", "layer_idx", "lookback", "stories",
            "save_weights", "zscore_targets", "downsampler", "trimming", "model", "extractors", "downsample_config"}
EXTRACTOR_KEYS = {"modality", "model_name", "cache_dir", "config"}
PATH_KEYS = {"assembly", "results_dir"}


class ConfigError(ValueError):
    """An invalid run configuration; the message names the file and the key."""


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a TOML run configuration; paths become absolute."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {p} not found")
    try:
        cfg = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML ({e})") from e
    return validate_config(cfg, base=p.parent, source=str(p))


def validate_config(cfg: dict[str, Any], *, base: str | os.PathLike = ".", source: str = "config") -> dict[str, Any]:
    base = Path(base)
    unknown = sorted(set(cfg) - TOP_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; accepted: {sorted(TOP_KEYS)}")
    for key in ("assembly", "extractors"):
        if key not in cfg:
            raise ConfigError(f"{source}: missing required key {key!r}")
    out = dict(cfg)
    for key in PATH_KEYS & set(out):
        out[key] = str((base / os.path.expanduser(out[key])).resolve())
    cl = out.get("cluster")
    if isinstance(cl, str) and cl.endswith((".yaml", ".yml", ".json")):
        out["cluster"] = str((base / cl).resolve())
    exs = out["extractors"]
    if not isinstance(exs, list) or not exs:
        raise ConfigError(f"{source}: 'extractors' must be a non-empty array of tables ([[extractors]])")
    fixed = []
    for i, ex in enumerate(exs):
        if not isinstance(ex, dict) or "modality" not in ex:
            raise ConfigError(f"{source}: extractors[{i}] needs a 'modality'")
        conf = dict(ex.get("config", {}))
        flat = {k: v for k, v in ex.items() if k not in EXTRACTOR_KEYS}  # config keys written flat
        conf.update(flat)
        e = {"modality": ex["modality"], "model_name": ex.get("model_name"), "cache_dir": ex.get("cache_dir"),
             "config": conf}
        for k in ("model_name", "cache_dir"):
            v = e[k]
            if isinstance(v, str) and (k == "cache_dir" or v.startswith((".", "~", "/")) or (base / v).exists()):
                e[k] = str((base / os.path.expanduser(v)).resolve())
        fixed.append(e)
    out["extractors"] = fixed
    for table in ("downsampler", "trimming", "model"):
        if table in out and not isinstance(out[table], dict):
            raise ConfigError(f"{source}: [{table}] must be a table")
    fd = out.get("fir_delays", [1, 2, 3, 4])
    if not isinstance(fd, list) or not all(isinstance(d, int) for d in fd):
        raise ConfigError(f"{source}: fir_delays must be a list of integers, got {fd!r}")
    return out


def build_trainer(cfg: dict[str, Any], *, cluster: Any = None, source: str = "config"):
    """The :class:`~scalenc.trainer.AbstractTrainer` of a validated configuration."""
    import numpy as np

    from .align import Downsampler
    from .features import FeatureExtractorFactory
    from .models import NestedCVModel
    from .trainer import AbstractTrainer

    def wrap(what, fn):
        try:
            return fn()
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{source}: [{what}] {e}") from e

    extractors = []
    for i, ex in enumerate(cfg["extractors"]):
        extractors.append(wrap(f"extractors.{i}", lambda ex=ex: FeatureExtractorFactory.create_extractor(
            ex["modality"], ex.get("model_name"), ex.get("config") or {}, ex.get("cache_dir"))))
    ds_cfg = dict(cfg.get("downsampler", {}))
    down = wrap("downsampler", lambda: Downsampler(ds_cfg.pop("method", "lanczos"), **ds_cfg))
    model_cfg = dict(cfg.get("model", {}))
    if "alphas_logspace" in model_cfg:
        lo, hi, n = model_cfg.pop("alphas_logspace")
        model_cfg["alphas"] = np.logspace(lo, hi, int(n))
    model = wrap("model", lambda: NestedCVModel(**model_cfg))
    return wrap("trainer", lambda: AbstractTrainer(
        cfg["assembly"], extractors, down, model, cfg.get("fir_delays", [1, 2, 3, 4]), cfg.get("trimming"),
        use_train_test_split=cfg.get("use_train_test_split", True),
        logger_backend=cfg.get("logger_backend", "local"),
        wandb_project_name=cfg.get("wandb_project_name", "scalenc"),
        dataset_type=cfg.get("dataset_type", "unknown"), results_dir=cfg.get("results_dir", "results"),
        downsample_config=cfg.get("downsample_config"), layer_idx=cfg.get("layer_idx"),
        lookback=cfg.get("lookback"), story_selection=cfg.get("stories"), run_name=cfg.get("run_name"),
        client=cluster if cluster is not None else cfg.get("cluster"),
        save_weights=cfg.get("save_weights", False), zscore_targets=cfg.get("zscore_targets", True)))
