"""End to end on the real clips (config/realdata.yaml): raw videos -> report, through DVC and Snakemake.

One scratch copy of the workflow sees ``../shared/realdata`` where the config expects it. Its
params.yaml is the merge of params.yaml and config/realdata.yaml (``affectube params --merge``,
what ``snakemake --configfile config/realdata.yaml`` sees), dvc.yaml is regenerated for it, and
``dvc repro`` runs the whole pipeline once (each stage asks Snakemake for its rule's jobs):
89 videos (in 3 shard jobs per stage) through the real InsightFace detector, GRID-only pretraining, 3 experiments x 4 LOSO
folds, evaluation, figures, report. The tests then check what a reader relies on, that a second
run does nothing under both front ends, and that a figure param re-runs only figure rules.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, VENV_BIN, copy_workflow, run_snakemake, venv_env
from jobs_util import FIGURE_RULES, TRAINING_RULES, assert_dag_order, finished_jobs, job_stats, jobs_per_stage, rules_run, set_param, stages_run

pytestmark = pytest.mark.slow

LABELLED = {"CREMAD_1001", "MEAD_M030", "MEAD_W009", "MEAD_W011"}
CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad"]


def _sh(wf: Path, *cmd: str, timeout: int = 3600) -> str:
    # 60 min: the dvc repro is ~15 min alone on 2 idle cores, but under pytest-xdist the other worker
    # shares the cores (a loaded run here passed 40 min at 7 of 12 folds)
    proc = subprocess.run(list(cmd), cwd=wf, capture_output=True, text=True, timeout=timeout,
                          env=venv_env(DVC_NO_ANALYTICS="1", PYTHONPATH=str(wf / "workflow")))
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-5000:]}\n{proc.stderr[-8000:]}")
    return proc.stdout + proc.stderr


def _smk(wf: Path, *args: str) -> str:
    proc = run_snakemake(wf, *args, timeout=3600)
    return proc.stdout + proc.stderr


def _dvc(wf: Path, *args: str) -> str:
    return _sh(wf, str(VENV_BIN / "dvc"), *args)


def _git(wf: Path, *args: str) -> str:
    return _sh(wf, "git", "-c", "user.name=affectube-test", "-c", "user.email=test@affectube.invalid", *args)


@pytest.fixture(scope="module")
def e2e(realdata, tmp_path_factory):
    """The real-data pipeline run to the end once by `dvc repro`; returns (workflow dir, repro output)."""
    root = tmp_path_factory.mktemp("e2e")
    (root / "shared").mkdir()
    (root / "shared" / "realdata").symlink_to(realdata.resolve())  # the config's ../shared/realdata
    wf = copy_workflow(root / "wf")
    shutil.copytree(REPO / "config", wf / "config")
    (wf / ".dvc").mkdir()
    for name in [".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore"]:
        shutil.copy2(REPO / name, wf / name)
    _sh(wf, sys.executable, "-m", "affectube", "params", "--merge", "config/realdata.yaml", "--out", "params.yaml")
    # one torch thread a job, two jobs side by side (operational keys, not in any cache key): a 2-thread
    # torch job on 2 cores that the other pytest-xdist worker also uses oversubscribes them (a GRID fold on
    # the loaded machine: 101.6 CPU-s with 2 threads, 18.4 with 1, the same predictions)
    set_param(wf, "pretrain", "threads", 1)
    set_param(wf, "finetune", "threads", 1)
    _sh(wf, sys.executable, "-m", "affectube", "dvc-yaml")
    _git(wf, "init", "-q")
    _git(wf, "add", "-A")
    _git(wf, "commit", "-q", "-m", "workflow with the real-data params")
    t0 = time.monotonic()
    out = _dvc(wf, "repro")
    minutes = (time.monotonic() - t0) / 60
    print(f"\nreal-data pipeline through dvc repro: {minutes:.1f} min")  # shown with -s; README quotes a timed run
    return wf, out


def test_dvc_repro_runs_every_stage_in_dag_order(e2e):
    wf, out = e2e
    stages = yaml.safe_load((wf / "dvc.yaml").read_text())["stages"]
    assert_dag_order(stages_run(out), stages)
    jobs = pd.Series(finished_jobs(out)).value_counts().to_dict()
    videos = len(list((wf / "results/realdata/clips").rglob("*.h5")))
    assert videos == 89  # 11 + 48 GRID, 30 labelled
    assert "faces" not in jobs and "clips" not in jobs  # config/realdata.yaml runs on shards (data.shard_size 50)
    assert jobs["faces_shard"] == jobs["clips_shard"] == 3  # one per dataset: grid 11, grid_s1 48, labelled 30 videos
    assert jobs["pretrain"] == 1 and jobs["finetune"] == 3 * 4 and jobs["evaluate"] == 3
    assert jobs["figures"] == jobs["report"] == 1


def test_pretraining_is_not_transductive(e2e):
    wf, _ = e2e
    summary = json.loads((wf / "results/realdata/pretrain/summary.json").read_text())
    assert summary["data"]["datasets"] == ["grid", "grid_s1"] and summary["data"]["transductive"] is False
    assert summary["data"]["stores"] == 59
    log = pd.read_csv(wf / "results/realdata/pretrain/log.csv")
    assert len(log) == 600 and log["loss"].tail(50).mean() < log["loss"].head(50).mean()  # it learned something
    with open(wf / "results/realdata/manifests/grid.csv") as f:
        assert not LABELLED & set(pd.read_csv(f)["subject"])


def test_loso_folds_test_every_labelled_clip_once(e2e):
    wf, _ = e2e
    for exp in ("videomae", "scratch", "frozen"):
        folds = json.loads((wf / f"results/realdata/folds/{exp}.json").read_text())
        assert sorted(s for f in folds for s in f["test"]["subjects"]) == sorted(LABELLED)
        tested = []
        for k, f in enumerate(folds):
            assert not set(f["train"]["subjects"]) & set(f["test"]["subjects"])
            assert not set(f["val"]["subjects"]) & set(f["test"]["subjects"])
            d = wf / f"results/realdata/finetune/{exp}/fold{k}"
            pred = pd.read_csv(d / "predictions.csv")
            assert set(pred["subject"]) == set(f["test"]["subjects"])
            assert set(pred["y_true"]) <= set(CLASSES)  # contempt/surprise (MEAD only) left out, not tested unlabelled
            tested += sorted(set(pred["video_id"]))
            metrics = json.loads((d / "metrics.json").read_text())
            assert metrics["training"]["classes"] == CLASSES
            assert {v["emotion"] for v in metrics["other_class_videos"]} == {"contempt", "surprise"}
        assert len(tested) == len(set(tested)) == 24  # 3 MEAD x 6 + CREMA-D 6


def test_fine_tuned_models_fit_their_training_subjects(e2e):
    """Issue 14: the fine-tuned models learn what they are shown: training accuracy >= 0.9 at the
    selected epoch (metrics.json ``train``: the kept weights on the fold's training videos, test-mode
    clips) in every fold, the selected epoch after the warmup, and log.csv records training accuracy."""
    wf, _ = e2e
    # issue 14's floor for both fine-tuned experiments (config/realdata.yaml: layer decay 1.0, no flip,
    # lr 4e-3 peak, drop path 0; measured per fold in README "Real clips, end to end"; with flip 0.5 and
    # layer decay 0.75 the VideoMAE init fitted 0.78-0.94, with lr 2e-3 and drop path 0.1 a scratch fold
    # 0.61). The frozen linear probe is not asserted: a linear head on a 96-d pretrained feature does not
    # fit 6 classes (0.22-0.61). Lowering a floor needs a measured reason.
    for exp, floor in (("scratch", 0.9), ("videomae", 0.9)):
        for k in range(4):
            d = wf / f"results/realdata/finetune/{exp}/fold{k}"
            metrics = json.loads((d / "metrics.json").read_text())
            training = metrics["training"]
            assert training["best_epoch"] > training["warmup_epochs"], (exp, k, training["best_epoch"])
            assert metrics["train"]["accuracy"] >= floor, (exp, k, metrics["train"]["accuracy"])
            log = pd.read_csv(d / "log.csv")
            assert {"train_accuracy", "train_uar"} <= set(log.columns) and log["train_accuracy"].iloc[-1] > 1 / len(CLASSES)


def test_report_has_every_fold_every_figure_and_numeric_metrics(e2e):
    wf, _ = e2e
    rep = wf / "results/realdata/report"
    summary = json.loads((rep / "summary.json").read_text())
    assert set(summary["experiments"]) == {"videomae", "scratch", "frozen"}
    for exp, s in summary["experiments"].items():
        assert s["folds_ok"] == 4 and s["folds_failed"] == 0, exp
        assert all(math.isfinite(s[k]) for k in ("mean", "std", "pooled")), exp
    comparison = pd.read_csv(rep / "comparison.csv")
    assert set(comparison["experiment"]) == set(summary["experiments"])
    assert comparison[["mean", "std", "pooled"]].map(math.isfinite).all().all()
    for exp in summary["experiments"]:
        per_subject = pd.read_csv(wf / f"results/realdata/evaluate/{exp}/per_subject.csv")
        assert set(per_subject["subject"]) == LABELLED and per_subject["uar"].between(0, 1).all()
        per_fold = pd.read_csv(wf / f"results/realdata/evaluate/{exp}/per_fold.csv")
        assert sorted(per_fold["fold"]) == [0, 1, 2, 3]
    html = (rep / "report.html").read_text()
    md = (rep / "report.md").read_text()
    index = json.loads((rep / "figures/index.json").read_text())
    names = [f["name"] if isinstance(f, dict) else f for f in (index["figures"] if isinstance(index, dict) else index)]
    expected = {f"{e}/{k}" for e in summary["experiments"] for k in ("confusion", "per_subject", "learning_curves")}
    expected |= {"pretrain_curve", "comparison"}
    assert expected <= set(names), set(names) ^ expected
    for name in expected:
        png = rep / "figures" / f"{name}.png"
        assert png.stat().st_size > 5000, name
        assert (rep / "figures" / f"{name}.pdf").exists(), name
        assert png.name in html or "data:image/png;base64" in html
    assert html.count("data:image/png;base64") >= len(expected)
    for subject in LABELLED:
        assert subject in md
    assert "±" in md or "sd" in md.lower()  # uncertainty stated, not just a mean


def test_a_second_run_does_nothing_under_both_front_ends(e2e):
    wf, _ = e2e
    assert "Nothing to be done" in _smk(wf, "-n")
    assert "up to date" in _dvc(wf, "status")
    again = _dvc(wf, "repro")
    assert stages_run(again) == [] and finished_jobs(again) == []


def test_a_figure_param_reruns_only_figure_rules_under_snakemake_and_dvc(e2e):
    wf, _ = e2e
    models = sorted(wf.glob("results/realdata/finetune/*/fold*/model.safetensors")) + [wf / "results/realdata/pretrain/encoder.safetensors"]
    stamp = lambda: {p: p.stat().st_mtime_ns for p in models + sorted(wf.glob("results/realdata/evaluate/*/metrics.json"))}  # noqa: E731
    before = stamp()

    set_param(wf, "figures", "dpi", 77)  # Snakemake
    planned = job_stats(_smk(wf, "-n"))
    assert planned and set(planned) - {"all"} <= FIGURE_RULES, planned
    ran = rules_run(_smk(wf))
    assert {"figures", "report"} <= set(ran) and set(ran) - {"all"} <= FIGURE_RULES, ran
    from PIL import Image

    assert Image.open(wf / "results/realdata/report/figures/videomae/per_subject.png").info["dpi"][0] == pytest.approx(77, abs=1)

    set_param(wf, "figures", "dpi", 91)  # DVC: only the stages that read `figures` run, and inside them only figure jobs
    out = _dvc(wf, "repro")
    per_stage = jobs_per_stage(out)
    assert set(per_stage) <= FIGURE_RULES and {"figures", "report"} <= set(per_stage), per_stage
    ran = [job for jobs in per_stage.values() for job in jobs]
    assert {"figures", "report"} <= set(ran) and set(ran) <= FIGURE_RULES, per_stage
    assert not set(ran) & (TRAINING_RULES | {"evaluate", "clips", "faces"})
    lock = yaml.safe_load((wf / "dvc.lock").read_text())
    assert lock["stages"]["figures"]["params"]["params.yaml"]["figures"]["dpi"] == 91
    assert stamp() == before  # no model, no metrics rewritten
    assert "Nothing to be done" in _smk(wf, "-n")
    assert "up to date" in _dvc(wf, "status")


def test_snakemake_report_has_a_caption_per_figure(e2e):
    wf, _ = e2e
    _smk(wf, "--report", "snakemake_report.zip")
    with zipfile.ZipFile(wf / "snakemake_report.zip") as z:
        names = z.namelist()
        text = "".join(z.read(n).decode("utf-8", "replace") for n in names if n.endswith((".html", ".js")))
    assert any(n.endswith("per_subject.png") for n in names) and any(n.endswith("report.html") for n in names)
    for caption in ("confusion", "per_subject", "learning_curves", "pretrain_curve", "report", "faces_qc"):
        words = (wf / "workflow/report" / f"{caption}.rst").read_text().split()
        plain = next(words[i:i + 4] for i in range(len(words)) if not any("`" in w for w in words[i:i + 4]))
        assert " ".join(plain) in text, caption  # the rst caption rendered into the report
