"""Run settings: the :class:`RunConfig` dataclass, shared by ``AbstractTrainer`` (its
defaults) and the TOML run configurations of ``scalenc run``.

Example (runs on LeBel-layout data: ``[trimming]`` gives the tutorials' values for both
splits; leave a split's keys out and it is aligned by the assembly's grid offset)::

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
    test_features_start = 50
    test_features_end = -5
    test_targets_start = 40

    [model]                              # NestedCVModel(**model); alphas or alphas_logspace
    alphas_logspace = [-1, 8, 10]
    n_inner_folds = 5

    [[extractors]]                       # FeatureExtractorFactory.create_extractor(...)
    modality = "language_model"
    model_name = "/models/gpt2"
    cache_dir = "cache"
    [extractors.config]
    lookback = 256

Relative paths are resolved against the config file's folder; the ``config.toml`` a run
saves writes them absolute, so it runs again from anywhere (``scalenc run
results/uts03-gpt2/config.toml --overwrite``). Unknown keys and values of the wrong type
are errors that name the key, its table and the file.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Union

import numpy as np

__all__ = ["ConfigError", "RunConfig", "is_sweep", "load_config", "model_kwargs", "validate_config"]

EXTRACTOR_KEYS = {"modality", "model_name", "cache_dir", "config"}
PATH_KEYS = ("assembly", "results_dir", "cache_dir")


class ConfigError(ValueError):
    """An invalid run configuration; the message names the file and the key."""


@dataclasses.dataclass
class RunConfig:
    """Settings of one run: the TOML keys of ``scalenc run`` and the defaults of
    :class:`~scalenc.trainer.AbstractTrainer` (see its docstring for each meaning).

    ``downsampler``, ``trimming``, ``model`` and ``extractors`` are the specifications
    (tables) of the objects the trainer is given; ``cache_dir`` (default
    ``<results_dir>/feature_cache``) is used by extractors that have none.
    """

    assembly: str | list[str] | None = None
    extractors: list[dict] = dataclasses.field(default_factory=list)
    models: list[dict] | None = None
    run_name: str | None = None
    results_dir: str = "results"
    cache_dir: str | None = None
    cluster: str | None = None
    fir_delays: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 3, 4])
    use_train_test_split: bool = True
    logger_backend: str = "local"
    wandb_project_name: str = "scalenc"
    dataset_type: str = "unknown"
    layer_idx: int | str | list[int | str] | None = None
    lookback: int | None = None
    stories: list[str | int] | int | None = None
    save_weights: bool = False
    zscore_targets: bool = True
    banded_by: str | None = None
    overwrite: bool = False
    downsampler: dict = dataclasses.field(default_factory=dict)
    downsample_config: dict = dataclasses.field(default_factory=dict)
    trimming: dict | None = None
    model: dict = dataclasses.field(default_factory=dict)
    extractor_identities: list[str] | None = None
    stack: list[dict] | None = None

    @classmethod
    def from_dict(cls, cfg: dict[str, Any], *, source: str = "config") -> RunConfig:
        """A RunConfig of a (validated) configuration dict; unknown keys are an error."""
        unknown = sorted(set(cfg) - set(TOP_KEYS))
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {unknown}; accepted: {sorted(TOP_KEYS)}")
        return cls(**cfg)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


TOP_KEYS: dict[str, Any] = typing.get_type_hints(RunConfig)
DEFAULTS = RunConfig()


def _describe(hint, plural: bool = False) -> str:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_describe(a, plural) for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is list:
        return f"a list of {_describe(typing.get_args(hint)[0], True)}" if typing.get_args(hint) else "a list"
    if hint is dict or typing.get_origin(hint) is dict:
        return "a table"
    names = {bool: ("true/false", "true/false"), int: ("an integer", "integers"), float: ("a number", "numbers"),
             str: ("a string", "strings")}
    return names[hint][plural] if hint in names else str(hint)


def type_ok(value, hint) -> bool:
    """Whether ``value`` (as read from TOML) fits the type ``hint``."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(type_ok(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is list or origin is list:
        args = typing.get_args(hint)
        return isinstance(value, list) and (not args or all(type_ok(v, args[0]) for v in value))
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def _check(value, hint, where: str, source: str) -> None:
    if not type_ok(value, hint):
        raise ConfigError(f"{source}: {where} must be {_describe(hint)}, got {type(value).__name__} {value!r}")


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


def _resolve(base: Path, v: str) -> str:
    return str((base / os.path.expanduser(v)).resolve())


