"""BIDS / Narratives / Le Petit Prince readers on synthetic trees with known ground truth."""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")
pytest.importorskip("nilearn")

from scalenc.assembly import Assembly, bids, lpp, narratives  # noqa: E402
from scalenc.assembly.bids import BIDSError, Run  # noqa: E402
from scalenc.cli import main  # noqa: E402
from scalenc.synthetic.bids_synthetic import MOTION, synthetic_bids  # noqa: E402

ALPHAS = np.logspace(-1, 5, 7)


@pytest.fixture(scope="module")
def narr(tmp_path_factory):
    return synthetic_bids(tmp_path_factory.mktemp("narr") / "ds002345", "narratives", n_stories=5,
                          words_per_story=160, surface=True, seed=1)


@pytest.fixture(scope="module")
def lpp_ds(tmp_path_factory):
    return synthetic_bids(tmp_path_factory.mktemp("lpp") / "ds003643", "lpp", words_per_story=70, seed=2)


def _func(ds):
    sub = ds.subject
    return ds.root / "derivatives" / ("fmriprep/" if ds.layout == "narratives" else "") / sub / "func"


def _nifti(ds, story):
    pat = f"*task-{story}_*desc-preproc_bold.nii.gz" if ds.layout == "narratives" else "*desc-preproc_bold.nii.gz"
    files = sorted(_func(ds).glob(pat))
    return files[0] if ds.layout == "narratives" else files[int(story.removeprefix("section")) - 1]


def _reference_clean(ds, story, skip=0):
    """Independent float64 reference: least-squares residual on [1, t, six motion], z-scored."""
    img = nib.load(_nifti(ds, story))
    Y = np.asarray(img.dataobj, np.float64).reshape(-1, img.shape[3])[np.flatnonzero(ds.mask.ravel())].T[skip:]
    stem = _nifti(ds, story).name.split("_space-")[0]
    tsv = np.genfromtxt(_func(ds) / f"{stem}_desc-confounds_timeseries.tsv", delimiter="\t", names=True)
    M = np.column_stack([tsv[m] for m in MOTION])[skip:]
    n = Y.shape[0]
    D = np.column_stack([np.ones(n), np.arange(n), M])
    R = Y - D @ np.linalg.lstsq(D, Y, rcond=None)[0]
    return (R - R.mean(0)) / R.std(0)


def _fit(asm, ds, tmp_path):
    from scalenc.features import FeatureExtractorFactory
    from scalenc.models import NestedCVModel
    from scalenc.trainer import AbstractTrainer

    make = FeatureExtractorFactory.create_extractor
    ex = [make("wordrate", None, {"include_phonemes": False}, tmp_path / "cache"),
          make("embeddings", str(ds.embeddings_path), {}, tmp_path / "cache")]
    tr = AbstractTrainer(asm, ex, None, NestedCVModel(alphas=ALPHAS, seed=0, dtype="float64"), [1, 2, 3, 4], None,
                         results_dir=tmp_path / "res", run_name="bids", logger_backend="local")
    return tr.train()


def _check_recovery(m, asm, ds):
    test = asm.test_stories[0]
    y = asm.bold(test).values.astype(np.float64)
    sig = ds.signal[test]
    ceiling = np.array([np.corrcoef(sig[:, v], y[:, v])[0, 1] if ds.driver[v] != "noise" else 0.0
                        for v in range(y.shape[1])])
    r = np.asarray(m["correlations"])
    driven = ds.driver != "noise"
    # driven voxels reach most of their ceiling; noise voxels stay near 0
    assert np.median(r[driven]) > 0.8 * np.median(ceiling[driven]), (np.median(r[driven]), np.median(ceiling[driven]))
    # (measured: Narratives 0.41 of 0.43, LPP 0.52 of 0.59; noise voxels -0.03)
    assert np.median(ceiling[driven]) > 0.35
    assert abs(np.median(r[~driven])) < 0.1
    return np.median(r[driven]), np.median(ceiling[driven])


# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_narratives_build_clean_and_pipeline_recovers_truth(narr, tmp_path):
    with pytest.warns(UserWarning, match=r"align.json: 5 unaligned words dropped \(155 kept\)"):
        out = narratives.build(narr.root, "001", narr.stories, tmp_path / "n.zarr", test_stories=["milkyway"],
                               confounds="motion", detrend=True, progress=False)
    asm = Assembly(out)
    assert asm.stories == ["pieman", "tunnel", "lucy", "prettymouth", "milkyway"] and asm.tr_seconds == 1.5
    assert asm.test_stories == ["milkyway"] and asm.dataset == "narratives"
    for s in asm.stories:
        np.testing.assert_allclose(asm.bold(s).tr_time.values, narr.tr_time[s], atol=1e-9)
        np.testing.assert_allclose(asm.bold(s).values, _reference_clean(narr, s), atol=2e-4)
        assert asm.words(s).sizes["word"] == 160 - narr.n_unaligned[s] == 155
    assert asm.tr_times("pieman").values[0] == pytest.approx(0.75 - 15.0)  # TR centre - story onset (events.tsv)
    # voxel coordinates for maps
    vs = asm.voxel_space
    assert vs["kind"] == "volume" and vs["shape"] == list(narr.mask.shape) and vs["order"] == "C"
    np.testing.assert_allclose(vs["affine"], narr.affine)
    np.testing.assert_array_equal(asm.voxels["mask_indices"].values, np.flatnonzero(narr.mask.ravel()))
    assert asm.attrs["timing"]["onsets"]["pieman"] == 15.0 and asm.attrs["timing"]["unaligned_words"]["lucy"] == 5
    assert vs["space"] == "MNI152NLin2009cAsym"  # from the run's file name
    # the whole pipeline recovers the truth, and its report draws the maps in the run's volume space
    r, ceil = _check_recovery(_fit(asm, narr, tmp_path), asm, narr)
    assert (tmp_path / "res" / "bids" / "maps" / "r.png").is_file()
    from scalenc.plot.report import RunSummary

    from scalenc.plot.maps import BrainSpace

    space = BrainSpace.from_voxels(RunSummary(tmp_path / "res" / "bids").voxels())
    assert space.kind == "volume" and space.space == "MNI152NLin2009cAsym"
    assert space.volume_shape == tuple(narr.mask.shape)
    np.testing.assert_array_equal(space.index, np.flatnonzero(narr.mask.ravel()))
    # without confound cleaning the nuisance (3x the signal) hides most of it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = Assembly(narratives.build(narr.root, "001", narr.stories, tmp_path / "raw.zarr", test_stories=["milkyway"],
                                        progress=False))
    m_raw = _fit(raw, narr, tmp_path / "raw")
    # without confound cleaning the nuisance (5x the signal SD) hides half of it (measured 0.20 vs 0.41)
    assert np.median(np.asarray(m_raw["correlations"])[narr.driver != "noise"]) < r - 0.12


@pytest.mark.slow
def test_lpp_sections_timing_words_and_pipeline(lpp_ds, tmp_path):
    out = lpp.build(lpp_ds.root, "EN001", out=tmp_path / "l.zarr", test_stories=["section9"], confounds="motion",
                    detrend=True, expected_volumes=[lpp_ds.n_volumes[f"section{k}"] for k in range(1, 10)],
                    progress=False)
    asm = Assembly(out)
    assert asm.stories == [f"section{k}" for k in range(1, 10)] and asm.tr_seconds == 2.0
    for s in asm.stories:
        # 4 volumes dropped; volume k at (k + 0.5) * 2 - 8 s: the first kept one at 1.0 s
        assert asm.bold(s).shape[0] == lpp_ds.n_volumes[s] - 4
        assert asm.bold(s).tr_time.values[0] == pytest.approx(1.0)
        np.testing.assert_allclose(asm.bold(s).values, _reference_clean(lpp_ds, s, skip=4), atol=2e-4)
    # words of section 3 from the CSV (leading index column) == from its TextGrid
    tg = Assembly(lpp.build(lpp_ds.root, "EN001", out=tmp_path / "t.zarr", words_from="textgrid", sections=[3],
                            progress=False))
    a, b = asm.words("section3"), tg.words("section3")
    assert list(a.word.values) == list(b.word.values) and a.sizes["word"] == 70
    np.testing.assert_allclose(a.start.values, b.start.values, atol=1e-6)
    assert asm.audio_path("section2").endswith("task-lppEN_section-2.wav")
    _check_recovery(_fit(asm, lpp_ds, tmp_path), asm, lpp_ds)


