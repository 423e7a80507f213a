"""Shared fixtures. No network: hub access is disabled for every test."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "numba"))


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory):
    """A small synthetic dataset (6 stories x 120 voxels), generated once per session."""
    from scalenc.datasets import synthetic

    return synthetic(tmp_path_factory.mktemp("synthetic"), n_stories=6, words_per_story=200, n_voxels=120,
                     embedding_dim=8, n_test_repeats=3, voxel_chunk=32, seed=1)
