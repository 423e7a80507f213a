"""``FeatureExtractorFactory``: extractors by modality name, as in the LITcoder tutorials.

::

    extractor = FeatureExtractorFactory.create_extractor(
        modality="embeddings", model_name="word2vec",
        config={"vector_path": "vectors.bin", "oov_handling": "copy_prev"}, cache_dir="cache")
    fs = extractor.extract(assembly, story)          # FeatureSet, through the cache

Modalities
----------
- ``wordrate``: :class:`~scalenc.features.wordrate.WordRateExtractor` (word rate events);
- ``phonemerate``: :class:`~scalenc.features.wordrate.PhonemeRateExtractor` (phoneme rate events);
- ``embeddings``: :class:`~scalenc.features.embeddings.StaticEmbeddingExtractor` (needs
  ``scalenc[embeddings]``);
- ``language_model``: ``scalenc.features.language_model.LanguageModelExtractor`` (needs ``scalenc[lm]``);
- ``speech``: ``scalenc.features.speech.SpeechExtractor`` (needs ``scalenc[speech]``);
- ``custom``: :class:`~scalenc.features.custom.CustomExtractor` (a user function or arrays);
- ``precomputed``: :class:`~scalenc.features.precomputed.PrecomputedExtractor` (a model folder
  in the scaling-laws layout: one ``<story>.npz`` per layer folder, ``<story>_times.npz``).

The language-model and speech modules are imported only when asked for; if their
dependencies are missing, the ImportError names the extra to install.

Aliases (case-insensitive, ``-`` or spaces read as ``_``): ``word_rate``,
``word_rates``, ``wordrates`` -> ``wordrate``; ``embedding``, ``static_embedding(s)``,
``word_embedding(s)`` -> ``embeddings``; ``lm``, ``languagemodel`` -> ``language_model``;
``speech_model``, ``speechmodel`` -> ``speech``.

Differences from LITcoder: ``cache_dir=None`` (the default) means no cache; LITcoder's
factory copied ``model_name`` into the config, and tutorial configs often carry a
``"model_name"`` key: it is accepted here and must agree with the ``model_name`` argument
(when the extractor has no ``model_name`` config key of its own).
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

from .base import FeatureError, FeatureExtractor
from .custom import CustomExtractor
from .precomputed import PrecomputedExtractor
from .embeddings import StaticEmbeddingExtractor
from .wordrate import PhonemeRateExtractor, WordRateExtractor

# modality -> class, or (module:Class, extra) imported on first use
_BUILTIN: dict[str, type[FeatureExtractor] | tuple[str, str]] = {
    "wordrate": WordRateExtractor,
    "phonemerate": PhonemeRateExtractor,
    "embeddings": StaticEmbeddingExtractor,
    "language_model": ("scalenc.features.language_model:LanguageModelExtractor", "scalenc[lm]"),
    "speech": ("scalenc.features.speech:SpeechExtractor", "scalenc[speech]"),
    "custom": CustomExtractor,
    "precomputed": PrecomputedExtractor,
}

ALIASES: dict[str, str] = {
    "word_rate": "wordrate", "word_rates": "wordrate", "wordrates": "wordrate",
    "phoneme_rate": "phonemerate", "phoneme_rates": "phonemerate", "phonemerates": "phonemerate",
    "embedding": "embeddings", "static_embedding": "embeddings", "static_embeddings": "embeddings",
    "word_embedding": "embeddings", "word_embeddings": "embeddings",
    "lm": "language_model", "languagemodel": "language_model",
    "speech_model": "speech", "speechmodel": "speech",
}


def _normalise(modality: str) -> str:
    return "_".join(str(modality).strip().lower().replace("-", " ").split())


class FeatureExtractorFactory:
    """Create feature extractors by modality (the LITcoder tutorials' entry point)."""

    _registry: dict[str, type[FeatureExtractor] | tuple[str, str]] = dict(_BUILTIN)

    @classmethod
    def modalities(cls) -> list[str]:
        """Accepted modality names (aliases not included)."""
        return list(cls._registry)

    get_supported_modalities = modalities  # LITcoder's name

    @classmethod
    def register(cls, modality: str, extractor_class: type[FeatureExtractor] | str, *,
                 extra: str | None = None) -> None:
        """Add (or replace) a modality.

        Parameters
        ----------
        modality : str
        extractor_class : FeatureExtractor subclass, or ``"package.module:ClassName"``
            A string is imported on first use; ``extra`` is named if that import fails.
        """
        name = _normalise(modality)
        if not name:
            raise FeatureError("register: modality must be a non-empty string")
        if isinstance(extractor_class, str):
            if ":" not in extractor_class:
                raise FeatureError(f"register: {extractor_class!r} must read 'package.module:ClassName'")
            cls._registry[name] = (extractor_class, extra or "")
            return
        if not (isinstance(extractor_class, type) and issubclass(extractor_class, FeatureExtractor)):
            raise FeatureError(f"register: {extractor_class!r} is not a FeatureExtractor subclass")
        cls._registry[name] = extractor_class

    register_extractor = register  # LITcoder's name

    @classmethod
    def resolve(cls, modality: str) -> type[FeatureExtractor]:
        """The extractor class of ``modality`` (an alias works too); imports lazy entries."""
        if not isinstance(modality, str):
            raise FeatureError(f"modality must be a string, got {type(modality).__name__}; "
                               f"accepted: {cls.modalities()}")
        name = _normalise(modality)
        name = name if name in cls._registry else ALIASES.get(name, name)
        if name not in cls._registry:
            raise FeatureError(f"unknown modality {modality!r}; accepted: {cls.modalities()} "
                               f"(aliases: {sorted(ALIASES)})")
        entry = cls._registry[name]
        if isinstance(entry, type):
            return entry
        target, extra = entry
        module_name, _, class_name = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            hint = f": pip install '{extra}'" if extra else ""
            raise ImportError(f"modality {name!r} needs {module_name}, whose import failed ({e}); "
                              f"install its optional dependencies{hint}") from e
        try:
            klass = getattr(module, class_name)
        except AttributeError as e:
            raise ImportError(f"modality {name!r}: {module_name} has no {class_name}") from e
        return klass

    @classmethod
    def create_extractor(cls, modality: str, model_name: str | os.PathLike | None = None,
                         config: Mapping[str, Any] | None = None,
                         cache_dir: str | os.PathLike | None = None) -> FeatureExtractor:
        """An extractor of ``modality``.

        Parameters
        ----------
        modality : str
            One of :meth:`modalities` or an alias (module docstring).
        model_name : str or path, optional
            Model name/path (language model, speech model, vectors file); a label for
            modalities without a model.
        config : dict, optional
            Extractor settings; unknown keys and wrong types raise FeatureError naming
            the key and the accepted ones.
        cache_dir : path-like, optional
            Feature cache root; None: no cache.
        """
        klass = cls.resolve(modality)
        if config is not None and not isinstance(config, Mapping):
            raise FeatureError(f"config must be a dict, got {type(config).__name__}")
        cfg = dict(config or {})
        if "model_name" in cfg and "model_name" not in getattr(klass, "defaults", {}):
            in_cfg = cfg.pop("model_name")
            if model_name is None:
                model_name = in_cfg
            elif in_cfg is not None and str(in_cfg) != str(model_name):
                raise FeatureError(f"{klass.modality or modality} extractor: model_name={model_name!r} but "
                                   f"config['model_name']={in_cfg!r}; give one of them")
        return klass(model_name, cfg, cache_dir)


create_extractor = FeatureExtractorFactory.create_extractor
