"""Read one run's saved results (never a model): folds, predictions, logs, metrics.

:func:`load_experiment` gathers everything the figures and the report need about one
experiment from the files the contract fixes::

    results/folds/{exp}.json
    results/finetune/{exp}/fold{k}/{predictions.csv, predictions_frames.csv, metrics.json, log.csv}
    results/evaluate/{exp}/{metrics.json, per_fold.csv, per_subject.csv}
    results/logs/finetune/{exp}/fold{k}.log

A fold whose predictions are missing or unreadable is kept with ``status="failed"``
or ``"missing"`` and the reason (the tail of its log when there is one), so a report
can still be built and say which fold failed. Metrics are recomputed from the saved
predictions with the evaluation stage's own code (:func:`affectube.eval.aggregate.aggregate`,
on :mod:`affectube.eval.metrics`), so the report's numbers are the evaluation's numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from affectube.errors import DataError
from affectube.eval import aggregate as A
from affectube.eval import metrics as M
from affectube.eval.folds import Fold, load_folds

PRED_REQUIRED = ["fold", "subject", "video_id", "dataset", "clip"]
FRAME_REQUIRED = ["fold", "subject", "video_id", "time"]


@dataclass
class FoldResult:
    index: int
    status: str  # ok | missing | failed
    reason: str = ""
    test_subjects: list[str] = field(default_factory=list)
    train_subjects: list[str] = field(default_factory=list)
    val_subjects: list[str] = field(default_factory=list)
    predictions: pd.DataFrame | None = None
    frames: pd.DataFrame | None = None
    log: pd.DataFrame | None = None
    metrics_file: dict | None = None  # the fold's metrics.json as written by finetune
    fold: Fold | None = None  # the folds file's entry (videos per side)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Experiment:
    name: str
    folds: list[FoldResult]
    evaluate: dict | None = None  # results/evaluate/{exp}/metrics.json
    per_fold_file: pd.DataFrame | None = None
    per_subject_file: pd.DataFrame | None = None
    problems: list[str] = field(default_factory=list)  # files that could not be read
    _recomputed: tuple | None = None

    @property
    def ok_folds(self) -> list[FoldResult]:
        return [f for f in self.folds if f.ok]

    @property
    def failed_folds(self) -> list[FoldResult]:
        return [f for f in self.folds if not f.ok]

    def predictions(self) -> pd.DataFrame:
        tables = [f.predictions for f in self.ok_folds if f.predictions is not None]
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=PRED_REQUIRED)

    def frames(self) -> pd.DataFrame | None:
        tables = [f.frames for f in self.ok_folds if f.frames is not None]
        return pd.concat(tables, ignore_index=True) if tables else None

    @property
    def classes(self) -> list[str]:
        for f in self.ok_folds:
            if f.predictions is not None and M.classes_of(f.predictions):
                return M.classes_of(f.predictions)
        return []

    def recompute(self, main_metric: str = "uar") -> tuple[dict, pd.DataFrame, pd.DataFrame]:
        """(metrics, per_fold, per_subject) of the folds that have predictions, computed exactly
        as the evaluate stage does; empty results when no fold has predictions."""
        if self._recomputed is None or self._recomputed[0] != main_metric:
            ok = [f for f in self.ok_folds]
            if not ok:
                result = (main_metric, {}, pd.DataFrame(), pd.DataFrame())
            else:
                folds = [f.fold or Fold(f.index, f.train_subjects, f.val_subjects, f.test_subjects) for f in ok]
                metrics, per_fold, per_subject = A.aggregate(folds, [f.predictions for f in ok], [_frames(f) for f in ok], main_metric)
                result = (main_metric, metrics, per_fold, per_subject)
            self._recomputed = result
        return self._recomputed[1:]

    @property
    def targets(self) -> list[str]:
        for f in self.ok_folds:
            if f.predictions is not None and M.targets_of(f.predictions):
                return M.targets_of(f.predictions)
        return []


# ---------------------------------------------------------------- reading


def read_csv(path: Path, required: list[str] | None = None) -> pd.DataFrame:
    """A CSV with the columns the contract requires; DataError naming the file otherwise."""
    try:
        table = pd.read_csv(path, dtype={"subject": str, "video_id": str, "dataset": str, "y_true": str, "y_pred": str})
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV table ({exc})") from None
    missing = [c for c in (required or []) if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    return table


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def log_tail(path: Path, lines: int = 3) -> str:
    """The last non-empty lines of a log, for saying why a fold failed."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(kept[-lines:])


