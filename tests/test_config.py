"""Run configurations: RunConfig defaults, type checks, re-runnable saved configs, the
docstring example, refusing to replace a run."""
from __future__ import annotations

import inspect
import json
import textwrap
import tomllib

import numpy as np
import pytest

import scalenc.config as config_mod
from scalenc import results
from scalenc.cli import main
from scalenc.config import DEFAULTS, ConfigError, RunConfig, load_config
from scalenc.features import FeatureExtractorFactory
from scalenc.features.wordrate import WordRateExtractor
from scalenc.models import NestedCVModel
from scalenc.trainer import AbstractTrainer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from scalenc.synthetic import synthetic

    return synthetic(tmp_path_factory.mktemp("config"), n_stories=4, words_per_story=260, n_voxels=40,
                     embedding_dim=6, n_test_repeats=2, audio=False, seed=7)


def _write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def test_trainer_defaults_are_the_run_config_defaults():
    sig = inspect.signature(AbstractTrainer).parameters
    names = {"trimming_config": "trimming", "story_selection": "stories", "client": "cluster"}
    checked = 0
    for p, par in sig.items():
        key = names.get(p, p)
        if key in RunConfig.__dataclass_fields__ and par.default is not inspect.Parameter.empty \
                and key not in ("downsample_config", "downsampler", "model"):
            default = getattr(DEFAULTS, key)
            assert (list(par.default) if isinstance(par.default, tuple) else par.default) == default, p
            checked += 1
    assert checked >= 9
    from scalenc.trainer import RUN_OPTIONS  # the run options: keywords whose defaults are RunConfig's

    assert set(RUN_OPTIONS.values()) <= set(RunConfig.__dataclass_fields__)
    assert len(RUN_OPTIONS) + checked >= 17


