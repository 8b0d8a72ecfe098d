"""Synthetic-but-realistic results in the contract's formats, for the report tests.

``write_run(root, ...)`` writes what a finished run leaves behind for the figures and
report stages: folds, per-fold predictions (clip rows, class probabilities, continuous
targets), per-frame predictions, training logs, a pretraining log, face QC tables and a
manifest. Predictions are noisy versions of the truth (better than chance, far from
perfect), subjects differ in how well they are predicted, and one subject lacks a
class, as in real per-subject emotion data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from affectube.eval.folds import Fold, save_folds

CLASSES = ["angry", "happy", "neutral", "sad"]
TARGETS = ["valence", "arousal"]
SUBJECTS = ["M030", "W009", "W011", "1001"]
VALENCE = {"angry": -0.6, "happy": 0.7, "neutral": 0.0, "sad": -0.5}
AROUSAL = {"angry": 0.7, "happy": 0.4, "neutral": -0.2, "sad": -0.4}


def params_cfg(experiments=None, task: str = "both", **figures) -> dict:
    """The ``--cfg`` JSON the figures/report rules pass (sections as in params.yaml)."""
    return {
        "figures": {"dpi": 60, "width": 6.0, "height": 4.0, "palette": "tab10", "formats": ["png", "pdf"], "subjects": None, **figures},
        "evaluate": {"main_metric": "uar"},
        "finetune": {"task": task, "init": "pretrained", "protocol": "loso", "targets": TARGETS},
        "experiments": experiments if experiments is not None else {"videomae": {}, "scratch": {"finetune.init": "scratch"}},
        "report": {"title": "synthetic report", "coverage_threshold": 0.8, "alpha": 0.05, "baseline": None},
        "data": {"finetune": "demo", "pretrain": ["demo"], "datasets": {"demo": {"adapter": "demo", "root": "results/demo"}}},
    }


def _videos(subject: str, per_class: int = 2) -> list[tuple[str, str]]:
    classes = CLASSES if subject != "1001" else [c for c in CLASSES if c != "angry"]  # one subject lacks a class
    return [(f"{subject}_{c}_{i}", c) for c in classes for i in range(per_class)]


def write_fold(fdir: Path, fold: int, subject: str, skill: float, rng: np.random.Generator, clips: int = 2) -> None:
    rows, frames = [], []
    for video_id, emotion in _videos(subject):
        true_idx = CLASSES.index(emotion)
        t = np.arange(0, 4.0, 0.04)
        val_tr = VALENCE[emotion] * np.clip(t / 1.5, 0, 1) + 0.05 * np.sin(2 * np.pi * t / 3 + rng.uniform(0, 6))
        aro_tr = AROUSAL[emotion] * np.clip(t / 1.0, 0, 1) + 0.05 * np.cos(2 * np.pi * t / 2 + rng.uniform(0, 6))
        val_pr = skill * val_tr + 0.15 * rng.standard_normal() + 0.05 * rng.standard_normal(len(t))
        aro_pr = skill * aro_tr + 0.15 * rng.standard_normal() + 0.05 * rng.standard_normal(len(t))
        for k in range(len(t)):
            frames.append({"fold": fold, "subject": subject, "video_id": video_id, "time": round(float(t[k]), 3),
                           "true_valence": val_tr[k], "pred_valence": val_pr[k], "true_arousal": aro_tr[k], "pred_arousal": aro_pr[k]})
        half = len(t) // clips
        for c in range(clips):
            alpha = np.full(len(CLASSES), 1.0)
            alpha[true_idx] += 4.0 * skill
            prob = rng.dirichlet(alpha)
            sl = slice(c * half, (c + 1) * half)
            rows.append({
                "fold": fold, "subject": subject, "video_id": video_id, "dataset": "demo", "clip": c,
                "y_true": emotion, "y_pred": CLASSES[int(prob.argmax())],
                **{f"prob_{k}": float(p) for k, p in zip(CLASSES, prob)},
                "true_valence": float(val_tr[sl].mean()), "pred_valence": float(val_pr[sl].mean()),
                "true_arousal": float(aro_tr[sl].mean()), "pred_arousal": float(aro_pr[sl].mean()),
            })
    fdir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(fdir / "predictions.csv", index=False)
    pd.DataFrame(frames).to_csv(fdir / "predictions_frames.csv", index=False)
    epochs = np.arange(1, 7)
    log = pd.DataFrame({
        "epoch": epochs,
        "train_loss": 1.4 * np.exp(-0.35 * epochs) + 0.3 + 0.02 * rng.standard_normal(len(epochs)),
        "val_loss": 1.3 * np.exp(-0.25 * epochs) + 0.5 + 0.04 * rng.standard_normal(len(epochs)),
        "val_uar": np.clip(0.25 + 0.08 * epochs * skill + 0.03 * rng.standard_normal(len(epochs)), 0, 1),
        "train_accuracy": np.clip(0.82 + 0.03 * epochs, 0, 1),  # the model fits its training videos
        "train_uar": np.clip(0.81 + 0.03 * epochs, 0, 1),
        "lr": 1e-3 * np.cos(np.pi * epochs / 14),
    })
    log.to_csv(fdir / "log.csv", index=False)
    best = int(log.loc[log["val_uar"].idxmax(), "epoch"])
    (fdir / "metrics.json").write_text(json.dumps({"fold": fold, "main_metric": "uar", "skipped_stores": [],
                                                   "training": {"best_epoch": best, "selected_on": "val_uar"}}))


def write_run(root: Path, experiments=None, skills=None, seed: int = 0, fail: dict | None = None,
              diverge: str | None = None, low_coverage: bool = True) -> Path:
    """Write a whole run under ``root/results``; ``fail={exp: fold}`` leaves that fold without predictions."""
    results = Path(root) / "results"
    rng = np.random.default_rng(seed)
    experiments = experiments or ["videomae", "scratch"]
    skills = skills or {"videomae": 0.8, "scratch": 0.4}
    folds = []
    for k, test in enumerate(SUBJECTS):
        rest = [s for s in SUBJECTS if s != test]
        val = [rest[k % len(rest)]]
        train = [s for s in rest if s not in val]
        sides = {"train": train, "val": val, "test": [test]}
        folds.append(Fold(k, train, val, [test], extra={
            "protocol": "loso", "group": "subject", "groups": sides,
            "videos": {side: [v for s in subs for v, _ in _videos(s)] for side, subs in sides.items()}}))
    for exp in experiments:
        save_folds(results / "folds" / f"{exp}.json", folds)
        for k, test in enumerate(SUBJECTS):
            fdir = results / "finetune" / exp / f"fold{k}"
            if fail and fail.get(exp) == k:
                logdir = results / "logs" / "finetune" / exp
                logdir.mkdir(parents=True, exist_ok=True)
                (logdir / f"fold{k}.log").write_text("epoch 1 ...\nRuntimeError: CUDA out of memory (synthetic)\n")
                continue
            skill = skills[exp] * (0.6 + 0.2 * k)  # subjects differ
            write_fold(fdir, k, test, min(skill, 1.0), rng)
            if diverge == exp and k == 1:
                lg = pd.read_csv(fdir / "log.csv")
                lg.loc[lg.index[-2:], "train_loss"] = [5.0, float("nan")]
                lg.to_csv(fdir / "log.csv", index=False)
    steps = np.arange(0, 60, 2)
    pre = results / "pretrain"
    pre.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"step": steps, "loss": 1.1 * np.exp(-steps / 25) + 0.35 + 0.02 * rng.standard_normal(len(steps)),
                  "lr": 1.5e-4 * np.minimum(1, (steps + 1) / 5)}).to_csv(pre / "log.csv", index=False)
    (pre / "summary.json").write_text(json.dumps({"steps": 60, "final_loss": 0.4}))
    qc = results / "faces" / "demo"
    qc.mkdir(parents=True, exist_ok=True)
    vids = [(s, v) for s in SUBJECTS for v, _ in _videos(s)]
    coverage = [1.0 if i != 3 or not low_coverage else 0.42 for i in range(len(vids))]
    pd.DataFrame({"video_id": [v for _, v in vids], "subject": [s for s, _ in vids], "frames": 100,
                  "coverage": coverage, "gaps": 0, "mean_score": 0.98}).to_csv(qc / "qc.csv", index=False)
    man = results / "manifests"
    man.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"dataset": "demo", "video_id": [v for _, v in vids], "path": [f"results/demo/{v}.mp4" for _, v in vids],
                  "subject": [s for s, _ in vids],
                  "emotion": [e for s in SUBJECTS for _, e in _videos(s)]}).to_csv(man / "demo.csv", index=False)
    return results
