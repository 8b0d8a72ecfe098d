"""Fine-tuning learns: the recipe of params.yaml fits real MEAD clips within a fixed step budget.

8 real clips (MEAD M030 and W009, 4 emotions each; :mod:`realclips_util`) at 64 px, 8 frames,
a tiny ViT (96 wide, 2 blocks) or the ResNet18+GRU baseline, one thread. Training runs the
stage's own fold function with params.yaml's ``finetune`` section (augmentation, lr scaling,
head, selection) and only the budget and model size changed, so a regression of the recipe
(e.g. the old fixed 0.6-1 random resized crop, an lr 100x off, a head that starts saturated)
makes these fail. What is asserted:

- categorical: 100% training accuracy in the last epoch (``train_accuracy`` of log.csv: the
  augmented training clips as the epoch ran) and on the training clips predicted afterwards
  without augmentation, for a scratch ViT, a ViT initialised from a (briefly) pretrained
  VideoMAE encoder, and ResNet18+GRU;
- continuous: training CCC >= 0.9 of valence and arousal with the CCC loss (clip-level targets
  placed by emotion on the circumplex, see :data:`realclips_util.CIRCUMPLEX`).

Measured here (2-core machine, 1 thread): see each test's budget; every one ends well inside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from affectube.config import load_params
from affectube.eval import folds as F
from realclips_util import TINY, mead_stores, pretrain

REPO = Path(__file__).resolve().parents[1]
EMOTIONS = ["angry", "happy", "sad", "surprise"]
TRAIN_SUBJECTS, TEST_SUBJECT = ["M030", "W009"], "W011"
TINY_VIT = {**TINY, "model": "videomae"}  # the realdata recipe's model (config/realdata.yaml), 64 px


@pytest.fixture(scope="module")
def mead(realdata, tmp_path_factory):
    root = tmp_path_factory.mktemp("mead_stores")
    paths = mead_stores(realdata, root, TRAIN_SUBJECTS + [TEST_SUBJECT], EMOTIONS)
    table = pd.DataFrame([{"dataset": "mead", "video_id": p.stem, "path": f"{p.stem}.mp4", "subject": f"MEAD_{p.stem.split('_')[0]}",
                           "emotion": p.stem.split("_")[1]} for p in paths])
    return root, table


def cfg_for(steps: int, **finetune) -> dict:
    """params.yaml's recipe; the budget (``steps`` optimizer steps: one per epoch of 8 clips at batch
    8), the model size and the fold layout (no inner validation: a fixed budget) changed."""
    cfg = load_params(REPO / "params.yaml")
    cfg["pretrain"].update(TINY_VIT)
    cfg["finetune"].update({"init": "scratch", "classes": EMOTIONS, "inner_val": 0.0, "epochs": steps, "batch_size": 8,
                            "test_clips": 1, "threads": 1, "task": "categorical", "lr": 3.2e-2, "warmup_epochs": 1,
                            "select_on": "main_metric", "input": "frames", **finetune})  # the MEAD clips: emotions
    # only, read as frames (config/realdata.yaml's recipe; params.yaml's demo reads each clip's change: input delta)
    return cfg


def run(cfg, mead, out: Path, encoder=None) -> tuple[pd.DataFrame, dict]:
    from affectube.train.finetune import finetune_fold

    root, table = mead
    fold = next(f for f in F.plan_folds(table, cfg["finetune"]) if f.test == [f"MEAD_{TEST_SUBJECT}"])
    assert sorted(fold.train) == [f"MEAD_{s}" for s in TRAIN_SUBJECTS] and not fold.val
    summary = finetune_fold(cfg, fold, root, encoder, out, threads=1)
    log = pd.read_csv(out / "log.csv")
    assert len(log) == cfg["finetune"]["epochs"] and json.loads((out / "metrics.json").read_text())["training"]["best_epoch"] == len(log)
    return log, summary


def assert_fits(log: pd.DataFrame, summary: dict, what: str) -> None:
    """100% on the training clips with the trained weights, no augmentation (metrics.json ``train``);
    the running training accuracy of the last 10 epochs (flipped clips, dropout, weights moving) >= 0.85 on average."""
    fit = summary["train"]
    assert fit["accuracy"] == 1.0 and fit["uar"] == 1.0, f"{what}: training accuracy {fit['accuracy']:.3f} after {len(log)} steps\n{log}"
    assert log["train_accuracy"].tail(10).mean() >= 0.85, f"{what}: {log['train_accuracy'].tolist()}"
    assert log["train_loss"].tail(5).mean() < 0.6 * log["train_loss"].head(5).mean(), log["train_loss"].tolist()


def test_scratch_vit_fits_8_mead_clips(mead, tmp_path, one_thread):
    log, summary = run(cfg_for(60), mead, tmp_path)
    assert_fits(log, summary, "scratch ViT")
    assert {"train_accuracy", "train_uar"} <= set(summary["training"]["train_at_best"])


def test_pretrained_vit_fits_8_mead_clips(mead, tmp_path, one_thread):
    root, _ = mead
    pretrain(sorted(root.glob("*.h5")), tmp_path / "pretrain", "videomae", 60)  # VideoMAE on the 12 clips (transductive: a fitting test)
    log, summary = run(cfg_for(100, init="pretrained"), mead, tmp_path / "ft", encoder=str(tmp_path / "pretrain" / "encoder.safetensors"))
    assert_fits(log, summary, "pretrained ViT")
    assert summary["training"]["encoder"].endswith("encoder.safetensors")


def test_resnet_gru_fits_8_mead_clips(mead, tmp_path, one_thread):
    cfg = cfg_for(40, backbone="resnet_gru")
    cfg["pretrain"]["input_size"] = 32  # ResNet18 on every frame: 32 px keeps it under a minute on one thread
    log, summary = run(cfg, mead, tmp_path)
    assert_fits(log, summary, "ResNet18+GRU")


def test_continuous_targets_reach_ccc_0_9_with_the_ccc_loss(mead, tmp_path, one_thread):
    cfg = cfg_for(100, task="continuous", targets=["valence", "arousal"], losses={"ccc": 1.0})
    cfg["evaluate"]["main_metric"] = "ccc"
    log, summary = run(cfg, mead, tmp_path)
    fit = summary["train"]
    assert fit["ccc_valence"] >= 0.9 and fit["ccc_arousal"] >= 0.9, f"training CCC {fit}\n{log}"
    assert log["train_ccc"].tail(10).mean() >= 0.8 and {"train_ccc_valence", "train_ccc_arousal"} <= set(log.columns)