def test_saved_config_reruns_from_another_folder_from_the_cache(data, tmp_path, monkeypatch, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "data").symlink_to(data.assembly_path.parent)
    cfg = _write(a / "run.toml", """
        run_name = "first"
        results_dir = "out"
        assembly = "data/SYN01.zarr"
        [model]
        alphas_logspace = [-1, 5, 7]
        [[extractors]]
        modality = "wordrate"
        [extractors.config]
        include_phonemes = false
        """)
    monkeypatch.chdir(b)  # relative paths are read against the config's folder, not the working directory
    assert main(["run", str(cfg)]) == 0
    saved = a / "out" / "first" / "config.toml"
    text = saved.read_text()
    assert "[trimming]" not in text  # no empty table
    rec = tomllib.loads(text)
    assert rec["model"]["alphas"] == pytest.approx(list(np.logspace(-1, 5, 7)))
    assert rec["results_dir"] == str(a / "out") and rec["cache_dir"] == str(a / "out" / "feature_cache")
    assert rec["extractors"][0]["cache_dir"] == str(a / "out" / "feature_cache")
    first = results.load(a / "out" / "first").layer()["r"].values
    # re-run the saved file from another folder: same numbers, features from the cache
    calls = []
    orig = WordRateExtractor.compute
    monkeypatch.setattr(WordRateExtractor, "compute", lambda self, asm, s: calls.append(s) or orig(self, asm, s))
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(saved)]) == 2
    assert "--overwrite" in capsys.readouterr().err  # the run exists: refused, named by its CLI flag
    assert main(["run", str(saved), "--overwrite"]) == 0
    assert calls == []
    np.testing.assert_array_equal(results.load(a / "out" / "first").layer()["r"].values, first)
    steps = [json.loads(x) for x in (a / "out" / "first" / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in steps if "step" in x] == [0]  # replaced, not appended


def _docstring_example() -> dict:
    doc = config_mod.__doc__
    block = doc[doc.index("Example") :].split("::", 1)[1]
    block = block[: block.index("\nRelative paths")]
    return tomllib.loads(textwrap.dedent(block))


@pytest.mark.parametrize("train_keys_only", [False, True])
def test_docstring_example_runs_on_lebel_layout_data(data, tmp_path, train_keys_only):
    cfg = _docstring_example()
    assert cfg["trimming"]["train_features_start"] == 10 and cfg["downsampler"]["window"] == 3
    if train_keys_only:  # a [trimming] that sets the train keys only: the test split is aligned by grid offset
        cfg["trimming"] = {k: v for k, v in cfg["trimming"].items() if k.startswith("train")}
    # this machine has no /models/gpt2 and no cluster: word rate in-process, everything else as written
    cfg.update(assembly=str(data.assembly_path), results_dir=str(tmp_path / "res"), cluster=None,
               extractors=[{"modality": "wordrate", "config": {"include_phonemes": False}}])
    cfg.pop("cluster")
    cfg.pop("layer_idx")
    cfg["model"]["alphas_logspace"] = [-1, 5, 7]
    path = tmp_path / "example.toml"
    path.write_text(results.to_toml(cfg))
    assert main(["run", str(path)]) == 0
    m = json.loads((tmp_path / "res" / "uts03-gpt2" / "metrics.json").read_text())["layers"]["0"]
    assert m["median_score"] > 0.1  # word-rate voxels are predicted on the test story


@pytest.mark.parametrize("text, match", [
    ('assembly = "x.zarr"\nuse_train_test_split = "false"\n[[extractors]]\nmodality = "wordrate"\n',
     r"c\.toml: use_train_test_split must be true/false, got str 'false'"),
    ('assembly = 42\n[[extractors]]\nmodality = "wordrate"\n', r"c\.toml: assembly must be a string or a list of strings, got int 42"),
    ('assembly = "x.zarr"\nstories = ["a", 2.5]\n[[extractors]]\nmodality = "wordrate"\n', "stories must be"),
    ('assembly = "x.zarr"\nsave_weights = 1\n[[extractors]]\nmodality = "wordrate"\n', "save_weights must be"),
    ('assembly = "x.zarr"\ntrimming = 3\n[[extractors]]\nmodality = "wordrate"\n', r"\[trimming\] must be a table"),
    ('assembly = "x.zarr"\n[[extractors]]\nmodality = 3\n', r"\[\[extractors\]\] #1 key 'modality' must be a string"),
])
def test_config_types_are_checked(tmp_path, text, match):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(p)


@pytest.mark.parametrize("top, table, expected", [
    ("", '[model]\nn_inner_folds = "5"\n', "[model] key 'n_inner_folds' must be an integer"),
    ("", '[model]\nalpha_fdr = true\n', "[model] key 'alpha_fdr' must be a number"),
    ("", '[trimming]\ntrain_feature_start = 10\n', "[trimming] unknown trimming config key(s) 'train_feature_start'"),
    ("", '[trimming]\ntrain_features_start = "10"\n', "[trimming] trimming config key 'train_features_start' must be"),
    ('stories = ["nosuchstory"]\n', "", "stories: 'nosuchstory' is not a story of"),
    ("stories = [99]\n", "", "stories: index 99 out of range"),
    ("fir_delays = [1000]\n", "", "fir_delays: delay 1000 TRs leaves no stimulus in the kept rows of story"),
    ("fir_delays = []\n", "", "fir_delays is empty"),
    ("fir_delays = [1, 1]\n", "", "fir_delays repeats delay(s) [1]"),
    ("fir_delays = [1.5]\n", "", "fir_delays must be a list of integers"),
])
def test_cli_names_the_bad_key_in_one_line(data, tmp_path, capsys, top, table, expected):
    p = tmp_path / "c.toml"
    p.write_text(f'assembly = "{data.assembly_path}"\nresults_dir = "{tmp_path}"\n{top}{table}'
                 '[[extractors]]\nmodality = "wordrate"\n')
    assert main(["run", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and str(p) in err, err


def test_existing_run_is_not_replaced_without_overwrite(data, tmp_path):
    def trainer(**kw):
        ex = FeatureExtractorFactory.create_extractor("wordrate", None, {"include_phonemes": False}, tmp_path / "c")
        return AbstractTrainer(data.assembly(), [ex], model=NestedCVModel(alphas=np.logspace(-1, 5, 7)),
                               results_dir=tmp_path, run_name="same", **kw)

    trainer().train()
    before = (tmp_path / "same" / "results.zarr").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="overwrite=True"):
        trainer().train()
    log = tmp_path / "same" / "log.jsonl"
    n_lines = len(log.read_text().splitlines())
    assert (tmp_path / "same" / "results.zarr").stat().st_mtime_ns == before
    trainer(overwrite=True).train()
    assert (tmp_path / "same" / "results.zarr").stat().st_mtime_ns != before
    assert len(log.read_text().splitlines()) == n_lines  # a new log, not appended to the old one
