"""The ``scalenc`` command.

::

    scalenc assembly build lebel --root R --subject S --out O.zarr [--stories ...]
    scalenc assembly build bids --runs RUNS.tsv --subject S --out O.zarr [--mask M ...]
    scalenc assembly build narratives --root R --subject S --tasks T [T ...]
    scalenc assembly build lpp --root R --subject S [--language EN]
    scalenc assembly import-pickle IN.pkl OUT.zarr
    scalenc assembly info PATH [--json]
    scalenc assembly check PATH
    scalenc assembly relocate PATH --audio-root NEWDIR
    scalenc run CONFIG.toml [--cluster ...] [--security FILE|off] [--overwrite]
    scalenc predict RUN_DIR [--assembly PATH] [--stories ...] [--out PRED.zarr]
    scalenc demo [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

import dask
import numpy as np

from . import results
from ._version import __version__
from ._io import atomic_directory
from .assembly import Assembly, lebel, load_assembly
from .assembly.legacy import import_pickle
from .assembly.writer import DEFAULT_VOXEL_CHUNK
from .sweep import from_config as sweep_from_config
from .config import RunConfig, is_sweep, load_config
from .engine import predict
from .synthetic import synthetic
from .synthetic.tiny_lm import build_tiny_lm
from .features import FeatureExtractorFactory
from .models import NestedCVModel
from .trainer import AbstractTrainer

logger = logging.getLogger("scalenc")


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


def format_info(info: dict) -> str:
    """Human-readable summary of :meth:`Assembly.info`."""
    lines = [
        f"assembly   {info['path']}",
        f"dataset    {info['dataset']}  subject {info['subject']}  TR {info['tr_seconds']} s",
        f"stories    {info['n_stories']} ({len(info['train_stories'])} train, test: "
        f"{', '.join(info['test_stories']) or 'none'})",
        f"TRs        {info['n_trs']}",
        f"voxels     {info['n_voxels']} ({info['n_valid_voxels']} valid)",
        f"bytes      {_fmt_bytes(info['stored_bytes'])} stored, {_fmt_bytes(info['bold_bytes'])} of float32 responses",
        "",
        f"{'story':<32} {'TRs':>6} {'words':>7} {'repeats':>8}  split",
    ]
    for r in info["stories"]:
        lines.append(f"{r['story']:<32} {r['n_tr']:>6} {r['n_words']:>7} {r['n_repeats']:>8}  "
                     f"{'test' if r['test'] else 'train'}")
    return "\n".join(lines)


def _cmd_build_lebel(args) -> int:
    out = lebel.build(args.root, args.subject, args.out, stories=args.stories, test_stories=args.test_stories,
                      tr=args.tr, voxel_chunk=args.voxel_chunk, audio_dir=args.audio_dir, overwrite=args.overwrite)
    print(format_info(Assembly(out).info()))
    return 0


def _bids_options(args) -> dict:
    """The BIDS readers' shared options from their flags (one ReaderOptions for all three)."""
    from .assembly.bids import ReaderOptions

    return dict(options=ReaderOptions(tr=args.tr, test_stories=args.test_stories, confounds=args.confounds,
                                      detrend=args.detrend, high_pass=args.high_pass, surface=args.surface,
                                      volume_time=args.volume_time, voxel_chunk=args.voxel_chunk,
                                      overwrite=args.overwrite))


