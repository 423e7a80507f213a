"""Datasets: the synthetic LeBel-like dataset with known ground truth."""
from .synthetic import SyntheticDataset, synthetic

__all__ = ["SyntheticDataset", "synthetic"]
