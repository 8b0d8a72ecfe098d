"""Honest statistics for small data: a permutation test against chance and a bootstrap interval.

Both work on the saved test predictions of an experiment (``predictions.csv`` of every fold; clips
of a video are first averaged as in :func:`affectube.eval.metrics.per_video`), on the *pooled*
main metric, i.e. the metric computed once over all test videos of all folds. An experiment
run with several seeds (a seed group, :mod:`affectube.report.compare`) is one statistic: the
mean over seeds of each seed's pooled metric.

- :func:`permutation_test`: the labels (class, or the continuous targets of a video, kept
  together) are permuted among the test videos *of the same test subject*, the predictions kept;
  every seed gets the same permutation. The null distribution is the metric of predictions that
  carry no information about which of a subject's videos is which; its mean is the chance level
  (for UAR about 1/K). ``p = (1 + #{null at least as good as observed}) / (1 + permutations)``,
  one-sided (better than chance). A subject whose test videos all share one label cannot move
  under the permutation: data with one class per subject give p = 1, correctly.
- :func:`bootstrap_ci`: test subjects are resampled with replacement (all videos of a drawn
  subject, every seed) and the percentile interval of the statistic is returned. With a single
  test subject (single-speaker data) videos are resampled instead; ``unit`` says which.

Both are seeded (``numpy.random.default_rng(seed)``) and so reproducible.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from affectube.eval import metrics as M


@dataclass
class Pooled:
    """Per-video truths (one row per distinct test video over all seeds) and each seed's predictions."""

    metric: str
    subjects: np.ndarray  # [V] subject of each video
    truth: np.ndarray  # [V] class codes (int, -1 = unlabelled) or [V, T] continuous truths
    seeds: list[tuple[np.ndarray, np.ndarray]]  # per seed: (video index into truth [n], predictions [n] or [n, T])
    score: Callable[[np.ndarray, np.ndarray], float]  # (truth rows, prediction rows) -> metric

    def value(self, truth: np.ndarray | None = None, rows: list[np.ndarray] | None = None) -> float:
        """The statistic: mean over seeds of the metric over their (optionally resampled) videos."""
        truth = self.truth if truth is None else truth
        vals = []
        for s, (idx, pred) in enumerate(self.seeds):
            if rows is None:
                vals.append(self.score(truth[idx], pred))
            else:
                vals.append(self.score(truth[idx[rows[s]]], pred[rows[s]]))
        vals = [v for v in vals if not math.isnan(v)]
        return float(np.mean(vals)) if vals else math.nan


@dataclass
class Stats:
    metric: str
    value: float  # the statistic (pooled metric; mean over seeds)
    chance: float  # mean of the permutation null
    p_value: float  # one-sided, better than chance
    permutations: int
    ci_low: float
    ci_high: float
    unit: str  # subject | video: what the bootstrap resamples
    units: int  # how many of them
    resamples: int
    seeds: int
    note: str = ""
    null: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("null")
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def _fast_recall(y: np.ndarray, p: np.ndarray, weighted: bool) -> float:
    """UAR (``weighted`` False) or accuracy of integer codes, as :func:`metrics.uar` / :func:`metrics.accuracy`."""
    k = int(max(y.max(), p.max())) + 1
    support = np.bincount(y, minlength=k)
    correct = np.bincount(y[p == y], minlength=k)
    if weighted:
        return float(correct.sum() / support.sum())
    present = support > 0
    return float(np.mean(correct[present] / support[present]))


def _categorical_score(name: str) -> Callable:
    fn = M.CATEGORICAL[name][0]

    def score(y, p):
        keep = y >= 0
        if not keep.any():
            return math.nan
        y, p = y[keep], p[keep]
        if name == "uar":
            return _fast_recall(y, p, weighted=False)
        if name in ("accuracy", "war"):
            return _fast_recall(y, p, weighted=True)
        return fn(y, p)

    return score


def _continuous_score(name: str, targets: list[str]) -> tuple[Callable, list[str]]:
    """``ccc`` -> mean over targets; ``ccc_valence`` -> that target only."""
    base, _, target = name.partition("_")
    fn = M.CONTINUOUS[base][0]
    use = [target] if target else list(targets)

    def score(y, p):
        vals = [fn(y[:, i], p[:, i]) for i in range(y.shape[1])]
        return float(np.mean(vals)) if vals and not any(math.isnan(v) for v in vals) else math.nan

    return score, use


def prepare(tables: Sequence[pd.DataFrame], metric: str) -> Pooled | None:
    """The videos of one experiment (``tables``: one predictions table per seed, clip rows of all
    folds); None when ``metric`` cannot be computed from them (e.g. a frame-level-only target)."""
    tables = [t for t in tables if t is not None and len(t)]
    if not tables:
        return None
    base = metric.removeprefix("frame_")
    videos = [M.per_video(t) for t in tables]
    key = lambda v: v["dataset"].astype(str) + "/" + v["video_id"].astype(str)  # noqa: E731
    if base in M.CATEGORICAL:
        classes = M.classes_of(tables[0])
        if not classes or "y_true" not in videos[0]:
            return None
        code = {c: i for i, c in enumerate(classes)}
        to_codes = lambda s: np.array([code.get(str(x), -1) if pd.notna(x) else -1 for x in s], dtype=np.int64)  # noqa: E731
        truth_col, pred_of = "y_true", lambda v: to_codes(v["y_pred"])  # noqa: E731
        score, cols = _categorical_score(base), None
    else:
        head = base.split("_")[0]
        targets = M.targets_of(tables[0])
        if head not in M.CONTINUOUS or not targets:
            return None
        score, use = _continuous_score(base, targets)
        if any(t not in targets for t in use):
            return None
        cols = use
        truth_col, pred_of = None, lambda v: v[[f"pred_{t}" for t in use]].to_numpy(float)  # noqa: E731
    allv = pd.concat([v.assign(_key=key(v)) for v in videos], ignore_index=True).drop_duplicates("_key")
    index = {k: i for i, k in enumerate(allv["_key"])}
    subjects = allv["subject"].astype(str).to_numpy()
    truth = to_codes(allv[truth_col]) if cols is None else allv[[f"true_{t}" for t in cols]].to_numpy(float)
    seeds = [(key(v).map(index).to_numpy(np.int64), pred_of(v)) for v in videos]
    return Pooled(metric, subjects, truth, seeds, score)