def _cmd_build_bids(args) -> int:
    import csv

    from .assembly import Assembly, bids

    table = Path(args.runs)
    if not table.exists():
        raise FileNotFoundError(f"run table not found: {table}")
    rows = list(csv.DictReader(table.read_text(encoding="utf-8-sig").splitlines(), delimiter="\t"))
    runs = []
    for i, r in enumerate(rows, start=2):
        def get(k, row=r):
            v = (row.get(k) or "").strip()
            return None if v in ("", "n/a") else v

        if not get("story") or not (get("bold") or (get("bold_left") and get("bold_right"))) or not get("words"):
            raise ValueError(f"{table}: line {i} needs story, bold (or bold_left and bold_right) and words")
        here = table.parent
        path = (lambda v: None if v is None else str(here / v))  # noqa: E731 - paths relative to the table
        bold = path(get("bold")) if get("bold") else (path(get("bold_left")), path(get("bold_right")))
        try:
            runs.append(bids.Run(story=get("story"), bold=bold, words=path(get("words")), events=path(get("events")),
                                 onset=None if get("onset") is None else float(get("onset")),
                                 sidecar=path(get("sidecar")), audio=path(get("audio")),
                                 skip_volumes=int(get("skip_volumes") or 0),
                                 expected_volumes=None if get("expected_volumes") is None
                                 else int(get("expected_volumes"))))
        except ValueError as e:
            raise ValueError(f"{table}: line {i}: {e}") from None
    out = bids.build(runs, args.out, subject=args.subject, mask=args.mask, word_clock=args.word_clock,
                     mesh=args.mesh, **_bids_options(args))
    print(format_info(Assembly(out).info()))
    return 0


def _cmd_build_narratives(args) -> int:
    from .assembly import Assembly, narratives

    out = narratives.build(args.root, args.subject, args.tasks, args.out, derivatives=args.derivatives,
                           space=args.space, mask=args.mask, **_bids_options(args))
    print(format_info(Assembly(out).info()))
    return 0


def _cmd_build_arrays(args) -> int:
    from .assembly import Assembly, arrays

    print(format_info(Assembly(arrays.build(args.root, args.out, voxel_chunk=args.voxel_chunk,
                                            overwrite=args.overwrite)).info()))
    return 0


def _cmd_build_lpp(args) -> int:
    from .assembly import Assembly, lpp

    out = lpp.build(args.root, args.subject, args.language, args.out, words_from=args.words_from, mask=args.mask,
                    **_bids_options(args))
    print(format_info(Assembly(out).info()))
    return 0


def _cmd_import_pickle(args) -> int:
    out = import_pickle(args.input, args.output, test_stories=args.test_stories, grid_offset=args.grid_offset,
                        overwrite=args.overwrite)
    print(format_info(Assembly(out).info()))
    return 0


def _cmd_info(args) -> int:
    info = load_assembly(args.path).info()
    print(json.dumps(info, indent=1) if args.json else format_info(info))
    return 0


def _cmd_check(args) -> int:
    from .assembly.chunks import check_metadata, check_store

    if not Path(args.path).is_dir():
        raise FileNotFoundError(f"assembly store not found: {args.path}")
    n_meta = len(check_metadata(args.path)[0])
    n, problems = check_store(args.path)
    for line in problems:
        print(f"scalenc: error: {line}", file=sys.stderr)
    if problems:
        meta = f"{n_meta} metadata files (zarr.json) missing or unreadable; " if n_meta else ""
        print(f"{args.path}: {meta}{len(problems) - n_meta} of {n} chunks missing or unreadable", file=sys.stderr)
        return 2
    print(f"{args.path}: metadata whole, all {n} chunks present and readable")
    return 0


def _cmd_relocate(args) -> int:
    from .assembly import relocate

    new = relocate(args.path, args.audio_root)
    for s, p in new.items():
        print(f"{s:<32} {p}")
    print(f"{args.path}: audio of {len(new)} stories re-pointed to {args.audio_root}")
    return 0


