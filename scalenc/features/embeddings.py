"""Static word embeddings (word2vec, GloVe, fastText, gensim KeyedVectors).

:class:`StaticEmbeddingExtractor` looks every word of a story up in a local vectors
file and emits one row per word at the word's midpoint (one layer, label 0).

Vector files (``format``)
-------------------------
``auto`` (default) decides from the file:

- ``.kv`` / ``.model``: a saved gensim ``KeyedVectors`` (a saved full model is
  accepted too: its ``.wv`` is used);
- ``.bin`` / ``.bin.gz``: fastText's binary model when the file starts with fastText's
  magic number (loaded with ``gensim.models.fasttext.load_facebook_vectors``), else
  word2vec binary, and if that fails, fastText once more (headerless old formats);
- anything else is text: word2vec text when the first line is the ``V d`` header,
  GloVe (no header) otherwise.

``word2vec`` (``binary``: None = by suffix ``.bin``), ``glove`` (text without header),
``fasttext`` (Facebook ``.bin``) and ``kv`` force a reader.

Out-of-vocabulary words (``oov_handling``)
------------------------------------------
A word is looked up after ``lowercase`` (default True) lower-cases it. fastText vectors
build vectors for unseen words from character n-grams, so there a word is OOV only when
it has no n-gram at all (the count of words built from n-grams is ``n_subword``).

``copy_prev`` (default)
    the vector of the previous word (the previous *row*, so a run of OOV words repeats
    the last known vector); zero for OOV words at the start of the story.
``zero``
    a zero vector.
``mean``
    the mean vector of the vocabulary.
``skip``
    the word's row is dropped (the FeatureSet has fewer rows than the story has words).
``error``
    :class:`~scalenc.features.base.FeatureError` naming the story and the first OOV words.

Every story's OOV rate is logged at INFO and stored in the FeatureSet attrs:
``n_words``, ``n_oov``, ``oov_rate`` (= n_oov / n_words), ``oov_examples`` (up to 10
distinct OOV words, in story order), ``n_subword``.

``l2_normalize`` scales every non-zero row to unit length (after OOV handling).

LITcoder compatibility: its tutorials pass ``model_name="word2vec"`` (a label) and the
file as ``config["vector_path"]``; ``no_header`` (True = GloVe), ``l2_normalize_tokens``
(= ``l2_normalize``), ``use_tqdm`` and ``mmap`` are accepted too. LITcoder's
``oov_handling="error"`` raised on the first OOV word; here the error lists them.

Loaded vectors are kept per process, keyed by (resolved path, mtime, size, format,
binary): many stories (and many extractor instances) load a file once. gensim is
imported when vectors are first needed (a cache hit needs no gensim); without it the
ImportError says to install ``scalenc[embeddings]``. The cache key holds the config and
:func:`~scalenc.features.base.path_identity` of the file (path, size, mtime), not the
``model_name`` label.
"""
from __future__ import annotations

import gzip
import logging
import os
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import xarray as xr

from .base import FeatureError, FeatureExtractor, make_feature_set, path_identity, word_table

logger = logging.getLogger(__name__)

FORMATS = ("auto", "word2vec", "glove", "fasttext", "kv")
OOV_MODES = ("copy_prev", "zero", "mean", "skip", "error")
FASTTEXT_MAGIC = 793712314  # first int32 of fastText's .bin files (>= v0.9)
MAX_OOV_EXAMPLES = 10

_VECTORS: dict[tuple, _Vectors] = {}
_VECTORS_LOCK = threading.Lock()


