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
    from scalenc.synthetic import synthetic

    return synthetic(tmp_path_factory.mktemp("synthetic"), n_stories=6, words_per_story=200, n_voxels=120,
                     embedding_dim=8, n_test_repeats=3, voxel_chunk=32, seed=1)


@pytest.fixture(scope="session")
def hub_home(tmp_path_factory, synthetic_small):
    """An ``HF_HOME`` whose Hub cache holds tiny random ``gpt2`` (10 layers, word-level tokenizer
    over the synthetic corpus) and ``openai/whisper-tiny`` (4 encoder layers), and the packaged
    all-MiniLM-L6-v2 (real weights) as ``sentence-transformers/all-MiniLM-L6-v2``, laid out as
    the Hub lays it out (:mod:`scalenc.synthetic.hub_cache`). Use with :func:`use_hub_home`."""
    pytest.importorskip("transformers")
    from types import SimpleNamespace

    from scalenc.synthetic.hub_cache import build_tutorial_models

    home = tmp_path_factory.mktemp("hf_home")
    asm = synthetic_small.assembly()
    words = [str(w) for s in asm.stories for w in asm.words(s)["word"].values]
    commits = build_tutorial_models(home / "hub", words, tmp_path_factory.mktemp("hub_work"))
    return SimpleNamespace(home=home, cache=home / "hub", commits=commits)


@pytest.fixture
def use_hub_home(hub_home, monkeypatch):
    """Point HF_HOME at :func:`hub_home` (offline) for one test."""
    monkeypatch.setenv("HF_HOME", str(hub_home.home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub_home


def _backend_params():
    """One ``pytest.param`` per ridge backend of ``scalenc.ridge.backend._MODULES`` (the one
    list): CUDA backends carry the ``gpu`` mark; an unavailable backend is skipped when used."""
    from scalenc.ridge.backend import BACKENDS, GPU_BACKENDS

    return [pytest.param(name, id=name, marks=[pytest.mark.gpu] if name in GPU_BACKENDS else [])
            for name in BACKENDS]


BACKEND_PARAMS = _backend_params()


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    """Every ridge backend at its default device (numpy, cupy, torch on the CPU, torch_cuda),
    skipped where it cannot run (no CuPy, no CUDA device)."""
    from scalenc.ridge.backend import get_backend, unavailable

    why = unavailable(request.param)
    if why is not None:
        pytest.skip(why)
    return get_backend(request.param)
