"""Experiments side by side, with a paired per-subject test of the difference.

``params.yaml: experiments`` declares the variants (SSL vs scratch, frozen vs
fine-tuned, loss weights ...), one per plain entry and one per combination of a grid
entry (:func:`affectube.config.experiment_variants`). :func:`side_by_side` puts every
metric of every experiment in one table (mean +- std over folds, and pooled over all test
predictions), with the params the experiments differ in as columns
(:func:`experiment_params`); :func:`grid_tables` lays out each grid entry's results by
its values; :func:`paired_tests` compares each experiment with the baseline
(``report.baseline``, else the experiment without overrides) subject by subject with the Wilcoxon signed-rank
test (scipy). With few subjects the exact test cannot reach significance at all: the
smallest two-sided p-value of n non-zero pairs is 2 / 2**n (0.125 for 4 subjects), and
the result says so instead of printing a p-value that looks like evidence.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from affectube.config import experiment_variants, expand_experiments, key_labels, value_label
from affectube.errors import ConfigError
from affectube.eval import metrics as M
from affectube.report.results import Experiment, per_subject_metrics, pooled_metrics, scalar_metrics, summarise


@dataclass
class PairedTest:
    metric: str
    baseline: str
    other: str
    n: int  # subjects with a value in both experiments
    n_nonzero: int  # pairs whose difference is not zero (the ones the test uses)
    mean_diff: float  # other - baseline, averaged over subjects
    median_diff: float
    wins: int  # subjects where `other` is better than the baseline
    losses: int
    statistic: float
    p_value: float
    min_p: float  # smallest p-value the exact two-sided test can give with n_nonzero pairs
    note: str

    def to_dict(self) -> dict:
        return asdict(self)


def min_two_sided_p(n: int) -> float:
    """Smallest attainable two-sided exact Wilcoxon p-value with ``n`` non-zero pairs."""
    return 1.0 if n <= 0 else min(1.0, 2.0 / 2**n)


def paired_test(a: pd.Series, b: pd.Series, metric: str, baseline: str, other: str, alpha: float = 0.05) -> PairedTest:
    """Wilcoxon signed-rank test of ``b - a`` over the subjects both series have (index = subject)."""
    joined = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    diff = (joined["b"] - joined["a"]).to_numpy(dtype=float)
    n = int(len(diff))
    nonzero = diff[diff != 0]
    higher = M.higher_is_better(metric)
    better = nonzero > 0 if higher else nonzero < 0
    wins, losses = int(better.sum()), int(len(nonzero) - better.sum())
    statistic = p = math.nan
    min_p = min_two_sided_p(len(nonzero))
    if len(nonzero) >= 1:
        res = stats.wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided", method="auto")
        statistic, p = float(res.statistic), float(res.pvalue)
    if n == 0:
        note = "no subject has a value in both experiments: nothing to compare"
    elif len(nonzero) == 0:
        note = f"identical values for all {n} subjects"
    elif min_p > alpha:
        note = (
            f"too few subjects for a test (n={n}, {len(nonzero)} non-zero differences): the smallest p-value the exact "
            f"two-sided Wilcoxon test can give is {min_p:.3g} > {alpha:g}, so no difference can be significant; "
            f"read the {wins}/{len(nonzero)} per-subject wins as description only"
        )
    else:
        verdict = "significant" if p < alpha else "not significant"
        note = f"Wilcoxon signed-rank over {len(nonzero)} subjects: p = {p:.3g} ({verdict} at {alpha:g}, uncorrected)"
    return PairedTest(
        metric=metric,
        baseline=baseline,
        other=other,
        n=n,
        n_nonzero=int(len(nonzero)),
        mean_diff=float(diff.mean()) if n else math.nan,
        median_diff=float(np.median(diff)) if n else math.nan,
        wins=wins,
        losses=losses,
        statistic=statistic,
        p_value=p,
        min_p=min_p,
        note=note,
    )


def subject_values(exp: Experiment, metric: str) -> pd.Series:
    """The metric per test subject (index = subject), recomputed from saved predictions."""
    table = per_subject_metrics(exp)
    if table.empty or metric not in table.columns:
        return pd.Series(dtype=float, name=exp.name)
    return table.set_index("subject")[metric].astype(float).rename(exp.name)


def experiment_params(cfg: dict) -> pd.DataFrame:
    """One row per experiment (index ``experiment``, grid entries expanded): ``grid``, the grid entry it
    comes from ('' for a plain entry), and one column per ``section.key`` that some experiment overrides,
    holding its value in that experiment (the params' own value where the experiment leaves it alone).
    Scalars stay scalars; mappings and lists are JSON (``{"ccc": 1.0, "mse": 1.0}``)."""
    variants = experiment_variants(cfg.get("experiments"))
    keys = sorted({k for v in variants for k in v.overrides})
    rows = []
    for v in variants:
        row = {"experiment": v.name, "grid": v.entry if v.grid else ""}
        for key in keys:
            row[key] = _param_cell(v.overrides[key] if key in v.overrides else _lookup(cfg, key))
        rows.append(row)
    return pd.DataFrame(rows, columns=["experiment", "grid", *keys]).set_index("experiment")


def _lookup(cfg: dict, key: str):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _param_cell(value):
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def side_by_side(experiments: list[Experiment], main_metric: str = "uar", params: pd.DataFrame | None = None) -> pd.DataFrame:
    """Tidy table: one row per (metric, experiment) with fold mean/std/n and the pooled value;
    ``params`` (:func:`experiment_params`): its columns (``grid`` and the overridden keys) follow ``experiment``."""
    rows = []
    for exp in experiments:
        summary = summarise(exp, main_metric)
        pooled = scalar_metrics(pooled_metrics(exp, main_metric))
        for metric in dict.fromkeys([*summary.index, *pooled]):
            row = summary.loc[metric] if metric in summary.index else None
            rows.append(
                {
                    "metric": metric,
                    "experiment": exp.name,
                    "mean": float(row["mean"]) if row is not None else math.nan,
                    "std": float(row["std"]) if row is not None else math.nan,
                    "folds": int(row["n"]) if row is not None else 0,
                    "failed_folds": len(exp.failed_folds),
                    "pooled": pooled.get(metric, math.nan),
                }
            )
    table = pd.DataFrame(rows, columns=["metric", "experiment", "mean", "std", "folds", "failed_folds", "pooled"])
    if params is None or params.empty:
        return table
    cols = [str(c) for c in params.columns]
    table = table.merge(params.rename(columns=str), left_on="experiment", right_index=True, how="left")
    return table[["metric", "experiment", *cols, "mean", "std", "folds", "failed_folds", "pooled"]]


def mean_std(r, digits: int = 3) -> str:
    if math.isnan(r["mean"]):
        return "n/a"
    std = "" if math.isnan(r["std"]) else f" ± {r['std']:.{digits}f}"
    return f"{r['mean']:.{digits}f}{std}"


def wide(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``metric x experiment`` with "mean ± std" cells (the side-by-side view of :func:`side_by_side`)."""
    if table.empty:
        return pd.DataFrame()

    cells = table.assign(cell=table.apply(lambda r: mean_std(r, digits), axis=1))
    order = list(dict.fromkeys(table["experiment"]))
    metrics = list(dict.fromkeys(table["metric"]))
    return cells.pivot(index="metric", columns="experiment", values="cell").reindex(index=metrics, columns=order)


def grid_tables(table: pd.DataFrame, cfg: dict, metric: str, digits: int = 3) -> dict[str, pd.DataFrame]:
    """Grid entry -> its results laid out by its values: "mean ± std" of ``metric`` over folds, the last
    grid key (alphabetically) across, the combinations of the others down (one row for a one-key grid)."""
    rows = table[table["metric"] == metric].set_index("experiment") if not table.empty else pd.DataFrame()
    out: dict[str, pd.DataFrame] = {}
    all_variants = experiment_variants(cfg.get("experiments"))
    for entry in dict.fromkeys(v.entry for v in all_variants if v.grid):
        variants = [v for v in all_variants if v.entry == entry]
        keys = list(variants[0].grid)
        across, down, label = keys[-1], keys[:-1], key_labels(keys)  # labels as in the variants' names
        cells: dict[str, dict[str, str]] = {}
        for v in variants:
            row = ", ".join(f"{label[k]}={value_label(v.grid[k])}" for k in down) or metric
            col = f"{label[across]}={value_label(v.grid[across])}"
            cells.setdefault(col, {})[row] = mean_std(rows.loc[v.name], digits) if v.name in rows.index else "n/a"
        frame = pd.DataFrame(cells)
        frame.index.name = ", ".join(label[k] for k in down) or "metric"
        out[entry] = frame
    return out


def default_baseline(cfg: dict) -> str | None:
    """``report.baseline``; else the one experiment without overrides (the params as they are); else the first.

    (Experiment order is not reliable: the rules pass params as JSON with sorted keys.)
    """
    chosen = (cfg.get("report") or {}).get("baseline")
    if chosen:
        return chosen
    experiments = expand_experiments(cfg.get("experiments"))  # grid entries expanded
    plain = [name for name, over in experiments.items() if not over]
    return plain[0] if len(plain) == 1 else (next(iter(experiments), None))


def paired_tests(experiments: list[Experiment], metric: str, baseline: str | None = None, alpha: float = 0.05) -> list[PairedTest]:
    """Each experiment against the baseline on ``metric``, paired by test subject."""
    if len(experiments) < 2:
        return []
    names = [e.name for e in experiments]
    if baseline is not None and baseline not in names:
        raise ConfigError(f"params.yaml: report.baseline: {baseline!r} is not one of the experiments {names}")
    base = next(e for e in experiments if e.name == (baseline or names[0]))
    a = subject_values(base, metric)
    return [
        paired_test(a, subject_values(e, metric), metric, base.name, e.name, alpha) for e in experiments if e.name != base.name
    ]
