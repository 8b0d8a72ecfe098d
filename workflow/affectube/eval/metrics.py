"""Every evaluation metric, in one place (numpy in, Python floats out).

Categorical: accuracy, UAR (unweighted average recall = balanced accuracy: the mean
recall over the classes present in ``y_true``), WAR (weighted average recall: recall
weighted by class support, which equals accuracy), macro/weighted F1, confusion matrix.

Continuous: CCC with *population* moments (ddof=0) everywhere,
``CCC = 2 cov(y, p) / (var(y) + var(p) + (mean(y) - mean(p))^2)``, Pearson r, RMSE, MAE.

:func:`evaluate_table` turns a predictions table (the contract's ``predictions.csv``:
one row per clip) into metrics: clips of one video are first averaged (class
probabilities and continuous predictions), then metrics are computed over videos.
:func:`evaluate_frames` does the same over the rows of ``predictions_frames.csv``.
Nothing here needs the model: every number can be recomputed from saved predictions.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import pandas as pd

# ---------------------------------------------------------------- categorical


def confusion_matrix(y_true: Sequence, y_pred: Sequence, labels: Sequence) -> np.ndarray:
    """Counts ``C[i, j]`` of true ``labels[i]`` predicted as ``labels[j]`` (rows: truth)."""
    index = {lab: i for i, lab in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        if t not in index or p not in index:
            raise ValueError(f"label {t if t not in index else p!r} is not one of {list(labels)}")
        cm[index[t], index[p]] += 1
    return cm


def accuracy(y_true, y_pred) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if len(y_true) else math.nan


def _recalls(y_true, y_pred):
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes = np.unique(y_true)
    recall = np.array([np.mean(y_pred[y_true == c] == c) for c in classes])
    support = np.array([np.sum(y_true == c) for c in classes])
    return recall, support


def uar(y_true, y_pred) -> float:
    """Unweighted average recall over the classes present in y_true (= balanced accuracy)."""
    recall, _ = _recalls(y_true, y_pred)
    return float(recall.mean()) if len(recall) else math.nan


def war(y_true, y_pred) -> float:
    """Support-weighted average recall (= accuracy)."""
    recall, support = _recalls(y_true, y_pred)
    return float((recall * support).sum() / support.sum()) if len(recall) else math.nan


def _f1s(y_true, y_pred):
    """Per-class F1 and support over the union of true and predicted labels (as sklearn)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = np.unique(np.concatenate([y_true, y_pred]))
    f1, support = [], []
    for c in labels:
        tp = np.sum((y_true == c) & (y_pred == c))
        fp = np.sum((y_true != c) & (y_pred == c))
        fn = np.sum((y_true == c) & (y_pred != c))
        denom = 2 * tp + fp + fn
        f1.append(2 * tp / denom if denom else 0.0)
        support.append(np.sum(y_true == c))
    return np.array(f1, dtype=float), np.array(support, dtype=float)


def f1_macro(y_true, y_pred) -> float:
    f1, _ = _f1s(y_true, y_pred)
    return float(f1.mean()) if len(f1) else math.nan


def f1_weighted(y_true, y_pred) -> float:
    f1, support = _f1s(y_true, y_pred)
    return float((f1 * support).sum() / support.sum()) if support.sum() else math.nan


# ---------------------------------------------------------------- continuous


def _pair(y, p):
    y, p = np.asarray(y, dtype=np.float64).ravel(), np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"shape mismatch: {y.shape} vs {p.shape}")
    keep = np.isfinite(y) & np.isfinite(p)
    return y[keep], p[keep]


def ccc(y, p) -> float:
    """Lin's concordance correlation coefficient with population (ddof=0) moments."""
    y, p = _pair(y, p)
    if len(y) < 2:
        return math.nan
    my, mp = y.mean(), p.mean()
    vy, vp = y.var(ddof=0), p.var(ddof=0)
    cov = np.mean((y - my) * (p - mp))
    denom = vy + vp + (my - mp) ** 2
    return float(2 * cov / denom) if denom > 0 else math.nan


