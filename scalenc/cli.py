"""The ``scalenc`` command.

::

    scalenc assembly build lebel --root R --subject S --out O.zarr [--stories ...]
    scalenc assembly import-pickle IN.pkl OUT.zarr
    scalenc assembly info PATH [--json]
    scalenc run CONFIG.toml [--cluster ...]
    scalenc demo [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .assembly import Assembly, lebel, load_assembly
from .assembly.legacy import import_pickle
from .config import build_trainer, load_config
from .datasets import synthetic
from .datasets.tiny_lm import build_tiny_lm
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


def _cmd_import_pickle(args) -> int:
    out = import_pickle(args.input, args.output, test_stories=args.test_stories, grid_offset=args.grid_offset,
                        overwrite=args.overwrite)
    print(format_info(Assembly(out).info()))
    return 0


def _cmd_info(args) -> int:
    info = load_assembly(args.path).info()
    print(json.dumps(info, indent=1) if args.json else format_info(info))
    return 0


def _cmd_demo(args) -> int:
    out = Path(args.out)
    print(f"scalenc {__version__} demo: the synthetic LeBel-like dataset in {out}")
    ds = synthetic(out / "data", n_stories=args.stories, n_voxels=args.voxels, overwrite=True, progress=False,
                   seed=args.seed)
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
                                  logger_backend="local")
        m = trainer.train()
        r, ceil = m["correlations"], m["noise_ceiling"]
        rows.append((name, [float(np.median(r[driver == g])) for g in groups], float(np.median(r[driver != "noise"])),
                     int(m["n_significant"]), m["results_dir"]))
    ceil_g = [float(np.median(ceil[driver == g])) for g in groups]
    head = f"{'feature space':<26}" + "".join(f"{g + ' vox':>16}" for g in groups) + f"{'driven':>9}{'signif.':>9}"
    print("\nmedian test r on the repeated test story, by the voxels' true driver\n")
    print(head)
    print("-" * len(head))
    for name, med, driven, nsig, _ in rows:
        print(f"{name:<26}" + "".join(f"{x:>16.3f}" for x in med) + f"{driven:>9.3f}{nsig:>9d}")
    print(f"{'ground-truth ceiling':<26}" + "".join(f"{x:>16.3f}" for x in ceil_g)
          + f"{float(np.median(ceil[driver != 'noise'])):>9.3f}")
    best = rows[3]
    frac = best[2] / float(np.median(ceil[driver != "noise"]))
    print(f"\nthe full model recovers {100 * frac:.0f} % of the ceiling r on driven voxels "
          f"(median), and pure-noise voxels stay near 0 ({best[1][3]:.3f}).")
    print(f"results and report.png: {out / 'results'}")
    return 0


def _cmd_run(args) -> int:
    cfg = load_config(args.config)
    trainer = build_trainer(cfg, cluster=args.cluster, source=str(args.config))
    m = trainer.train()
    print(f"run {trainer.run_name}: median r {m['median_score']:.4f}, {m['n_significant']} significant voxels "
          f"({m['percent_significant']:.1f} %); results in {m['results_dir']}")
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
    bl.add_argument("--voxel-chunk", type=int, default=8192)
    bl.add_argument("--audio-dir", default=None, help="folder of <story>.wav (default ROOT/stimuli)")
    bl.add_argument("--overwrite", action="store_true")
    bl.set_defaults(func=_cmd_build_lebel)

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

    r = sub.add_parser("run", help="run the pipeline from a TOML config")
    r.add_argument("config", help="TOML run configuration (see scalenc.config)")
    r.add_argument("--cluster", default=None, help="override: local, an address, slurm, a jobqueue .yaml")
    r.set_defaults(func=_cmd_run)

    d = sub.add_parser("demo", help="run the demo on the embedded synthetic dataset")
    d.add_argument("--out", default="scalenc-demo", help="output folder (default ./scalenc-demo)")
    d.add_argument("--stories", type=int, default=8)
    d.add_argument("--voxels", type=int, default=2000)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, ImportError, OSError) as e:
        if args.traceback:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"scalenc: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
