"""Command line: ``affectube <stage> [options]``.

Each stage is a module that defines ``add_arguments(parser)`` and ``run(args)``;
the registry below maps stage names to those modules, so adding a stage is one line
and no stage parses another stage's options.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# stage name -> (module, one-line help)
STAGES: dict[str, tuple[str, str]] = {
    "validate": ("affectube.config", "validate params.yaml against the schema"),
    "params": ("affectube.config", "merge override files into params (as snakemake --configfile), validate, write"),
    "manifest": ("affectube.data.cli", "build and check a dataset manifest"),
    "demo-data": ("affectube.demo", "generate the embedded offline demo dataset"),
    "faces": ("affectube.faces.cli", "decode a video, detect and track its face"),
    "faces-qc": ("affectube.faces.qc", "per-dataset face QC table and figures"),
    "faces-sheet": ("affectube.faces.sheet", "contact sheet of sample face crops per video"),
    "clips": ("affectube.clips.cli", "crop faces from tracks and pack an HDF5 clip store"),
    "faces-shard": ("affectube.shards.faces", "faces of one shard of videos (data.shard_size), per-video cached"),
    "clips-shard": ("affectube.shards.clips", "clip stores of one shard of videos (data.shard_size), per-video cached"),
    "pretrain": ("affectube.train.pretrain", "self-supervised masked video pretraining"),
    "folds": ("affectube.eval.folds", "build subject-disjoint cross-validation folds"),
    "finetune": ("affectube.train.finetune", "fine-tune one fold"),
    "evaluate": ("affectube.eval.aggregate", "aggregate per-fold predictions into metrics"),
    "figures": ("affectube.report.figures", "draw the report figures"),
    "report": ("affectube.report.build", "write the HTML/Markdown report"),
    "predict": ("affectube.predict", "run a trained model on new videos"),
    "embed": ("affectube.embed", "per-clip encoder features of videos, with timestamps"),
    "export": ("affectube.export", "write an encoder in the transformers VideoMAE layout"),
    "dvc-yaml": ("affectube.dvcgen", "generate dvc.yaml from the Snakemake DAG"),
    "launch": ("affectube.train.launch", "run a stage on this job's GPUs/nodes (torchrun, SLURM)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="affectube", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, (module, help_) in STAGES.items():
        p = sub.add_parser(name, help=help_)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse the stage name first, then let the stage module add its own options.
    known, _ = parser.parse_known_args(argv)
    module = importlib.import_module(known._module)
    stage_parser = argparse.ArgumentParser(prog=f"affectube {known.stage}", description=STAGES[known.stage][1])
    stage_parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    module.add_arguments(stage_parser)
    args = stage_parser.parse_args(_drop_first(argv, known.stage))
    logging.basicConfig(
        level=logging.DEBUG if (args.verbose or known.verbose) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(module.run(args) or 0)
    except UserError as exc:  # clear, one-line errors for bad input
        print(f"affectube {known.stage}: error: {exc}", file=sys.stderr)
        return 2


def _drop_first(argv: list[str], item: str) -> list[str]:
    out = list(argv)
    out.remove(item)
    return [a for a in out if a not in ("-v", "--verbose")] + (["-v"] if ("-v" in argv or "--verbose" in argv) else [])


from affectube.errors import UserError  # noqa: E402  (kept at the end to avoid import cycles)