def test_gifti_hemispheres(narr, tmp_path):
    with pytest.warns(UserWarning, match="unaligned"):
        asm = Assembly(narratives.build(narr.root, "sub-001", ["pieman", "tunnel"], tmp_path / "g.zarr",
                                        space="fsaverage6", progress=False))
    assert asm.n_voxels == 80 and asm.voxel_space["mesh"] == "fsaverage6"
    assert list(asm.voxels["hemi"].values[[0, 39, 40, 79]]) == ["L", "L", "R", "R"]
    np.testing.assert_array_equal(asm.voxels["vertex"].values[38:42], [38, 39, 0, 1])
    # the GIFTI pair holds the first 80 mask voxels: same numbers as the volume read, z-scored
    img = nib.load(_nifti(narr, "tunnel"))
    Y = np.asarray(img.dataobj, np.float64).reshape(-1, img.shape[3])[np.flatnonzero(narr.mask.ravel())[:80]].T
    np.testing.assert_allclose(asm.bold("tunnel").values, (Y - Y.mean(0)) / Y.std(0), atol=2e-5)
    assert asm.bold("tunnel").hemi.values[0] == "L"
    # maps: vertex i of the right hemisphere is fsaverage6 vertex 40962 + i
    from scalenc.plot.maps import BrainSpace

    space = BrainSpace.from_voxels(asm.voxels.assign_attrs(voxel_space=asm.voxel_space))
    assert space.kind == "surface" and space.space == "fsaverage6"
    np.testing.assert_array_equal(space.index[[0, 39, 40, 79]], [0, 39, 40962, 40962 + 39])


def test_volume_to_fsaverage5_projection_chunked_over_time(narr, tmp_path):
    from nilearn import datasets, surface

    # a grid that covers the brain (18 mm voxels), 20 volumes, projected 7 volumes at a time
    aff = np.diag([18.0, 18.0, 18.0, 1.0])
    aff[:3, 3] = [-90.0, -126.0, -72.0]
    data = np.random.default_rng(0).standard_normal((11, 13, 11, 20)).astype(np.float32) + 5
    f = tmp_path / "sub-01_task-pieman_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    nib.save(nib.Nifti1Image(data, aff), f)
    f.with_name(f.name.replace(".nii.gz", ".json")).write_text(json.dumps({"RepetitionTime": 1.5}))
    words = tmp_path / "words.tsv"
    words.write_text("word\tonset\toffset\nonce\t1.0\t1.4\nupon\t1.5\t1.9\na\t2.0\t2.1\n")
    run = Run(story="pieman", bold=f, words=words, onset=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        asm = Assembly(bids.build([run], tmp_path / "s.zarr", subject="sub-01", surface="fsaverage5", zscore=False,
                                  time_block=7, progress=False))
    assert asm.n_voxels == 20484 and asm.voxel_space["mesh"] == "fsaverage5"
    pial = datasets.load_fsaverage("fsaverage5")["pial"]
    want = np.concatenate([surface.vol_to_surf(nib.load(f), pial.parts[h]).T for h in ("left", "right")], axis=1)
    got = asm.bold("pieman").values
    assert got.shape == (20, 20484) and np.isfinite(got).mean() > 0.95
    np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-5, atol=1e-5, equal_nan=True)


