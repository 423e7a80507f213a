"""Alignment of stimulus features to the TR grid: downsampling kernels and FIR delays."""
from .downsample import lanczos_matrix, lanczos_weights
from .fir import fir

__all__ = ["fir", "lanczos_matrix", "lanczos_weights"]