class _Vectors:
    """Loaded KeyedVectors plus what lookups need (the fastText flag, the vocab mean)."""

    def __init__(self, kv, fmt: str, path: Path):
        self.kv = kv
        self.format = fmt
        self.path = path
        self.dim = int(kv.vector_size)
        self.subwords = fmt == "fasttext" or hasattr(kv, "buckets_word")
        self._mean = None

    @property
    def mean(self) -> np.ndarray:
        if self._mean is None:
            self._mean = np.asarray(self.kv.vectors, dtype=np.float64).mean(axis=0).astype(np.float32)
        return self._mean

    def lookup(self, words: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
        """Vectors of many words at once: ``(rows, found, n_subword)`` with ``rows``
        (n_words, dim) float32 (zero where not found), ``found`` (n_words,) bool and the
        number of rows built from subwords; row i is ``get(words[i])``."""
        index = self.kv.key_to_index
        idx = np.fromiter((index.get(w, -1) for w in words), dtype=np.int64, count=len(words))
        found = idx >= 0
        rows = np.zeros((len(words), self.dim), np.float32)
        rows[found] = self.kv.vectors[idx[found]]
        n_sub = 0
        if self.subwords:
            for i in np.flatnonzero(~found):
                v, sub = self.get(words[i])
                if v is not None:
                    rows[i], found[i] = v, True
                    n_sub += sub
        return rows, found, n_sub

    def get(self, word: str) -> tuple[np.ndarray | None, bool]:
        """(vector or None when OOV, whether it was built from subwords)."""
        kv = self.kv
        if word in kv.key_to_index:
            return np.asarray(kv.get_vector(word), dtype=np.float32), False
        if self.subwords:
            try:
                v = np.asarray(kv.get_vector(word), dtype=np.float32)
            except KeyError:  # no n-gram of the word: fastText cannot build it
                return None, False
            return v, True
        return None, False


def clear_vector_cache() -> None:
    """Forget every vectors file loaded by this process."""
    with _VECTORS_LOCK:
        _VECTORS.clear()


def _import_gensim():
    try:
        import gensim  # noqa: F401
        from gensim.models import KeyedVectors
    except ImportError as e:
        raise ImportError("the 'embeddings' modality needs gensim: pip install 'scalenc[embeddings]' "
                          f"(import failed: {e})") from e
    return KeyedVectors


def _plain_suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return Path(name).suffix


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _first_bytes(path: Path, n: int) -> bytes:
    with _open(path) as f:
        return f.read(n)


def _is_fasttext_bin(path: Path) -> bool:
    head = _first_bytes(path, 4)
    return len(head) == 4 and int.from_bytes(head, "little") == FASTTEXT_MAGIC


def _has_w2v_header(path: Path) -> bool:
    with _open(path) as f:
        line = f.readline(4096)
    parts = line.split()
    return len(parts) == 2 and all(p.isdigit() for p in parts)


def detect_format(path: Path, fmt: str = "auto", binary: bool | None = None) -> tuple[str, bool]:
    """The reader for ``path``: (format, binary) with format in word2vec/glove/fasttext/kv."""
    suffix = _plain_suffix(path)
    if fmt == "auto":
        if suffix in (".kv", ".model"):
            fmt = "kv"
        elif suffix == ".bin" or binary:
            fmt = "fasttext" if _is_fasttext_bin(path) else "word2vec"
        else:
            fmt = "word2vec" if _has_w2v_header(path) else "glove"
    if fmt == "word2vec":
        return fmt, bool(suffix == ".bin" if binary is None else binary)
    return fmt, fmt == "fasttext"


class PlainVectors:
    """The part of gensim's ``KeyedVectors`` the lookups use (``key_to_index``,
    ``index_to_key``, ``vectors``, ``vector_size``, ``get_vector``), for word2vec text or
    binary and GloVe files read without importing gensim (:func:`read_plain`)."""

    def __init__(self, words: list[str], vectors: np.ndarray):
        self.key_to_index: dict[str, int] = {}
        keep = []
        for i, w in enumerate(words):
            if w in self.key_to_index:  # as gensim: the first of duplicated words is kept
                logger.warning("duplicate word %r in vectors file, ignoring all but the first", w)
                continue
            self.key_to_index[w] = len(keep)
            keep.append(i)
        self.index_to_key = [words[i] for i in keep]
        self.vectors = vectors if len(keep) == len(words) else vectors[keep]
        self.vector_size = int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.index_to_key)

    def get_vector(self, word: str) -> np.ndarray:
        return self.vectors[self.key_to_index[word]]


