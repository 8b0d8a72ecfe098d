"""Problems a reader must see before trusting a number: each check returns plain sentences.

- failed or missing folds (named, with the tail of their log);
- low face coverage (``results/faces/*/qc.csv``, below ``report.coverage_threshold``);
- truncated or damaged videos whose decodable frames were kept (``truncated`` in the QC table);
- videos shorter than one clip, whose clips repeat their last frame (``short_clip`` in the QC table);
- classes missing from a fold's training, validation or test side;
- diverging losses: NaN/inf, or a loss that ends ``report.divergence_ratio`` times above its minimum;
- saved evaluation metrics that no longer match the saved predictions;
- comparisons no paired test can decide (too few subjects, or identical results);
- folds whose selected epoch lies inside the warmup, or whose model does not fit its training
  data at the selected epoch (training accuracy below ``report.underfit_accuracy``, training CCC
  below ``report.underfit_ccc``: the kept weights on the fold's training videos read as test
  clips, ``metrics.json`` ``train``; else the running values of the augmented training clips,
  ``metrics.json`` ``training.train_at_best`` and ``log.csv``);
- folds whose test predictions are at chance (main metric at most the within-subject
  permutation chance level plus ``report.chance_margin``; :func:`affectube.eval.stats.chance_level`);
- pretraining/test overlap: test subjects or test videos (by content hash) among the clips
  pretraining used (:mod:`affectube.eval.overlap`).

:data:`CHECKS` is the registry the report runs; a check never raises on odd input, it
reports the file it could not read instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from affectube.errors import DataError
from affectube.eval import metrics as M
from affectube.report.params import report_params
from affectube.report.results import Experiment, read_csv


@dataclass
class Run:
    """What the checks look at."""

    cfg: dict
    results: Path
    experiments: list[Experiment]
    main_metric: str
    manifest: pd.DataFrame | None = None
    tests: list | None = None  # PairedTest results
    overlap: object | None = None  # affectube.eval.overlap.Overlap (None: not checked)
    manifests: dict | None = None  # dataset -> manifest of each experiment's own dataset (finetune.dataset; chains)

    def __post_init__(self):
        # the report/evaluate/figures sections filled with the schema's defaults (finetune, pretrain when
        # given): the checks index them (Run is also built by hand, with partial params)
        self.cfg = report_params(self.cfg, source="report")


def failed_folds(run: Run) -> list[str]:
    out = []
    for exp in run.experiments:
        if not exp.folds:
            out.append(f"{exp.name}: no fold of this experiment has any result (nothing under results/finetune/{exp.name}/)")
        for f in exp.failed_folds:
            who = f" (test subject {', '.join(f.test_subjects)})" if f.test_subjects else ""
            out.append(f"{exp.name}: fold {f.index}{who} {f.status.upper()}: {f.reason}. Its results are left out of every table and figure.")
        for p in exp.problems:
            out.append(f"{exp.name}: {p}")
    return out


def coverage_column(table: pd.DataFrame) -> str | None:
    for col in ("coverage", "face_coverage", "detected_fraction"):
        if col in table.columns:
            return col
    return next((c for c in table.columns if "coverage" in c), None)


def run_qc_tables(run: Run) -> list[Path]:
    """The face-QC tables of this run's datasets (never another config's ``faces/*/qc.csv``)."""
    from affectube.layout import datasets_of

    return [run.results / "faces" / d / "qc.csv" for d in datasets_of(run.cfg) if (run.results / "faces" / d / "qc.csv").exists()]


def low_coverage(run: Run) -> list[str]:
    threshold = float(run.cfg["report"]["coverage_threshold"])
    out = []
    for qc in run_qc_tables(run):
        try:
            table = read_csv(qc)
        except DataError as exc:
            out.append(str(exc))
            continue
        col = coverage_column(table)
        if col is None:
            out.append(f"{qc}: no face-coverage column (have {', '.join(table.columns)}), coverage not checked")
            continue
        cov = pd.to_numeric(table[col], errors="coerce")
        if "status" in table.columns:
            bad = table[table["status"].astype(str).isin(["failed", "missing"])]
            if len(bad):
                first = bad.iloc[0]
                why = f": {first['error']}" if "error" in bad.columns and pd.notna(first.get("error")) else ""
                out.append(f"{qc.parent.name}: {len(bad)} video(s) without usable face tracks (status failed/missing), "
                           f"e.g. {first.get('video_id', '?')}{why}")
            table, cov = table.drop(bad.index), cov.drop(bad.index)
        low = table.loc[cov < threshold]
        if len(low):
            vid = low["video_id"].astype(str) if "video_id" in low else low.index.astype(str)
            shown = ", ".join(f"{v} ({c:.0%})" for v, c in zip(vid.head(8), cov[low.index].head(8)))
            more = f" and {len(low) - 8} more" if len(low) > 8 else ""
            out.append(f"{qc.parent.name}: {len(low)} of {len(table)} videos have a face in fewer than {threshold:.0%} of frames: {shown}{more}")
    return out


def truncated_videos(run: Run) -> list[str]:
    """Videos whose frames stop before the duration their file announces, kept (``decode.on_truncated: keep``)."""
    out = []
    for qc in run_qc_tables(run):
        try:
            table = read_csv(qc)
        except DataError:
            continue  # low_coverage reports the unreadable table
        if "truncated" not in table.columns:
            continue
        cut = table[table["truncated"].astype(str).str.lower().isin(["true", "1"])]
        if len(cut):
            shown = ", ".join(
                f"{r.get('video_id', '?')} ({float(r.get('duration_decoded', float('nan'))):.2f} of {float(r.get('duration_announced', float('nan'))):.2f} s)"
                for r in cut.head(8).to_dict("records"))
            more = f" and {len(cut) - 8} more" if len(cut) > 8 else ""
            out.append(f"{qc.parent.name}: {len(cut)} video(s) are truncated or damaged: their frames stop before the duration "
                       f"the file announces; the frames that decode were kept (decode.on_truncated: keep): {shown}{more}")
    return out


def short_videos(run: Run) -> list[str]:
    """Videos shorter than one clip (``short_clip`` in the QC table): their clips repeat the last frame."""
    out = []
    for qc in run_qc_tables(run):
        try:
            table = read_csv(qc)
        except DataError:
            continue
        if "short_clip" not in table.columns:
            continue
        short = table[table["short_clip"].astype(str).str.lower().isin(["true", "1"])]
        if len(short):
            shown = ", ".join(f"{r.get('video_id', '?')} ({r.get('frames', '?')} frames)" for r in short.head(8).to_dict("records"))
            more = f" and {len(short) - 8} more" if len(short) > 8 else ""
            out.append(f"{qc.parent.name}: {len(short)} video(s) have fewer frames than one clip spans ({short['clip_span'].iloc[0]}): "
                       f"their clips repeat the last frame (padding, kept in training and test): {shown}{more}")
    return out


def experiment_manifest(run: Run, exp: str) -> pd.DataFrame | None:
    """The manifest of the dataset experiment ``exp`` fine-tunes (``finetune.dataset``, else ``data.finetune``)."""
    from affectube.errors import ConfigError
    from affectube.lineage import experiment_dataset

    try:
        dataset = experiment_dataset(run.cfg, exp)
    except ConfigError:
        return run.manifest
    if dataset in (run.manifests or {}):
        return run.manifests[dataset]
    return run.manifest if dataset == (run.cfg.get("data") or {}).get("finetune") else None


def missing_classes(run: Run) -> list[str]:
    out = []
    for exp in run.experiments:
        classes = exp.classes
        if not classes:
            continue
        man, labels = experiment_manifest(run, exp.name), None
        if man is not None and {"video_id", "emotion"} <= set(man.columns):
            labels = dict(zip(man["video_id"].astype(str), man["emotion"]))
        for f in exp.folds:
            sides: dict[str, set] = {}
            if labels is not None and f.fold is not None and "videos" in f.fold.extra:
                for side in ("train", "val"):
                    sides[side] = {str(labels[v]) for v in f.fold.videos(side) if v in labels and pd.notna(labels[v])}
            if f.ok and "y_true" in f.predictions:
                sides["test"] = set(f.predictions["y_true"].dropna().astype(str))
            for side, present in sides.items():
                absent = [c for c in classes if c not in present]
                if not absent or (side == "val" and not present):
                    continue
                effect = {
                    "train": "the model never saw them in training",
                    "val": "model selection ignores them",
                    "test": f"its {run.main_metric} averages over the {len(classes) - len(absent)} classes present",
                }[side]
                out.append(f"{exp.name}: fold {f.index}: no {side} videos of {', '.join(absent)} ({effect})")
    return out


def _diverges(values: pd.Series, ratio: float) -> str | None:
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    if len(v) == 0:
        return None
    bad = ~np.isfinite(v)
    if bad.any():
        return f"not finite (NaN/inf) at row {int(np.argmax(bad)) + 1} of {len(v)}"
    lo = float(v.min())
    if len(v) >= 3 and v[-1] > ratio * lo and v[-1] - lo > 1e-6:
        return f"ends at {v[-1]:.3g}, {v[-1] / lo if lo > 0 else math.inf:.1f}x its minimum {lo:.3g}"
    return None


def diverging_losses(run: Run) -> list[str]:
    ratio = float(run.cfg["report"]["divergence_ratio"])
    out = []
    for exp in run.experiments:
        for f in exp.ok_folds:
            if f.log is None:
                continue
            for col in [c for c in f.log.columns if c.endswith("loss")]:
                why = _diverges(f.log[col], ratio)
                if why:
                    out.append(f"{exp.name}: fold {f.index}: {col} {why}")
    pre = run.results / "pretrain" / "log.csv"
    if pre.exists():
        try:
            lg = read_csv(pre)
        except DataError as exc:
            return out + [str(exc)]
        for col in [c for c in lg.columns if "loss" in c]:
            why = _diverges(lg[col], ratio)
            if why:
                out.append(f"pretraining: {col} {why}")
    return out


def stale_metrics(run: Run) -> list[str]:
    """The evaluate stage's per_fold.csv must equal what the saved predictions give now."""
    out = []
    for exp in run.experiments:
        saved = exp.per_fold_file
        if saved is None or exp.failed_folds:
            continue
        _, now, _ = exp.recompute(run.main_metric)
        merged = saved.merge(now, on="fold", suffixes=("_saved", "_now"))
        if len(merged) != len(now) or len(saved) != len(now):
            out.append(f"{exp.name}: results/evaluate/{exp.name}/per_fold.csv has folds {sorted(saved['fold'])}, predictions give {sorted(now['fold'])}")
            continue
        lacking = [c for c in now.columns if c not in saved.columns]
        if lacking:
            out.append(f"{exp.name}: results/evaluate/{exp.name}/per_fold.csv lacks {', '.join(lacking[:4])}"
                       f"{' ...' if len(lacking) > 4 else ''}, which the saved predictions give (evaluation out of date?)")
        for col in [c for c in now.columns if c not in ("fold", "test_subjects") and c in saved.columns]:
            a = pd.to_numeric(merged[f"{col}_saved"], errors="coerce").to_numpy(float)
            b = pd.to_numeric(merged[f"{col}_now"], errors="coerce").to_numpy(float)
            if not np.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True):
                out.append(f"{exp.name}: {col} in results/evaluate/{exp.name}/per_fold.csv differs from the saved predictions (evaluation out of date?)")
    return out


def few_subjects(run: Run) -> list[str]:
    return [f"{t.other} vs {t.baseline}: {t.note}" for t in (run.tests or []) if t.min_p > run.cfg["report"]["alpha"]]


def no_frames(run: Run) -> list[str]:
    out = []
    for exp in run.experiments:
        if exp.targets and exp.ok_folds and exp.frames() is None:
            out.append(f"{exp.name}: continuous targets but no predictions_frames.csv: no per-frame metrics or traces")
    return out


def single_class(run: Run) -> list[str]:
    """A fold whose model predicts one class for every test video has learned nothing about the others."""
    out = []
    for exp in run.experiments:
        if len(exp.classes) < 2:
            continue
        for f in exp.ok_folds:
            video = M.per_video(f.predictions)
            if "y_pred" in video and len(video) > 1 and video["y_pred"].nunique() == 1:
                out.append(f"{exp.name}: fold {f.index}: all {len(video)} test videos are predicted as "
                           f"'{video['y_pred'].iloc[0]}' (the model outputs a single class)")
    return out


def skipped_stores(run: Run) -> list[str]:
    """Clip stores a fine-tuning fold could not use (its metrics.json lists them)."""
    out = []
    for exp in run.experiments:
        for f in exp.ok_folds:
            skipped = (f.metrics_file or {}).get("skipped_stores") or []
            if skipped:
                first = skipped[0]
                what = f"{first.get('path')} ({first.get('reason')})" if isinstance(first, dict) else str(first)
                out.append(f"{exp.name}: fold {f.index}: {len(skipped)} clip store(s) skipped, e.g. {what}")
    return out


def _training(f) -> dict:
    return (f.metrics_file or {}).get("training") or {}


def _finetune_cfg(run: Run, exp: str) -> dict:
    from affectube.report.plan import experiment_finetune

    try:
        return experiment_finetune(run.cfg, exp)
    except Exception:  # noqa: BLE001 - a check never raises; odd experiments are reported elsewhere
        return run.cfg.get("finetune", {}) or {}


def selected_in_warmup(run: Run) -> list[str]:
    """A fold whose kept model comes from an epoch inside the learning-rate warmup barely trained."""
    out = []
    for exp in run.experiments:
        ft = _finetune_cfg(run, exp.name)
        for f in exp.ok_folds:
            tr = _training(f)
            best, warmup = tr.get("best_epoch"), tr.get("warmup_epochs", ft.get("warmup_epochs"))
            if best is None or warmup is None:
                continue
            if int(best) <= int(warmup):
                out.append(f"{exp.name}: fold {f.index}: the selected epoch {int(best)} is inside the warmup "
                           f"({int(warmup)} epoch(s)): the kept model barely trained")
    return out


def _train_at_best(f) -> dict:
    tr = _training(f)
    at = dict(tr.get("train_at_best") or {})
    best = tr.get("best_epoch")
    if f.log is not None and best is not None and "epoch" in f.log.columns:
        row = f.log[pd.to_numeric(f.log["epoch"], errors="coerce") == int(best)]
        if len(row):
            for col in f.log.columns:
                if col.startswith("train_") and col != "train_loss" and col not in at:
                    at[col] = row[col].iloc[-1]
    return {k: float(v) for k, v in at.items() if v is not None and not isinstance(v, str)}


def _train_fit(f) -> tuple[dict, str]:
    """Training accuracy/CCC of the kept weights and where they come from: the evaluation pass over
    the fold's training videos (``metrics.json`` ``train``: test-mode clips, no augmentation, weights
    fixed) when the fold has one, else the running values of the selected epoch (augmented clips,
    weights moving: they read low while the model still moves)."""
    evaluated = (f.metrics_file or {}).get("train") or {}
    at = {f"train_{k}": float(evaluated[k]) for k in ("accuracy", "ccc")
          if isinstance(evaluated.get(k), (int, float)) and not isinstance(evaluated.get(k), bool)}
    if at:
        return at, "the kept weights on the training videos"
    return _train_at_best(f), "running, augmented training clips"


def underfit(run: Run) -> list[str]:
    """A model that does not fit its own training data at the selected epoch cannot be expected to generalise."""
    rcfg = run.cfg["report"]
    acc_min, ccc_min = float(rcfg["underfit_accuracy"]), float(rcfg["underfit_ccc"])
    out = []
    for exp in run.experiments:
        for f in exp.ok_folds:
            at, source = _train_fit(f)
            best = _training(f).get("best_epoch", "?")
            acc, ccc = at.get("train_accuracy"), at.get("train_ccc")
            if acc is not None and math.isfinite(acc) and acc < acc_min:
                out.append(f"{exp.name}: fold {f.index}: training accuracy {acc:.2f} at the selected epoch {best} "
                           f"({source}; < {acc_min:g}, report.underfit_accuracy): the model underfits its training videos")
            if ccc is not None and math.isfinite(ccc) and ccc < ccc_min:
                out.append(f"{exp.name}: fold {f.index}: training CCC {ccc:.2f} at the selected epoch {best} "
                           f"({source}; < {ccc_min:g}, report.underfit_ccc): the model underfits its training targets")
    return out


def chance_level(run: Run) -> list[str]:
    """Folds whose test metric is no better than predictions shuffled among each test subject's videos."""
    from affectube.eval.stats import chance_level as chance

    rcfg = run.cfg["report"]
    margin = float(rcfg["chance_margin"])
    metric = run.main_metric
    higher = M.higher_is_better(metric)
    out = []
    for exp in run.experiments:
        _, per_fold, _ = exp.recompute(metric)
        if per_fold.empty or metric not in per_fold.columns:
            continue
        values = dict(zip(per_fold["fold"].astype(int), pd.to_numeric(per_fold[metric], errors="coerce")))
        for f in exp.ok_folds:
            value = values.get(f.index, math.nan)
            level = chance(f.predictions, metric, seed=int(rcfg["stats_seed"]))
            if math.isnan(value) or math.isnan(level):
                continue
            if (value <= level + margin) if higher else (value >= level - margin):
                out.append(f"{exp.name}: fold {f.index}: {metric} {value:.3f} is at chance (labels shuffled among each "
                           f"test subject's videos give {level:.3f} on average; margin {margin:g}, report.chance_margin)")
    return out


def overlap(run: Run) -> list[str]:
    """Test subjects or test videos that pretraining saw (its data, not its dataset names)."""
    if run.overlap is None:
        return []
    return list(run.overlap.problems())


CHECKS: dict[str, Callable[[Run], list[str]]] = {
    "failed folds": failed_folds,
    "low face coverage": low_coverage,
    "truncated videos kept": truncated_videos,
    "videos shorter than a clip": short_videos,
    "classes missing from a fold": missing_classes,
    "diverging losses": diverging_losses,
    "single-class predictions": single_class,
    "chance-level test predictions": chance_level,
    "selected epoch inside the warmup": selected_in_warmup,
    "underfitting at the selected epoch": underfit,
    "pretraining/test overlap": overlap,
    "skipped clip stores": skipped_stores,
    "evaluation out of date": stale_metrics,
    "per-frame predictions missing": no_frames,
    "comparisons no test can decide": few_subjects,
}


def run_checks(run: Run) -> dict[str, list[str]]:
    return {name: found for name, check in CHECKS.items() if (found := check(run))}
