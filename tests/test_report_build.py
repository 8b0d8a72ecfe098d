"""The report: builds when a fold failed and says which; flags the problems a reader must see."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

import report_synth as R
from affectube.report.figures import draw_all
from affectube.report.build import build, code_version


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    R.write_run(root, fail={"scratch": 2}, diverge="scratch")
    cfg = R.params_cfg(formats=["png"], dpi=50)
    draw_all(cfg, root / "results", root / "results/report/figures")
    found = build(cfg, root / "results", root / "results/report")
    return root, cfg, found


def test_report_builds_with_a_failed_fold_and_names_it(failed_run):
    root, _, found = failed_run
    md = (root / "results/report/report.md").read_text()
    html = (root / "results/report/report.html").read_text()
    for text in (md, html):
        assert "fold 2 (test subject W011) MISSING" in text
        assert "CUDA out of memory (synthetic)" in text  # the tail of the fold's log says why
    assert any("fold 2" in p for p in found["failed folds"])
    summary = json.loads((root / "results/report/summary.json").read_text())
    assert summary["experiments"]["scratch"]["folds_failed"] == 1
    assert summary["experiments"]["scratch"]["folds_ok"] == 3
    assert summary["experiments"]["videomae"]["folds_failed"] == 0
    # the summary table shows the failed fold next to the numbers it affects
    row = next(line for line in md.splitlines() if line.startswith("| scratch |"))
    assert row.rstrip().endswith("| 3 | 2 |")


def test_report_flags_coverage_missing_classes_and_divergence(failed_run):
    _, _, found = failed_run
    assert any("M030_happy_1 (42%)" in p for p in found["low face coverage"])
    # subject 1001 has no 'angry' video: its fold's test side lacks the class
    assert any("fold 3: no test videos of angry" in p for p in found["classes missing from a fold"])
    assert any("scratch: fold 1: train_loss not finite" in p for p in found["diverging losses"])
    assert any("too few subjects" in p for p in found["comparisons no test can decide"])


def test_report_embeds_figures_and_states_provenance(failed_run):
    root, _, _ = failed_run
    html = (root / "results/report/report.html").read_text()
    md = (root / "results/report/report.md").read_text()
    n_png = len(list((root / "results/report/figures").rglob("*.png")))
    assert html.count("data:image/png;base64,") == n_png  # self-contained
    for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (root / "results/report" / rel).exists(), rel
    assert f"code version {code_version()}" in md
    assert "protocol loso, 4 folds" in md
    assert "| M030 |" in md  # the data section's videos-per-subject table
    assert "coverage_threshold: 0.8" in md  # params are stated
    comp = pd.read_csv(root / "results/report/comparison.csv")
    assert set(comp["experiment"]) == {"videomae", "scratch"}
    assert (comp.loc[comp["experiment"] == "scratch", "failed_folds"] == 1).all()


def test_diverging_pretrain_loss_and_clean_run(tmp_path):
    R.write_run(tmp_path, experiments=["videomae"], low_coverage=False)
    log = tmp_path / "results/pretrain/log.csv"
    table = pd.read_csv(log)
    table.loc[table.index[-3:], "loss"] = [3.0, 4.0, 5.0]  # min ~0.4, ends 5.0
    table.to_csv(log, index=False)
    cfg = R.params_cfg(experiments={"videomae": {}}, formats=["png"], dpi=50)
    found = build(cfg, tmp_path / "results", tmp_path / "out")  # no figures drawn: still builds
    assert any(p.startswith("pretraining: loss ends at 5") for p in found["diverging losses"])
    assert "low face coverage" not in found and "failed folds" not in found
    assert "figure missing" not in (tmp_path / "out/report.md").read_text()


def test_stale_evaluation_is_flagged(tmp_path):
    """The evaluate stage's per_fold.csv must match the predictions the report reads."""
    R.write_run(tmp_path, experiments=["videomae"])
    res = tmp_path / "results"
    from affectube.eval.aggregate import aggregate
    from affectube.eval.folds import load_folds

    folds = load_folds(res / "folds/videomae.json")
    tables = [pd.read_csv(res / f"finetune/videomae/fold{f.index}/predictions.csv", dtype={"subject": str, "y_true": str, "y_pred": str}) for f in folds]
    _, per_fold, _ = aggregate(folds, tables, [None] * len(folds), "uar")
    (res / "evaluate/videomae").mkdir(parents=True)
    per_fold.to_csv(res / "evaluate/videomae/per_fold.csv", index=False)
    cfg = R.params_cfg(experiments={"videomae": {}})
    found = build(cfg, res, tmp_path / "out")
    assert "evaluation out of date" in found  # frames were not used above: frame metrics differ...
    # ... so write it the way the evaluate stage does (with per-frame predictions) and it is clean
    frames = [pd.read_csv(res / f"finetune/videomae/fold{f.index}/predictions_frames.csv", dtype={"subject": str}) for f in folds]
    _, per_fold, _ = aggregate(folds, tables, frames, "uar")
    per_fold.to_csv(res / "evaluate/videomae/per_fold.csv", index=False)
    assert "evaluation out of date" not in build(cfg, res, tmp_path / "out")
    # a prediction edited after evaluation is caught
    p = res / "finetune/videomae/fold0/predictions.csv"
    t = pd.read_csv(p)
    t["prob_angry"], t["prob_happy"] = t["prob_happy"], t["prob_angry"]
    t.to_csv(p, index=False)
    stale = build(cfg, res, tmp_path / "out")["evaluation out of date"]
    assert any("uar in results/evaluate/videomae/per_fold.csv differs" in s for s in stale)


def test_single_class_fold_and_unlabelled_videos(tmp_path):
    R.write_run(tmp_path, experiments=["videomae"])
    p = tmp_path / "results/finetune/videomae/fold1/predictions.csv"
    t = pd.read_csv(p)
    for c in R.CLASSES:
        t[f"prob_{c}"] = 0.9 if c == "happy" else 0.1 / 3  # a collapsed model
    t.loc[t["video_id"].str.contains("sad"), "y_true"] = None  # two test videos without a label (not scored)
    t.to_csv(p, index=False)
    cfg = R.params_cfg(experiments={"videomae": {}}, formats=["png"], dpi=50)
    found = build(cfg, tmp_path / "results", tmp_path / "out")
    assert found["single-class predictions"] == [
        "videomae: fold 1: all 8 test videos are predicted as 'happy' (the model outputs a single class)"]
    md = (tmp_path / "out/report.md").read_text()
    assert "| fold | test_subjects | videos | labelled |" in md
    assert "| 1 | W009 | 8 | 6 |" in md
