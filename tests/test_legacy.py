"""LITcoder pickle import: restricted unpickling (no LITcoder, no pickled code run), mapping
of every kept field onto a scalenc assembly, grid-offset inference, refusals and errors."""
from __future__ import annotations

import builtins
import hashlib
import io
import os
import pickle
import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest

from scalenc.assembly import Assembly, AssemblyError, load_assembly
from scalenc.assembly.legacy import (
    LegacyAssembly,
    LegacyStoryData,
    PickleImportError,
    RestrictedUnpickler,
    import_pickle,
    read_pickle,
)

TR = 2.0


# --------------------------------------------------------------------------------------
# a fake LITcoder, present in sys.modules only while pickling
def _fake_litcoder(top: str, story_module: str):
    """Modules and classes shaped like LITcoder's (``<top>.assembly.<story_module>.StoryData`` and
    ``<top>.assembly.assemblies.SimpleNeuroidAssembly``)."""

    @dataclass
    class StoryData:
        name: str
        brain_data: np.ndarray
        stimuli: list
        split_indices: list
        tr_times: np.ndarray
        data_times: np.ndarray
        temporal_baseline: np.ndarray | None = None
        word_rates: np.ndarray | None = None
        words: list | None = None
        mask_indices: np.ndarray | None = None
        audio_path: str | None = None

    class SimpleNeuroidAssembly:
        def __init__(self, story_data_list, validation_method, is_volume):
            self.stories = [s.name for s in story_data_list]
            self.story_data = {s.name: s for s in story_data_list}
            self.validation_method = validation_method
            self.is_volume = is_volume
            self.data = np.vstack([s.brain_data for s in story_data_list])
            self.dims = ("presentation", "neuroid")
            self.shape = self.data.shape
            self.coords = {
                "story_id": {"dim": "presentation",
                             "values": np.repeat(self.stories, [len(s.stimuli) for s in story_data_list])},
                "stimulus_id": {"dim": "presentation",
                                "values": np.concatenate([np.arange(len(s.stimuli)) for s in story_data_list])},
            }

    names = [top, f"{top}.assembly", f"{top}.assembly.{story_module}", f"{top}.assembly.assemblies"]
    if top != "encoding":  # e.g. litcoder_core.encoding.assembly.story_data
        names = [top, f"{top}.encoding", f"{top}.encoding.assembly", f"{top}.encoding.assembly.{story_module}",
                 f"{top}.encoding.assembly.assemblies"]
    mods = {n: types.ModuleType(n) for n in names}
    sd_mod, asm_mod = mods[names[-2]], mods[names[-1]]
    StoryData.__module__, StoryData.__qualname__ = sd_mod.__name__, "StoryData"
    SimpleNeuroidAssembly.__module__, SimpleNeuroidAssembly.__qualname__ = asm_mod.__name__, "SimpleNeuroidAssembly"
    sd_mod.StoryData = StoryData
    asm_mod.SimpleNeuroidAssembly = SimpleNeuroidAssembly
    return mods, StoryData, SimpleNeuroidAssembly


def _story(rng, name, *, n_tr=12, n_vox=5, extra_grid=15, n_words=30, audio=None, mask=None,
           words=True, dtype=np.float64):
    n_grid = n_tr + extra_grid
    tr_times = np.arange(n_grid) * TR - 10 + TR / 2  # LeBel: centre of simulated trigger k
    t_end = tr_times[-1]
    data_times = np.sort(rng.uniform(0.0, t_end, n_words))
    wl = [f"w{i}_{name}" for i in range(n_words)]
    split = np.searchsorted(data_times, (tr_times + TR / 2)[:-1]).tolist()
    edges = np.append(tr_times, tr_times[-1] + TR)
    rates = np.array([[float(((data_times >= a) & (data_times < b)).sum())] for a, b in zip(edges[:-1], edges[1:])])
    return dict(name=name, brain_data=rng.standard_normal((n_tr, n_vox)).astype(dtype),
                stimuli=[" ".join(wl[max(0, i - 3):i + 1]) for i in range(n_words)], split_indices=split,
                tr_times=tr_times, data_times=data_times, word_rates=rates, words=wl if words else None,
                mask_indices=mask, audio_path=audio)