# ------------------------------------------------------------------------------- bad input
def _copy(ds, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(ds.root, root)
    return root


def _nothing_written(tmp_path, name="x.zarr"):
    assert not (tmp_path / name).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{name}")]


def test_tr_sidecar_mismatch_names_both(narr, tmp_path):
    with pytest.raises(BIDSError, match=r"run 'pieman': .*pieman.*_bold\.json: RepetitionTime 1\.5 s disagrees "
                                        r"with tr=2\.0 s"):
        narratives.build(narr.root, "001", ["pieman"], tmp_path / "x.zarr", tr=2.0, progress=False)
    _nothing_written(tmp_path)


def test_volume_count_disagrees_with_events(narr, tmp_path):
    root = _copy(narr, tmp_path)
    f = _nifti(narr, "lucy")
    f = root / f.relative_to(narr.root)
    img = nib.load(f)
    short = nib.Nifti1Image(np.asarray(img.dataobj)[..., :40], img.affine)
    nib.save(short, f)
    need = int(np.ceil((15.0 + float(np.loadtxt(root / "sub-001/func/sub-001_task-lucy_events.tsv", skiprows=1,
                                                  usecols=1, dtype=str)[1])) / 1.5 - 1e-6))
    with pytest.raises(BIDSError, match=rf"run 'lucy': .*lucy.*preproc_bold\.nii\.gz has 40 volumes but the story "
                                        rf"needs {need} \(onset 15\.0 s"):
        narratives.build(root, "001", ["pieman", "lucy"], tmp_path / "x.zarr", progress=False)
    _nothing_written(tmp_path)
    orig = _nifti(narr, "lucy")
    mask = next(_func(narr).glob("*task-lucy_*brain_mask.nii.gz"))
    with pytest.raises(BIDSError, match=rf"run 'lucy': {orig} has \d+ volumes, expected 5"):
        bids.build([Run("lucy", orig, narr.root / "stimuli/gentle/lucy/align.json", onset=15.0, expected_volumes=5)],
                   tmp_path / "x.zarr", subject="s", mask=mask, progress=False)
    _nothing_written(tmp_path)


def test_mask_grid_mismatch_names_mask(narr, tmp_path):
    bad = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((5, 5, 5), np.uint8), narr.affine), bad)
    with pytest.raises(BIDSError, match=rf"{bad}: mask grid \(5, 5, 5\).*does not match the image .*pieman"):
        narratives.build(narr.root, "001", ["pieman"], tmp_path / "x.zarr", mask=bad, progress=False)
    shifted = tmp_path / "shifted.nii.gz"
    aff = narr.affine.copy()
    aff[0, 3] += 4
    nib.save(nib.Nifti1Image(narr.mask.astype(np.uint8), aff), shifted)
    with pytest.raises(BIDSError, match=r"shifted\.nii\.gz: mask grid"):
        narratives.build(narr.root, "001", ["pieman"], tmp_path / "x.zarr", mask=shifted, progress=False)
    _nothing_written(tmp_path)


def test_missing_run_and_missing_times(narr, lpp_ds, tmp_path):
    with pytest.raises(BIDSError, match=r"no .*task-nosuchstory.*preproc_bold"):
        narratives.build(narr.root, "001", ["pieman", "nosuchstory"], tmp_path / "x.zarr", progress=False)
    root = _copy(lpp_ds, tmp_path)
    victim = sorted((root / "derivatives/sub-EN001/func").glob("*run-*_desc-preproc_bold.nii.gz"))[4]
    victim.unlink()
    with pytest.raises(BIDSError, match=r"8 lppEN runs in space MNIColin27, expected 9"):
        lpp.build(root, "EN001", out=tmp_path / "x.zarr", progress=False)
    csv = root / "annotation/EN/lppEN_word_information.csv"
    lines = csv.read_text().splitlines()
    lines[3] = ",".join(lines[3].split(",")[:2] + ["", lines[3].split(",")[3], lines[3].split(",")[4]])
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(BIDSError, match=rf"{csv}: line 4 .* missing or non-numeric onset/offset"):
        bids.read_word_table(csv)
    # a Gentle word marked success but without times is dropped and counted too
    g = json.loads((narr.root / "stimuli/gentle/pieman/align.json").read_text())
    del g["words"][0]["start"]
    p = tmp_path / "align.json"
    p.write_text(json.dumps(g))
    words, start, end, dropped = bids.read_gentle(p)
    assert dropped == narr.n_unaligned["pieman"] + 1 and len(words) == 160 - dropped
    _nothing_written(tmp_path)