def read_plain(path: Path, fmt: str, binary: bool) -> PlainVectors:
    """Read an uncompressed word2vec (text or binary) or GloVe file as gensim's
    ``load_word2vec_format`` does (the declared count of entries, words split on single
    spaces, float32 vectors, strict UTF-8), without gensim. Raises on anything unusual;
    :func:`_read` then lets gensim read (or reject) the file."""
    if path.name.lower().endswith(".gz") or fmt not in ("word2vec", "glove"):
        raise ValueError("not a plain word2vec/GloVe file")
    if fmt == "word2vec" and binary:
        import mmap as _mmap

        with open(path, "rb") as f, _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ) as m:
            end = m.find(b"\n")
            n, dim = (int(x) for x in m[:end].split())
            vec_bytes = 4 * dim
            words, vectors = [], np.empty((n, dim), np.float32)
            pos = end + 1
            for i in range(n):
                sp = m.find(b" ", pos)
                if sp < 0 or sp + 1 + vec_bytes > len(m):
                    raise EOFError("unexpected end of input")
                words.append(m[pos:sp].lstrip(b"\n").decode("utf-8"))
                vectors[i] = np.frombuffer(m, dtype=np.float32, count=dim, offset=sp + 1)
                pos = sp + 1 + vec_bytes
        return PlainVectors(words, vectors)
    with open(path, "rb") as f:
        lines = f.read().decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the file's last newline
    if fmt == "word2vec":
        n, dim = (int(x) for x in lines[0].split())
        body = lines[1:1 + n]
    else:
        body = lines
        n, dim = len(body), len(body[0].rstrip().split(" ")) - 1
    if len(body) < n:
        raise EOFError("unexpected end of input")
    words, values = [], []
    for ln in body:
        parts = ln.rstrip().split(" ")
        if len(parts) != dim + 1:
            raise ValueError("invalid vector line")
        words.append(parts[0])
        values += parts[1:]
    return PlainVectors(words, np.array([float(x) for x in values], dtype=np.float32).reshape(n, dim))


def _read(path: Path, fmt: str, binary: bool, *, mmap: bool = False):
    if fmt in ("word2vec", "glove") and not path.name.lower().endswith(".gz"):
        try:
            return read_plain(path, fmt, binary)
        except Exception:  # noqa: BLE001 - anything unusual: gensim reads the file, or says why not
            logger.debug("embeddings: %s read by gensim", path, exc_info=True)
    KeyedVectors = _import_gensim()
    if fmt == "kv":
        obj = KeyedVectors.load(str(path), mmap="r" if mmap else None)
        return getattr(obj, "wv", obj)
    if fmt == "fasttext":
        from gensim.models.fasttext import load_facebook_vectors

        return load_facebook_vectors(str(path))
    if fmt == "glove":
        return KeyedVectors.load_word2vec_format(str(path), binary=False, no_header=True)
    return KeyedVectors.load_word2vec_format(str(path), binary=binary)


