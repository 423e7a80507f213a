"""Import LITcoder's pickled assemblies without LITcoder and without running pickled code.

LITcoder (GT-LIT-Lab) saves an assembly with ``pickle.dump`` of a
``encoding.assembly.assemblies.SimpleNeuroidAssembly`` whose ``story_data`` maps each
story to a ``StoryData`` dataclass (``brain_data``, ``tr_times``, ``data_times``, ``words``,
``split_indices``, ``word_rates``, ``mask_indices``, ``audio_path``, ...).

Unpickling is restricted (:class:`RestrictedUnpickler`): a pickle can only name

- LITcoder's ``SimpleNeuroidAssembly`` and ``StoryData`` (under ``encoding.``, ``litcoder.``
  or ``litcoder_core.``), which become inert stand-ins (:class:`LegacyAssembly`,
  :class:`LegacyStoryData`) that merely hold the pickled attribute values;
- the numpy functions and classes that rebuild arrays, scalars and dtypes (numpy 1.x and
  2.x, protocols 2-5), and a few builtin containers.

Any other global (``os.system``, ``builtins.eval``, ``pandas.*``, ``torch.*``, ...) is
refused with :class:`PickleImportError` when the pickle names it, before it can be called.

:func:`read_pickle` returns a plain, validated description of the pickle;
:func:`import_pickle` writes it as a scalenc zarr assembly through
:class:`~scalenc.assembly.core.AssemblyWriter` (atomically).
"""
from __future__ import annotations

import copyreg
import logging
import os
import pickle
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from .writer import DEFAULT_VOXEL_CHUNK, AssemblyError, AssemblyWriter

logger = logging.getLogger(__name__)

__all__ = ["PickleImportError", "RestrictedUnpickler", "LegacyAssembly", "LegacyStoryData",
           "LEBEL_GRID_OFFSET", "restricted_load", "read_pickle", "import_pickle"]

#: Grid index of response row 0 in LeBel-shaped stories (features on N - 5 grid points,
#: responses are grid rows ``[10:-5]``).
LEBEL_GRID_OFFSET = 10
_LEBEL_EXTRA_GRID = 15

STORY_FIELDS = ("name", "brain_data", "stimuli", "split_indices", "tr_times", "data_times",
                "word_rates", "words", "mask_indices", "audio_path")


class PickleImportError(AssemblyError):
    """A LITcoder pickle was refused or is malformed; the message names the file and the problem."""


class _Refused(Exception):
    """Raised inside the unpickler where the file name is not at hand; re-raised as PickleImportError."""


# --------------------------------------------------------------------------------------
# inert stand-ins for LITcoder's classes
class _StandIn:
    """Holds the pickled attribute values of a LITcoder object; runs none of its code."""

    litcoder_class = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):  # REDUCE/NEWOBJ may pass arguments: ignore them
        pass

    def __setstate__(self, state) -> None:
        slots = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
        for part in (state, slots):
            if part is None:
                continue
            if not isinstance(part, dict):
                raise _Refused(f"unexpected pickled state of type {type(part).__name__} for {self.litcoder_class}")
            for k, v in part.items():
                if isinstance(k, str):
                    self.__dict__[k] = v

    def __repr__(self) -> str:
        return f"<pickled {self.litcoder_class}: {sorted(self.__dict__)}>"


class LegacyAssembly(_StandIn):
    """Stand-in for LITcoder's ``SimpleNeuroidAssembly`` (attributes only)."""

    litcoder_class = "SimpleNeuroidAssembly"


class LegacyStoryData(_StandIn):
    """Stand-in for LITcoder's ``StoryData`` dataclass (attributes only)."""

    litcoder_class = "StoryData"


_LITCODER_ROOTS = ("encoding.", "litcoder.", "litcoder_core.")
_LITCODER_CLASSES = {
    ("assemblies", "SimpleNeuroidAssembly"): LegacyAssembly,
    ("story_data", "StoryData"): LegacyStoryData,
    ("base_processor", "StoryData"): LegacyStoryData,
    ("assembly_generator", "StoryData"): LegacyStoryData,
}