def _dump(path, specs, *, protocol=5, validation_method="outer", is_volume=False, top="encoding",
          story_module="story_data", after=None):
    """Pickle a LITcoder-shaped assembly with a fake LITcoder, then remove the fake modules.
    ``after(assembly)`` may edit the assembly after construction."""
    mods, StoryData, SimpleNeuroidAssembly = _fake_litcoder(top, story_module)
    saved = {n: sys.modules.get(n) for n in mods}
    sys.modules.update(mods)
    try:
        asm = SimpleNeuroidAssembly([StoryData(**s) for s in specs], validation_method, is_volume)
        if after is not None:
            after(asm)
        with open(path, "wb") as f:
            pickle.dump(asm, f, protocol=protocol)
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    assert not any(n in sys.modules for n in mods if saved[n] is None)
    return path


def _specs(rng, **kw):
    mask = np.array([3, 8, 9, 20, 41])
    return [_story(rng, "alpha", audio="/data/alpha.wav", mask=mask, **kw),
            _story(rng, "beta", n_tr=10, mask=mask, **kw),
            _story(rng, "wheretheressmoke", n_tr=9, mask=mask, **kw)]


# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_round_trip_all_kept_fields(tmp_path, protocol):
    rng = np.random.default_rng(protocol)
    specs = _specs(rng)
    p = _dump(tmp_path / "UTS03.pkl", specs, protocol=protocol)
    assert "encoding" not in sys.modules
    out = import_pickle(p, tmp_path / "UTS03.zarr")
    assert "encoding" not in sys.modules and out == tmp_path / "UTS03.zarr"
    a = Assembly(out)
    assert a.stories == ["alpha", "beta", "wheretheressmoke"]
    assert a.test_stories == ["wheretheressmoke"] and a.train_stories == ["alpha", "beta"]
    assert a.tr_seconds == TR and a.subject == "UTS03" and a.dataset == "litcoder" and a.n_voxels == 5
    np.testing.assert_array_equal(a.voxels["mask_indices"].values, [3, 8, 9, 20, 41])
    for s in specs:
        name = s["name"]
        np.testing.assert_array_equal(a.bold(name).values, s["brain_data"].astype(np.float32))
        w = a.words(name)
        assert [str(x) for x in w["word"].values] == s["words"]
        np.testing.assert_array_equal(w["start"].values, s["data_times"])
        np.testing.assert_array_equal(w["end"].values, s["data_times"])
        np.testing.assert_array_equal(a.tr_times(name).values, s["tr_times"])
        assert a.grid_offset(name) == 10
        sd = a.story_data[name]
        np.testing.assert_array_equal(sd.split_indices, s["split_indices"])
        np.testing.assert_array_equal(sd.word_rates, s["word_rates"][:, 0])
        np.testing.assert_array_equal(sd.data_times, s["data_times"])
        assert sd.audio_path == s["audio_path"]
    assert a.audio_path("alpha") == "/data/alpha.wav" and a.audio_path("beta") is None
    assert a.attrs["timing"]["grid_offset"] == {"alpha": 10, "beta": 10, "wheretheressmoke": 10}


def test_lebel_grid_offset_inference(tmp_path):
    rng = np.random.default_rng(1)
    spec = _story(rng, "s", n_tr=20, extra_grid=15)
    p = _dump(tmp_path / "x.pkl", [spec, _story(rng, "t", n_tr=11)])
    a = Assembly(import_pickle(p, tmp_path / "x.zarr"))
    assert a.grid_offset("s") == 10
    ds = a.tree["stories/s"].to_dataset()
    assert ds.sizes["tr"] == 20 and ds.sizes["tr_grid"] == 35
    np.testing.assert_array_equal(ds["tr_time"].values, spec["tr_times"][10:-5])
    assert ds["tr_time"].values[0] == 11.0  # grid point 10: 10 * 2 - 10 + 1


