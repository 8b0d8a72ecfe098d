"""The report's label-efficiency figure and tables (issue 20): the main metric against
finetune.label_fraction, one line per initialisation, intervals over folds x seeds, and the paired
pretrained − scratch difference. Fold values are given directly (the figure reads them through
Experiment.recompute, as the evaluate stage computes them)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from affectube.report import label_efficiency as LE
from affectube.report import plan as P

FRACTIONS = [0.1, 0.25, 1.0]
GRID = {"finetune.label_fraction": FRACTIONS, "finetune.seed": [0, 1]}
CFG = {
    "evaluate": {"main_metric": "accuracy"},
    "experiments": {
        "pretrained": {"grid": GRID},
        "fromscratch": {"grid": GRID, "set": {"finetune.init": "scratch"}},
        "probe": {"grid": GRID, "set": {"finetune.mode": "frozen"}},
    },
}


def value(entry: str, fraction: float, seed: int, fold: int) -> float:
    base = {"pretrained": 0.5, "fromscratch": 0.4, "probe": 0.3}[entry]
    return base + 0.2 * fraction + 0.01 * seed + 0.02 * fold + (0.05 * fold if entry == "pretrained" and fraction == 0.1 else 0.0)


class FakeExperiment:
    def __init__(self, name: str):
        self.name = name
        entry = name.split("-")[0]
        fraction = float(name.split("label_fraction=")[1].split("-")[0])
        seed = int(name.split("seed=")[1])
        self.per_fold = pd.DataFrame({"fold": range(4), "accuracy": [value(entry, fraction, seed, k) for k in range(4)]})

    def predictions(self) -> pd.DataFrame:  # 4 balanced classes: the majority-class line at 0.25
        return pd.DataFrame({"fold": 0, "subject": "s1", "video_id": [f"v{i}" for i in range(8)], "dataset": "d", "clip": 0,
                             "y_true": list("abcd") * 2, "y_pred": list("aaaaaaaa")})

    def recompute(self, main_metric="uar"):
        return {}, self.per_fold, pd.DataFrame()


def test_planned_only_when_a_grid_varies_the_label_fraction():
    assert "label_efficiency" in [s.kind for s in P.figure_plan(CFG)]
    plain = {"experiments": {"a": {}, "b": {"finetune.init": "scratch"}, "seeds": {"grid": {"finetune.seed": [0, 1]}}}}
    assert "label_efficiency" not in [s.kind for s in P.figure_plan(plain)]


def test_the_grid_words_config_plans_it():
    from pathlib import Path

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "grid_words.yaml").read_text())
    assert "label_efficiency" in [s.kind for s in P.figure_plan(cfg)]
    assert set(LE.lines(cfg)) == {"pretrained", "fromscratch", "probe"}


def test_curves_and_the_paired_difference_by_hand():
    table = LE.fold_table(CFG, FakeExperiment, "accuracy", "accuracy")
    assert len(table) == 3 * 3 * 2 * 4  # lines x fractions x seeds x folds
    cur = LE.curves(table).set_index(["line", "fraction"])
    v = [value("fromscratch", 0.25, s, k) for s in (0, 1) for k in range(4)]
    half = stats.t.ppf(0.975, 7) * np.std(v, ddof=1) / math.sqrt(8)
    row = cur.loc[("fromscratch", 0.25)]
    assert row["n"] == 8 and row["seeds"] == 2 and row["init"] == "scratch"
    assert row["mean"] == pytest.approx(np.mean(v)) and row["ci_low"] == pytest.approx(np.mean(v) - half)
    diff = LE.paired_differences(table)
    assert set(diff["comparison"]) == {"pretrained − fromscratch"}  # the frozen probe has no scratch partner
    d = diff.set_index("fraction")
    assert d.loc[1.0, "mean_diff"] == pytest.approx(0.1) and d.loc[1.0, "better"] == 8
    assert d.loc[1.0, "ci_low"] == pytest.approx(0.1) and d.loc[1.0, "ci_high"] == pytest.approx(0.1)  # a constant difference
    per_pair = [0.1 + 0.05 * k for s in (0, 1) for k in range(4)]
    half = stats.t.ppf(0.975, 7) * np.std(per_pair, ddof=1) / math.sqrt(8)
    assert d.loc[0.1, "mean_diff"] == pytest.approx(np.mean(per_pair))
    assert d.loc[0.1, "ci_high"] == pytest.approx(np.mean(per_pair) + half)


def test_figure_and_report_tables(tmp_path):
    from affectube.report import build, figures

    ctx = figures.Context(CFG, tmp_path / "results", tmp_path / "figs")
    ctx._experiments = {m: FakeExperiment(m) for ms in LE.lines(CFG).values() for m, _, _ in ms}
    spec = P.FigureSpec("label_efficiency")
    (tmp_path / "figs").mkdir()
    data = figures.FIGURES["label_efficiency"](ctx, spec)
    assert (tmp_path / "figs" / "label_efficiency.png").stat().st_size > 10_000
    assert len(data["curves"]) == 9 and len(data["paired"]) == 3
    assert {(c["line"], c["fraction"]): c["n"] for c in data["curves"]}[("probe", 0.1)] == 8
    blocks = build.label_efficiency_blocks({"figures": [{"kind": "label_efficiency", "data": data}]}, "accuracy")
    assert len(blocks) == 2
    curves, paired = (b.frame for b in blocks)
    assert list(curves.index) == ["fromscratch", "pretrained", "probe"] and curves.shape == (3, 3)
    assert paired.loc["pretrained − fromscratch", "better / worse"].tolist() == ["8 / 0"] * 3
