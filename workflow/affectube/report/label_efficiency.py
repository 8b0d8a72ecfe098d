"""Label efficiency (issue 20): the main metric against the labelled fraction, one line per
initialisation, and the paired pretrained-minus-scratch difference.

A run has it when a grid entry of ``experiments`` varies ``finetune.label_fraction`` over two or
more values (e.g. ``pretrained: {grid: {finetune.label_fraction: [0.1, 0.25, 1.0], finetune.seed:
[0, 1, 2]}}``). Each such entry, with its grid keys other than the fraction and the seed, is one
*line*; every (fraction, seed, fold) of a line gives one value of the main metric (the fold's test
videos, as the evaluate stage computes it: :meth:`affectube.report.results.Experiment.recompute`).

- :func:`fold_table`: those values, one row per line x fraction x seed x fold;
- :func:`curves`: per line and fraction the mean over folds x seeds and a 95% t-interval;
- :func:`paired_differences`: for a line initialised from pretraining (``finetune.init:
  pretrained``) and a line from scratch with the same ``finetune.mode``, the per-(seed, fold)
  difference at each fraction (the same test videos and the same labelled subset: the fold's label
  budget is drawn from the fold and the seed), its mean, 95% t-interval and how often it is > 0.

The folds of one seed share training videos, so the fold x seed values are not independent: the
intervals describe the spread of the runs, they are not a test. The figure (``label_efficiency``,
:mod:`affectube.report.figures`) draws both panels; its index entry carries these numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from affectube.config import experiment_variants, sections, variant_name

FRACTION_KEY = "finetune.label_fraction"
SEED_KEY = "finetune.seed"
COLUMNS = ["line", "init", "mode", "fraction", "seed", "fold", "value"]


def fraction_entries(cfg: dict) -> list[str]:
    """Grid entries of ``experiments`` that vary ``finetune.label_fraction`` over 2+ values."""
    seen: dict[str, set] = {}
    for v in experiment_variants(cfg.get("experiments")):
        if v.grid and FRACTION_KEY in v.grid:
            seen.setdefault(v.entry, set()).add(float(v.grid[FRACTION_KEY]))
    return [e for e, fractions in seen.items() if len(fractions) > 1]


def has_label_efficiency(cfg: dict) -> bool:
    return bool(fraction_entries(cfg))


def lines(cfg: dict) -> dict[str, list[tuple[str, float, object]]]:
    """Line name -> [(experiment, fraction, seed)] of every fraction-varying grid entry."""
    entries = set(fraction_entries(cfg))
    base_seed = sections(cfg, "finetune")["finetune"]["seed"]
    out: dict[str, list] = {}
    for v in experiment_variants(cfg.get("experiments")):
        if v.entry not in entries or not v.grid or FRACTION_KEY not in v.grid:
            continue
        rest = {k: val for k, val in v.grid.items() if k not in (FRACTION_KEY, SEED_KEY)}
        name = variant_name(v.entry, rest) if rest else v.entry
        out.setdefault(name, []).append((v.name, float(v.overrides[FRACTION_KEY]), v.overrides.get(SEED_KEY, base_seed)))
    return out


def fold_table(cfg: dict, experiment, metric: str, main_metric: str) -> pd.DataFrame:
    """One row per line x fraction x seed x fold: ``value`` the fold's ``metric``.
    ``experiment(name)`` returns a loaded :class:`~affectube.report.results.Experiment`."""
    from affectube.report.plan import experiment_finetune

    rows = []
    for line, members in lines(cfg).items():
        for name, fraction, seed in members:
            ft = experiment_finetune(cfg, name)
            per_fold = experiment(name).recompute(main_metric)[1]
            if per_fold.empty or metric not in per_fold.columns:
                continue
            for _, r in per_fold.iterrows():
                value = pd.to_numeric(r[metric], errors="coerce")
                if np.isfinite(value):
                    rows.append({"line": line, "init": str(ft["init"]), "mode": str(ft["mode"]), "fraction": fraction,
                                 "seed": seed, "fold": int(r["fold"]), "value": float(value)})
    return pd.DataFrame(rows, columns=COLUMNS)


def t_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): a t-interval of the mean (NaN bounds for fewer than 2 values)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half


def curves(table: pd.DataFrame) -> pd.DataFrame:
    """Per line and fraction: n (folds x seeds), seeds, mean, sd, ci_low, ci_high."""
    rows = []
    for (line, fraction), g in table.groupby(["line", "fraction"], sort=True):
        mean, lo, hi = t_interval(g["value"])
        rows.append({"line": line, "init": g["init"].iloc[0], "mode": g["mode"].iloc[0], "fraction": float(fraction),
                     "n": len(g), "seeds": int(g["seed"].nunique()), "mean": mean,
                     "sd": float(g["value"].std(ddof=1)) if len(g) > 1 else math.nan, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=["line", "init", "mode", "fraction", "n", "seeds", "mean", "sd", "ci_low", "ci_high"])


def pairs(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(pretrained line, scratch line) pairs: init pretrained vs init scratch, the same mode."""
    info = table.drop_duplicates("line").set_index("line")[["init", "mode"]]
    out = []
    for a, ra in info.iterrows():
        for b, rb in info.iterrows():
            if ra["init"] == "pretrained" and rb["init"] == "scratch" and ra["mode"] == rb["mode"]:
                out.append((a, b))
    return out


