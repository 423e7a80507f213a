"""Write an assembly as a LITcoder-style pickle (what the tutorials' ``load_assembly`` reads).

The LITcoder tutorials start from ``load_assembly("assembly_lebel_uts03.pkl")``, a
``pickle.dump`` of LITcoder's ``encoding.assembly.assemblies.SimpleNeuroidAssembly``
whose ``story_data`` maps each story to an ``encoding.assembly.story_data.StoryData``.
:func:`write_litcoder_pickle` writes a scalenc assembly (e.g. the synthetic one) in that
shape, so the tutorials run here unchanged; LITcoder itself is not needed: stand-in
classes with LITcoder's module and class names exist in ``sys.modules`` only while
pickling. scalenc reads such pickles back with its restricted unpickler
(:func:`scalenc.assembly.legacy.import_pickle`).

Fields per story: ``brain_data`` (n_tr, n_voxels) float32 (the repeat mean for a
repeated story), ``tr_times`` the feature grid (:meth:`Assembly.tr_times`), ``data_times``
and ``words`` one entry per word (LITcoder keeps one time per word: the word's midpoint),
``stimuli`` the words, ``split_indices`` the word index where each TR after the first
starts, ``word_rates`` (n_grid, 1) words per TR, ``audio_path``.
"""
from __future__ import annotations

import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np

_MODULES = ("encoding", "encoding.assembly", "encoding.assembly.story_data", "encoding.assembly.assemblies")


class StoryData:  # module and name set to LITcoder's while pickling
    def __init__(self, **fields):
        self.__dict__.update(fields)


class SimpleNeuroidAssembly:  # module and name set to LITcoder's while pickling
    def __init__(self, stories: list[str], story_data: dict, validation_method: str, is_volume: bool):
        self.stories = stories
        self.story_data = story_data
        self.validation_method = validation_method
        self.is_volume = is_volume
        self.data = np.vstack([story_data[s].brain_data for s in stories])
        self.dims = ("presentation", "neuroid")
        self.shape = self.data.shape


def _story(assembly, story: str) -> StoryData:
    w = assembly.words(story)
    words = [str(x) for x in w["word"].values]
    times = (np.asarray(w["start"].values, np.float64) + np.asarray(w["end"].values, np.float64)) / 2
    grid = np.asarray(assembly.tr_times(story).values, np.float64)
    tr = float(np.median(np.diff(grid)))
    edges = np.append(grid - tr / 2, grid[-1] + tr / 2)
    rates = np.histogram(times, bins=edges)[0].astype(np.float64)[:, None]
    return StoryData(name=story, brain_data=np.asarray(assembly.bold(story).values, np.float32), stimuli=list(words),
                     split_indices=np.searchsorted(times, (grid + tr / 2)[:-1]).tolist(), tr_times=grid,
                     data_times=times, temporal_baseline=None, word_rates=rates, words=words, mask_indices=None,
                     audio_path=assembly.audio_path(story))


def write_litcoder_pickle(assembly, path: str | os.PathLike, *, stories=None) -> Path:
    """Pickle ``assembly`` (a :class:`scalenc.assembly.Assembly`) as LITcoder does.

    Parameters
    ----------
    assembly : Assembly
    path : path-like
        The ``.pkl`` to write (written to a temporary name, then renamed).
    stories : list of str, optional
        Default: all, with the test stories last (LITcoder's ``validation_method="outer"``
        holds out the last story).

    Returns
    -------
    Path
    """
    path = Path(path)
    if stories is None:
        test = [s for s in assembly.stories if s in assembly.test_stories]
        stories = [s for s in assembly.stories if s not in test] + test
    data = {s: _story(assembly, s) for s in stories}
    added = [m for m in _MODULES if m not in sys.modules]
    saved = {c: (c.__module__, c.__qualname__) for c in (StoryData, SimpleNeuroidAssembly)}
    try:
        for m in added:
            sys.modules[m] = types.ModuleType(m)
        sys.modules["encoding.assembly.story_data"].StoryData = StoryData
        sys.modules["encoding.assembly.assemblies"].SimpleNeuroidAssembly = SimpleNeuroidAssembly
        StoryData.__module__ = "encoding.assembly.story_data"
        SimpleNeuroidAssembly.__module__ = "encoding.assembly.assemblies"
        obj = SimpleNeuroidAssembly(list(stories), data, "outer", False)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(obj, f, protocol=4)
        os.replace(tmp, path)
    finally:
        for c, (mod, qual) in saved.items():
            c.__module__, c.__qualname__ = mod, qual
        for m in added:
            sys.modules.pop(m, None)
    return path


__all__ = ["write_litcoder_pickle"]
