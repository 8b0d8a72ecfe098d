"""Stage ``manifest``: build and check one dataset's manifest.

Writes ``results/manifests/{dataset}.csv`` (one row per usable video) and
``{dataset}.missing.csv`` (videos listed by the dataset but not on disk, and files the
adapter could not interpret, each with a ``problem``). A malformed manifest fails
with the file, row and column at fault.
"""

from __future__ import annotations

import argparse

from affectube.config import parse_cfg
from affectube.data.manifest import build_manifest, dataset_spec
from affectube.io import atomic_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", required=True, help="JSON with the 'data' section (and 'demo' for the demo dataset)")
    parser.add_argument("--dataset", required=True, help="dataset name (a key of data.datasets)")
    parser.add_argument("--out", required=True, help="manifest CSV to write")
    parser.add_argument("--missing", required=True, help="CSV of missing/unusable videos to write")


def run(args: argparse.Namespace) -> int:
    cfg = parse_cfg(args.cfg)
    manifest = build_manifest(args.dataset, dataset_spec(cfg, args.dataset))
    with atomic_path(args.out) as tmp:
        manifest.table.to_csv(tmp, index=False)
    with atomic_path(args.missing) as tmp:
        missing = manifest.missing if len(manifest.missing.columns) else manifest.missing.assign(path=[], problem=[])
        missing.to_csv(tmp, index=False)
    t = manifest.table
    subjects = t["subject"].nunique() if len(t) else 0
    labels = ", ".join(manifest.label_columns) or "none"
    print(f"manifest {args.dataset}: {len(t)} videos, {subjects} subjects, labels: {labels}; {len(manifest.missing)} missing/unusable -> {args.out}")
    for row in manifest.missing.head(20).itertuples():
        print(f"  missing: {row.path}: {row.problem}")
    return 0
