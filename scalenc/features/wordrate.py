"""Word rate and phoneme rate as events.

:class:`WordRateExtractor` emits one *event* row per word and per phone, so that the
downsampling stage turns them into rates:

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

The ``phoneme_rate`` column exists only when the assembly has a phone tier
(:meth:`Assembly.phones` is not None) and ``include_phonemes`` is true; otherwise the
feature set has a single ``word_rate`` column and one row per word.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import xarray as xr

from .base import FeatureExtractor, make_feature_set

class WordRateExtractor(FeatureExtractor):
    """Word (and phoneme) rate events of a story; see the module docstring.

    Parameters
    ----------
    model_name : str, optional
        Ignored (the LITcoder tutorials pass ``"wordrate"``); not part of the cache key.
    config : dict, optional
        ``include_phonemes`` (bool, default True): add a ``phoneme_rate`` column and
        one row per phone when the assembly has phones.
    cache_dir : path-like, optional
        Feature cache root.

    Output
    ------
    FeatureSet with one layer (label 0), ``features`` (1, n_words [+ n_phones], 1 or 2),
    ``time`` the event midpoints (seconds, sorted) and a ``feature`` coordinate
    ``["word_rate", "phoneme_rate"]`` (or ``["word_rate"]``).
    """

    modality: ClassVar[str] = "wordrate"
    defaults: ClassVar[dict[str, Any]] = {"include_phonemes": True}

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
