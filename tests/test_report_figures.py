"""Figures from synthetic-but-realistic prediction files in the contract's formats."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import report_synth as R
from affectube.eval import metrics as M
from affectube.report import plan as P
from affectube.report.figures import draw_all

REPO_WORKFLOW = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "workflow")


def _cli(stage: str, cfg: dict, cwd, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "affectube", stage, "--cfg", json.dumps(cfg), *extra]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env={"PYTHONPATH": REPO_WORKFLOW, "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """One synthetic run (fold 2 of `scratch` failed) drawn once through the real CLI."""
    root = tmp_path_factory.mktemp("figs")
    R.write_run(root, fail={"scratch": 2}, diverge="scratch")
    cfg = R.params_cfg(formats=["png", "pdf", "svg"])
    proc = _cli("figures", cfg, root, "--results", "results", "--out-dir", "results/report/figures")
    assert proc.returncode == 0, proc.stderr
    index = json.loads((root / "results/report/figures/index.json").read_text())
    return root, cfg, index


def test_every_planned_figure_in_every_format(drawn):
    root, cfg, index = drawn
    planned = P.all_figure_files(cfg)
    assert len(planned) == 3 * len(P.figure_plan(cfg))
    for rel in planned:
        path = root / rel
        assert path.exists() and path.stat().st_size > 2000, rel
        head = path.read_bytes()[:8]
        assert {"png": head.startswith(b"\x89PNG"), "pdf": head.startswith(b"%PDF"), "svg": b"<?xml" in head or b"<svg" in head}[path.suffix[1:]]
    kinds = {f["kind"] for f in index["figures"]}
    assert kinds == {"confusion", "per_subject", "scatter", "traces", "learning_curves", "pretrain_curve", "comparison"}
    assert index["failed_folds"] == {"videomae": [], "scratch": [2]}
    # no partial files left behind by the atomic writes
    assert not list((root / "results/report/figures").rglob("*.partial*"))


def _video_table(root, exp):
    tables = [pd.read_csv(p, dtype={"subject": str, "y_true": str, "y_pred": str})
              for p in sorted((root / "results/finetune" / exp).glob("fold*/predictions.csv"))]
    return M.per_video(pd.concat(tables, ignore_index=True))


def test_figure_numbers_are_the_metrics_of_the_saved_predictions(drawn):
    root, _, index = drawn
    fig = {f["name"]: f["data"] for f in index["figures"]}
    video = _video_table(root, "videomae")
    cm = M.confusion_matrix(video["y_true"], video["y_pred"], R.CLASSES)
    assert fig["videomae/confusion"]["counts"] == cm.tolist()
    assert cm.sum() == 30  # 4 subjects x 8 videos, minus one subject's missing class (2 videos)
    assert fig["videomae/scatter"]["ccc"]["valence"] == pytest.approx(M.ccc(video["true_valence"], video["pred_valence"]))
    # per-subject bars: LOSO, so each subject's value is the UAR of its own fold's videos
    for subject, value in fig["videomae/per_subject"]["subjects"].items():
        sub = video[video["subject"] == subject]
        assert value == pytest.approx(M.uar(sub["y_true"], sub["y_pred"]))
    assert fig["videomae/per_subject"]["fold_mean"] == pytest.approx(np.mean(list(fig["videomae/per_subject"]["subjects"].values())))


def test_failed_fold_is_named_not_hidden(drawn):
    root, _, index = drawn
    fig = {f["name"]: f["data"] for f in index["figures"]}
    assert fig["scratch/per_subject"]["failed_folds"] == [2]
    assert "W011" not in fig["scratch/per_subject"]["subjects"]  # fold 2's test subject
    assert fig["scratch/learning_curves"]["folds"] == [0, 1, 3]
    assert fig["scratch/learning_curves"]["train_metric"] == "train_uar"  # training UAR drawn beside the validation UAR
    # the epoch each fold kept (its metrics.json) is marked on the curves
    for k, epoch in fig["scratch/learning_curves"]["selected_epochs"].items():
        saved = json.loads((root / f"results/finetune/scratch/fold{k}/metrics.json").read_text())
        assert saved["training"]["best_epoch"] == epoch
    comp = fig["comparison"]
    assert "W011" not in comp["paired_subjects"] and len(comp["paired_subjects"]) == 3
    svg = (root / "results/report/figures/scratch/per_subject.svg").read_text()
    assert "FAILED" in svg


def test_subject_selection_and_traces(tmp_path):
    R.write_run(tmp_path, experiments=["videomae"])
    cfg = R.params_cfg(experiments={"videomae": {}}, subjects=["W009", "M030"], max_traces=3, formats=["png"])
    index = draw_all(cfg, tmp_path / "results", tmp_path / "figs")
    fig = {f["name"]: f["data"] for f in index["figures"]}
    assert set(fig["videomae/per_subject"]["subjects"]) == {"W009", "M030"}
    videos = fig["videomae/traces"]["videos"]
    assert len(videos) == 3 and {v.split("/")[0] for v in videos} == {"W009", "M030"}
    assert not (tmp_path / "figs/videomae/traces.pdf").exists()  # formats: png only
    assert "comparison" not in fig  # a single experiment has nothing to compare


def test_categorical_only_task_has_no_continuous_figures(tmp_path):
    R.write_run(tmp_path, experiments=["videomae"])
    cfg = R.params_cfg(experiments={"videomae": {}, "cont": {"finetune.task": "continuous", "finetune.init": "scratch"}},
                       task="categorical", formats=["png"])
    names = [s.name for s in P.figure_plan(cfg)]
    assert "videomae/confusion" in names and "videomae/scatter" not in names
    assert "cont/scatter" in names and "cont/traces" in names and "cont/confusion" not in names


def test_bad_palette_is_a_one_line_error(tmp_path):
    R.write_run(tmp_path, experiments=["videomae"])
    cfg = R.params_cfg(experiments={"videomae": {}}, palette="no_such_palette")
    proc = _cli("figures", cfg, tmp_path, "--results", "results", "--out-dir", "figs")
    assert proc.returncode == 2
    assert "figures.palette" in proc.stderr and "no_such_palette" in proc.stderr