def paired_differences(table: pd.DataFrame) -> pd.DataFrame:
    """Per (pretrained, scratch) pair and fraction: the difference of the same (seed, fold), its n,
    mean, 95% t-interval and how many are above / below zero."""
    rows = []
    for a, b in pairs(table):
        left = table[table["line"] == a].set_index(["fraction", "seed", "fold"])["value"]
        right = table[table["line"] == b].set_index(["fraction", "seed", "fold"])["value"]
        both = pd.concat({"a": left, "b": right}, axis=1).dropna()
        for fraction, g in both.groupby(level="fraction", sort=True):
            d = (g["a"] - g["b"]).to_numpy(float)
            mean, lo, hi = t_interval(d)
            rows.append({"comparison": f"{a} − {b}", "pretrained": a, "scratch": b, "fraction": float(fraction), "n": int(d.size),
                         "mean_diff": mean, "ci_low": lo, "ci_high": hi, "better": int((d > 0).sum()), "worse": int((d < 0).sum())})
    return pd.DataFrame(rows, columns=["comparison", "pretrained", "scratch", "fraction", "n", "mean_diff", "ci_low", "ci_high",
                                       "better", "worse"])


def draw(ctx, spec, metric_label, chance=None) -> dict:
    """The figure: left, ``metric`` against the labelled fraction, one line per initialisation (mean
    over folds x seeds, 95% t-interval as a band); right, the paired pretrained − scratch difference
    per fraction with its interval. Returns the numbers for the figure index."""
    table = fold_table(ctx.cfg, ctx.experiment, ctx.metric, ctx.main_metric)
    cur, diff = curves(table), paired_differences(table)
    ncols = 2 if len(diff) else 1
    with ctx.style.figure(ncols=ncols, scale=(1.0 * ncols + 0.2, 1.0)) as (fig, axes):
        ax = axes[0, 0]
        colors = ctx.style.color_map(sorted(cur["line"].unique())) if len(cur) else {}
        for line, g in cur.groupby("line", sort=True):
            g = g.sort_values("fraction")
            lo, hi = int(g["n"].min()), int(g["n"].max())
            label = f"{line} (init {g['init'].iloc[0]}, {g['mode'].iloc[0]}; n = {lo if lo == hi else f'{lo}-{hi}'})"
            ax.plot(g["fraction"], g["mean"], marker="o", color=colors[line], label=label)
            ax.fill_between(g["fraction"], g["ci_low"], g["ci_high"], color=colors[line], alpha=0.18, linewidth=0)
        if chance is not None:
            ax.axhline(chance[0], color="0.45", linestyle=":", linewidth=1.2, label=f"{chance[1]} = {chance[0]:.2f}")
        if len(cur):
            ax.set_xscale("log")
            ticks = sorted(cur["fraction"].unique())
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xlabel("labelled fraction of each fold's training videos")
        ax.set_ylabel(metric_label(ctx.metric))
        ax.set_title(f"{metric_label(ctx.metric)} vs labels (mean, 95% t-interval over folds x seeds)")
        if len(diff):
            ax2 = axes[0, 1]
            for k, (comp, g) in enumerate(diff.groupby("comparison", sort=True)):
                g = g.sort_values("fraction")
                err = np.vstack([g["mean_diff"] - g["ci_low"], g["ci_high"] - g["mean_diff"]])
                ax2.errorbar(g["fraction"] * (1 + 0.03 * k), g["mean_diff"], yerr=np.nan_to_num(err), marker="o", capsize=3, label=comp)
                for _, r in g.iterrows():
                    ax2.annotate(f"{r['mean_diff']:+.3f}\n{r['better']}/{r['n']} >0", (r["fraction"], r["mean_diff"]), fontsize=6,
                                 textcoords="offset points", xytext=(5, 4))
            ax2.axhline(0.0, color="0.45", linestyle=":", linewidth=1.2)
            ax2.set_xscale("log")
            ticks = sorted(diff["fraction"].unique())
            ax2.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax2.minorticks_off()
            ax2.set_xlabel("labelled fraction")
            ax2.set_ylabel(f"paired difference of {metric_label(ctx.metric)}")
            ax2.set_title("pretrained − scratch, same seed and fold (95% t-interval)")
            ax2.legend(fontsize=7)
        ctx.style.save(fig, ctx.out_dir / spec.name)
    return {"metric": ctx.metric, "curves": _records(cur), "paired": _records(diff)}


def _records(df: pd.DataFrame) -> list[dict]:
    out = []
    for r in df.to_dict("records"):
        out.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()})
    return out