def test_inner_validation_equal_grid_and_variants(tmp_path):
    """"inner": no test story; equal TR/row counts -> offset 0; litcoder_core module path,
    base_processor.StoryData and words=None (stimuli used) are accepted."""
    rng = np.random.default_rng(2)
    specs = [_story(rng, f"run{i}", n_tr=8, extra_grid=0, words=False) for i in range(2)]
    p = _dump(tmp_path / "sub-01.pkl", specs, protocol=4, validation_method="inner",
              top="litcoder_core", story_module="base_processor")
    a = Assembly(import_pickle(p, tmp_path / "o.zarr", subject="S9", dataset="narratives"))
    assert a.test_stories == [] and a.train_stories == ["run0", "run1"]
    assert a.subject == "S9" and a.dataset == "narratives"
    assert a.grid_offset("run0") == 0
    assert [str(x) for x in a.words("run1")["word"].values] == specs[1]["stimuli"]
    assert "mask_indices" not in a.voxels


def test_unknown_grid_shape_needs_grid_offset(tmp_path):
    rng = np.random.default_rng(3)
    p = _dump(tmp_path / "g.pkl", [_story(rng, "odd", n_tr=10, extra_grid=4)])
    with pytest.raises(PickleImportError, match=r"story 'odd' has 10 response rows but 14 TR times.*grid_offset="):
        import_pickle(p, tmp_path / "g.zarr")
    assert not (tmp_path / "g.zarr").exists()
    a = Assembly(import_pickle(p, tmp_path / "g.zarr", grid_offset=3, test_stories=[]))
    assert a.grid_offset("odd") == 3 and a.test_stories == []


def test_read_pickle_description(tmp_path):
    rng = np.random.default_rng(4)
    specs = _specs(rng)
    d = read_pickle(_dump(tmp_path / "d.pkl", specs, protocol=2, is_volume=True,
                          story_module="assembly_generator"))
    assert d["stories"] == ["alpha", "beta", "wheretheressmoke"]
    assert d["validation_method"] == "outer" and d["is_volume"] is True
    b = d["story_data"]["beta"]
    assert b["brain_data"].shape == (10, 5) and b["tr_times"].shape == (25,)
    assert b["words"] == specs[1]["words"] and b["split_indices"].dtype == np.int64
    assert set(b) == {"name", "brain_data", "stimuli", "split_indices", "tr_times", "data_times", "word_rates",
                      "words", "mask_indices", "audio_path"}