def _cmd_demo(args) -> int:
    out = Path(args.out)
    print(f"scalenc {__version__} demo: the synthetic LeBel-like dataset in {out}")
    ds = synthetic(out / "data", n_stories=args.stories, n_voxels=args.voxels, overwrite=True, progress=False,
                   seed=args.seed, layout=None if args.layout == "none" else args.layout)
    asm = Assembly(ds.assembly_path)
    print(format_info(asm.info()))
    words = [str(w) for s in asm.stories for w in asm.words(s).word.values]
    lm_path = build_tiny_lm(out / "tiny-gpt2", words, seed=args.seed)
    cache = out / "feature_cache"
    make = FeatureExtractorFactory.create_extractor
    spaces = {
        "wordrate": [make("wordrate", None, {"include_phonemes": False}, cache)],
        "embeddings": [make("embeddings", str(ds.embeddings_path), {}, cache)],
        "tiny GPT-2 (random)": [make("language_model", str(lm_path), {"lookback": 64, "layer_idx": 2}, cache)],
    }
    spaces["wordrate + embeddings"] = spaces["wordrate"] + spaces["embeddings"]
    gt = ds.ground_truth()
    driver = gt["driver"].values
    groups = ["wordrate", "embeddings", "both", "noise"]
    rows = []
    for name, exs in spaces.items():
        run = name.split(" ")[0].replace("+", "plus") if "+" not in name else "wordrate-plus-embeddings"
        trainer = AbstractTrainer(asm, exs, None, NestedCVModel(alphas=np.logspace(-1, 5, 13), seed=args.seed),
                                  [1, 2, 3, 4], None, results_dir=out / "results", run_name=run,
                                  logger_backend="local", overwrite=True)  # the demo owns its folder
        m = trainer.train()
        r, ceil = m["correlations"], m["noise_ceiling"]
        rows.append((name, [float(np.median(r[driver == g])) for g in groups], float(np.median(r[driver != "noise"])),
                     int(m["n_significant"]), m["results_dir"]))
    # banded ridge: one penalty per feature space, and the share of each space per voxel
    trainer = AbstractTrainer(asm, spaces["wordrate + embeddings"], None,
                              NestedCVModel(model_name="banded_ridge", alphas=np.logspace(-1, 5, 13), seed=args.seed),
                              [1, 2, 3, 4], None, results_dir=out / "results", run_name="banded-wordrate-embeddings",
                              logger_backend="local", overwrite=True)
    m = trainer.train()
    r = m["correlations"]
    rows.append(("banded: wordrate, emb.", [float(np.median(r[driver == g])) for g in groups],
                 float(np.median(r[driver != "noise"])), int(m["n_significant"]), m["results_dir"]))
    split = results.load(m["results_dir"]).dataset.isel(layer=0)
    ceil_g = [float(np.median(ceil[driver == g])) for g in groups]
    head = f"{'feature space':<26}" + "".join(f"{g + ' vox':>16}" for g in groups) + f"{'driven':>9}{'signif.':>9}"
    print("\nmedian test r on the repeated test story, by the voxels' true driver\n")
    print(head)
    print("-" * len(head))
    for name, med, driven, nsig, _ in rows:
        print(f"{name:<26}" + "".join(f"{x:>16.3f}" for x in med) + f"{driven:>9.3f}{nsig:>9d}")
    print(f"{'ground-truth ceiling':<26}" + "".join(f"{x:>16.3f}" for x in ceil_g)
          + f"{float(np.median(ceil[driver != 'noise'])):>9.3f}")
    print("\nbanded ridge: median split R² (product measure; the parts sum to the joint R²) by true driver\n")
    print(f"{'space':<26}" + "".join(f"{g + ' vox':>16}" for g in groups))
    for i, sp in enumerate(split["space"].values):
        vals = split["r2_split"].values[i]
        print(f"  split {str(sp):<18}" + "".join(f"{float(np.median(vals[driver == g])):>16.3f}" for g in groups))
    best = rows[3]
    frac = best[2] / float(np.median(ceil[driver != "noise"]))
    print(f"\nthe full model recovers {100 * frac:.0f} % of the ceiling r on driven voxels "
          f"(median), and pure-noise voxels stay near 0 ({best[1][3]:.3f}).")
    print(f"results, report.png, report.html and brain maps: {out / 'results'}")
    return 0


def _cmd_run(args) -> int:
    from .distributed.security import load_security, use_security

    sec = args.security
    sec = False if sec is not None and sec.lower() == "off" else (None if sec is None else load_security(sec))
    with use_security(sec):
        return _cmd_run_secured(args)