def _groups(subjects: np.ndarray) -> list[np.ndarray]:
    return [np.flatnonzero(subjects == s) for s in np.unique(subjects)]


def _within_subject_perm(groups: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    perm = np.arange(n)
    for where in groups:
        perm[where] = rng.permutation(where)
    return perm


def permutation_null(pooled: Pooled, permutations: int = 1000, seed: int = 0) -> np.ndarray:
    """The statistic under ``permutations`` within-subject permutations of the labels."""
    rng = np.random.default_rng(seed)
    groups, n = _groups(pooled.subjects), len(pooled.subjects)
    return np.array([pooled.value(pooled.truth[_within_subject_perm(groups, n, rng)]) for _ in range(permutations)])


def p_value(observed: float, null: np.ndarray, higher_is_better: bool = True) -> float:
    """One-sided permutation p-value (the observed counts as one permutation, so p > 0)."""
    null = null[np.isfinite(null)]
    if math.isnan(observed) or not len(null):
        return math.nan
    tol = 1e-12 * max(1.0, abs(observed))
    hits = np.sum(null >= observed - tol) if higher_is_better else np.sum(null <= observed + tol)
    return float((1 + hits) / (1 + len(null)))


def bootstrap(pooled: Pooled, resamples: int = 2000, seed: int = 0) -> tuple[np.ndarray, str, int]:
    """Bootstrap distribution of the statistic, resampling test subjects (videos when there is one)."""
    rng = np.random.default_rng(seed)
    subjects = np.unique(pooled.subjects)
    unit = "subject" if len(subjects) >= 2 else "video"
    out = np.empty(resamples)
    if unit == "subject":
        # per seed: the rows of each subject
        rows_of = [{s: np.flatnonzero(pooled.subjects[idx] == s) for s in subjects} for idx, _ in pooled.seeds]
        for b in range(resamples):
            drawn = rng.choice(subjects, size=len(subjects), replace=True)
            rows = [np.concatenate([r[s] for s in drawn]) for r in rows_of]
            out[b] = pooled.value(rows=rows)
        return out, unit, len(subjects)
    n = len(pooled.truth)
    pos = [np.full(n, -1, np.int64) for _ in pooled.seeds]  # video -> row in each seed's predictions
    for s, (idx, _) in enumerate(pooled.seeds):
        pos[s][idx] = np.arange(len(idx))
    for b in range(resamples):
        drawn = rng.integers(0, n, size=n)
        rows = [p[drawn][p[drawn] >= 0] for p in pos]
        out[b] = pooled.value(rows=rows)
    return out, unit, n


def interval(dist: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    d = dist[np.isfinite(dist)]
    if not len(d):
        return math.nan, math.nan
    lo, hi = np.quantile(d, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def experiment_stats(tables: Sequence[pd.DataFrame], metric: str, permutations: int = 1000, resamples: int = 2000,
                     seed: int = 0, level: float = 0.95) -> Stats:
    """Permutation p-value against chance and bootstrap interval of ``metric`` (pooled over test videos,
    averaged over the seeds' ``tables``)."""
    nan = math.nan
    pooled = prepare(tables, metric)
    if pooled is None:
        why = ("no test predictions" if not any(t is not None and len(t) for t in tables)
               else f"{metric} cannot be computed per test video from the saved predictions")
        return Stats(metric, nan, nan, nan, 0, nan, nan, "", 0, 0, len(tables), f"{why}: no test against chance")
    observed = pooled.value()
    null = permutation_null(pooled, permutations, seed)
    higher = M.higher_is_better(metric)
    boot, unit, units = bootstrap(pooled, resamples, seed + 1)
    lo, hi = interval(boot, level)
    notes = []
    n_subj = len(np.unique(pooled.subjects))
    if unit == "video":
        notes.append(f"one test subject: the interval resamples its {units} test videos, not subjects "
                     "(it says nothing about other people)")
    elif n_subj < 5:
        notes.append(f"only {n_subj} test subjects: the bootstrap interval is coarse")
    if np.nanstd(null) == 0:
        notes.append("the permutations cannot change the metric (each test subject's videos share one label)")
    return Stats(metric, observed, float(np.nanmean(null)) if np.isfinite(null).any() else nan, p_value(observed, null, higher),
                 permutations, lo, hi, unit, units, resamples, len(pooled.seeds), "; ".join(notes), null)


def chance_level(table: pd.DataFrame, metric: str, permutations: int = 200, seed: int = 0) -> float:
    """Expected ``metric`` of one predictions table under within-subject label permutation."""
    pooled = prepare([table], metric)
    if pooled is None:
        return math.nan
    null = permutation_null(pooled, permutations, seed)
    return float(np.nanmean(null)) if np.isfinite(null).any() else math.nan