def load_experiment(results: str | Path, exp: str) -> Experiment:
    """Everything saved about experiment ``exp``; failed/missing folds are kept and marked."""
    results = Path(results)
    problems: list[str] = []
    folds_path = results / "folds" / f"{exp}.json"
    try:
        plan: list = load_folds(folds_path)
    except DataError as exc:
        # no plan, no folds: fold directories on disk may be another config's (never globbed)
        problems.append(str(exc) if folds_path.exists() else f"{folds_path}: no such file (the fold plan names the folds; none read)")
        plan = []
    folds = [_load_fold(results, exp, entry, problems) for entry in plan]
    experiment = Experiment(exp, folds, problems=problems)
    ev = results / "evaluate" / exp
    if (ev / "metrics.json").exists():
        try:
            experiment.evaluate = read_json(ev / "metrics.json")
        except DataError as exc:
            problems.append(str(exc))
    for attr, name in (("per_fold_file", "per_fold.csv"), ("per_subject_file", "per_subject.csv")):
        if (ev / name).exists():
            try:
                setattr(experiment, attr, read_csv(ev / name))
            except DataError as exc:
                problems.append(str(exc))
    return experiment


def _frames(f: FoldResult) -> pd.DataFrame | None:
    return f.frames if f.frames is not None and len(f.frames) and M.targets_of(f.frames) else None


def _load_fold(results: Path, exp: str, entry: Fold | int, problems: list[str]) -> FoldResult:
    k = entry.index if isinstance(entry, Fold) else int(entry)
    fold = FoldResult(index=k, status="ok")
    if isinstance(entry, Fold):
        fold.fold = entry
        fold.test_subjects, fold.train_subjects, fold.val_subjects = list(entry.test), list(entry.train), list(entry.val)
    fdir = results / "finetune" / exp / f"fold{k}"
    pred = fdir / "predictions.csv"
    if not pred.exists():
        fold.status = "missing"
        tail = log_tail(results / "logs" / "finetune" / exp / f"fold{k}.log")
        fold.reason = f"{pred} does not exist" + (f"; its log ends: {tail}" if tail else "")
        return fold
    try:
        fold.predictions = read_csv(pred, PRED_REQUIRED)
    except DataError as exc:
        fold.status, fold.reason = "failed", str(exc)
        return fold
    if fold.predictions.empty:
        fold.status, fold.reason = "failed", f"{pred}: no predictions (0 rows)"
        return fold
    if not fold.test_subjects:
        fold.test_subjects = sorted(fold.predictions["subject"].astype(str).unique())
    frames = fdir / "predictions_frames.csv"
    for attr, path, required in (("frames", frames, FRAME_REQUIRED), ("log", fdir / "log.csv", ["epoch"])):
        if path.exists():
            try:
                table = read_csv(path, required)
            except DataError as exc:
                problems.append(str(exc))
                continue
            setattr(fold, attr, table if len(table) else None)  # header only: nothing saved
    if (fdir / "metrics.json").exists():
        try:
            fold.metrics_file = read_json(fdir / "metrics.json")
        except DataError as exc:
            problems.append(str(exc))
    return fold


def labelled_videos(predictions: pd.DataFrame) -> int:
    """Test videos that carry a class label (the ones categorical metrics are computed over)."""
    video = M.per_video(predictions)
    if "y_true" not in video or not M.classes_of(predictions):
        return int(len(video))
    y = video["y_true"]
    return int((y.notna() & (y.astype(str) != "")).sum())


# ---------------------------------------------------------------- metrics from predictions


def scalar_metrics(metrics: dict) -> dict:
    """The numeric entries of a metrics dict (drops confusion matrices, labels, counts)."""
    return {k: float(v) for k, v in A.scalars(metrics).items() if not isinstance(v, bool)}


def per_fold_metrics(exp: Experiment, main_metric: str = "uar") -> pd.DataFrame:
    """One row per fold that has predictions (the evaluate stage's ``per_fold.csv``)."""
    return exp.recompute(main_metric)[1]


def per_subject_metrics(exp: Experiment, main_metric: str = "uar") -> pd.DataFrame:
    """One row per test subject (the evaluate stage's ``per_subject.csv``)."""
    return exp.recompute(main_metric)[2]


def pooled_metrics(exp: Experiment, main_metric: str = "uar") -> dict:
    """Metrics over every test prediction of every fold that has predictions."""
    return exp.recompute(main_metric)[0].get("pooled", {})


def summarise(exp: Experiment, main_metric: str = "uar") -> pd.DataFrame:
    """Mean and std over folds of every metric (as the evaluate stage: sample sd, ddof 1)."""
    metrics, per_fold, _ = exp.recompute(main_metric)
    if not metrics:
        return pd.DataFrame(columns=["mean", "std", "n"])
    names = list(metrics["mean"])
    counts = {c: int(pd.to_numeric(per_fold[c], errors="coerce").notna().sum()) for c in names}
    return pd.DataFrame({"mean": metrics["mean"], "std": metrics["std"], "n": counts}).reindex(names)


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.{digits}f}"
