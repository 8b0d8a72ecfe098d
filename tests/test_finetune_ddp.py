"""One fine-tuning fold on 2 processes (torchrun, DDP, gloo on the CPU) against 1 process (issue 22).

The 2-process run goes through the real CLI under ``torch.distributed.run`` with
``finetune.batch_size`` 2 per process; the reference runs the same fold in this process with
batch 4, the same global batch (so the same learning rate, ``lr x global batch / 256``). With no
drop path or dropout, 8 training clips (every step splits evenly over the ranks) and clips and
augmentations drawn from ``(seed, epoch, index)``, both runs see the same clips in the same global
batches; only the floating-point order of the gradient all-reduce (mean of 2 means vs one mean)
and of the validation/test batches differs. Stated tolerance: log values and predicted
probabilities within 1e-4 (relative 1e-4 for losses); exact: the learning rates, the epoch
selected, the predicted classes and the accuracy/UAR metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_finetune_stage import make_cfg, write_stores

from affectube.eval import folds as F

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")
DDP = {"epochs": 3, "warmup_epochs": 1, "drop_path": 0.0, "head_dropout": 0.0, "select_on": "val_loss", "patience": 5,
       "lr": 0.5, "augment": {"crop": True, "scale": [0.8, 1.0], "ratio": [0.75, 1.33], "flip": 0.5}}


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=str(REPO / "workflow"), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return env


def test_two_processes_train_select_and_predict_like_one(tmp_path):
    from affectube.train.finetune import finetune_fold

    root = tmp_path / "stores"
    table = write_stores(root)
    one_cfg = make_cfg(batch_size=4, **DDP)
    fold = F.plan_folds(table, one_cfg["finetune"])[0]
    assert len(fold.videos("train")) == 8  # 2 steps of 4 (1 process) or of 2 x 2 (2 processes) per epoch
    one = finetune_fold(one_cfg, fold, root, None, tmp_path / "one", threads=1)

    two_cfg = make_cfg(batch_size=2, gpus=2, **DDP)
    F.save_folds(tmp_path / "folds.json", F.plan_folds(table, two_cfg["finetune"]))
    sections = json.dumps({k: two_cfg[k] for k in ("pretrain", "finetune", "evaluate")})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "affectube",
           "finetune", "--cfg", sections, "--folds", str(tmp_path / "folds.json"), "--fold", "0", "--stores-dir", str(root),
           "--encoder", "", "--out-dir", str(tmp_path / "two")]  # fmt: skip
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "2 process(es)" in proc.stderr

    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["training"]["processes"] == 2 and two["training"]["global_batch"] == 4
    assert one["training"]["processes"] == 1 and one["training"]["global_batch"] == 4
    assert two["training"]["lr_peak"] == one["training"]["lr_peak"]
    assert two["training"]["best_epoch"] == one["training"]["best_epoch"]
    assert two["training"]["selected_on"] == one["training"]["selected_on"] == "val_loss"
    assert not (tmp_path / "two" / "checkpoints").exists(), "the checkpoint is removed once the fold is complete"

    log1, log2 = pd.read_csv(tmp_path / "one" / "log.csv"), pd.read_csv(tmp_path / "two" / "log.csv")
    assert list(log1.columns) == list(log2.columns) and len(log1) == len(log2) == 3
    np.testing.assert_array_equal(log1["lr"], log2["lr"])
    for col in ("train_loss", "val_loss", "loss_ce"):
        np.testing.assert_allclose(log2[col], log1[col], rtol=1e-4, atol=1e-6, err_msg=col)
    for col in ("val_uar", "train_accuracy", "train_uar"):
        np.testing.assert_allclose(log2[col], log1[col], atol=1e-4, err_msg=col)
    assert log1["train_loss"].iloc[-1] < log1["train_loss"].iloc[0], "the fold does not train"

    # predictions gathered from both ranks in clip order, as one process writes them
    p1, p2 = pd.read_csv(tmp_path / "one" / "predictions.csv"), pd.read_csv(tmp_path / "two" / "predictions.csv")
    keys = ["fold", "subject", "video_id", "dataset", "clip", "y_true", "y_pred"]
    pd.testing.assert_frame_equal(p1[keys], p2[keys])
    np.testing.assert_allclose(p2[["prob_happy", "prob_sad"]], p1[["prob_happy", "prob_sad"]], atol=1e-4)
    for side in ("test", "val", "train"):
        for name in ("accuracy", "uar"):
            assert two[side][name] == one[side][name], (side, name)
    assert two["test_loss"] == pytest.approx(one["test_loss"], rel=1e-4)
