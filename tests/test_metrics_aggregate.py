"""Stage `evaluate`: per-fold, per-subject and pooled metrics recomputed from saved predictions alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from affectube.errors import DataError
from affectube.eval import aggregate as A
from affectube.eval import folds as F

WORKFLOW = str(Path(__file__).resolve().parents[1] / "workflow")
CLASSES = ["happy", "neutral", "sad"]


def _setup(tmp_path: Path, leak: bool = False):
    rng = np.random.default_rng(0)
    table = pd.DataFrame([{"dataset": "d", "video_id": f"S{s}_v{v}", "path": "x", "subject": f"S{s}", "emotion": CLASSES[v % 3]}
                          for s in range(4) for v in range(6)])
    folds = F.plan_folds(table, {"protocol": "loso", "inner_val": 0.3, "seed": 0})
    F.save_folds(tmp_path / "folds.json", folds)
    paths = []
    for f in folds:
        rows, frames = [], []
        for vid in f.videos("test"):
            y = table.set_index("video_id").loc[vid, "emotion"]
            subject = f.test[0] if not leak else f.train[0]
            val = rng.uniform(-1, 1)
            for clip in range(2):
                p = rng.dirichlet(np.ones(3) + 3 * np.eye(3)[CLASSES.index(y)] * (rng.random() < 0.7))
                rows.append({"fold": f.index, "subject": subject, "video_id": vid, "dataset": "d", "clip": clip,
                             "y_true": y, "y_pred": CLASSES[int(p.argmax())], **{f"prob_{c}": p[i] for i, c in enumerate(CLASSES)},
                             "true_valence": val, "pred_valence": val + rng.normal(0, 0.3)})
            for t in range(5):
                frames.append({"fold": f.index, "subject": subject, "video_id": vid, "time": t / 25,
                               "true_valence": val + 0.1 * t, "pred_valence": val + rng.normal(0, 0.2)})
        d = tmp_path / f"fold{f.index}"
        d.mkdir()
        pd.DataFrame(rows).to_csv(d / "predictions.csv", index=False)
        pd.DataFrame(frames).to_csv(d / "predictions_frames.csv", index=False)
        paths.append(d / "predictions.csv")
    return folds, paths


def _video_level(pred: pd.DataFrame):
    probs = pred.groupby("video_id", sort=False)[[f"prob_{c}" for c in CLASSES]].mean()
    y = pred.groupby("video_id", sort=False)["y_true"].first()
    return y.to_numpy(), np.array(CLASSES)[probs.to_numpy().argmax(1)]


def test_evaluate_stage_recomputes_everything_from_predictions(tmp_path):
    folds, paths = _setup(tmp_path)
    out = tmp_path / "eval"
    cfg = json.dumps({"evaluate": {"main_metric": "uar"}})
    cmd = [sys.executable, "-m", "affectube", "evaluate", "--cfg", cfg, "--folds", str(tmp_path / "folds.json"),
           "--predictions", *map(str, paths), "--out-dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={"PYTHONPATH": WORKFLOW, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    per_fold = pd.read_csv(out / "per_fold.csv")
    per_subject = pd.read_csv(out / "per_subject.csv")
    assert metrics["folds"] == 4 and len(per_fold) == 4 and len(per_subject) == 4
    # per fold: sklearn on the clip-averaged video predictions
    uars = []
    for p in paths:
        y, yhat = _video_level(pd.read_csv(p))
        uars.append(skm.balanced_accuracy_score(y, yhat))
    np.testing.assert_allclose(per_fold.sort_values("fold")["uar"], uars)
    assert metrics["mean"]["uar"] == pytest.approx(np.mean(uars))
    assert metrics["std"]["uar"] == pytest.approx(np.std(uars, ddof=1))  # sample sd over folds
    assert metrics["main"]["mean"] == pytest.approx(np.mean(uars))
    # pooled: all test videos of all folds together
    allpred = pd.concat([pd.read_csv(p) for p in paths])
    y, yhat = _video_level(allpred)
    assert metrics["pooled"]["uar"] == pytest.approx(skm.balanced_accuracy_score(y, yhat))
    assert metrics["pooled"]["f1_weighted"] == pytest.approx(skm.f1_score(y, yhat, average="weighted"))
    assert metrics["pooled"]["confusion_matrix"] == skm.confusion_matrix(y, yhat, labels=CLASSES).tolist()
    # continuous and per-frame metrics are there too
    frames = pd.concat([pd.read_csv(p.with_name("predictions_frames.csv")) for p in paths])
    from affectube.eval.metrics import ccc

    assert metrics["pooled"]["frame_ccc_valence"] == pytest.approx(ccc(frames["true_valence"], frames["pred_valence"]))
    assert "ccc_valence" in per_subject.columns and set(per_subject["subject"]) == {"S0", "S1", "S2", "S3"}


def test_evaluate_refuses_predictions_of_a_non_test_subject(tmp_path):
    folds, paths = _setup(tmp_path, leak=True)
    tables = [A.read_predictions(p) for p in paths]
    with pytest.raises(DataError, match="not a test subject"):
        A.aggregate(folds, tables, [None] * len(tables), "uar")


def test_unreadable_predictions_name_the_file(tmp_path):
    bad = tmp_path / "predictions.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="predictions.csv: missing column"):
        A.read_predictions(bad)
