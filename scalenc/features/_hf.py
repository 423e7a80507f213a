"""Hugging Face loading shared by the language-model and speech extractors.

One place for what both extractors need from :mod:`transformers`:

- :func:`resolve_model`: where a model (or tokenizer) named by the user lives: a local
  folder, a Hugging Face Hub id (optional ``revision``) or a TransformerLens name/alias
  (``gpt2-small`` -> ``gpt2`` through ``transformer_lens.supported_models``), resolved to
  one snapshot commit of the standard Hub cache (``HF_HUB_CACHE`` or ``$HF_HOME/hub``,
  read at call time; downloaded there when missing unless ``HF_HUB_OFFLINE=1``), and its
  identity for the feature cache (folder: file digest; Hub: id + commit);
- :func:`pick_device`: the torch device of a ``device`` config value (``"auto"``: CUDA,
  MPS, CPU; an unavailable device warns and falls back to the CPU unless ``strict``);
- :func:`torch_dtype` / :func:`from_pretrained_kwargs`: the dtype table and the
  ``dtype=`` (transformers >= 5) / ``torch_dtype=`` (4.x) keyword;
- :func:`from_pretrained`: ``cls.from_pretrained`` with the resolved source, the dtype
  keyword and one clear :class:`~scalenc.features.base.FeatureError` on failure;
- :class:`ModelCache`: models and tokenizers loaded once per process (thread-safe: Dask
  workers run tasks in threads), keyed by :func:`model_key`;
- :func:`place` / :func:`input_device`: a loaded model on its device, or spread by
  ``device_map`` (``"auto"``: over the GPUs of a node, then the CPU, through accelerate)
  for models too big for one GPU.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import warnings
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
def hub_cache_dir() -> Path:
    """The Hugging Face Hub cache searched and filled: ``HF_HUB_CACHE``, else
    ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub`` (read now, not at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@dataclasses.dataclass(frozen=True)
class ResolvedModel:
    """A model or tokenizer location: a local folder or a snapshot of a Hub repository.

    Attributes
    ----------
    name : str
        What the user passed (a folder, a Hub id or a TransformerLens name).
    path : Path
        The folder holding the files (for a Hub model: ``.../snapshots/<commit>``).
    repo_id : str or None
        The Hub id (None for a local folder).
    commit : str or None
        The resolved snapshot (40 hex digits) of ``repo_id``.
    cache_dir : Path or None
        The Hub cache it was found in.
    """

    name: str
    path: Path
    repo_id: str | None = None
    commit: str | None = None
    cache_dir: Path | None = None

    @property
    def source(self) -> str:
        """First argument of ``from_pretrained``: the Hub id, or the folder."""
        return self.repo_id if self.repo_id is not None else str(self.path)

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``from_pretrained`` that pin this location (the snapshot)."""
        if self.repo_id is None:
            return {"local_files_only": True}
        return {"revision": self.commit, "cache_dir": str(self.cache_dir), "local_files_only": hub_offline()}

    def identity(self) -> dict[str, Any]:
        """What identifies the files (for cache keys): Hub id and commit, or for a local
        folder its path and a size/mtime digest of its files."""
        if self.repo_id is not None:
            return {"hub_id": self.repo_id, "commit": self.commit}
        return path_identity(self.path)

    def __str__(self) -> str:
        return str(self.path) if self.repo_id is None else f"{self.repo_id}@{self.commit}"


def transformer_lens_official_name(name: str) -> str | None:
    """The Hub id transformer-lens maps ``name`` to (``gpt2-small`` -> ``gpt2``), or None when
    transformer-lens is not installed or does not know the name."""
    try:
        from transformer_lens.supported_models import get_official_model_name
    except ImportError:
        return None
    try:
        return str(get_official_model_name(name))
    except ValueError:
        return None


def resolve_model(name, *, revision: str | None = None, what: str = "model", who: str = "extractor") -> ResolvedModel:
    """Where the model (or tokenizer) ``name`` is.

    In order: an existing local folder (saved with ``save_pretrained``); a Hub id already
    in the Hub cache (:func:`hub_cache_dir`); a TransformerLens name or alias mapped to its
    Hub id by ``transformer_lens.supported_models.get_official_model_name`` (``gpt2-small``
    -> ``gpt2``, ``opt-125m`` -> ``facebook/opt-125m``); else ``name`` itself as a Hub id.
    A Hub id is resolved to one snapshot (commit) of ``revision`` (default ``main``)
    through huggingface_hub: from the cache, or downloaded (its ``config.json`` now, the
    other files when the model is loaded) unless ``HF_HUB_OFFLINE=1``; the user's token
    is used as by transformers (gated models).

    Raises
    ------
    FeatureError
        Empty name, a file instead of a folder, or a Hub id that is neither in the cache
        nor reachable (the message names the id, the cache searched and the command that
        downloads it ahead of time, ``hf download ID``).
    """
    if name is None or str(name).strip() == "":
        raise FeatureError(f"{who}: {what} name is required: a local folder saved with save_pretrained, a "
                           "Hugging Face Hub id (e.g. 'gpt2', 'openai/whisper-tiny') or a TransformerLens name")
    name = str(name).strip()
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir():
            raise FeatureError(f"{who}: {what} path {p} is a file; expected a folder saved with save_pretrained "
                               "or a Hugging Face Hub id")
        return ResolvedModel(name=name, path=p.resolve())
    if revision is None and (p.is_absolute() or name.startswith((".", "~")) or os.sep + os.sep in name):
        raise FeatureError(f"{who}: {what} folder {name!r} does not exist")
    cache = hub_cache_dir()
    repo_id = name
    if _cached_config(name, revision, cache) is None:
        official = transformer_lens_official_name(name)
        if official is not None and official != name:
            logger.info("%s: TransformerLens name %r is the Hub model %r", who, name, official)
            repo_id = official
    return _resolve_hub(name, repo_id, revision, cache, what=what, who=who)


def _cached_config(repo_id: str, revision: str | None, cache: Path) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        hit = try_to_load_from_cache(repo_id, "config.json", cache_dir=str(cache), revision=revision or "main")
    except ValueError:  # not a valid repo id
        return None
    return hit if isinstance(hit, str) else None


def _resolve_hub(name: str, repo_id: str, revision: str | None, cache: Path, *, what: str, who: str) -> ResolvedModel:
    from huggingface_hub import hf_hub_download
    from huggingface_hub import errors as hf_errors

    alias = f" (TransformerLens name {name!r})" if repo_id != name else ""
    rev = f" at revision {revision!r}" if revision else ""
    offline = hub_offline()
    try:
        cfg = hf_hub_download(repo_id, "config.json", revision=revision, cache_dir=str(cache),
                              local_files_only=offline)
    except hf_errors.LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE=1" if offline else "no connection"
        raise FeatureError(
            f"{who}: {what} {repo_id!r}{alias}{rev} is not in the Hugging Face cache {cache} and the Hub cannot be "
            f"reached ({why}); download it ahead of time with `hf download {repo_id}"
            f"{' --revision ' + revision if revision else ''}` (with the same HF_HOME / HF_HUB_CACHE as the machines "
            "that extract features), or pass a local folder saved with save_pretrained") from None
    except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError, hf_errors.GatedRepoError,
            hf_errors.EntryNotFoundError, hf_errors.HfHubHTTPError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FeatureError(f"{who}: {what} {name!r} is neither a local folder nor a usable Hugging Face Hub model "
                           f"{repo_id!r}{alias}{rev} ({type(e).__name__}: {first}); a gated model needs "
                           "`hf auth login` (or HF_TOKEN)") from None
    snap = Path(cfg).parent
    return ResolvedModel(name=name, path=snap, repo_id=repo_id, commit=snap.name, cache_dir=cache)


# --------------------------------------------------------------------------------------
# device and dtype
# --------------------------------------------------------------------------------------
def pick_device(device: str = "auto", *, strict: bool = False, who: str = "extractor"):
    """The torch device of a ``device`` config value.

    ``"auto"``: CUDA if available, then MPS, then CPU. ``"cuda"``, ``"cuda:N"`` or
    ``"mps"`` where it is not available: a warning, then the CPU (as LITcoder does), or
    with ``strict=True`` a FeatureError.
    """
    import torch

    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise FeatureError(f"{who}: config key 'device' must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got "
                           f"{device!r} ({e})") from None
    problem = None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            problem = (f"CUDA is not available (torch {torch.__version__}, built with CUDA "
                       f"{torch.version.cuda})")
        elif dev.index is not None and dev.index >= torch.cuda.device_count():
            problem = f"only {torch.cuda.device_count()} CUDA device(s) are visible"
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            problem = "MPS is not available"
    elif dev.type != "cpu":
        raise FeatureError(f"{who}: config key 'device' must be 'auto', 'cpu', 'cuda[:N]' or 'mps', got {device!r}")
    if problem is None:
        return dev
    if strict:
        raise FeatureError(f"{who}: device {device!r} requested but {problem} (strict_device=True); use "
                           "device='cpu' or 'auto', or run on a GPU worker")
    msg = f"{who}: device {device!r} requested but {problem}; running on the CPU (strict_device=True makes this an error)"
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
    logger.warning(msg)
    return torch.device("cpu")


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


def model_key(kind: str, model: ResolvedModel, *extra) -> tuple:
    """The per-process cache key of what was loaded from ``model``: its kind (``"speech"``,
    ``"language_model"``, ``"tokenizer"``), its files' identity, and everything else that
    changes the loaded object (device, dtype, device_map, ...)."""
    return (kind, json.dumps(model.identity(), sort_keys=True), *(json.dumps(e, sort_keys=True, default=str)
                                                                    for e in extra))


def device_map_kwargs(device_map) -> dict[str, Any]:
    """``{"device_map": device_map}`` for ``from_pretrained`` when one is set (``"auto"``,
    ``"balanced"``, a dict of module -> device; needs accelerate), else nothing."""
    return {} if device_map is None else {"device_map": device_map}


def place(model, dev, device_map=None):
    """``model`` in eval mode on ``dev``; a model loaded with a ``device_map`` stays where
    accelerate put it."""
    model.eval()
    if device_map is None:
        model.to(dev)
    return model


def input_device(model, dev, device_map=None):
    """Where a model's inputs go: ``dev``, or with a ``device_map`` the device of its first
    parameters (the input embeddings)."""
    if device_map is None:
        return dev
    import torch

    return next(model.parameters()).device if any(True for _ in model.parameters()) else torch.device(dev)


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


__all__ = ["DTYPES", "MODELS", "ModelCache", "ResolvedModel", "clear_model_cache", "config_int", "device_map_kwargs",
           "from_pretrained", "from_pretrained_kwargs", "hub_cache_dir", "hub_offline", "input_device", "model_key",
           "pick_device", "place", "resolve_model", "torch_dtype", "transformer_lens_official_name"]