# --------------------------------------------------------------------------------------
# the allowed non-LITcoder globals
def _latin1_encode(obj, encoding: str = "utf-8", errors: str = "strict"):
    """Stand-in for ``_codecs.encode`` as protocol 2 uses it for ``bytes`` (latin-1 only)."""
    if not isinstance(obj, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise _Refused(f"_codecs.encode is only allowed for latin-1 text (got {type(obj).__name__}, {encoding!r})")
    return obj.encode("latin-1", errors="strict")


def _reconstructor(cls, base, state):
    """Stand-in for ``copyreg._reconstructor`` limited to the stand-in classes on ``object``."""
    if base is not object or not (isinstance(cls, type) and issubclass(cls, _StandIn)):
        raise _Refused(f"copyreg._reconstructor is only allowed for LITcoder classes on object, "
                       f"got ({getattr(cls, '__name__', cls)!r}, {getattr(base, '__name__', base)!r})")
    return cls.__new__(cls)


def _path_from_parts(flavour):
    def make(*parts):
        if not all(isinstance(p, str) for p in parts):
            raise _Refused("a pickled path must consist of strings")
        return str(flavour(*parts))
    return make


_ALLOWED: dict[tuple[str, str], Any] | None = None


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The (module, name) -> object table; built once. Checked empirically: numpy 2.x pickles
    arrays/scalars/dtypes of every protocol with ``numpy.ndarray``, ``numpy.dtype``,
    ``numpy._core.multiarray._reconstruct``/``scalar`` and (protocol 5) ``numpy._core.numeric._frombuffer``;
    numpy 1.x writes the same under ``numpy.core``. Protocol 2 adds ``_codecs.encode`` and
    ``__builtin__`` names for ``bytes``, sets etc."""
    global _ALLOWED
    if _ALLOWED is not None:
        return _ALLOWED
    try:  # numpy >= 2
        from numpy._core import multiarray as ma
        from numpy._core import numeric as nu
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray as ma
        from numpy.core import numeric as nu
    t: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for pkg in ("numpy.core", "numpy._core"):
        for mod in (f"{pkg}.multiarray", f"{pkg}._multiarray_umath"):
            t[(mod, "_reconstruct")] = ma._reconstruct
            t[(mod, "scalar")] = ma.scalar
        t[(f"{pkg}.numeric", "_frombuffer")] = nu._frombuffer
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25: dtype classes, should a pickle name them
    if dtypes is not None:
        for name in dir(dtypes):
            cls = getattr(dtypes, name)
            if name.endswith("DType") and isinstance(cls, type) and issubclass(cls, np.dtype):
                t[("numpy.dtypes", name)] = cls
    for mod in ("builtins", "__builtin__"):
        for name, obj in (("object", object), ("set", set), ("frozenset", frozenset), ("complex", complex),
                          ("slice", slice), ("bytearray", bytearray), ("bytes", bytes), ("range", range)):
            t[(mod, name)] = obj
    t[("__builtin__", "xrange")] = range
    t[("collections", "OrderedDict")] = OrderedDict
    for mod in ("copyreg", "copy_reg"):
        t[(mod, "_reconstructor")] = _reconstructor
    t[("_codecs", "encode")] = _latin1_encode
    for mod in ("pathlib", "pathlib._local"):  # audio paths pickled as Path objects: kept as str
        for name, flavour in (("PosixPath", PurePosixPath), ("PurePosixPath", PurePosixPath),
                              ("WindowsPath", PureWindowsPath), ("PureWindowsPath", PureWindowsPath)):
            t[(mod, name)] = _path_from_parts(flavour)
    _ALLOWED = t
    return t


def _resolve(module: str, name: str):
    if module.startswith(_LITCODER_ROOTS):
        cls = _LITCODER_CLASSES.get((module.rsplit(".", 1)[-1], name))
        if cls is not None:
            return cls
    return _allowed_globals().get((module, name))


class _RestrictMixin:
    source: str = "<pickle>"

    def find_class(self, module: str, name: str):
        obj = _resolve(module, name)
        if obj is None:
            raise PickleImportError(
                f"{self.source}: refused global {module}.{name}: LITcoder pickles are read without running "
                f"pickled code; only numpy arrays/scalars/dtypes, builtin containers and LITcoder's "
                f"SimpleNeuroidAssembly/StoryData are allowed")
        return obj

    def persistent_load(self, pid):
        raise PickleImportError(f"{self.source}: refused persistent id {pid!r} (not a plain pickle)")


class RestrictedUnpickler(_RestrictMixin, pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only LITcoder's assembly classes (to inert stand-ins)
    and the numpy/builtin globals needed for arrays; any other global raises
    :class:`PickleImportError` naming ``source`` and ``module.name``.

    Parameters
    ----------
    file : binary file object
    source : str
        Name used in error messages (the file path).
    """

    def __init__(self, file, *, source: str = "<pickle>"):
        super().__init__(file, fix_imports=True, encoding="latin1")
        self.source = str(source)


class _PyRestrictedUnpickler(_RestrictMixin, pickle._Unpickler):  # type: ignore[name-defined]
    """Pure-Python variant, used only if the process registered copyreg extension codes (the C
    unpickler would resolve those from its cache without calling ``find_class``)."""

    def __init__(self, file, *, source: str = "<pickle>"):
        super().__init__(file, fix_imports=True, encoding="latin1")
        self.source = str(source)

    def get_extension(self, code):
        raise PickleImportError(f"{self.source}: refused copyreg extension code {code}")


def restricted_load(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`.

    Raises
    ------
    PickleImportError
        A refused global, or a truncated/corrupt pickle (the message names the file).
    """
    path = Path(path)
    with open(path, "rb") as f:
        cls = _PyRestrictedUnpickler if (copyreg._extension_cache or copyreg._inverted_registry) else RestrictedUnpickler
        up = cls(f, source=str(path))
        try:
            return up.load()
        except PickleImportError:
            raise
        except _Refused as e:
            raise PickleImportError(f"{path}: {e}") from None
        except MemoryError as e:
            raise PickleImportError(f"{path}: out of memory while unpickling ({e})") from None
        except Exception as e:  # noqa: BLE001 - EOFError, UnpicklingError, ValueError, ... from bad bytes
            raise PickleImportError(f"{path}: truncated or corrupt pickle ({type(e).__name__}: {e})") from e


# --------------------------------------------------------------------------------------
# validation into a plain description
def _state(obj) -> dict | None:
    if isinstance(obj, _StandIn):
        return obj.__dict__
    if isinstance(obj, dict):
        return obj
    return None


def _describe(obj) -> str:
    if isinstance(obj, _StandIn):
        return f"a LITcoder {obj.litcoder_class}"
    if isinstance(obj, dict):
        keys = [repr(k) for k in list(obj)[:8]]
        return f"a dict with keys [{', '.join(keys)}{', ...' if len(obj) > 8 else ''}]"
    if isinstance(obj, np.ndarray):
        return f"a numpy array of shape {obj.shape}"
    return f"a {type(obj).__name__}"


def _vector(where: str, field: str, value, *, kinds: str = "fiu", allow_none: bool = False) -> np.ndarray | None:
    if value is None:
        if allow_none:
            return None
        raise PickleImportError(f"{where}: {field} is missing")
    try:
        a = np.asarray(value)
    except Exception as e:  # noqa: BLE001
        raise PickleImportError(f"{where}: {field} is not array-like ({type(value).__name__}: {e})") from None
    if a.dtype.kind not in kinds:
        raise PickleImportError(f"{where}: {field} must be numeric, got dtype {a.dtype}")
    if a.ndim != 1:
        raise PickleImportError(f"{where}: {field} must be 1-D, got shape {a.shape}")
    return a


def _strings(where: str, field: str, value) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise PickleImportError(f"{where}: {field} must be 1-D, got shape {value.shape}")
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise PickleImportError(f"{where}: {field} must be a list of str, got {type(value).__name__}")
    out = []
    for i, w in enumerate(value):
        if isinstance(w, bytes):
            w = w.decode("utf-8", errors="replace")
        elif not isinstance(w, (str, int, float, np.generic)):
            raise PickleImportError(f"{where}: {field}[{i}] is a {type(w).__name__}, expected str")
        out.append(str(w))
    return out


def _read_story(where: str, key: str, sd) -> dict[str, Any]:
    f = _state(sd)
    if f is None:
        raise PickleImportError(f"{where}: expected a LITcoder StoryData, found {_describe(sd)}")
    name = f.get("name", key)
    if name != key:
        logger.warning("%s: StoryData.name is %r; using the story_data key %r", where, name, key)
    bd = f.get("brain_data")
    if not isinstance(bd, np.ndarray):
        raise PickleImportError(f"{where}: brain_data must be a numpy array, found {_describe(bd)}")
    if bd.ndim != 2:
        raise PickleImportError(f"{where}: brain_data must be 2-D (tr, voxel), got shape {bd.shape}")
    if bd.dtype.kind not in "fiub":
        raise PickleImportError(f"{where}: brain_data must be numeric, got dtype {bd.dtype}")
    n_tr, n_vox = bd.shape
    tr_times = _vector(where, "tr_times", f.get("tr_times")).astype(np.float64)
    data_times = _vector(where, "data_times", f.get("data_times")).astype(np.float64)
    n_words = data_times.size
    words = _strings(where, "words", f.get("words"))
    stimuli = _strings(where, "stimuli", f.get("stimuli"))
    if words is not None and len(words) != n_words:
        raise PickleImportError(f"{where}: {len(words)} words but {n_words} data_times (one time per word expected)")
    split = _vector(where, "split_indices", f.get("split_indices"), allow_none=True)
    if split is not None:
        if split.size and (split.dtype.kind == "f" and not np.all(split == np.round(split))):
            raise PickleImportError(f"{where}: split_indices must be integers")
        split = split.astype(np.int64)
        if split.size and (split.min() < 0 or split.max() > n_words or np.any(np.diff(split) < 0)):
            raise PickleImportError(f"{where}: split_indices must be non-decreasing word indices in [0, {n_words}], "
                                    f"got values from {int(split.min())} to {int(split.max())}")
    wr = f.get("word_rates")
    if wr is not None:
        wr = np.asarray(wr)
        if wr.ndim == 2 and wr.shape[1] == 1:  # LITcoder stores (n_trs, 1)
            wr = wr[:, 0]
        if wr.dtype.kind not in "fiub" or wr.shape != tr_times.shape:
            raise PickleImportError(f"{where}: word_rates has shape {wr.shape} (dtype {wr.dtype}), expected one "
                                    f"number per TR time ({tr_times.size},)")
        wr = wr.astype(np.float64)
    mask = _vector(where, "mask_indices", f.get("mask_indices"), kinds="iu", allow_none=True)
    if mask is not None and mask.size != n_vox:
        raise PickleImportError(f"{where}: {mask.size} mask_indices but brain_data has {n_vox} voxels")
    audio = f.get("audio_path")
    if audio is not None and not isinstance(audio, str):
        raise PickleImportError(f"{where}: audio_path must be a str, found {_describe(audio)}")
    return dict(name=key, brain_data=bd, stimuli=stimuli, split_indices=split, tr_times=tr_times,
                data_times=data_times, word_rates=wr, words=words,
                mask_indices=None if mask is None else mask.astype(np.int64),
                audio_path=None if audio is None else str(audio))


def read_pickle(path: str | os.PathLike) -> dict[str, Any]:
    """Read a LITcoder assembly pickle into a plain, validated description (no LITcoder needed,
    no pickled code run).

    Parameters
    ----------
    path : path-like
        A ``.pkl`` written by LITcoder (``pickle.dump`` of a ``SimpleNeuroidAssembly``).

    Returns
    -------
    desc : dict
        ``{"path", "stories": [str], "validation_method": str | None, "is_volume": bool | None,
        "story_data": {story: {field: value}}}`` with fields ``name``, ``brain_data`` (n_tr, n_voxels)
        array as pickled, ``tr_times`` (n_grid,) float64, ``data_times`` (n_words,) float64,
        ``words`` list[str] | None, ``stimuli`` list[str] | None, ``split_indices`` (n_split,) int64 | None,
        ``word_rates`` (n_grid,) float64 | None, ``mask_indices`` (n_voxels,) int64 | None,
        ``audio_path`` str | None. ``data``, ``coords`` and ``temporal_baseline`` are dropped.

    Raises
    ------
    PickleImportError
        Refused globals, a truncated/corrupt file, or content that is not a consistent LITcoder
        assembly (the message names the file, the story and the numbers).
    """
    path = Path(path)
    obj = restricted_load(path)
    state = _state(obj)
    if state is None or "stories" not in state or "story_data" not in state:
        raise PickleImportError(f"{path}: not a LITcoder assembly: the pickle holds {_describe(obj)}, "
                                f"expected an object with 'stories' and 'story_data'")
    stories = state["stories"]
    if isinstance(stories, np.ndarray):
        stories = stories.tolist()
    if not isinstance(stories, (list, tuple)) or not all(isinstance(s, str) for s in stories):
        raise PickleImportError(f"{path}: 'stories' must be a list of story names, found {_describe(stories)}")
    stories = [str(s) for s in stories]
    if not stories:
        raise PickleImportError(f"{path}: the assembly has no stories")
    dup = sorted({s for s in stories if stories.count(s) > 1})
    if dup:
        raise PickleImportError(f"{path}: duplicate story names {dup}")
    story_data = state["story_data"]
    if not isinstance(story_data, dict):
        raise PickleImportError(f"{path}: 'story_data' must be a dict story -> StoryData, found {_describe(story_data)}")
    missing = [s for s in stories if s not in story_data]
    if missing:
        raise PickleImportError(f"{path}: stories {missing} are listed but have no story_data")
    extra = [s for s in story_data if s not in stories]
    if extra:
        logger.warning("%s: story_data entries %s are not in 'stories'; ignored", path, extra)

    out: dict[str, dict[str, Any]] = {}
    first: tuple[str, int] | None = None
    for s in stories:
        d = _read_story(f"{path}: story {s!r}", s, story_data[s])
        n_vox = d["brain_data"].shape[1]
        if first is None:
            first = (s, n_vox)
        elif n_vox != first[1]:
            raise PickleImportError(f"{path}: story {s!r} has {n_vox} voxels but story {first[0]!r} has {first[1]}")
        out[s] = d
    vm = state.get("validation_method")
    iv = state.get("is_volume")
    return {"path": str(path), "stories": stories,
            "validation_method": None if vm is None else str(vm),
            "is_volume": None if iv is None else bool(iv),
            "story_data": out}


# --------------------------------------------------------------------------------------
def _infer_tr_seconds(path: Path, desc: dict) -> float:
    ref: tuple[str, float] | None = None
    for s in desc["stories"]:
        t = desc["story_data"][s]["tr_times"]
        if t.size < 2:
            continue
        step = float(np.median(np.diff(t)))
        if ref is None:
            ref = (s, step)
        elif not np.isclose(step, ref[1], rtol=1e-6, atol=1e-6):
            raise PickleImportError(f"{path}: story {s!r} has a TR spacing of {step!r} s but story {ref[0]!r} "
                                    f"has {ref[1]!r} s; pass tr_seconds= to choose one")
    if ref is None or ref[1] <= 0:
        raise PickleImportError(f"{path}: cannot infer the TR from tr_times; pass tr_seconds=")
    return ref[1]


def _grid_offset(path: Path, story: str, n_tr: int, n_grid: int, given) -> tuple[int, bool]:
    """Return (offset, inferred)."""
    if isinstance(given, Mapping):
        given = given.get(story)
    if given is not None:
        off = int(given)
        if off < 0 or off + n_tr > n_grid:
            raise PickleImportError(f"{path}: story {story!r}: grid_offset {off} + {n_tr} response rows exceeds "
                                    f"its {n_grid} TR times")
        return off, False
    if n_grid == n_tr:
        return 0, True
    if n_grid - n_tr == _LEBEL_EXTRA_GRID:
        return LEBEL_GRID_OFFSET, True
    raise PickleImportError(
        f"{path}: story {story!r} has {n_tr} response rows but {n_grid} TR times; cannot tell which TR times "
        f"the responses cover (known: equal counts -> 0, {_LEBEL_EXTRA_GRID} more TR times -> "
        f"{LEBEL_GRID_OFFSET}, LeBel's [10:-5]); pass grid_offset=")


def import_pickle(path: str | os.PathLike, out: str | os.PathLike, *, test_stories: Iterable[str] | None = None,
                  tr_seconds: float | None = None, grid_offset: int | Mapping[str, int] | None = None,
                  dataset: str = "litcoder", subject: str | None = None, overwrite: bool = False,
                  voxel_chunk: int = DEFAULT_VOXEL_CHUNK) -> Path:
    """Convert a LITcoder assembly pickle into a scalenc zarr assembly.

    The pickle is read by :func:`read_pickle` (restricted unpickler: no LITcoder needed, no
    pickled code run) and written story by story through
    :class:`~scalenc.assembly.core.AssemblyWriter`; on any error nothing is left at ``out``.

    Mapping per story: ``bold`` = ``brain_data`` (float32); ``grid_time`` = ``tr_times``;
    ``tr_time`` = ``tr_times[grid_offset : grid_offset + n_tr]``; ``word`` = ``words`` (or
    ``stimuli`` when ``words`` is None and has one entry per word); ``word_start`` =
    ``word_end`` = ``data_times`` (LITcoder keeps one time per word); ``word_rate`` (tr_grid)
    and ``split_indices`` (split) as extra arrays; ``audio_path``; ``mask_indices`` (identical
    across stories) as the assembly's ``mask_indices``.

    Parameters
    ----------
    path : path-like
        The LITcoder ``.pkl``.
    out : path-like
        Output ``.zarr`` directory.
    test_stories : iterable of str, optional
        Held-out stories. Default: the last story when the pickle's ``validation_method`` is
        ``"outer"`` (LITcoder's convention for LeBel), else none.
    tr_seconds : float, optional
        Repetition time. Default: the median spacing of ``tr_times`` (must agree across stories).
    grid_offset : int or dict story -> int, optional
        Index in ``tr_times`` of response row 0. Default per story: 0 when there are as many
        TR times as response rows, 10 when there are 15 more (LeBel: responses are rows
        ``[10:-5]`` of the feature grid); anything else must be given.
    dataset : str
    subject : str, optional
        Default: the pickle's file stem.
    overwrite : bool
        Replace an existing ``out``.
    voxel_chunk : int
        Voxels per zarr chunk.

    Returns
    -------
    Path
        ``out``.
    """
    path, out = Path(path), Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True to replace it")
    desc = read_pickle(path)
    stories: list[str] = desc["stories"]
    sd: dict[str, dict[str, Any]] = desc["story_data"]

    if tr_seconds is None:
        tr_seconds = _infer_tr_seconds(path, desc)
        logger.info("%s: inferred tr_seconds=%g from the median tr_times spacing", path, tr_seconds)
    tr_seconds = float(tr_seconds)

    offsets: dict[str, int] = {}
    for s in stories:
        n_tr, n_grid = sd[s]["brain_data"].shape[0], sd[s]["tr_times"].size
        offsets[s], inferred = _grid_offset(path, s, n_tr, n_grid, grid_offset)
        if inferred:
            logger.info("%s: story %r: %d response rows on %d TR times -> inferred grid_offset=%d",
                        path, s, n_tr, n_grid, offsets[s])

    if test_stories is None:
        test = [stories[-1]] if desc["validation_method"] == "outer" else []
        logger.info("%s: validation_method=%r -> test stories %s", path, desc["validation_method"], test)
    else:
        test = [str(t) for t in ([test_stories] if isinstance(test_stories, str) else test_stories)]
        unknown = [t for t in test if t not in stories]
        if unknown:
            raise PickleImportError(f"{path}: test stories {unknown} are not in the pickle; stories: {stories}")

    ref_story = stories[0]
    mask = sd[ref_story]["mask_indices"]
    for s in stories[1:]:
        m = sd[s]["mask_indices"]
        same = (m is None and mask is None) or (m is not None and mask is not None and np.array_equal(m, mask))
        if not same:
            raise PickleImportError(f"{path}: story {s!r} has different mask_indices from story {ref_story!r} "
                                    f"({'none' if m is None else m.size} vs {'none' if mask is None else mask.size} "
                                    f"indices); a scalenc assembly has one voxel set")

    if subject is None:
        subject = path.stem
        logger.info("%s: subject=%r (the file stem)", path, subject)
    n_voxels = sd[ref_story]["brain_data"].shape[1]
    timing = {"source": "litcoder pickle", "grid_offset": offsets, "word_time": "data_times (one time per word)"}
    attrs = {"source": str(path), "litcoder_validation_method": desc["validation_method"],
             "litcoder_is_volume": desc["is_volume"]}
    try:
        with AssemblyWriter(out, dataset=dataset, subject=subject, tr_seconds=tr_seconds, n_voxels=n_voxels,
                            test_stories=test, voxel_chunk=voxel_chunk, mask_indices=mask, timing=timing,
                            attrs=attrs, overwrite=overwrite) as w:
            for s in stories:
                d = sd.pop(s)  # release each story's arrays once written
                words = d["words"]
                if words is None:
                    stim = d["stimuli"]
                    if stim is None or len(stim) != d["data_times"].size:
                        raise PickleImportError(
                            f"{path}: story {s!r} has no words and {'no' if stim is None else len(stim)} stimuli "
                            f"for {d['data_times'].size} data_times")
                    logger.warning("%s: story %r has no words; using its %d stimuli (context strings) as words",
                                   path, s, len(stim))
                    words = stim
                n_tr, off, grid = d["brain_data"].shape[0], offsets[s], d["tr_times"]
                extra = {}
                if d["word_rates"] is not None:
                    extra["word_rate"] = (("tr_grid",), d["word_rates"])
                if d["split_indices"] is not None:
                    extra["split_indices"] = (("split",), d["split_indices"])
                w.add_story(s, d["brain_data"], tr_time=grid[off:off + n_tr], grid_time=grid, grid_offset=off,
                            words=words, word_start=d["data_times"], word_end=d["data_times"],
                            audio_path=d["audio_path"], extra=extra, source=str(path))
                del d
    except PickleImportError:
        raise
    except AssemblyError as e:
        msg = str(e)
        raise PickleImportError(msg if str(path) in msg else f"{path}: {msg}") from e
    logger.info("%s: imported %d stories (%d test) x %d voxels into %s", path, len(stories), len(test),
                n_voxels, out)
    return out