def test_load_assembly_on_pkl(tmp_path):
    rng = np.random.default_rng(5)
    p = _dump(tmp_path / "lebel.pkl", _specs(rng))
    a = load_assembly(p)
    assert isinstance(a, Assembly) and a.path == tmp_path / "lebel.zarr"
    assert a.test_stories == ["wheretheressmoke"] and a.n_voxels == 5
    assert isinstance(load_assembly(str(p)), Assembly)  # second call reuses the store
    # a newer pickle is re-imported rather than served stale
    specs = _specs(np.random.default_rng(6))
    _dump(p, specs)
    t = a.path.stat().st_mtime + 10
    os.utime(p, (t, t))
    b = load_assembly(p)
    np.testing.assert_allclose(b.bold(b.stories[0]).values, np.asarray(specs[0]["brain_data"], np.float32))
    c = load_assembly(p, import_to=tmp_path / "elsewhere" / "x.zarr")
    assert c.path == tmp_path / "elsewhere" / "x.zarr"
    src = b.attrs["source_pickle"]
    assert src["path"] == str(p.resolve()) and src["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
    # a touched pickle with the same bytes is not re-imported
    stamp = (b.path / "zarr.json").stat().st_mtime_ns
    t = p.stat().st_mtime + 20
    os.utime(p, (t, t))
    load_assembly(p)
    assert (b.path / "zarr.json").stat().st_mtime_ns == stamp


def test_load_assembly_never_replaces_a_store_it_did_not_import(tmp_path):
    """x.zarr built from something else (here by lebel-like writing) next to a newer x.pkl:
    refused, the store untouched; a store imported from another pickle likewise."""
    rng = np.random.default_rng(7)
    other = import_pickle(_dump(tmp_path / "other.pkl", _specs(rng)), tmp_path / "x.zarr")
    built = Assembly(other).save(tmp_path / "y.zarr")  # a store with no pickle provenance
    p = _dump(tmp_path / "y.pkl", _specs(np.random.default_rng(8)))
    t = built.stat().st_mtime + 10
    os.utime(p, (t, t))
    before = Assembly(built).bold("alpha").values
    with pytest.raises(AssemblyError, match=r"y\.zarr exists and was not imported from a pickle, not from .*y\.pkl; "
                                            r"refusing to replace it"):
        load_assembly(p)
    np.testing.assert_array_equal(Assembly(built).bold("alpha").values, before)
    q = _dump(tmp_path / "x.pkl", _specs(np.random.default_rng(9)))
    with pytest.raises(AssemblyError, match=r"x\.zarr exists and was imported from .*other\.pkl, not from .*x\.pkl"):
        load_assembly(q)
    assert load_assembly(p, import_to=tmp_path / "y_import.zarr").attrs["source_pickle"]["path"] == str(p.resolve())


# --------------------------------------------------------------------------------------
# refusals: pickles must never run code
class _Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


@pytest.mark.parametrize("kind", ["system", "eval"])
def test_malicious_pickle_refused_and_not_run(tmp_path, kind):
    marker = tmp_path / f"pwned_{kind}"
    if kind == "system":
        evil, glob = _Evil(os.system, f"touch {marker}"), f"{os.system.__module__}.system"
    else:
        evil, glob = _Evil(builtins.eval, f"open({str(marker)!r}, 'w').close()"), "builtins.eval"
    rng = np.random.default_rng(6)
    payload = {"stories": ["a"], "story_data": {"a": _story(rng, "a")}, "validation_method": evil}
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps(payload, protocol=4))
    for call in (lambda: read_pickle(p), lambda: import_pickle(p, tmp_path / "evil.zarr"),
                 lambda: load_assembly(p)):
        with pytest.raises(PickleImportError) as ei:
            call()
        assert str(p) in str(ei.value) and glob in str(ei.value)
    assert not marker.exists()
    assert not (tmp_path / "evil.zarr").exists() and list(tmp_path.iterdir()) == [p]


@pytest.mark.parametrize("module,name", [("os", "system"), ("subprocess", "Popen"), ("builtins", "getattr"),
                                         ("builtins", "__import__"), ("pandas.core.frame", "DataFrame"),
                                         ("torch._utils", "_rebuild_tensor_v2"), ("numpy", "load"),
                                         ("encoding.features.factory", "FeatureExtractorFactory")])
def test_other_globals_refused(module, name):
    data = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X\x01\x00\x00\x00x\x85R."
    with pytest.raises(PickleImportError, match=rf"<bytes>: refused global {module}\.{name}"):
        RestrictedUnpickler(io.BytesIO(data), source="<bytes>").load()


def test_numpy_objects_load_with_every_protocol():
    objs = [np.arange(6, dtype=np.float32).reshape(2, 3), np.linspace(0, 1, 4), np.arange(3, dtype=np.int64),
            np.array([True, False]), np.array(["ab", "c"]), np.float64(1.5), np.float32(2.5), np.int64(-3),
            np.bool_(True), np.str_("hé"), [np.str_("a"), np.str_("bc")], np.dtype("f4"), np.dtype("<U3"),
            np.zeros((3, 4))[:, ::2], np.asfortranarray(np.ones((2, 3))), np.array(["x", 1], dtype=object),
            {"s": {1, 2}, "c": 1j, "b": b"\x00\xff"}]
    for proto in (2, 3, 4, 5):
        for o in objs:
            back = RestrictedUnpickler(io.BytesIO(pickle.dumps(o, protocol=proto))).load()
            if isinstance(o, np.ndarray):
                assert back.dtype == o.dtype and back.shape == o.shape
                np.testing.assert_array_equal(back, o)
            else:
                assert back == o and type(back) is type(o)


