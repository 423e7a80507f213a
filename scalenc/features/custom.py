"""User-defined features: a function of the words, or precomputed arrays.

:class:`CustomExtractor` (modality ``"custom"``) takes exactly one of:

``function``
    ``function(words: list[str], word_times: np.ndarray) -> (times, features)`` with
    ``times`` (n,) seconds and ``features`` (n, p) or (n_layers, n, p). It is called once
    per story with the story's words and their midpoints.
``arrays``
    a mapping story -> source, where a source is the path of a ``.npz`` file (keys
    ``times`` and ``features``), the path of a ``.zarr`` group (arrays ``times`` and
    ``features``) or an in-memory ``(times, features)`` tuple.

Every output is validated (``times`` 1-D, finite, non-decreasing; ``features`` 2-D or 3-D
with one row per time, finite); errors name the story, the function or file, and the
numbers. ``name`` (default ``"custom"``) becomes the FeatureSet's ``feature_space``.

Cache identity. A function is identified by its ``__module__`` and ``__qualname__`` and a
hash of its code (bytecode, constants, names, nested functions, defaults and closure
values of simple types), so editing the function's body invalidates cached features; a
change in a *global* it reads is not seen (change ``name`` or use ``rebuild=True``). An
array file is identified by :func:`~scalenc.features.base.path_identity` (size and mtime
of its files), an in-memory array by a hash of its bytes; only the requested story's
source enters that story's cache key.
"""
from __future__ import annotations

import functools
import hashlib
import os
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import xarray as xr

from .base import FeatureError, FeatureExtractor, make_feature_set, path_identity

_SIMPLE = (int, float, complex, str, bytes, bool, type(None))


def _simple_repr(obj, depth: int = 0) -> str:
    """repr of values whose repr is stable across processes; the type name otherwise."""
    if isinstance(obj, _SIMPLE):
        return repr(obj)
    if isinstance(obj, (tuple, list, frozenset, set)) and depth < 3:
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return type(obj).__name__ + "(" + ",".join(_simple_repr(o, depth + 1) for o in items) + ")"
    if isinstance(obj, dict) and depth < 3:
        return "dict(" + ",".join(f"{_simple_repr(k, depth + 1)}:{_simple_repr(v, depth + 1)}"
                                  for k, v in sorted(obj.items(), key=lambda kv: repr(kv[0]))) + ")"
    if isinstance(obj, np.ndarray):
        return f"ndarray{obj.shape}{obj.dtype}:" + hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest()
    if isinstance(obj, types.FunctionType):  # code only (no closure: no cycles)
        h = hashlib.sha256()
        _hash_code(obj.__code__, h)
        return f"fn:{obj.__qualname__}:{h.hexdigest()}"
    return f"<{type(obj).__module__}.{type(obj).__qualname__}>"


def _hash_code(code: types.CodeType, h) -> None:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    h.update(repr(code.co_varnames).encode())
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            _hash_code(c, h)
        else:
            h.update(_simple_repr(c).encode())


def function_identity(fn: Callable) -> dict[str, Any]:
    """Module, qualified name and code hash of a callable (see the module docstring)."""
    if isinstance(fn, functools.partial):
        inner = function_identity(fn.func)
        h = hashlib.sha256(inner["code"].encode())
        h.update(_simple_repr(fn.args).encode())
        h.update(_simple_repr(fn.keywords).encode())
        return {"module": inner["module"], "qualname": f"partial({inner['qualname']})", "code": h.hexdigest()}
    target = fn
    if not hasattr(fn, "__code__") and hasattr(type(fn), "__call__") and hasattr(type(fn).__call__, "__code__"):
        target = type(fn).__call__  # a callable object: its class's __call__
    module = getattr(fn, "__module__", None) or getattr(type(fn), "__module__", "")
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    h = hashlib.sha256()
    code = getattr(target, "__code__", None)
    if code is not None:
        _hash_code(code, h)
        h.update(_simple_repr(getattr(target, "__defaults__", None)).encode())
        h.update(_simple_repr(getattr(target, "__kwdefaults__", None)).encode())
        for cell in getattr(target, "__closure__", None) or ():
            try:
                h.update(_simple_repr(cell.cell_contents).encode())
            except ValueError:  # empty cell
                h.update(b"<empty>")
    else:  # builtin: name only
        h.update(f"{module}.{qualname}".encode())
    return {"module": module, "qualname": qualname, "code": h.hexdigest()}