def _cmd_run_secured(args) -> int:
    cfg = load_config(args.config)
    if is_sweep(cfg):
        res = sweep_from_config(cfg, cluster=args.cluster, source=str(args.config), overwrite=args.overwrite or None)
        print(res.summary.to_string(index=False) if hasattr(res.summary, "to_string") else res.summary)
        print(f"sweep results (summary.csv, scaling.png, one run folder per subject and model): {res.path}")
        return 0
    trainer = AbstractTrainer.from_config(RunConfig.from_dict(cfg, source=str(args.config)), cluster=args.cluster,
                                          source=str(args.config), overwrite=args.overwrite or None)
    m = trainer.train()
    which = "" if m.get("layer") in (None, "0") else f" (layer {m['layer']}, the best of {len(m.get('per_layer', [1]))})"
    how = str(m.get("pvalue_method", ""))
    asked = getattr(trainer.model, "pvalue_method", how)
    pvals = "" if how == asked else (f"; p-values by {how} (the test set is too short for the {asked} test "
                                     "to reach small p)")
    rn = m.get("normalized_correlations")
    ceil = ""
    if rn is not None and np.isfinite(np.asarray(rn, float)).any():
        rn = np.asarray(rn, float)
        ceil = f", median r / ceiling {np.nanmedian(rn):.3f} over {int(np.isfinite(rn).sum())} voxels"
    print(f"run {trainer.run_name}{which}: median r {m['median_score']:.4f}{ceil}, {m['n_significant']} significant "
          f"voxels ({m['percent_significant']:.1f} %){pvals}; results in {m['results_dir']}")
    return 0