def test_numpy1_module_names_accepted():
    a = np.arange(4, dtype=np.float32)
    data = pickle.dumps(a, protocol=2)
    assert b"numpy._core.multiarray\n_reconstruct" in data
    old = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    np.testing.assert_array_equal(RestrictedUnpickler(io.BytesIO(old)).load(), a)


def test_stand_ins_hold_state_only(tmp_path):
    rng = np.random.default_rng(7)
    p = _dump(tmp_path / "s.pkl", [_story(rng, "a")])
    with open(p, "rb") as f:
        obj = RestrictedUnpickler(f).load()
    assert type(obj) is LegacyAssembly and type(obj.story_data["a"]) is LegacyStoryData
    assert obj.data.shape == (12, 5) and obj.stories == ["a"]


# --------------------------------------------------------------------------------------
# malformed input
def test_truncated_pickle(tmp_path):
    rng = np.random.default_rng(8)
    full = _dump(tmp_path / "full.pkl", _specs(rng)).read_bytes()
    p = tmp_path / "half.pkl"
    p.write_bytes(full[: len(full) // 2])
    with pytest.raises(PickleImportError, match=rf"{p}: truncated or corrupt"):
        import_pickle(p, tmp_path / "half.zarr")
    assert not (tmp_path / "half.zarr").exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["full.pkl", "half.pkl"]


def test_plain_dict_is_not_an_assembly(tmp_path):
    p = tmp_path / "d.pkl"
    p.write_bytes(pickle.dumps({"weights": np.zeros(3), "alpha": 1.0}))
    with pytest.raises(PickleImportError, match=rf"{p}: not a LITcoder assembly.*dict with keys \['weights', 'alpha'\]"):
        import_pickle(p, tmp_path / "d.zarr")
    assert not (tmp_path / "d.zarr").exists()


def test_inconsistent_voxel_counts(tmp_path):
    rng = np.random.default_rng(9)
    wide = rng.standard_normal((12, 6))

    def widen(asm):  # LITcoder's own vstack would refuse this at construction; edit afterwards
        asm.story_data["b"].brain_data = wide

    p = _dump(tmp_path / "v.pkl", [_story(rng, "a"), _story(rng, "b")], after=widen)
    with pytest.raises(PickleImportError, match=rf"{p}: story 'b' has 6 voxels but story 'a' has 5"):
        import_pickle(p, tmp_path / "v.zarr")
    assert not (tmp_path / "v.zarr").exists()
    assert issubclass(PickleImportError, AssemblyError)


def test_story_field_errors_name_story_and_numbers(tmp_path):
    rng = np.random.default_rng(10)
    bad = _story(rng, "b")
    bad["words"] = bad["words"][:-2]
    p = _dump(tmp_path / "w.pkl", [_story(rng, "a"), bad])
    with pytest.raises(PickleImportError, match=r"story 'b': 28 words but 30 data_times"):
        read_pickle(p)
    bad = _story(rng, "c")
    bad["brain_data"] = bad["brain_data"][0]
    with pytest.raises(PickleImportError, match=r"story 'c': brain_data must be 2-D .*shape \(5,\)"):
        read_pickle(_dump(tmp_path / "b.pkl", [bad]))
    m1, m2 = _story(rng, "a", mask=np.arange(5)), _story(rng, "b", mask=np.arange(5) + 1)
    with pytest.raises(PickleImportError, match=r"story 'b' has different mask_indices"):
        import_pickle(_dump(tmp_path / "m.pkl", [m1, m2]), tmp_path / "m.zarr")
    assert not (tmp_path / "m.zarr").exists()


def test_existing_output_kept_without_overwrite(tmp_path):
    rng = np.random.default_rng(11)
    p = _dump(tmp_path / "e.pkl", [_story(rng, "a")])
    out = import_pickle(p, tmp_path / "e.zarr")
    with pytest.raises(FileExistsError):
        import_pickle(p, out)
    assert Assembly(import_pickle(p, out, overwrite=True, test_stories=[])).test_stories == []
