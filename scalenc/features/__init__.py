"""Feature extractors and the multi-layer zarr cache.

- ``base.py``: the FeatureSet (layer, time, feature) and the :class:`FeatureExtractor` protocol;
- ``cache.py``: :class:`FeatureCache`, atomic multi-layer zarr entries;
- ``factory.py``: :class:`FeatureExtractorFactory` (``create_extractor(modality, model_name, config,
  cache_dir)``, the LITcoder tutorials' entry point);
- ``wordrate.py``: :class:`WordRateExtractor` (word rate), :class:`PhonemeRateExtractor` (phoneme rate);
- ``_hf.py``: Hugging Face loading shared by the language-model and speech extractors (folders, Hub ids,
  TransformerLens names, the Hub cache, device and dtype, the per-process model cache);
- ``embeddings.py``: :class:`StaticEmbeddingExtractor` (word2vec, GloVe, fastText, KeyedVectors);
- ``custom.py``: :class:`CustomExtractor` (a user function or precomputed arrays);
- ``precomputed.py``: :class:`~scalenc.features.precomputed.PrecomputedExtractor` (a scaling-laws model folder);
- ``language_model.py``, ``speech.py``: neural extractors, imported on demand by the factory
  (they need the ``lm`` / ``speech`` extras).
"""
from .base import FeatureError, FeatureExtractor, cache_key, make_feature_set, path_identity, select_layers, \
    stimulus_digest
from .cache import FeatureCache
from .custom import CustomExtractor
from .embeddings import StaticEmbeddingExtractor
from .factory import FeatureExtractorFactory
from .wordrate import PhonemeRateExtractor, WordRateExtractor

__all__ = ["CustomExtractor", "FeatureCache", "FeatureError", "FeatureExtractor", "FeatureExtractorFactory",
           "PhonemeRateExtractor", "StaticEmbeddingExtractor", "WordRateExtractor", "cache_key", "make_feature_set", "path_identity",
           "select_layers", "stimulus_digest"]