def _cmd_predict(args) -> int:
    res = results.load(args.run_dir)
    if args.out and Path(args.out).exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} already exists; pass --overwrite to replace it")
    pred = predict(res, args.assembly, args.stories, layer=args.layer, split=args.split,
                   allow_mismatch=args.allow_mismatch)
    print(f"run {res.path} (layer {pred.attrs['layer']}) applied to {pred.sizes['story']} stories")
    print(f"{'story':<32} {'TRs':>6} {'median r':>9}")
    for s in pred["story"].values:
        n = int((pred["tr_story"].values == s).sum())
        print(f"{s:<32} {n:>6} {float(np.nanmedian(pred['r'].sel(story=s))):>9.4f}")
    print(f"{'all':<32} {pred.sizes['tr']:>6} {float(np.nanmedian(pred['r_all'])):>9.4f}")
    if args.out:
        with atomic_directory(args.out, overwrite=args.overwrite) as tmp:
            pred.to_zarr(str(tmp), mode="w", consolidated=False)
        print(f"predictions in {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scalenc", description="Voxelwise encoding models of fMRI data for stories.")
    p.add_argument("--version", action="version", version=f"scalenc {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    p.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("assembly", help="build, import and inspect assemblies")
    asub = a.add_subparsers(dest="assembly_command", required=True)
    b = asub.add_parser("build", help="build an assembly from a dataset tree")
    bsub = b.add_subparsers(dest="dataset", required=True)
    bl = bsub.add_parser("lebel", help="LeBel et al. (OpenNeuro ds003020) layout")
    bl.add_argument("--root", required=True, help="dataset root (holds derivative/)")
    bl.add_argument("--subject", required=True, help="e.g. UTS03")
    bl.add_argument("--out", required=True, help="output .zarr")
    bl.add_argument("--stories", nargs="+", default=None, help="stories to read (default: all with responses)")
    bl.add_argument("--test-stories", nargs="*", default=["wheretheressmoke"])
    bl.add_argument("--tr", type=float, default=2.0, help="repetition time, s (default 2.0)")
    bl.add_argument("--voxel-chunk", type=int, default=DEFAULT_VOXEL_CHUNK)
    bl.add_argument("--audio-dir", default=None, help="folder of <story>.wav (default ROOT/stimuli)")
    bl.add_argument("--overwrite", action="store_true")
    bl.set_defaults(func=_cmd_build_lebel)

    def bids_flags(q, tr_default, mask_help="brain mask NIfTI (default: the fMRIPrep desc-brain_mask)"):
        q.add_argument("--subject", required=True)
        q.add_argument("--mask", default=None, help=mask_help)
        q.add_argument("--tr", type=float, default=tr_default,
                       help=f"repetition time, s, checked against the _bold.json sidecar (default {tr_default})")
        q.add_argument("--test-stories", nargs="*", default=[])
        q.add_argument("--confounds", default=None,
                       help="nilearn load_confounds strategy: narratives, motion or motion+cosine")
        q.add_argument("--detrend", action="store_true", help="remove a linear trend per run")
        q.add_argument("--high-pass", type=float, default=None, help="high-pass cutoff, Hz")
        q.add_argument("--surface", default=None, help="project volumes onto this mesh, e.g. fsaverage5")
        q.add_argument("--volume-time", default="centre", choices=["centre", "start"],
                       help="time of a volume within its TR (default centre)")
        q.add_argument("--voxel-chunk", type=int, default=DEFAULT_VOXEL_CHUNK)
        q.add_argument("--overwrite", action="store_true")

    bb = bsub.add_parser("bids", help="BIDS runs listed in a TSV (story, bold | bold_left + bold_right, words, "
                                      "events | onset, [sidecar, audio, skip_volumes, expected_volumes])")
    bb.add_argument("--runs", required=True, help="run table (.tsv; paths relative to it)")
    bb.add_argument("--out", required=True, help="output .zarr")
    bb.add_argument("--word-clock", default="audio", choices=["audio", "scan"],
                    help="word times count from the audio start (default) or from the first volume")
    bb.add_argument("--mesh", default=None, help="mesh of GIFTI runs, e.g. fsaverage6 (recorded)")
    bids_flags(bb, None, mask_help="brain mask NIfTI: required for NIfTI runs unless --surface (GIFTI runs need none)")
    bb.set_defaults(func=_cmd_build_bids)

    bn = bsub.add_parser("narratives", help="Narratives (OpenNeuro ds002345) layout")
    bn.add_argument("--root", required=True)
    bn.add_argument("--tasks", nargs="+", required=True, help="stories, e.g. pieman 21styear")
    bn.add_argument("--out", default=None, help="output .zarr (default ROOT/derivatives/scalenc/SUBJECT.zarr)")
    bn.add_argument("--derivatives", default="fmriprep", choices=["fmriprep", "afni-nosmooth", "afni-smooth"])
    bn.add_argument("--space", default="MNI152NLin2009cAsym", help="or fsaverage6 (GIFTI)")
    bids_flags(bn, 1.5)
    bn.set_defaults(func=_cmd_build_narratives)

    ba = bsub.add_parser("arrays", help="a folder of <story>.npy responses, <story>.tsv words, assembly.json")
    ba.add_argument("--root", required=True)
    ba.add_argument("--out", required=True, help="output .zarr")
    ba.add_argument("--voxel-chunk", type=int, default=DEFAULT_VOXEL_CHUNK)
    ba.add_argument("--overwrite", action="store_true")
    ba.set_defaults(func=_cmd_build_arrays)

    bp = bsub.add_parser("lpp", help="Le Petit Prince (OpenNeuro ds003643) layout")
    bp.add_argument("--root", required=True)
    bp.add_argument("--language", default="EN", choices=["EN", "FR", "CN"])
    bp.add_argument("--out", default=None, help="output .zarr (default ROOT/derivatives/scalenc/SUBJECT.zarr)")
    bp.add_argument("--words-from", default="csv", choices=["csv", "textgrid"])
    bids_flags(bp, 2.0)
    bp.set_defaults(func=_cmd_build_lpp)

    ip = asub.add_parser("import-pickle", help="import a LITcoder .pkl assembly (no code is run)")
    ip.add_argument("input")
    ip.add_argument("output")
    ip.add_argument("--test-stories", nargs="*", default=None)
    ip.add_argument("--grid-offset", type=int, default=None,
                    help="grid index of the first response row (default: inferred)")
    ip.add_argument("--overwrite", action="store_true")
    ip.set_defaults(func=_cmd_import_pickle)

    inf = asub.add_parser("info", help="summarise an assembly (.zarr or .pkl)")
    inf.add_argument("path")
    inf.add_argument("--json", action="store_true")
    inf.set_defaults(func=_cmd_info)

    ck = asub.add_parser("check", help="read and decode every chunk of a .zarr assembly")
    ck.add_argument("path")
    ck.set_defaults(func=_cmd_check)

    rl = asub.add_parser("relocate", help="re-point the stories' audio files to a new folder (the data moved)")
    rl.add_argument("path", help="a .zarr assembly")
    rl.add_argument("--audio-root", required=True, help="folder now holding the audio files (same file names)")
    rl.set_defaults(func=_cmd_relocate)

    r = sub.add_parser("run", help="run the pipeline from a TOML config")
    r.add_argument("config", help="TOML run configuration (see scalenc.config)")
    r.add_argument("--cluster", default=None, help="override: local, an address, slurm, a jobqueue .yaml")
    r.add_argument("--overwrite", action="store_true", help="replace the results of an existing run_name")
    r.add_argument("--security", default=None, metavar="FILE|off",
                   help="TLS certificates for --cluster (a YAML of Dask's distributed.comm.tls settings); off: no TLS. "
                        "Default: clusters scalenc starts use a certificate made for the run, an existing scheduler "
                        "the Dask configuration's")
    r.set_defaults(func=_cmd_run)

    pr = sub.add_parser("predict", help="apply a saved run (weights + alignment settings) to stories")
    pr.add_argument("run_dir", help="results_dir/run_name of a run saved with save_weights = true")
    pr.add_argument("--assembly", default=None, help="assembly of the stories (default: the run's)")
    pr.add_argument("--stories", nargs="+", default=None, help="stories to predict (default: all)")
    pr.add_argument("--layer", default=None, help="layer label (default: the run's best)")
    pr.add_argument("--split", choices=("train", "test"), default="train", help="which trimming to apply")
    pr.add_argument("--out", default=None, help="write the predictions (zarr) here")
    pr.add_argument("--overwrite", action="store_true", help="replace --out")
    pr.add_argument("--allow-mismatch", action="store_true",
                    help="predict even if an extractor (model or file) or the voxel set differs from the run's")
    pr.set_defaults(func=_cmd_predict)

    d = sub.add_parser("demo", help="run the demo on the embedded synthetic dataset")
    d.add_argument("--out", default="scalenc-demo", help="output folder (default ./scalenc-demo)")
    d.add_argument("--stories", type=int, default=8)
    d.add_argument("--voxels", type=int, default=2000)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--layout", choices=["mni", "fsaverage5", "none"], default="mni",
                   help="where the synthetic voxels sit on the brain (for the maps of each run's report)")
    d.set_defaults(func=_cmd_demo)
    return p


