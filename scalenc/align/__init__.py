"""Alignment of stimulus features to the TR grid: downsampling kernels, FIR delays,
trimming and per-story z-scoring."""
from .downsample import Downsampler, lanczos_matrix, lanczos_weights
from .fir import fir
from .trim import TRIM_KEYS, TrimmingConfig, align_story, trim_story, zscore

__all__ = ["Downsampler", "TRIM_KEYS", "TrimmingConfig", "align_story", "fir", "lanczos_matrix",
           "lanczos_weights", "trim_story", "zscore"]
