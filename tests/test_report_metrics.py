"""Metrics recomputed from saved predictions equal those written at evaluation time."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import report_synth as R
from affectube.report.build import build
from affectube.report.results import load_experiment, per_fold_metrics, per_subject_metrics, pooled_metrics

WORKFLOW = str(Path(__file__).resolve().parents[1] / "workflow")


def _evaluate(root: Path, exp: str) -> Path:
    """Run the real evaluate stage (CLI) on the saved predictions of ``exp``."""
    preds = sorted((root / "results/finetune" / exp).glob("fold*/predictions.csv"))
    out = root / "results/evaluate" / exp
    cmd = [sys.executable, "-m", "affectube", "evaluate", "--cfg", json.dumps({"evaluate": {"main_metric": "uar"}}),
           "--folds", str(root / "results/folds" / f"{exp}.json"), "--predictions", *map(str, preds), "--out-dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": WORKFLOW, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return out


def _same_table(saved: pd.DataFrame, now: pd.DataFrame, key: str):
    assert list(saved.columns) == list(now.columns)
    saved, now = saved.sort_values(key).reset_index(drop=True), now.sort_values(key).reset_index(drop=True)
    for col in saved.columns:
        a, b = saved[col], now[col]
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), rtol=1e-12, atol=0, equal_nan=True, err_msg=col)
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), col


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    R.write_run(root)
    return root, {exp: _evaluate(root, exp) for exp in ("videomae", "scratch")}


@pytest.mark.parametrize("exp", ["videomae", "scratch"])
def test_recomputed_equals_evaluation(evaluated, exp):
    root, outs = evaluated
    out = outs[exp]
    saved = json.loads((out / "metrics.json").read_text())
    e = load_experiment(root / "results", exp)
    assert not e.failed_folds
    _same_table(pd.read_csv(out / "per_fold.csv", dtype={"test_subjects": str}), per_fold_metrics(e), "fold")
    _same_table(pd.read_csv(out / "per_subject.csv", dtype={"subject": str}), per_subject_metrics(e), "subject")
    pooled = pooled_metrics(e)
    for name, value in saved["pooled"].items():
        if isinstance(value, float) or value is None:
            assert (value is None and math.isnan(pooled[name])) or pooled[name] == pytest.approx(value, rel=1e-12), name
    assert saved["pooled"]["confusion_matrix"] == pooled["confusion_matrix"]
    metrics, _, _ = e.recompute("uar")
    for stat in ("mean", "std"):
        for name, value in saved[stat].items():
            assert metrics[stat][name] == pytest.approx(value, rel=1e-12), (stat, name)


def test_report_numbers_are_the_evaluation_numbers(evaluated):
    root, outs = evaluated
    cfg = R.params_cfg()
    found = build(cfg, root / "results", root / "results/report")
    assert "evaluation out of date" not in found, found.get("evaluation out of date")
    summary = json.loads((root / "results/report/summary.json").read_text())
    md = (root / "results/report/report.md").read_text()
    for exp, out in outs.items():
        main = json.loads((out / "metrics.json").read_text())["main"]
        got = summary["experiments"][exp]
        assert got["mean"] == pytest.approx(main["mean"], rel=1e-12)
        assert got["std"] == pytest.approx(main["std"], rel=1e-12)
        assert got["pooled"] == pytest.approx(main["pooled"], rel=1e-12)
        assert f"| {exp} | {main['mean']:.3f} ± {main['std']:.3f} | {main['pooled']:.3f} |" in md
