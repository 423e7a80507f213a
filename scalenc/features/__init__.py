"""Feature extractors and the multi-layer zarr cache.

- ``base.py``: the FeatureSet (layer, time, feature) and the :class:`FeatureExtractor` protocol;
- ``cache.py``: :class:`FeatureCache`, atomic multi-layer zarr entries;
"""
from .base import FeatureError, FeatureExtractor, cache_key, make_feature_set, path_identity, select_layers, \
    stimulus_digest
from .cache import FeatureCache

__all__ = ["FeatureCache", "FeatureError", "FeatureExtractor", "cache_key", "make_feature_set", "path_identity",
           "select_layers", "stimulus_digest"]