def validate_config(cfg: dict[str, Any], *, base: str | os.PathLike = ".", source: str = "config") -> dict[str, Any]:
    """Check keys and value types of a run configuration; resolve relative paths against ``base``.

    Tables (``[model]``, ``[trimming]``, ``[downsampler]``, extractor configs) are checked
    by the objects they build (:func:`scalenc.engine.build_objects`), with errors naming the table.
    """
    base = Path(base)
    unknown = sorted(set(cfg) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; accepted: {sorted(TOP_KEYS)}")
    for key in ("assembly", "extractors"):
        if key not in cfg and not (key == "extractors" and "models" in cfg):
            raise ConfigError(f"{source}: missing required key {key!r}")
    if "models" in cfg and "extractors" in cfg:
        raise ConfigError(f"{source}: give either 'extractors' (one model) or [[models]] (a sweep), not both")
    for key, value in cfg.items():
        hint = TOP_KEYS[key]
        if key == "stack":
            if not isinstance(value, list) or not all(isinstance(x, dict) and isinstance(x.get("name"), str)
                                                      and type_ok(x.get("models"), list[str]) for x in value):
                raise ConfigError(f"{source}: [[stack]] entries need a 'name' (string) and 'models' (a list of the "
                                  "[[models]] names)")
            continue
        if key == "models":
            if not isinstance(value, list) or not value or not all(isinstance(m, dict) for m in value):
                raise ConfigError(f"{source}: 'models' must be a non-empty array of tables ([[models]])")
            continue
        if key == "extractors":
            if not isinstance(value, list) or not value:
                raise ConfigError(f"{source}: 'extractors' must be a non-empty array of tables ([[extractors]])")
            continue
        if key in ("downsampler", "trimming", "model", "downsample_config"):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: [{key}] must be a table, got {type(value).__name__} {value!r}")
            continue
        _check(value, hint, key, source)
    from .align.fir import validate_delays  # noqa: PLC0415 - keep config import-light
    try:  # fir_delays: non-empty integers, no duplicates (each story's length: the trainer checks)
        validate_delays(cfg.get("fir_delays", [1]))
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None
    out = dict(cfg)
    for key in PATH_KEYS:
        if key in out:
            out[key] = [_resolve(base, v) for v in out[key]] if isinstance(out[key], list) else _resolve(base, out[key])
    cl = out.get("cluster")
    if isinstance(cl, str) and cl.endswith((".yaml", ".yml", ".json")):
        out["cluster"] = _resolve(base, cl)
    if "models" in out:
        models, names = [], set()
        for i, m in enumerate(out["models"]):
            where = f"[[models]] #{i + 1}"
            if not isinstance(m.get("name"), str) or not m["name"]:
                raise ConfigError(f"{source}: {where} needs a 'name' (a string)")
            if m["name"] in names:
                raise ConfigError(f"{source}: {where}: model name {m['name']!r} given twice")
            names.add(m["name"])
            extra = sorted(set(m) - {"name", "extractors", "parameters"})
            if extra:
                raise ConfigError(f"{source}: {where}: unknown key(s) {extra}; accepted: ['extractors', 'name', "
                                  "'parameters']")
            if "parameters" in m and not type_ok(m["parameters"], float):
                raise ConfigError(f"{source}: {where}: 'parameters' (the model's parameter count) must be a number")
            if not isinstance(m.get("extractors"), list) or not m["extractors"]:
                raise ConfigError(f"{source}: {where} needs a non-empty [[models.extractors]] array")
            models.append({"name": m["name"], "parameters": m.get("parameters"),
                           "extractors": _extractors(m["extractors"], base, source,
                                                     f"[[models]] {m['name']!r} extractor")})
        out["models"] = models
        return out
    out["extractors"] = _extractors(out["extractors"], base, source, "[[extractors]]")
    return out


def _extractors(items: list, base: Path, source: str, prefix: str) -> list[dict[str, Any]]:
    """Validated extractor tables (config keys gathered, local paths resolved against ``base``)."""
    fixed = []
    for i, ex in enumerate(items):
        where = f"{prefix} #{i + 1}"
        if not isinstance(ex, dict) or "modality" not in ex:
            raise ConfigError(f"{source}: {where} needs a 'modality'")
        for k in ("modality", "model_name", "cache_dir"):
            if k in ex:
                _check(ex[k], str, f"{where} key {k!r}", source)
        if "config" in ex and not isinstance(ex["config"], dict):
            raise ConfigError(f"{source}: {where} key 'config' must be a table")
        conf = dict(ex.get("config", {}))
        conf.update({k: v for k, v in ex.items() if k not in EXTRACTOR_KEYS})  # config keys written flat
        e = {"modality": ex["modality"], "model_name": ex.get("model_name"), "cache_dir": ex.get("cache_dir"),
             "config": conf}
        for k in ("model_name", "cache_dir"):
            v = e[k]
            if isinstance(v, str) and (k == "cache_dir" or v.startswith((".", "~", "/")) or (base / v).exists()):
                e[k] = _resolve(base, v)
        fixed.append(e)
    return fixed


def model_kwargs(table: dict[str, Any], model_cls, *, source: str = "config") -> dict[str, Any]:
    """Keyword arguments of ``model_cls`` from a ``[model]`` table, types checked against
    the constructor's defaults; ``alphas_logspace = [lo, hi, n]`` becomes ``alphas``."""
    defaults = (model_cls.param_defaults() if hasattr(model_cls, "param_defaults")
                else {k: p.default for k, p in inspect.signature(model_cls).parameters.items()})
    out = dict(table)
    if "alphas_logspace" in out:
        v = out.pop("alphas_logspace")
        _check(v, list[float], "[model] key 'alphas_logspace'", source)
        if len(v) != 3:
            raise ConfigError(f"{source}: [model] key 'alphas_logspace' must be [low, high, count], got {v!r}")
        out["alphas"] = np.logspace(v[0], v[1], int(v[2]))
    elif "alphas" in out:
        _check(out["alphas"], list[float], "[model] key 'alphas'", source)
    unknown = sorted(set(out) - set(defaults))
    if unknown:
        raise ConfigError(f"{source}: [model] unknown key(s) {unknown}; accepted: "
                          f"{sorted([*defaults, 'alphas_logspace'])}")
    for k, v in out.items():
        default = defaults[k]
        if k != "alphas" and default is not None and default is not inspect.Parameter.empty:
            _check(v, type(default) if not isinstance(default, float) else float, f"[model] key {k!r}", source)
    return out


def is_sweep(cfg: dict[str, Any]) -> bool:
    """Whether a validated configuration describes a sweep (several assemblies or [[models]])."""
    return isinstance(cfg.get("assembly"), list) or bool(cfg.get("models"))
