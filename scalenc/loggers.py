"""Experiment loggers: ``local`` (JSONL + PNG), ``tensorboard``, ``wandb``.

(DESIGN.md calls this module ``logging.py``; it is ``loggers.py`` so that it never shadows
the standard library's :mod:`logging` for readers and tools.)
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

BACKENDS = ("local", "tensorboard", "wandb", "none")


class ExperimentLogger:
    """Interface: ``log_scalars(dict, step)``, ``log_image(name, png_path)``, ``close()``."""

    def log_scalars(self, values: dict[str, float], step: int = 0) -> None:  # pragma: no cover
        raise NotImplementedError

    def log_image(self, name: str, path: str | os.PathLike) -> None:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:
        pass


class NullLogger(ExperimentLogger):
    def log_scalars(self, values, step=0):
        pass

    def log_image(self, name, path):
        pass


class LocalLogger(ExperimentLogger):
    """Appends one JSON line per call to ``<run_dir>/log.jsonl``; images are referenced."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / "log.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _write(self, rec: dict[str, Any]) -> None:
        rec["time"] = time.time()
        with open(self.path, "a") as f:
            f.write(json.dumps(rec, default=float) + "\n")

    def log_scalars(self, values, step=0):
        self._write({"step": step, **{k: float(v) for k, v in values.items()}})

    def log_image(self, name, path):
        self._write({"image": name, "path": str(path)})


class TensorBoardLogger(ExperimentLogger):
    def __init__(self, log_dir: str | os.PathLike):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError("logger_backend='tensorboard' needs tensorboard: install scalenc[log] "
                              "(or scalenc[all])") from e
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log_scalars(self, values, step=0):
        for k, v in values.items():
            self.writer.add_scalar(k, float(v), step)
        self.writer.flush()

    def log_image(self, name, path):
        import matplotlib.image as mpimg

        self.writer.add_image(name, mpimg.imread(str(path))[..., :3], dataformats="HWC")
        self.writer.flush()

    def close(self):
        self.writer.close()


class WandbLogger(ExperimentLogger):
    """Weights & Biases; works offline with ``WANDB_MODE=offline`` (files under ``dir``); with
    ``WANDB_MODE=disabled`` :func:`make_logger` does not start (or import) wandb at all.

    Without an API key (``WANDB_API_KEY``, ``wandb login``) and without ``WANDB_MODE``, the
    run is logged offline (wandb itself silent) with one warning saying how to sync it.
    """

    def __init__(self, project: str, run_name: str, run_dir: str | os.PathLike, config: dict | None = None):
        try:
            import wandb
        except ImportError as e:
            raise ImportError("logger_backend='wandb' needs wandb: install scalenc[log] (or scalenc[all]); "
                              "offline use: WANDB_MODE=offline") from e
        self.wandb = wandb
        Path(run_dir).mkdir(parents=True, exist_ok=True)  # wandb warns about a dir it has yet to make
        kw = dict(project=project, name=run_name, dir=str(run_dir), config=config or {}, reinit="finish_previous")
        try:
            self.run = wandb.init(**kw)
        except wandb.errors.UsageError as e:
            if "API key" not in str(e):
                raise
            if os.environ.get("WANDB_MODE", "").strip():  # the user asked for this mode: no fallback
                raise ValueError(f"logger_backend='wandb' with WANDB_MODE={os.environ['WANDB_MODE']}: {e} "
                                 f"(or set WANDB_MODE=offline)") from None
            self.run = wandb.init(**kw, mode="offline", settings=wandb.Settings(silent=True))
            sync_dir = getattr(self.run.settings, "sync_dir", None) or Path(run_dir) / "wandb"
            logger.warning("wandb: no API key and no WANDB_MODE, logging offline to %s; upload it with "
                           "`wandb login && wandb sync %s` (or set WANDB_MODE=offline to skip this check)",
                           sync_dir, sync_dir)

    def log_scalars(self, values, step=0):
        self.run.log({k: float(v) for k, v in values.items()}, step=step)

    def log_image(self, name, path):
        self.run.log({name: self.wandb.Image(str(path))})

    def close(self):
        self.run.finish()


def _wandb_disabled() -> bool:
    """Whether the environment turns wandb off (``WANDB_MODE=disabled``, or the older ``WANDB_DISABLED``)."""
    return (os.environ.get("WANDB_MODE", "").strip().lower() == "disabled"
            or os.environ.get("WANDB_DISABLED", "").strip().lower() in ("true", "1", "yes"))


def make_logger(backend: str, *, run_dir: str | os.PathLike, run_name: str, project: str = "scalenc",
                config: dict | None = None) -> ExperimentLogger:
    """The logger for ``backend`` (one of ``local``, ``tensorboard``, ``wandb``, ``none``)."""
    if backend == "local":
        return LocalLogger(run_dir)
    if backend == "tensorboard":
        return TensorBoardLogger(Path(run_dir) / "tensorboard")
    if backend == "wandb":
        if _wandb_disabled():
            # wandb's disabled mode makes every call a no-op; importing wandb alone takes a second
            if importlib.util.find_spec("wandb") is None:
                raise ImportError("logger_backend='wandb' needs wandb: install scalenc[log] (or scalenc[all])")
            logger.debug("WANDB_MODE=disabled: wandb not started, nothing logged")
            return NullLogger()
        return WandbLogger(project, run_name, run_dir, config)
    if backend in ("none", None):
        return NullLogger()
    raise ValueError(f"unknown logger_backend {backend!r}; accepted: {BACKENDS}")