CONSTANT_RTOL = 1e-6  # a series whose sd is below this times max(1, |mean|) is constant (float noise only)


def is_constant(x) -> bool:
    """True when ``x`` varies by no more than float noise: its sd is at most ``CONSTANT_RTOL * max(1, |mean|)``."""
    x = np.asarray(x, dtype=np.float64)
    return bool(len(x) == 0 or x.std(ddof=0) <= CONSTANT_RTOL * max(1.0, abs(float(x.mean()))))


def pearson(y, p) -> float:
    """Pearson's r; NaN when either side is constant up to float noise (:func:`is_constant`), where
    r would only measure rounding errors (e.g. float32 outputs of a model that predicts one value)."""
    y, p = _pair(y, p)
    if len(y) < 2:
        return math.nan
    sy, sp = y.std(ddof=0), p.std(ddof=0)
    if is_constant(y) or is_constant(p):
        return math.nan
    return float(np.mean((y - y.mean()) * (p - p.mean())) / (sy * sp))


def rmse(y, p) -> float:
    y, p = _pair(y, p)
    return float(np.sqrt(np.mean((y - p) ** 2))) if len(y) else math.nan


def mae(y, p) -> float:
    y, p = _pair(y, p)
    return float(np.mean(np.abs(y - p))) if len(y) else math.nan


# name -> (function, higher is better)
CATEGORICAL: dict[str, tuple[Callable, bool]] = {
    "accuracy": (accuracy, True),
    "uar": (uar, True),
    "war": (war, True),
    "f1_macro": (f1_macro, True),
    "f1_weighted": (f1_weighted, True),
}
CONTINUOUS: dict[str, tuple[Callable, bool]] = {
    "ccc": (ccc, True),
    "pearson": (pearson, True),
    "rmse": (rmse, False),
    "mae": (mae, False),
}


BOUNDED01 = {"accuracy", "uar", "war", "f1_macro", "f1_weighted"}  # values in [0, 1]
BOUNDED11 = {"ccc", "pearson"}  # correlations in [-1, 1], of any target, per clip or per frame
LABELS = {
    "accuracy": "accuracy",
    "uar": "UAR (balanced accuracy)",
    "war": "WAR (= accuracy)",
    "f1_macro": "macro F1",
    "f1_weighted": "weighted F1",
    "ccc": "CCC",
    "pearson": "Pearson r",
    "rmse": "RMSE",
    "mae": "MAE",
}


def metric_label(col: str) -> str:
    """``uar`` -> "UAR (balanced accuracy)", ``frame_ccc_valence`` -> "CCC valence (per frame)"."""
    frame = col.startswith("frame_")
    base = col.removeprefix("frame_")
    head, _, target = base.partition("_") if base not in LABELS else (base, "", "")
    label = LABELS.get(head, head) + (f" {target}" if target else "")
    return label + (" (per frame)" if frame else "")


def metric_range(name: str) -> tuple[float, float] | None:
    """The range a bounded metric's values lie in: (0, 1) for the class metrics, (-1, 1) for
    ``ccc``/``pearson`` (``ccc_valence``, ``frame_pearson`` ...); None when unbounded (rmse, mae)."""
    if name in BOUNDED01:
        return (0.0, 1.0)
    if name.removeprefix("frame_").split("_")[0] in BOUNDED11:
        return (-1.0, 1.0)
    return None


def higher_is_better(name: str) -> bool:
    """``uar``, ``ccc``, ``ccc_valence``, ``frame_rmse_arousal`` ... -> True/False."""
    base = name.removeprefix("frame_")
    if base in CATEGORICAL:
        return CATEGORICAL[base][1]
    head = base.split("_")[0]
    if head in CONTINUOUS:
        return CONTINUOUS[head][1]
    raise KeyError(f"unknown metric {name!r}")


# ---------------------------------------------------------------- tables


def classes_of(table: pd.DataFrame) -> list[str]:
    return [c[len("prob_") :] for c in table.columns if c.startswith("prob_")]


