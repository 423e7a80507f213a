"""Portable assemblies: audio paths stored relative to the store (or absolute), resolved on
read from any working directory, re-pointed by ``scalenc assembly relocate`` or
``load_assembly(..., audio_root=...)`` when the data moved."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from scalenc.assembly import load_assembly, relocate
from scalenc.cli import main

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
sf = pytest.importorskip("soundfile")
pytest.importorskip("librosa")


@pytest.fixture(scope="module")
def speech_model(tmp_path_factory):
    """A tiny random HuBERT saved to a folder (the real loading path of the extractor)."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(0)
    cfg = HubertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=17,
                       conv_dim=(8, 8, 8), conv_kernel=(10, 8, 8), conv_stride=(5, 8, 8), num_conv_pos_embeddings=16,
                       num_conv_pos_embedding_groups=2, vocab_size=12)
    path = tmp_path_factory.mktemp("hubert") / "hubert"
    HubertModel(cfg).save_pretrained(path)
    Wav2Vec2FeatureExtractor().save_pretrained(path)
    return str(path)


def _speech(speech_model, asm, story):
    from scalenc.features.speech import SpeechExtractor

    ex = SpeechExtractor(speech_model, {"chunk_size": 2.0, "context_size": 4.0, "batch_size": 8})
    return ex.compute(asm, story)["features"].values


def _stored(store, story):
    return json.loads((store / "stories" / story / "zarr.json").read_text())["attributes"]["audio_path"]


def test_speech_runs_from_another_folder_after_moves_and_relocate(tmp_path, monkeypatch, speech_model, capsys):
    from scalenc.synthetic import synthetic
    from scalenc.features import FeatureError

    # built as a user does it: a relative output folder from the project folder
    (tmp_path / "proj").mkdir()
    monkeypatch.chdir(tmp_path / "proj")
    ds = synthetic("syn", n_stories=2, words_per_story=60, n_voxels=8, embedding_dim=4, n_test_repeats=1, seed=3)
    store = (tmp_path / "proj" / ds.assembly_path).resolve()
    story = load_assembly(store).stories[0]
    wav = (tmp_path / "proj" / ds.audio_dir / f"{story}.wav").resolve()
    assert _stored(store, story) == f"../lebel/stimuli/{story}.wav"  # relative to the store folder
    ref = _speech(speech_model, load_assembly(store), story)

    # another working directory: the same file, the same features
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    asm = load_assembly(store)
    assert asm.audio_path(story) == str(wav)
    np.testing.assert_array_equal(_speech(speech_model, asm, story), ref)

    # the whole dataset folder moved: the relative paths move with it
    moved = tmp_path / "moved" / "syn"
    moved.parent.mkdir()
    shutil.move(tmp_path / "proj" / "syn", moved)
    asm = load_assembly(moved / store.name)
    assert asm.audio_path(story) == str(moved / "lebel" / "stimuli" / f"{story}.wav")
    np.testing.assert_array_equal(_speech(speech_model, asm, story), ref)

    # the audio alone moved: a one-line error naming the file, then re-pointed
    audio = tmp_path / "audio"
    shutil.move(moved / "lebel" / "stimuli", audio)
    with pytest.raises(FeatureError, match=rf"audio file of story '{story}' not found: .*stimuli/{story}\.wav"):
        _speech(speech_model, load_assembly(moved / store.name), story)
    asm = load_assembly(moved / store.name, audio_root=audio)  # in memory only
    np.testing.assert_array_equal(_speech(speech_model, asm, story), ref)
    assert _stored(moved / store.name, story) == f"../lebel/stimuli/{story}.wav"
    assert main(["assembly", "relocate", str(moved / store.name), "--audio-root", str(audio)]) == 0
    assert "audio of 2 stories re-pointed" in capsys.readouterr().out
    assert _stored(moved / store.name, story) == str(audio / f"{story}.wav")  # not next to the store: absolute
    np.testing.assert_array_equal(_speech(speech_model, load_assembly(moved / store.name), story), ref)


def test_relocate_refuses_a_folder_missing_a_file_and_changes_nothing(tmp_path, capsys):
    from scalenc.synthetic import synthetic

    ds = synthetic(tmp_path / "syn", n_stories=2, words_per_story=60, n_voxels=8, embedding_dim=4,
                   n_test_repeats=1, seed=4)
    asm = load_assembly(ds.assembly_path)
    new = tmp_path / "new"
    new.mkdir()
    first, second = asm.stories
    shutil.copy(asm.audio_path(first), new)
    before = {s: _stored(ds.assembly_path, s) for s in asm.stories}
    assert main(["assembly", "relocate", str(ds.assembly_path), "--audio-root", str(new)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"story '{second}': {second}.wav not found in {new}" in err
    assert {s: _stored(ds.assembly_path, s) for s in asm.stories} == before
    shutil.copy(asm.audio_path(second), new)
    assert relocate(ds.assembly_path, new) == {s: str(new / f"{s}.wav") for s in asm.stories}


def test_older_store_with_paths_relative_to_the_working_directory(tmp_path, monkeypatch):
    """Stores written before this convention kept paths as given: still found from the
    folder they were built in, and rewritten in the new convention on the next save."""
    from scalenc.synthetic import synthetic

    monkeypatch.chdir(tmp_path)
    ds = synthetic("syn", n_stories=2, words_per_story=60, n_voxels=8, embedding_dim=4, n_test_repeats=1, seed=5)
    store = tmp_path / ds.assembly_path
    root = json.loads((store / "zarr.json").read_text())
    del root["attributes"]["audio_paths"]
    (store / "zarr.json").write_text(json.dumps(root))
    for s in load_assembly(store).stories:  # as the old writer stored them: as given at build time
        meta = json.loads((store / "stories" / s / "zarr.json").read_text())
        meta["attributes"]["audio_path"] = f"syn/lebel/stimuli/{s}.wav"
        (store / "stories" / s / "zarr.json").write_text(json.dumps(meta))
    asm = load_assembly(store)
    s0, s1 = asm.stories
    assert asm.audio_path(s0) == str(tmp_path / "syn/lebel/stimuli" / f"{s0}.wav")
    asm.set_audio_path(s1, f"syn/lebel/stimuli/{s1}.wav")
    asm.save()
    assert _stored(store, s0) == f"../lebel/stimuli/{s0}.wav" and _stored(store, s1) == f"../lebel/stimuli/{s1}.wav"
    monkeypatch.chdir(tmp_path / "syn")
    assert load_assembly(store).audio_path(s0) == str(tmp_path / "syn/lebel/stimuli" / f"{s0}.wav")