#: Python keyword arguments named in library errors -> the CLI flags that set them
_FLAGS = {"overwrite=True": "--overwrite", "pass overwrite": "pass --overwrite", "pass mask=": "pass --mask",
          "(mask=)": "(--mask)", "(surface=)": "(--surface)", "no tr= given": "no --tr given",
          "pass grid_offset=": "pass --grid-offset",
          "give onset= or an events.tsv": "give an onset or events column in the run table (--runs)"}


def _cli_message(e: BaseException) -> str:
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    for py, flag in _FLAGS.items():
        msg = msg.replace(py, flag)
    return msg.splitlines()[0] if msg else type(e).__name__


def _library_verbosity(verbose: int) -> None:
    """Dask's and Hugging Face's own output: warnings only by default, more with ``-v``.

    Environment variables reach Dask worker processes too; they are set only where the
    user has not set them."""
    level = "warning" if verbose == 0 else "info" if verbose == 1 else "debug"
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", level)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", level)
    if verbose == 0:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    dask.config.set({"logging.distributed": os.environ["DASK_LOGGING__DISTRIBUTED"]})
    if "distributed" in sys.modules:  # already configured from the old setting
        logging.getLogger("distributed").setLevel(os.environ["DASK_LOGGING__DISTRIBUTED"].upper())


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    logger.warning("%s", message)


def _stdout_gone() -> int:
    """The reader of our stdout went away (``scalenc ... | head``): stop quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
    return 141  # 128 + SIGPIPE, as other command-line tools


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    _library_verbosity(args.verbose)
    try:
        with warnings.catch_warnings():  # a library warning is one log line here, not two lines of source
            warnings.showwarning = _warning_line
            code = int(args.func(args) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _stdout_gone()
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, ImportError, OSError) as e:
        if args.traceback:
            raise
        print(f"scalenc: error: {_cli_message(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
