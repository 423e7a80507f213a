"""The three LITcoder tutorials (examples/), unchanged but for their imports, run end to end
on the synthetic assembly with local models and wandb offline."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    from scalenc.datasets import synthetic
    from scalenc.datasets.tiny_lm import build_tiny_lm

    root = tmp_path_factory.mktemp("tutorials")
    ds = synthetic(root / "data", n_stories=5, words_per_story=260, n_voxels=40, embedding_dim=8, seed=5)
    asm = ds.assembly()
    lm = build_tiny_lm(root / "tiny-gpt2", [str(w) for s in asm.stories for w in asm.words(s).word.values],
                       n_layer=2, n_embd=32, n_head=2)
    torch.manual_seed(0)
    hub = HubertModel(HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                                   conv_dim=(16, 16, 16), conv_kernel=(10, 8, 8), conv_stride=(5, 8, 8),
                                   num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, vocab_size=12))
    hub.save_pretrained(root / "tiny-hubert")
    Wav2Vec2FeatureExtractor().save_pretrained(root / "tiny-hubert")
    e = dict(os.environ, SCALENC_ASSEMBLY=str(ds.assembly_path), SCALENC_VECTORS=str(ds.embeddings_binary_path),
             SCALENC_LM=str(lm), SCALENC_LM_LAYER="2", SCALENC_SPEECH_MODEL=str(root / "tiny-hubert"),
             SCALENC_SPEECH_LAYER="2", SCALENC_AUDIO_DIR=str(ds.audio_dir), WANDB_MODE="offline",
             WANDB_SILENT="true", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2")
    return root, e


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tutorial_embeddings", "tutorial_language_model", "tutorial_speech"])
def test_tutorial_runs(env, name):
    root, e = env
    work = root / name
    work.mkdir()
    r = subprocess.run([sys.executable, str(ROOT / "examples" / f"{name}.py")], cwd=work, env=e,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Median correlation:" in r.stderr
    runs = list((work / "results").glob("run-*"))
    assert len(runs) == 1
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert -1 <= next(iter(metrics["layers"].values()))["median_score"] <= 1
    assert list((runs[0] / "wandb").glob("offline-run-*")), "wandb ran offline and kept its run"
    assert any((work / "cache").iterdir())