def _array_digest(times, features) -> str:
    h = hashlib.sha256()
    for a in (times, features):
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def validate_output(times, features, *, story: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Check a custom (times, features) pair; return them as float64 / float32 arrays.

    Raises
    ------
    FeatureError
        Naming ``story``, ``source`` (function or file) and the offending numbers.
    """
    where = f"custom features of story {story!r} from {source}"
    t = np.asarray(times)
    if t.ndim != 1:
        raise FeatureError(f"{where}: times must be 1-D (n,), got shape {t.shape}")
    if not np.issubdtype(t.dtype, np.number):
        raise FeatureError(f"{where}: times must be numbers, got dtype {t.dtype}")
    t = t.astype(np.float64)
    bad = ~np.isfinite(t)
    if bad.any():
        raise FeatureError(f"{where}: {int(bad.sum())} of {t.size} times are NaN/inf (first at row "
                           f"{int(np.argmax(bad))})")
    back = np.diff(t) < 0
    if back.any():
        i = int(np.argmax(back)) + 1
        raise FeatureError(f"{where}: times go backwards at row {i} ({float(t[i])!r} after {float(t[i - 1])!r}); "
                           "times must be non-decreasing")
    F = np.asarray(features)
    if F.ndim not in (2, 3):
        raise FeatureError(f"{where}: features must be 2-D (n, p) or 3-D (layers, n, p), got shape {F.shape}")
    if not np.issubdtype(F.dtype, np.number):
        raise FeatureError(f"{where}: features must be numbers, got dtype {F.dtype}")
    n = F.shape[-2]
    if n != t.size:
        raise FeatureError(f"{where}: features have {n} rows (shape {F.shape}) but there are {t.size} times")
    F = F.astype(np.float32)
    bad = ~np.isfinite(F)
    if bad.any():
        raise FeatureError(f"{where}: features contain {int(bad.sum())} NaN/inf values (first at index "
                           f"{tuple(int(x) for x in np.argwhere(bad)[0])}, shape {F.shape})")
    return t, F


def _read_source(source, story: str) -> tuple[Any, Any, str]:
    """(times, features, description) of one ``arrays`` entry."""
    if isinstance(source, tuple):
        if len(source) != 2:
            raise FeatureError(f"custom arrays of story {story!r}: expected a (times, features) tuple, "
                               f"got a tuple of {len(source)}")
        return source[0], source[1], "an in-memory (times, features) tuple"
    if not isinstance(source, (str, os.PathLike)):
        raise FeatureError(f"custom arrays of story {story!r}: expected a .npz/.zarr path or a (times, features) "
                           f"tuple, got {type(source).__name__}")
    p = Path(source).expanduser()
    if not p.exists():
        raise FeatureError(f"custom arrays of story {story!r}: file {p} not found")
    name = p.name.lower()
    if name.endswith(".npz"):
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in ("times", "features") if k not in z.files]
            if missing:
                raise FeatureError(f"custom arrays of story {story!r}: {p} lacks {missing}; it has {sorted(z.files)}")
            return z["times"], z["features"], f"file {p}"
    if name.endswith(".zarr") or p.is_dir():
        import zarr

        try:
            g = zarr.open_group(str(p), mode="r")
        except Exception as e:  # noqa: BLE001
            raise FeatureError(f"custom arrays of story {story!r}: cannot open {p} as a zarr group ({e})") from e
        have = sorted(g.array_keys())
        missing = [k for k in ("times", "features") if k not in have]
        if missing:
            raise FeatureError(f"custom arrays of story {story!r}: {p} lacks arrays {missing}; it has {have}")
        return g["times"][...], g["features"][...], f"file {p}"
    raise FeatureError(f"custom arrays of story {story!r}: {p} is neither a .npz file nor a .zarr group")


class CustomExtractor(FeatureExtractor):
    """Features from a user function or precomputed arrays; see the module docstring.

    Parameters
    ----------
    model_name : str, optional
        A label (not used).
    config : dict
        ``function`` (callable) or ``arrays`` (mapping story -> source), exactly one;
        ``name`` (str, default "custom"): the feature space name.
    cache_dir : path-like, optional

    Output
    ------
    FeatureSet ``features`` (n_layers, n, p) float32 with layers 0..n_layers-1 (one layer
    for 2-D output), ``time`` as returned.
    """

    modality: ClassVar[str] = "custom"
    defaults: ClassVar[dict[str, Any]] = {"function": None, "arrays": None, "name": "custom"}

    def __init__(self, model_name: str | None = None, config=None, cache_dir=None):
        super().__init__(model_name, config, cache_dir)
        fn, arrays = self.config["function"], self.config["arrays"]
        if (fn is None) == (arrays is None):
            raise FeatureError("custom extractor: set exactly one of config 'function' (a callable "
                               "f(words, word_times) -> (times, features)) and 'arrays' (story -> .npz/.zarr path "
                               f"or (times, features)); got function={fn!r}, arrays="
                               f"{'None' if arrays is None else type(arrays).__name__}")
        if fn is not None and not callable(fn):
            raise FeatureError(f"custom extractor: config key 'function' must be callable, got {type(fn).__name__}")
        if arrays is not None and not isinstance(arrays, Mapping):
            raise FeatureError(f"custom extractor: config key 'arrays' must be a mapping story -> source, "
                               f"got {type(arrays).__name__}")
        self._function_id = None if fn is None else function_identity(fn)

    def identity(self) -> dict[str, Any]:
        ident = {"extractor": type(self).__name__, "modality": self.modality, "name": self.config["name"]}
        if self._function_id is not None:
            ident["function"] = self._function_id
        else:
            ident["arrays"] = True  # each story's source enters its stimulus digest (see stimulus())
        return ident

    def _source(self, story: str):
        arrays = self.config["arrays"]
        if story not in arrays:
            raise FeatureError(f"custom extractor: story {story!r} is not in config 'arrays'; available stories: "
                               f"{sorted(map(str, arrays))}")
        return arrays[story]

    def stimulus(self, assembly, story: str) -> str:
        base = super().stimulus(assembly, story)
        if self.config["arrays"] is None:
            return base
        src = self._source(story)
        if isinstance(src, tuple):
            if len(src) != 2:
                _read_source(src, story)  # raises
            sid = "array:" + _array_digest(*src)
        elif isinstance(src, (str, os.PathLike)):
            if not Path(src).expanduser().exists():
                raise FeatureError(f"custom arrays of story {story!r}: file {Path(src).expanduser()} not found")
            pid = path_identity(src)
            sid = f"file:{pid['path']}:{pid['digest']}"
        else:
            _read_source(src, story)  # raises with the type
            sid = ""
        return base + "|" + hashlib.sha256(sid.encode()).hexdigest()

    def compute(self, assembly, story: str) -> xr.Dataset:
        fn = self.config["function"]
        if fn is not None:
            words = [str(w) for w in assembly.words(story)["word"].values]
            wt = np.asarray(assembly.word_times(story), dtype=np.float64)
            source = f"function {self._function_id['module']}.{self._function_id['qualname']}"
            out = fn(words, wt.copy())
            if not (isinstance(out, tuple) and len(out) == 2):
                raise FeatureError(f"custom features of story {story!r} from {source}: expected a (times, features) "
                                   f"tuple, got {type(out).__name__}")
            times, feats = out
        else:
            times, feats, source = _read_source(self._source(story), story)
        t, F = validate_output(times, feats, story=story, source=source)
        if F.ndim == 2:
            F = F[None]
        return make_feature_set(F, t, layers=list(range(F.shape[0])), story=story, extractor=type(self).__name__,
                                model=str(self.model_name or ""), feature_space=self.config["name"],
                                attrs={"source": source})
