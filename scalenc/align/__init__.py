"""Alignment of stimulus features to the TR grid: downsampling kernels, FIR delays,
trimming, per-story z-scoring, and :func:`align_story`, which chains them for one story."""
from .downsample import Downsampler, lanczos_matrix, lanczos_weights
from .fir import fir
from .story import align_story, feature_space_slices
from .trim import TRIM_KEYS, TrimmingConfig, trim_story, zscore

__all__ = ["Downsampler", "TRIM_KEYS", "TrimmingConfig", "align_story", "feature_space_slices", "fir",
           "lanczos_matrix", "lanczos_weights", "trim_story", "zscore"]
