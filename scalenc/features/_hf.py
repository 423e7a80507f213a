"""Hugging Face loading shared by the language-model and speech extractors.

One place for what both extractors need from :mod:`transformers`:

- :func:`resolve_model`: where a model (or tokenizer) named by the user lives, and its
  identity for the feature cache;
- :func:`pick_device`: the torch device of a ``device`` config value;
- :func:`torch_dtype` / :func:`from_pretrained_kwargs`: the dtype table and the
  ``dtype=`` (transformers >= 5) / ``torch_dtype=`` (4.x) keyword;
- :func:`from_pretrained`: ``cls.from_pretrained`` with the resolved source, the dtype
  keyword and one clear :class:`~scalenc.features.base.FeatureError` on failure;
- :class:`ModelCache`: models and tokenizers loaded once per process (thread-safe: Dask
  workers run tasks in threads).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import FeatureError, path_identity

logger = logging.getLogger(__name__)

#: accepted ``dtype`` config values (torch dtype names)
DTYPES = ("float32", "float16", "bfloat16", "float64")


# --------------------------------------------------------------------------------------
# where the model is
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ResolvedModel:
    """A model or tokenizer location.

    Attributes
    ----------
    name : str
        What the user passed.
    path : Path
        The folder holding the files (config, weights, tokenizer, preprocessor config).
    """

    name: str
    path: Path

    @property
    def source(self) -> str:
        """First argument of ``from_pretrained``."""
        return str(self.path)

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``from_pretrained`` that pin this location."""
        return {"local_files_only": True}

    def identity(self) -> dict[str, Any]:
        """What identifies the files (for cache keys): path, file count, size/mtime digest."""
        return path_identity(self.path)

    def __str__(self) -> str:
        return str(self.path)


def resolve_model(name, *, what: str = "model", who: str = "extractor") -> ResolvedModel:
    """The location of ``name``: a local folder saved with ``save_pretrained``.

    Raises
    ------
    FeatureError
        Empty name, missing path, or a file instead of a folder.
    """
    if name is None or str(name).strip() == "":
        raise FeatureError(f"{who}: {what} name is required (a folder saved with save_pretrained)")
    p = Path(str(name)).expanduser()
    if not p.exists():
        raise FeatureError(f"{who}: {what} {str(name)!r} is not an existing path: scalenc never downloads models "
                           "or tokenizers. Pass a local folder saved with save_pretrained (model and tokenizer or "
                           "feature extractor), or the model folder of an installed package")
    if not p.is_dir():
        raise FeatureError(f"{who}: {what} path {p} is a file; expected a folder saved with save_pretrained")
    return ResolvedModel(name=str(name), path=p.resolve())


# --------------------------------------------------------------------------------------
# device and dtype
# --------------------------------------------------------------------------------------
def pick_device(device: str, *, who: str = "extractor"):
    """The torch device of a ``device`` config value (``"cpu"``, ``"cuda"``, ``"cuda:N"``).

    Raises
    ------
    FeatureError
        An invalid value, or CUDA requested where it is not available.
    """
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise FeatureError(f"{who}: config key 'device' must be 'cpu', 'cuda' or 'cuda:N', got {device!r} "
                           f"({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FeatureError(f"{who}: device {device!r} requested but CUDA is not available (torch "
                               f"{torch.__version__}, built with CUDA {torch.version.cuda}); use device='cpu' or "
                               "run on a GPU worker")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise FeatureError(f"{who}: device {device!r} requested but only {torch.cuda.device_count()} CUDA "
                               "device(s) are visible")
    elif dev.type != "cpu":
        raise FeatureError(f"{who}: config key 'device' must be 'cpu' or 'cuda[:N]', got {device!r}")
    return dev


def torch_dtype(name: str, *, who: str = "extractor", allowed: tuple[str, ...] = DTYPES):
    """The torch dtype named ``name`` (one of ``allowed``)."""
    if name not in allowed:
        raise FeatureError(f"{who}: config key 'dtype' must be one of {allowed}, got {name!r}")
    import torch

    return getattr(torch, name)


def from_pretrained_kwargs(dtype) -> dict[str, Any]:
    """``{"dtype": dtype}`` for transformers >= 5, ``{"torch_dtype": dtype}`` for 4.x."""
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}


def from_pretrained(cls, model: ResolvedModel, *, what: str, who: str, dtype=None, **kwargs):
    """``cls.from_pretrained`` of ``model`` (config, weights, tokenizer or feature extractor).

    ``dtype`` (a torch dtype) is passed under the keyword this transformers version takes.
    OSError/ValueError (missing or unreadable files) become one FeatureError naming the
    location and what was being loaded.
    """
    kw = dict(model.load_kwargs())
    if dtype is not None:
        kw.update(from_pretrained_kwargs(dtype))
    kw.update(kwargs)
    try:
        return cls.from_pretrained(model.source, **kw)
    except (OSError, ValueError) as e:
        raise FeatureError(f"{who}: cannot load the {what} from {model}: {e}") from None


def config_int(config, *names: str) -> int | None:
    """The first of ``names`` that the config has as an int (configs name sizes differently)."""
    for nm in names:
        v = getattr(config, nm, None)
        if isinstance(v, int):
            return v
    return None


# --------------------------------------------------------------------------------------
# per-process cache
# --------------------------------------------------------------------------------------
class ModelCache:
    """Objects loaded once per process, keyed by everything that changes them.

    Thread-safe: concurrent requests for the same key load it once.
    """

    def __init__(self) -> None:
        self._items: dict[tuple, Any] = {}
        self._lock = threading.RLock()

    def get(self, key: tuple, load: Callable[[], Any]) -> Any:
        """The cached object of ``key``, loading it with ``load()`` the first time."""
        with self._lock:
            if key not in self._items:
                self._items[key] = load()
            return self._items[key]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


#: every model, tokenizer and feature extractor loaded in this process
MODELS = ModelCache()


def clear_model_cache() -> None:
    """Forget the models, tokenizers and feature extractors loaded in this process."""
    MODELS.clear()


__all__ = ["DTYPES", "MODELS", "ModelCache", "ResolvedModel", "clear_model_cache", "config_int", "from_pretrained",
           "from_pretrained_kwargs", "pick_device", "resolve_model", "torch_dtype"]
