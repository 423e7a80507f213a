"""Word rate and phoneme rate as events.

:class:`WordRateExtractor` (modality ``"wordrate"``, the tutorials' "word rate") emits
one *event* row per word with a single ``word_rate`` column. :class:`PhonemeRateExtractor`
(modality ``"phonemerate"``) does the same per phone (``phoneme_rate``), for assemblies
with a phone tier. ``WordRateExtractor(config={"include_phonemes": True})`` (opt-in)
gives both columns in one feature set, one row per word and per phone:

========  ==================  ======================  ===========================
row       time                ``word_rate`` column    ``phoneme_rate`` column
========  ==================  ======================  ===========================
word      interval midpoint   1                       0
phone     interval midpoint   0                       1
========  ==================  ======================  ===========================

Rows are merged and sorted by time (stable: at equal times words come before phones).
Downsampling with ``Downsampler("sum")`` gives the number of words (phones) whose
midpoint lies in ``[tau - TR/2, tau + TR/2)`` for each TR centre ``tau``; with the
default ``lanczos`` method a steady stream of one word per TR gives about 1 per TR.
This replaces LITcoder's precomputed per-TR word-rate vector (one value per TR, read
from the assembly): here the rate is computed from the word timings, like every other
feature, and the downsampler decides how events become TR values.

The ``phoneme_rate`` column of ``include_phonemes=True`` exists only when the assembly
has a phone tier (:meth:`Assembly.phones` is not None).
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import xarray as xr

from .base import FeatureError, FeatureExtractor, make_feature_set

class WordRateExtractor(FeatureExtractor):
    """Word rate events of a story (optionally with phoneme rate); see the module docstring.

    Parameters
    ----------
    model_name : str, optional
        Ignored (the LITcoder tutorials pass ``"wordrate"``); not part of the cache key.
    config : dict, optional
        ``include_phonemes`` (bool, default False): opt in to a second column,
        ``phoneme_rate``, and one row per phone when the assembly has phones (the
        ``"phonemerate"`` modality gives phoneme rate as its own feature space).
    cache_dir : path-like, optional
        Feature cache root.

    Output
    ------
    FeatureSet with one layer (label 0), ``features`` (1, n_words [+ n_phones], 1 or 2),
    ``time`` the event midpoints (seconds, sorted) and a ``feature`` coordinate
    ``["word_rate", "phoneme_rate"]`` (or ``["word_rate"]``).
    """

    modality: ClassVar[str] = "wordrate"
    defaults: ClassVar[dict[str, Any]] = {"include_phonemes": False}

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["model"] = None  # the model name is a label only (LITcoder passes "wordrate")
        return ident

    def compute(self, assembly, story: str) -> xr.Dataset:
        word_t = np.asarray(assembly.word_times(story), dtype=np.float64)
        phones = assembly.phones(story) if self.config["include_phonemes"] else None
        if phones is None:
            times = word_t
            values = np.ones((word_t.size, 1), np.float32)
            names = ["word_rate"]
            n_phones = 0
        else:
            phone_t = (np.asarray(phones["start"].values, np.float64)
                       + np.asarray(phones["end"].values, np.float64)) / 2
            n_phones = phone_t.size
            times = np.concatenate([word_t, phone_t])
            kind = np.concatenate([np.zeros(word_t.size, np.int8), np.ones(n_phones, np.int8)])
            order = np.lexsort((kind, times))  # by time, then words before phones
            times = times[order]
            values = np.zeros((times.size, 2), np.float32)
            values[np.arange(times.size), kind[order]] = 1.0
            names = ["word_rate", "phoneme_rate"]
        return make_feature_set(values, times, layers=[0], story=story, extractor=type(self).__name__,
                                model="", feature_space="wordrate", feature_names=names,
                                attrs={"n_words": int(word_t.size), "n_phones": int(n_phones)})


class PhonemeRateExtractor(FeatureExtractor):
    """Phoneme rate events of a story: one row per phone at its midpoint, one column
    ``phoneme_rate`` (value 1); see the module docstring.

    Parameters
    ----------
    model_name : str, optional
        Ignored (a label); not part of the cache key.
    config : dict, optional
        No keys.
    cache_dir : path-like, optional
        Feature cache root.
    """

    modality: ClassVar[str] = "phonemerate"
    defaults: ClassVar[dict[str, Any]] = {}

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["model"] = None
        return ident

    def compute(self, assembly, story: str) -> xr.Dataset:
        phones = assembly.phones(story)
        if phones is None or phones.sizes["phone"] == 0:
            raise FeatureError(f"phonemerate extractor: story {story!r} has no phone tier in the assembly "
                               f"{getattr(assembly, 'path', '')}; phoneme rate needs phone timings")
        t = (np.asarray(phones["start"].values, np.float64) + np.asarray(phones["end"].values, np.float64)) / 2
        order = np.argsort(t, kind="stable")
        return make_feature_set(np.ones((t.size, 1), np.float32), t[order], layers=[0], story=story,
                                extractor=type(self).__name__, model="", feature_space="phonemerate",
                                feature_names=["phoneme_rate"], attrs={"n_phones": int(t.size)})