def targets_of(table: pd.DataFrame) -> list[str]:
    return [c[len("true_") :] for c in table.columns if c.startswith("true_") and f"pred_{c[5:]}" in table.columns]


def per_video(table: pd.DataFrame) -> pd.DataFrame:
    """Average the clips of each video: class probabilities and continuous predictions.

    The video's predicted class is the arg-max of its mean probabilities (ties: first class).
    """
    classes, targets = classes_of(table), targets_of(table)
    keys = ["dataset", "video_id"]
    first = {c: "first" for c in ("fold", "subject", "y_true") if c in table.columns}
    means = {c: "mean" for c in [f"prob_{k}" for k in classes] + [f"{s}_{t}" for t in targets for s in ("true", "pred")]}
    video = table.groupby(keys, sort=False, dropna=False).agg({**first, **means}).reset_index()
    video["clips"] = table.groupby(keys, sort=False, dropna=False).size().to_numpy()
    if classes:
        probs = video[[f"prob_{k}" for k in classes]].to_numpy()
        video["y_pred"] = np.asarray(classes, dtype=object)[probs.argmax(axis=1)]
    return video


def categorical_metrics(y_true, y_pred, labels: Sequence[str]) -> dict:
    y_true, y_pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    keep = pd.notna(y_true) & (y_true != "")
    y_true, y_pred = y_true[keep].astype(str), y_pred[keep].astype(str)
    out = {name: fn(y_true, y_pred) for name, (fn, _) in CATEGORICAL.items()}
    out["n"] = int(len(y_true))
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, list(labels)).tolist()
    out["labels"] = list(labels)
    return out


def continuous_metrics(y: np.ndarray, p: np.ndarray, targets: Sequence[str], prefix: str = "") -> dict:
    """Per target ``<metric>_<target>`` and the mean over targets ``<metric>``."""
    out: dict = {}
    y, p = np.asarray(y, dtype=np.float64).reshape(len(y), -1), np.asarray(p, dtype=np.float64).reshape(len(p), -1)
    for name, (fn, _) in CONTINUOUS.items():
        vals = [fn(y[:, i], p[:, i]) for i in range(len(targets))]
        for t, v in zip(targets, vals):
            out[f"{prefix}{name}_{t}"] = v
        out[f"{prefix}{name}"] = float(np.mean(vals)) if vals and not any(math.isnan(v) for v in vals) else math.nan
    return out


def evaluate_table(table: pd.DataFrame, classes: Sequence[str] | None = None) -> dict:
    """Metrics of one predictions table (clip rows -> video rows -> metrics)."""
    classes = list(classes) if classes is not None else classes_of(table)
    video = per_video(table)
    out: dict = {"videos": int(len(video))}
    if classes and "y_true" in video.columns and video["y_true"].notna().any():
        out.update(categorical_metrics(video["y_true"], video["y_pred"], classes))
    targets = targets_of(table)
    if targets:
        y = video[[f"true_{t}" for t in targets]].to_numpy()
        p = video[[f"pred_{t}" for t in targets]].to_numpy()
        out.update(continuous_metrics(y, p, targets))
    return out


def evaluate_frames(frames: pd.DataFrame) -> dict:
    """Per-frame continuous metrics over all rows of a ``predictions_frames.csv`` table."""
    targets = targets_of(frames)
    y = frames[[f"true_{t}" for t in targets]].to_numpy()
    p = frames[[f"pred_{t}" for t in targets]].to_numpy()
    out = continuous_metrics(y, p, targets, prefix="frame_")
    out["frames"] = int(len(frames))
    return out


def main_value(metrics: dict, name: str) -> float:
    """The value of the main metric (``ccc`` etc. fall back to their frame-level version)."""
    if name in metrics and not _isnan(metrics[name]):
        return float(metrics[name])
    if f"frame_{name}" in metrics:
        return float(metrics[f"frame_{name}"])
    return math.nan


def _isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)
