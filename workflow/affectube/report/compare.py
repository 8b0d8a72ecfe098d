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

**Seeds.** Experiments that differ only in ``finetune.seed`` (a grid over the seed,
``experiments: {videomae: {grid: {finetune.seed: [0, 1, 2]}}}``) form one *seed group*
(:func:`seed_groups`): one row of :func:`side_by_side` with ``mean`` and ``std`` (sample sd,
ddof 1) over every fold of every seed, ``sd_seeds`` (sample sd of the seeds' fold means),
``pooled`` (mean over seeds of each seed's pooled value), and the paired test on the
per-subject values averaged over seeds.

**Against chance** (:func:`chance_stats`, :mod:`affectube.eval.stats`): on the main metric's
row, ``p_perm`` (within-subject permutation test of the pooled metric, ``chance`` its null
mean) and ``ci_low``/``ci_high``, a bootstrap interval over test subjects (``ci_unit`` says
what was resampled, ``ci_n`` how many).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from affectube.config import experiment_variants, expand_experiments, key_labels, sections, value_label, variant_name
from affectube.errors import ConfigError
from affectube.eval import metrics as M
from affectube.eval import stats as S
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


SEED_KEY = "finetune.seed"


@dataclass
class Group:
    """Experiments that differ only in ``finetune.seed`` (one member when it has no seed siblings)."""

    name: str
    members: list[str]
    seeds: list  # finetune.seed of each member


def seed_groups(cfg: dict) -> list[Group]:
    """The experiments grouped by everything but the seed: a grid entry with ``finetune.seed`` among its
    keys gives one group per combination of its other keys, named like a variant without the seed
    (``videomae`` for ``grid: {finetune.seed: [0, 1, 2]}``); any other experiment is a group of one."""
    base_seed = sections(cfg, "finetune")["finetune"]["seed"]  # a missing finetune section: the default seed
    groups: dict[str, Group] = {}
    for v in experiment_variants(cfg.get("experiments")):
        if v.grid and SEED_KEY in v.grid:
            rest = {k: val for k, val in v.grid.items() if k != SEED_KEY}
            name = variant_name(v.entry, rest) if rest else v.entry
        else:
            name = v.name
        g = groups.setdefault(name, Group(name, [], []))
        g.members.append(v.name)
        g.seeds.append(v.overrides.get(SEED_KEY, base_seed))
    return list(groups.values())


def group_of(groups: list[Group], experiment: str) -> str:
    return next((g.name for g in groups if experiment in g.members), experiment)


def subject_values(exp: Experiment | list[Experiment], metric: str) -> pd.Series:
    """The metric per test subject (index = subject), recomputed from saved predictions; for a seed
    group (a list), each subject's mean over the seeds that have it."""
    exps = exp if isinstance(exp, list) else [exp]
    name = exps[0].name if len(exps) == 1 else exps[0].name + "+"
    series = []
    for e in exps:
        table = per_subject_metrics(e)
        if not table.empty and metric in table.columns:
            series.append(table.groupby(table["subject"].astype(str))[metric].mean().astype(float))
    if not series:
        return pd.Series(dtype=float, name=name)
    return pd.concat(series, axis=1).mean(axis=1).rename(name)


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


STAT_COLUMNS = ["chance", "p_perm", "ci_low", "ci_high", "ci_unit", "ci_n"]
VALUE_COLUMNS = ["seeds", "mean", "std", "folds", "sd_seeds", "failed_folds", "pooled", *STAT_COLUMNS]


def _fold_values(exp: Experiment, metric: str, main_metric: str) -> np.ndarray:
    per_fold = exp.recompute(main_metric)[1]
    if per_fold.empty or metric not in per_fold.columns:
        return np.zeros(0)
    v = pd.to_numeric(per_fold[metric], errors="coerce").to_numpy(float)
    return v[np.isfinite(v)]


def _sd(values) -> float:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.std(ddof=1)) if len(v) > 1 else math.nan


def chance_stats(experiments: list[Experiment], metric: str, cfg: dict | None = None) -> S.Stats:
    """Permutation test against chance and bootstrap interval of one experiment or seed group (the
    ``report`` params ``permutations``, ``bootstrap``, ``stats_seed``, ``ci_level``)."""
    rcfg = sections(cfg or {}, "report")["report"]
    tables = [e.predictions() for e in experiments if e.ok_folds]
    return S.experiment_stats(tables, metric, permutations=int(rcfg["permutations"]), resamples=int(rcfg["bootstrap"]),
                              seed=int(rcfg["stats_seed"]), level=float(rcfg["ci_level"]))


def side_by_side(experiments: list[Experiment], main_metric: str = "uar", params: pd.DataFrame | None = None,
                 groups: list[Group] | None = None, stats: dict[str, S.Stats] | None = None) -> pd.DataFrame:
    """Tidy table: one row per (metric, experiment or seed group) with ``seeds``, fold ``mean``/``std``
    (sample sd, ddof 1, over every fold of every seed)/``folds``, ``sd_seeds`` (sample sd of the seeds'
    means), ``failed_folds``, ``pooled`` (mean over seeds) and, on the main metric's row, the
    statistics against chance (``stats``: group name -> :class:`affectube.eval.stats.Stats`);
    ``params`` (:func:`experiment_params`): its columns (``grid`` and the overridden keys) follow
    ``experiment`` (a seed group's ``finetune.seed`` cell lists its seeds)."""
    by_name = {e.name: e for e in experiments}
    groups = [g for g in (groups or [Group(e.name, [e.name], [None]) for e in experiments]) if any(m in by_name for m in g.members)]
    rows = []
    for g in groups:
        members = [by_name[m] for m in g.members if m in by_name]
        metrics = list(dict.fromkeys(m for e in members for m in [*summarise(e, main_metric).index,
                                                                      *scalar_metrics(pooled_metrics(e, main_metric))]))
        st = (stats or {}).get(g.name)
        for metric in metrics:
            folds = [_fold_values(e, metric, main_metric) for e in members]
            allv = np.concatenate(folds) if folds else np.zeros(0)
            means = [float(v.mean()) for v in folds if len(v)]
            pooled = [scalar_metrics(pooled_metrics(e, main_metric)).get(metric, math.nan) for e in members]
            pooled = [p for p in pooled if not math.isnan(p)]
            row = {
                "metric": metric,
                "experiment": g.name,
                "seeds": len(members),
                "mean": float(allv.mean()) if len(allv) else math.nan,
                "std": _sd(allv),
                "folds": int(len(allv)),
                "sd_seeds": _sd(means),
                "failed_folds": sum(len(e.failed_folds) for e in members),
                "pooled": float(np.mean(pooled)) if pooled else math.nan,
            }
            on = st is not None and metric == st.metric
            row.update({c: (getattr(st, {"p_perm": "p_value", "ci_n": "units", "ci_unit": "unit"}.get(c, c)) if on else (math.nan if c != "ci_unit" else ""))
                        for c in STAT_COLUMNS})
            rows.append(row)
    table = pd.DataFrame(rows, columns=["metric", "experiment", *VALUE_COLUMNS])
    table["ci_n"] = pd.array([None if isinstance(v, float) and math.isnan(v) else v for v in table["ci_n"]], dtype="Int64")
    if params is None or params.empty:
        return table
    cols = [str(c) for c in params.columns]
    prm = params.rename(columns=str)
    grouped = []
    for g in groups:
        row = prm.loc[g.members[0]].copy() if g.members[0] in prm.index else pd.Series(index=cols, dtype=object)
        if len(g.members) > 1 and SEED_KEY in row.index:
            row = row.astype(object)
            row[SEED_KEY] = " ".join(str(x) for x in g.seeds)
        row.name = g.name
        grouped.append(row)
    prm = pd.DataFrame(grouped, columns=cols)
    table = table.merge(prm, left_on="experiment", right_index=True, how="left")
    return table[["metric", "experiment", *cols, *VALUE_COLUMNS]]


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
    grid key (alphabetically) across, the combinations of the others down (one row for a one-key grid).
    ``finetune.seed`` is not laid out: its values are averaged (a seed group's row of ``table``); a grid
    over the seed only has no table."""
    rows = table[table["metric"] == metric].set_index("experiment") if not table.empty else pd.DataFrame()
    out: dict[str, pd.DataFrame] = {}
    all_variants = experiment_variants(cfg.get("experiments"))
    groups = seed_groups(cfg)
    for entry in dict.fromkeys(v.entry for v in all_variants if v.grid):
        variants = [v for v in all_variants if v.entry == entry]
        all_keys = list(variants[0].grid)
        keys = [k for k in all_keys if k != SEED_KEY]
        if not keys:
            continue
        across, down, label = keys[-1], keys[:-1], key_labels(all_keys)  # labels as in the variants' names
        cells: dict[str, dict[str, str]] = {}
        for v in variants:
            row = ", ".join(f"{label[k]}={value_label(v.grid[k])}" for k in down) or metric
            col = f"{label[across]}={value_label(v.grid[across])}"
            name = group_of(groups, v.name)
            cells.setdefault(col, {})[row] = mean_std(rows.loc[name], digits) if name in rows.index else "n/a"
        frame = pd.DataFrame(cells)
        frame.index.name = ", ".join(label[k] for k in down) or "metric"
        out[entry] = frame
    return out


def default_baseline(cfg: dict) -> str | None:
    """``report.baseline``; else the one experiment without overrides (the params as they are); else the first.

    (Experiment order is not reliable: the rules pass params as JSON with sorted keys.)
    """
    chosen = sections(cfg, "report")["report"]["baseline"]
    if chosen:
        return chosen
    experiments = expand_experiments(cfg.get("experiments"))  # grid entries expanded
    plain = [name for name, over in experiments.items() if not over]
    return plain[0] if len(plain) == 1 else (next(iter(experiments), None))


def paired_tests(experiments: list[Experiment], metric: str, baseline: str | None = None, alpha: float = 0.05,
                 groups: list[Group] | None = None) -> list[PairedTest]:
    """Each experiment (seed group: per-subject values averaged over its seeds) against the baseline on
    ``metric``, paired by test subject. ``baseline`` may name a group or one of its members."""
    by_name = {e.name: e for e in experiments}
    groups = [g for g in (groups or [Group(e.name, [e.name], [None]) for e in experiments]) if any(m in by_name for m in g.members)]
    if len(groups) < 2:
        return []
    names = [g.name for g in groups]
    if baseline is not None:
        baseline = group_of(groups, baseline)
        if baseline not in names:
            raise ConfigError(f"params.yaml: report.baseline: {baseline!r} is not one of the experiments {names}")
    base = next(g for g in groups if g.name == (baseline or names[0]))
    values = {g.name: subject_values([by_name[m] for m in g.members if m in by_name], metric) for g in groups}
    return [paired_test(values[base.name], values[g.name], metric, base.name, g.name, alpha) for g in groups if g.name != base.name]