def load_vectors(path: str | os.PathLike, *, fmt: str = "auto", binary: bool | None = None,
                 mmap: bool = False) -> _Vectors:
    """Load (or reuse this process's copy of) a vectors file.

    Raises
    ------
    FeatureError
        Missing, empty or unreadable file (the message names it and the reader tried).
    ImportError
        gensim is not installed (install ``scalenc[embeddings]``).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FeatureError(f"embeddings: vectors file {p} not found" + (" (it is a directory)" if p.is_dir() else ""))
    p = p.resolve()
    st = p.stat()
    if st.st_size == 0:
        raise FeatureError(f"embeddings: vectors file {p} is empty")
    try:
        rfmt, rbin = detect_format(p, fmt, binary)
    except (OSError, EOFError) as e:
        raise FeatureError(f"embeddings: cannot read vectors file {p}: {e}") from e
    if rfmt in ("fasttext", "kv") or p.name.lower().endswith(".gz"):
        _import_gensim()  # only these need gensim (plain files: read_plain)
    key = (str(p), st.st_mtime_ns, st.st_size, rfmt, rbin)
    with _VECTORS_LOCK:
        hit = _VECTORS.get(key)
    if hit is not None:
        return hit
    try:
        kv = _read(p, rfmt, rbin, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - gensim raises many types on garbled files
        first = f"{type(e).__name__}: {e}"
        if fmt == "auto" and rfmt == "word2vec" and rbin:
            try:  # .bin that is neither word2vec binary nor a recent fastText model
                kv, rfmt = _read(p, "fasttext", True), "fasttext"
            except Exception as e2:  # noqa: BLE001
                raise FeatureError(f"embeddings: cannot read {p} as word2vec binary ({first}) nor as a fastText "
                                   f".bin ({type(e2).__name__}: {e2})") from e
        elif fmt == "auto" and rfmt == "word2vec" and isinstance(e, UnicodeDecodeError):
            try:  # a binary file without the .bin suffix
                kv, rbin = _read(p, "word2vec", True), True
            except Exception as e2:  # noqa: BLE001
                raise FeatureError(f"embeddings: cannot read {p} as word2vec text ({first}) nor binary "
                                   f"({type(e2).__name__}: {e2})") from e
        else:
            raise FeatureError(f"embeddings: cannot read {p} as {rfmt}{' binary' if rbin else ''} vectors "
                               f"({first}); set config 'format' to one of {list(FORMATS)}") from e
    if len(kv.index_to_key) == 0 or int(kv.vector_size) == 0:
        raise FeatureError(f"embeddings: {p} read as {rfmt} holds no vectors "
                           f"({len(kv.index_to_key)} words of dimension {kv.vector_size})")
    vec = _Vectors(kv, rfmt, p)
    logger.info("embeddings: loaded %s (%s, %d words x %d)", p, rfmt, len(kv.index_to_key), vec.dim)
    with _VECTORS_LOCK:
        _VECTORS[key] = vec
    return vec


class StaticEmbeddingExtractor(FeatureExtractor):
    """One static word vector per word; see the module docstring.

    Parameters
    ----------
    model_name : str
        Path of the vectors file (or a label when ``config["vector_path"]`` is given).
    config : dict, optional
        ``format`` ("auto"), ``binary`` (None), ``lowercase`` (True), ``oov_handling``
        ("copy_prev"), ``l2_normalize`` (False); LITcoder's ``vector_path``,
        ``no_header``, ``l2_normalize_tokens``, ``use_tqdm``, ``mmap``.
    cache_dir : path-like, optional

    Output
    ------
    FeatureSet ``features`` (1, n_rows, dim) float32, ``time`` word midpoints (seconds);
    n_rows = n_words except with ``oov_handling="skip"``.
    """

    modality: ClassVar[str] = "embeddings"
    defaults: ClassVar[dict[str, Any]] = {
        "format": "auto", "binary": None, "lowercase": True, "oov_handling": "copy_prev", "l2_normalize": False,
        # LITcoder's keys
        "vector_path": None, "no_header": None, "l2_normalize_tokens": None, "use_tqdm": True, "mmap": False,
    }
    types: ClassVar[dict[str, tuple[type, ...]]] = {
        "binary": (bool,), "vector_path": (str, os.PathLike), "no_header": (bool,), "l2_normalize_tokens": (bool,),
    }

    def __init__(self, model_name: str | os.PathLike | None = None, config=None, cache_dir=None):
        super().__init__(model_name, config, cache_dir)
        c = self.config
        if c["format"] not in FORMATS:
            raise FeatureError(f"embeddings extractor: config key 'format' must be one of {list(FORMATS)}, "
                               f"got {c['format']!r}")
        if c["oov_handling"] not in OOV_MODES:
            raise FeatureError(f"embeddings extractor: config key 'oov_handling' must be one of {list(OOV_MODES)}, "
                               f"got {c['oov_handling']!r}")
        if c["no_header"] is not None:  # LITcoder: no_header=True means GloVe text
            want = "glove" if c["no_header"] else "word2vec"
            if c["format"] not in ("auto", want):
                raise FeatureError(f"embeddings extractor: no_header={c['no_header']} contradicts "
                                   f"format={c['format']!r}")
            c["format"] = want
        if c["l2_normalize_tokens"] is not None:
            c["l2_normalize"] = bool(c["l2_normalize_tokens"])
        c["no_header"] = c["l2_normalize_tokens"] = None
        path = c["vector_path"] if c["vector_path"] is not None else model_name
        if path is None:
            raise FeatureError("embeddings extractor: model_name must be the path of a vectors file "
                               "(or pass config['vector_path'])")
        p = Path(path).expanduser()
        if not p.is_file():
            hint = "" if c["vector_path"] is not None else " (LITcoder style: pass the file as config['vector_path'])"
            raise FeatureError(f"embeddings extractor: vectors file {p} not found{hint}")
        self.vector_path = p.resolve()
        c["vector_path"] = str(self.vector_path)

    def no_cache_keys(self) -> set[str]:
        return super().no_cache_keys() | {"use_tqdm", "mmap", "vector_path", "no_header", "l2_normalize_tokens"}

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["model"] = None  # a label; the file is identified by its path, size and mtime
        ident["vectors"] = path_identity(self.vector_path)
        return ident

    def vectors(self) -> _Vectors:
        """The loaded vectors (cached per process)."""
        return load_vectors(self.vector_path, fmt=self.config["format"], binary=self.config["binary"],
                            mmap=self.config["mmap"])

    def compute(self, assembly, story: str) -> xr.Dataset:
        c = self.config
        vec = self.vectors()
        words = [str(w) for w in word_table(assembly, story)[0]]
        times = np.asarray(assembly.word_times(story), dtype=np.float64)
        mode = c["oov_handling"]
        rows, found, n_sub = vec.lookup([w.lower() for w in words] if c["lowercase"] else words)
        oov = ~found
        oov_idx = np.flatnonzero(oov).tolist()
        keep = np.ones(len(words), bool)
        if oov_idx:
            if mode == "copy_prev":  # the last known row before each OOV word (zero before the first)
                src = np.maximum.accumulate(np.where(found, np.arange(len(words)), -1))
                fill = oov & (src >= 0)
                rows[fill] = rows[src[fill]]
            elif mode == "mean":
                rows[oov] = vec.mean
            elif mode == "skip":
                keep = found
            # zero (and error, raised below with every OOV word): the rows stay zero
        n_oov = len(oov_idx)
        examples = list(dict.fromkeys(words[i] for i in oov_idx))[:MAX_OOV_EXAMPLES]
        rate = n_oov / len(words) if words else 0.0
        if mode == "error" and n_oov:
            raise FeatureError(f"embeddings: story {story!r}: {n_oov} of {len(words)} words are not in "
                               f"{self.vector_path.name} (e.g. {examples}); set oov_handling to one of "
                               f"{[m for m in OOV_MODES if m != 'error']} to accept them")
        logger.info("embeddings: story %s: %d of %d words out of vocabulary (%.2f%%)%s%s", story, n_oov, len(words),
                    100 * rate, f", e.g. {examples}" if examples else "",
                    f"; {n_sub} built from subwords" if n_sub else "")
        rows, times = rows[keep], times[keep]
        if c["l2_normalize"]:
            norm = np.linalg.norm(rows, axis=1, keepdims=True)
            rows = np.divide(rows, norm, out=np.zeros_like(rows), where=norm > 0)
        return make_feature_set(rows, times, layers=[0], story=story, extractor=type(self).__name__,
                                model=str(self.model_name if self.model_name is not None else self.vector_path),
                                feature_space="embeddings",
                                attrs={"vectors": str(self.vector_path), "vectors_format": vec.format,
                                       "n_words": len(words), "n_oov": n_oov, "oov_rate": float(rate),
                                       "oov_examples": examples, "n_subword": int(n_sub)})
