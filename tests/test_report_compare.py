"""Experiments side by side and the paired per-subject test (Wilcoxon via scipy)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import report_synth as R
from affectube.errors import ConfigError
from affectube.report import compare as C
from affectube.report.results import load_experiment


def _series(values, subjects=None):
    subjects = subjects or [f"s{i}" for i in range(len(values))]
    return pd.Series(values, index=subjects, dtype=float)


def test_paired_test_matches_scipy_with_enough_subjects():
    rng = np.random.default_rng(3)
    a = rng.uniform(0.3, 0.6, 10)
    b = a + rng.normal(0.08, 0.05, 10)
    t = C.paired_test(_series(a), _series(b), "uar", "base", "new")
    ref = stats.wilcoxon(b - a)
    assert t.n == 10 and t.n_nonzero == 10
    assert t.p_value == pytest.approx(ref.pvalue)
    assert t.statistic == pytest.approx(ref.statistic)
    assert t.mean_diff == pytest.approx(float(np.mean(b - a)))
    assert t.wins == int(np.sum(b > a))
    assert t.min_p == pytest.approx(2 / 2**10)
    assert "Wilcoxon signed-rank over 10 subjects" in t.note


def test_four_subjects_say_too_few_instead_of_a_p_value():
    t = C.paired_test(_series([0.5, 0.6, 0.4, 0.7]), _series([0.9, 0.8, 0.7, 0.95]), "uar", "scratch", "videomae")
    # all four better: the exact two-sided test cannot go below 2/16
    assert t.wins == 4 and t.losses == 0
    assert t.min_p == pytest.approx(0.125)
    assert t.p_value == pytest.approx(stats.wilcoxon([0.4, 0.2, 0.3, 0.25]).pvalue) == pytest.approx(0.125)
    assert "too few subjects" in t.note and "n=4" in t.note and "0.125" in t.note


def test_pairs_by_subject_and_lower_is_better_metrics():
    a = _series([0.30, 0.20, 0.25], ["x", "y", "z"])
    b = _series([0.10, 0.40, 0.50], ["z", "x", "w"])  # x: 0.40 vs 0.30, z: 0.10 vs 0.25; y and w unpaired
    t = C.paired_test(a, b, "rmse", "a", "b")
    assert t.n == 2
    assert t.mean_diff == pytest.approx(((0.40 - 0.30) + (0.10 - 0.25)) / 2)
    assert (t.wins, t.losses) == (1, 1)  # rmse: lower is better -> z improved, x got worse


def test_ties_are_dropped_and_reported():
    t = C.paired_test(_series([0.5, 0.5, 0.5]), _series([0.5, 0.5, 0.5]), "uar", "a", "b")
    assert t.n == 3 and t.n_nonzero == 0 and math.isnan(t.p_value)
    assert "identical" in t.note


def test_side_by_side_and_unknown_baseline(tmp_path):
    R.write_run(tmp_path)
    exps = [load_experiment(tmp_path / "results", n) for n in ("videomae", "scratch")]
    table = C.side_by_side(exps, "uar")
    assert set(table["experiment"]) == {"videomae", "scratch"}
    uar = table[table["metric"] == "uar"].set_index("experiment")
    assert (uar["folds"] == 4).all()
    # the synthetic SSL model is better on average
    assert uar.loc["videomae", "mean"] > uar.loc["scratch", "mean"]
    wide = C.wide(table)
    assert list(wide.columns) == ["videomae", "scratch"] and "±" in wide.loc["uar", "videomae"]
    tests = C.paired_tests(exps, "uar")
    assert len(tests) == 1 and tests[0].baseline == "videomae" and tests[0].n == 4
    with pytest.raises(ConfigError, match="report.baseline"):
        C.paired_tests(exps, "uar", baseline="nope")


def test_default_baseline_is_the_experiment_without_overrides():
    cfg = {"experiments": {"frozen": {"finetune.mode": "frozen"}, "scratch": {"finetune.init": "scratch"}, "videomae": {}}}
    assert C.default_baseline(cfg) == "videomae"
    assert C.default_baseline({**cfg, "report": {"baseline": "scratch"}}) == "scratch"
    assert C.default_baseline({"experiments": {"a": {"x.y": 1}, "b": {"x.y": 2}}}) == "a"