def test_failure_midway_leaves_nothing(narr, tmp_path):
    """A run that fails while streaming (unreadable confounds of the 2nd run) removes the
    partial store; an existing store is untouched."""
    root = _copy(narr, tmp_path)
    (root / "derivatives/fmriprep/sub-001/func/sub-001_task-tunnel_desc-confounds_timeseries.tsv").unlink()
    with pytest.warns(UserWarning), pytest.raises(BIDSError, match=r"tunnel.*no fMRIPrep confounds file"):
        narratives.build(root, "001", ["pieman", "tunnel"], tmp_path / "x.zarr", confounds="motion", progress=False)
    _nothing_written(tmp_path)


def test_cli_build_bids_narratives_lpp(narr, lpp_ds, tmp_path, capsys):
    func = narr.root / "derivatives/fmriprep/sub-001/func"
    table = tmp_path / "runs.tsv"
    rows = ["story\tbold\twords\tevents"]
    for s in ("pieman", "tunnel"):
        rows.append("\t".join([s, str(next(func.glob(f"*task-{s}_*preproc_bold.nii.gz"))),
                               str(narr.root / f"stimuli/gentle/{s}/align.json"),
                               str(narr.root / f"sub-001/func/sub-001_task-{s}_events.tsv")]))
    table.write_text("\n".join(rows) + "\n")
    mask = next(func.glob("*task-pieman_*brain_mask.nii.gz"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["assembly", "build", "bids", "--runs", str(table), "--subject", "sub-001", "--mask", str(mask),
                     "--out", str(tmp_path / "b.zarr"), "--tr", "1.5", "--detrend"]) == 0
        assert "pieman" in capsys.readouterr().out
        assert main(["assembly", "build", "narratives", "--root", str(narr.root), "--subject", "001", "--tasks",
                     "pieman", "--out", str(tmp_path / "n.zarr")]) == 0
        a, b = Assembly(tmp_path / "b.zarr"), Assembly(tmp_path / "n.zarr")
        ref = Assembly(narratives.build(narr.root, "001", ["pieman", "tunnel"], tmp_path / "d.zarr", detrend=True,
                                        progress=False))
        # the generic builder on a run table == the Narratives reader
        for s in ("pieman", "tunnel"):
            np.testing.assert_array_equal(a.bold(s).values, ref.bold(s).values)
            np.testing.assert_array_equal(a.words(s).start.values, ref.words(s).start.values)
        assert a.attrs["timing"]["detrend"] is True and b.attrs["timing"]["detrend"] is False
        np.testing.assert_allclose(b.bold("pieman").values.mean(0), 0, atol=1e-5)
        assert main(["assembly", "build", "lpp", "--root", str(lpp_ds.root), "--subject", "EN001", "--tr", "1.0",
                     "--out", str(tmp_path / "l.zarr")]) == 2
    assert "RepetitionTime 2.0 s disagrees with tr=1.0 s" in capsys.readouterr().err
    assert not (tmp_path / "l.zarr").exists()


def test_mask_as_nilearn_masker_equals_mask_file(narr, tmp_path):
    from nilearn.maskers import NiftiMasker

    mask = next(_func(narr).glob("*task-pieman_*brain_mask.nii.gz"))
    run = Run("pieman", _nifti(narr, "pieman"), narr.root / "stimuli/gentle/pieman/align.json",
              events=narr.root / "sub-001/func/sub-001_task-pieman_events.tsv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = Assembly(bids.build([run], tmp_path / "a.zarr", subject="s", mask=mask, zscore=False, time_block=9,
                                progress=False))
        b = Assembly(bids.build([run], tmp_path / "b.zarr", subject="s", mask=NiftiMasker(mask_img=str(mask)).fit(),
                                zscore=False, progress=False))
    img = nib.load(_nifti(narr, "pieman"))
    want = np.asarray(img.dataobj)[narr.mask].T  # nibabel + boolean mask: C-order voxels
    np.testing.assert_array_equal(a.bold("pieman").values, want)
    np.testing.assert_array_equal(b.bold("pieman").values, want)


