"""The pretext comparison table (SS-VAERR's Table II layout) of a run whose experiments select pretexts.

Rows: each experiment (a seed group counts once) as *pretext* x *frozen / fine-tuned*: the pretext is its
``pretrain.method`` (``masked`` with ``pretrain.masking: face`` reads ``masked (face)``), with the encoder
(``pretrain.model``) when experiments differ in it, or ``none (from scratch)`` for ``finetune.init: scratch``;
the fine-tuning column is ``finetune.mode``. Columns: the key metrics (mean ± sd over folds, from
:func:`affectube.report.compare.side_by_side`'s table), then the paired per-subject test of the main metric
against the baseline (:func:`affectube.report.compare.paired_tests`: mean difference, better/worse/tied
subjects, Wilcoxon p). The table appears when at least two pretexts (or encoders) are compared.
"""

from __future__ import annotations

import pandas as pd

from affectube.report import compare as C

PRETEXT_KEYS = ("pretrain.method", "pretrain.masking", "pretrain.model")
MODE_LABELS = {"finetune": "fine-tuned", "frozen": "frozen"}


def _value(row: pd.Series | None, cfg: dict, key: str, default: str) -> str:
    """An experiment's value of ``key``: its override (a column of the side-by-side table), else the params'."""
    if row is not None and key in row.index and pd.notna(row[key]) and str(row[key]) != "null":
        return str(row[key])
    value = C._lookup(cfg, key)
    return default if value is None else str(value)


def pretext_of(row: pd.Series | None, cfg: dict, show_model: bool) -> str:
    if _value(row, cfg, "finetune.init", "pretrained") == "scratch":
        return "none (from scratch)"
    method = _value(row, cfg, "pretrain.method", "masked")
    if method == "masked" and _value(row, cfg, "pretrain.masking", "tube") == "face":
        method = "masked (face)"
    return f"{method} + {_value(row, cfg, 'pretrain.model', 'videomae')}" if show_model else method


def pretext_table(table: pd.DataFrame, cfg: dict, metrics: list[str], main: str, tests: list) -> pd.DataFrame | None:
    """``table``: :func:`~affectube.report.compare.side_by_side`'s; ``metrics``: its columns' metrics in reading
    order (main first); ``tests``: the paired tests of ``main`` against the baseline. None: fewer than two pretexts."""
    if table.empty or not any(k in table.columns for k in PRETEXT_KEYS):
        return None
    first = table.drop_duplicates("experiment").set_index("experiment")
    models = {_value(first.loc[n], cfg, "pretrain.model", "videomae") for n in first.index}
    labels = {n: pretext_of(first.loc[n], cfg, len(models) > 1) for n in first.index}
    if len(set(labels.values())) < 2:
        return None
    by_test = {t.other: t for t in tests}
    base = tests[0].baseline if tests else None
    cells = table.set_index(["experiment", "metric"])
    rows = []
    for name in first.index:
        row = {"pretext": labels[name], "fine-tuning": MODE_LABELS.get(_value(first.loc[name], cfg, "finetune.mode", "finetune"), "?"),
               "experiment": name}
        for m in metrics:
            row[m] = C.mean_std(cells.loc[(name, m)]) if (name, m) in cells.index else "n/a"
        t = by_test.get(name)
        row[f"{main}: vs baseline"] = "(baseline)" if name == base else (f"{t.mean_diff:+.3f}" if t is not None else "")
        row["better / worse / tied"] = f"{t.wins} / {t.losses} / {t.n - t.n_nonzero}" if t is not None else ""
        row["Wilcoxon p"] = (f"{t.p_value:.3g}" if t.p_value == t.p_value else "n/a") if t is not None else ""
        rows.append(row)
    out = pd.DataFrame(rows)
    order = list(dict.fromkeys(out["pretext"]))  # first appearance; fine-tuned before frozen within a pretext
    out["_p"], out["_m"] = out["pretext"].map(order.index), out["fine-tuning"].map({"fine-tuned": 0, "frozen": 1}).fillna(2)
    out = out.sort_values(["_p", "_m"], kind="stable").drop(columns=["_p", "_m"])
    out.index = [f"{p} / {m}" for p, m in zip(out.pop("pretext"), out.pop("fine-tuning"))]
    out.index.name = "pretext / fine-tuning"
    return out
