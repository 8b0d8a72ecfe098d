"""Stage ``evaluate``: per-fold predictions -> metrics per fold, per subject and pooled.

Reads only saved predictions (``predictions.csv`` and, when it has continuous columns,
the sibling ``predictions_frames.csv``) and the folds file; every number comes from
:mod:`affectube.eval.metrics`. Writes ``results/evaluate/{exp}/``:

- ``per_fold.csv``: one row per fold (test subjects, videos, every scalar metric);
- ``per_subject.csv``: one row per test subject;
- ``metrics.json``: ``mean``/``std`` over folds (sample standard deviation, ddof 1; NaN with one fold) of every scalar
  metric, ``pooled`` (all test predictions of all folds together, with the confusion
  matrix), the main metric and the number of folds.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import pandas as pd

from affectube.errors import DataError
from affectube.eval import metrics as M
from affectube.eval.folds import load_folds
from affectube.io import atomic_path, to_jsonable, write_json

log = logging.getLogger(__name__)
COUNTS = {"n", "videos", "frames", "clips"}


def read_predictions(path: Path) -> pd.DataFrame:
    required = ["fold", "subject", "video_id", "dataset", "clip"]
    try:
        table = pd.read_csv(path, dtype={"subject": str, "video_id": str, "dataset": str, "y_true": str, "y_pred": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: cannot read predictions: {exc}") from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    if table.empty:
        raise DataError(f"{path}: no predictions (0 rows)")
    return table


def read_frames(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        frames = pd.read_csv(path, dtype={"subject": str, "video_id": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: cannot read per-frame predictions: {exc}") from None
    return frames if len(frames) and M.targets_of(frames) else None


def scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in COUNTS}


def evaluate_one(table: pd.DataFrame, frames: pd.DataFrame | None, classes) -> dict:
    out = M.evaluate_table(table, classes)
    if frames is not None and len(frames):
        out.update(M.evaluate_frames(frames))
    return out


def aggregate(folds, tables: list[pd.DataFrame], frames: list[pd.DataFrame | None], main_metric: str):
    """The three results of the stage: (metrics dict, per-fold table, per-subject table)."""
    classes = next((M.classes_of(t) for t in tables if M.classes_of(t)), None)
    fold_rows, subject_rows = [], []
    for fold, table, fr in zip(folds, tables, frames):
        leaked = sorted(set(table["subject"]) - set(fold.test))
        if leaked:
            raise DataError(f"fold {fold.index}: predictions for subject {leaked[0]!r}, which is not a test subject of the fold")
        m = evaluate_one(table, fr, classes)
        fold_rows.append({"fold": fold.index, "test_subjects": " ".join(fold.test), "videos": m["videos"], **scalars(m)})
        for subject, sub in table.groupby("subject", sort=True):
            sub_fr = fr[fr["subject"] == subject] if fr is not None else None
            ms = evaluate_one(sub, sub_fr, classes)
            subject_rows.append({"subject": subject, "fold": fold.index, "videos": ms["videos"], **scalars(ms)})
    per_fold, per_subject = pd.DataFrame(fold_rows), pd.DataFrame(subject_rows)
    all_frames = [f for f in frames if f is not None]
    pooled = evaluate_one(pd.concat(tables, ignore_index=True), pd.concat(all_frames, ignore_index=True) if all_frames else None, classes)
    names = [c for c in per_fold.columns if c not in ("fold", "test_subjects", "videos")]
    mean = {c: _finite_mean(per_fold[c]) for c in names}
    std = {c: _finite_std(per_fold[c]) for c in names}
    result = {
        "main_metric": main_metric,
        "folds": len(tables),
        "videos": int(per_fold["videos"].sum()),
        "mean": mean,
        "std": std,
        "pooled": pooled,
        "main": {"mean": mean.get(main_metric, math.nan), "std": std.get(main_metric, math.nan),
                 "pooled": M.main_value(pooled, main_metric)},
    }
    if classes:
        result["classes"] = classes
    return result, per_fold, per_subject


def _finite_mean(col: pd.Series) -> float:
    v = pd.to_numeric(col, errors="coerce").dropna().to_numpy()
    return float(v.mean()) if len(v) else math.nan


def _finite_std(col: pd.Series) -> float:
    v = pd.to_numeric(col, errors="coerce").dropna().to_numpy()
    return float(v.std(ddof=1)) if len(v) > 1 else math.nan


# ---------------------------------------------------------------- stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", required=True, help="JSON with the evaluate section")
    parser.add_argument("--folds", required=True, help="results/folds/{exp}.json")
    parser.add_argument("--predictions", required=True, nargs="+", help="per-fold predictions.csv, in fold order")
    parser.add_argument("--out-dir", required=True)


def run(args: argparse.Namespace) -> int:
    from affectube.config import parse_cfg, sections

    cfg = sections(parse_cfg(args.cfg), "evaluate")["evaluate"]
    folds = load_folds(args.folds)
    paths = [Path(p) for p in args.predictions]
    if len(paths) != len(folds):
        raise DataError(f"{args.folds}: {len(folds)} folds but {len(paths)} predictions files were given")
    by_index = {f.index: f for f in folds}
    tables, frames, ordered = [], [], []
    for p in paths:
        table = read_predictions(p)
        idx = sorted(table["fold"].unique())
        if len(idx) != 1 or int(idx[0]) not in by_index:
            raise DataError(f"{p}: column 'fold' must hold one fold index of {args.folds} (found {idx})")
        ordered.append(by_index[int(idx[0])])
        tables.append(table)
        frames.append(read_frames(p.with_name("predictions_frames.csv")))
    result, per_fold, per_subject = aggregate(ordered, tables, frames, cfg["main_metric"])
    out = Path(args.out_dir)
    for name, df in (("per_fold.csv", per_fold), ("per_subject.csv", per_subject)):
        with atomic_path(out / name) as tmp:
            df.to_csv(tmp, index=False)
    write_json(out / "metrics.json", to_jsonable(result, finite=True))
    m = result["main"]
    log.info("%s over %d folds: %.4f +- %.4f (pooled %.4f)", result["main_metric"], result["folds"], m["mean"], m["std"], m["pooled"])
    return 0