def test_word_readers_agree_and_skip_non_words(tmp_path):
    from scalenc.assembly.textgrid import Interval, Tier
    from scalenc.synthetic.writers import write_textgrid

    tg = tmp_path / "s.TextGrid"
    write_textgrid(tg, [Tier("words", "IntervalTier", [Interval(0, 0.5, "#"), Interval(0.5, 0.9, "once"),
                                                        Interval(0.9, 1.0, "sil"), Interval(1.0, 1.3, "upon"),
                                                        Interval(1.3, 2.0, "")])], 0, 2)
    tsv = tmp_path / "s.tsv"
    tsv.write_text("word\tstart\tend\nupon\t1.0\t1.3\nonce\t0.5\t0.9\n")  # unsorted: sorted by onset
    gentle = tmp_path / "align.json"
    gentle.write_text(json.dumps({"words": [{"word": "once", "case": "success", "start": 0.5, "end": 0.9},
                                            {"word": "a", "case": "not-found-in-audio"},
                                            {"word": "upon", "case": "success", "start": 1.0, "end": 1.3}]}))
    for f, dropped in ((tg, 0), (tsv, 0), (gentle, 1)):
        words, start, end, n = bids.read_any_words(f)
        assert words == ["once", "upon"] and n == dropped
        np.testing.assert_allclose(start, [0.5, 1.0])
        np.testing.assert_allclose(end, [0.9, 1.3])
    with pytest.raises(BIDSError, match=r"s\.txt2: unknown word-timing format"):
        bids.read_any_words(tmp_path / "s.txt2")


@pytest.mark.slow
def test_bids_build_benchmark_small(tmp_path):
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bids_build.py"
    r = subprocess.run([sys.executable, str(script), "--trs", "120", "--grid", "20", "24", "20", "--mask-voxels",
                        "5000", "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = re.findall(r"^\| (nibabel read .*floor\)|scalenc narratives.build \(bids.build\)) \| ([\d.]+) \| (\d+) \| "
                      r"(\d+) \|$", r.stdout, re.M)
    assert len(rows) == 2 and 0 < int(rows[1][3]) < 1024
    assert re.search(r"120 TRs x 50\d\d mask voxels", r.stdout) and "scalenc / floor time ratio" in r.stdout


def test_cli_messages_name_flags_not_python_arguments(capsys):
    """What the library says with its argument names reads as the flags on the command line;
    ``build bids --help`` does not promise a default mask."""
    from scalenc.assembly.bids import BIDSError
    from scalenc.cli import _cli_message, build_parser

    for msg, flag in [("NIfTI runs need a mask (mask=) or a surface projection (surface=)", "(--mask) or a surface "
                       "projection (--surface)"),
                      ("no desc-brain_mask for sub-001 in /x/derivatives; pass mask=", "pass --mask"),
                      ("run 'a': no onset: give onset= or an events.tsv", "give an onset or events column in the run "
                       "table (--runs)"),
                      ("no TR: no _bold.json sidecar and no tr= given", "no --tr given")]:
        out = _cli_message(BIDSError(msg))
        assert flag in out and "=" not in out.replace("--", ""), out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["assembly", "build", "bids", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "required for NIfTI runs unless --surface" in text and "default: the fMRIPrep" not in text
    with pytest.raises(SystemExit):
        build_parser().parse_args(["assembly", "build", "narratives", "--help"])
    assert "(default: the fMRIPrep" in " ".join(capsys.readouterr().out.split())


def test_reader_options_group_the_shared_settings(tmp_path):
    """bids/narratives/lpp share one ReaderOptions; its fields also work as keywords; an
    unknown keyword names the accepted options."""
    import inspect

    from scalenc.assembly import bids, lpp, narratives

    o = bids.ReaderOptions.of(None, tr=1.5, detrend=True)
    assert (o.tr, o.detrend, o.zscore) == (1.5, True, True)
    assert bids.ReaderOptions.of(o, confounds="motion").confounds == "motion" and o.confounds is None
    with pytest.raises(TypeError, match=r"narratives.build\(\) got unexpected keyword\(s\) \['high_pas'\]"):
        narratives.build(tmp_path, "001", ["pieman"], high_pas=0.01)
    for fn in (bids.build, narratives.build, lpp.build):
        params = inspect.signature(fn).parameters
        assert "options" in params and len(params) <= 13, fn
