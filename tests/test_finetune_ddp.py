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
import torch
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
    two_cfg = make_cfg(batch_size=2, gpus=2, **DDP)
    F.save_folds(tmp_path / "folds.json", F.plan_folds(table, two_cfg["finetune"]))
    sections = json.dumps({k: two_cfg[k] for k in ("pretrain", "finetune", "evaluate")})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "affectube",
           "finetune", "--cfg", sections, "--folds", str(tmp_path / "folds.json"), "--fold", "0", "--stores-dir", str(root),
           "--encoder", "", "--out-dir", str(tmp_path / "two")]  # fmt: skip
    err = open(tmp_path / "two.err", "w+")
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=err, text=True)
    try:  # meanwhile, the reference: one process, batch 4
        one_cfg = make_cfg(batch_size=4, **DDP)
        fold = F.plan_folds(table, one_cfg["finetune"])[0]
        assert len(fold.videos("train")) == 8  # 2 steps of 4 (1 process) or of 2 x 2 (2 processes) per epoch
        one = finetune_fold(one_cfg, fold, root, None, tmp_path / "one", threads=1)
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = (tmp_path / "two.err").read_text()
    assert rc == 0, stderr[-4000:]
    assert "2 process(es)" in stderr

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


def _rank(rank: int, port: int, args: tuple, stop: int | None, results) -> None:
    """One of 2 ranks, forked from this process (no second interpreter start-up): the real process
    group (gloo), the fold as the CLI runs it under torchrun."""
    from affectube.train import distributed
    from affectube.train.finetune import finetune_fold
    from affectube.train.fold_checkpoint import FoldPreempted

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    env, device = distributed.init()
    try:
        finetune_fold(*args, threads=1, env=env, device=device, stop_after_steps=stop)
        results.put((rank, "done"))
    except FoldPreempted:
        results.put((rank, "preempted"))
    except BaseException as exc:  # reported to the test
        results.put((rank, repr(exc)))
    finally:
        distributed.cleanup()


def _two_ranks(args: tuple, stop: int | None) -> list:
    import multiprocessing
    import socket

    import affectube.models  # noqa: F401  (the model modules and timm: imported once here, not in every forked rank)
    import affectube.train.finetune  # noqa: F401
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, port, args, stop, results)) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
        if p.is_alive():
            p.kill()
    return sorted(results.get(timeout=5) for _ in procs)


def test_two_processes_preempted_inside_an_epoch_resume_exactly(tmp_path):
    """Under DDP every rank stops at the same step, rank 0 writes one checkpoint with both ranks'
    random states and partial-epoch sums, and the resumed fold equals an uninterrupted 2-process run."""
    from safetensors.torch import load_file

    from affectube.train.checkpoint import load_checkpoint
    from affectube.train.fold_checkpoint import CHECKPOINT

    root = tmp_path / "stores"
    table = write_stores(root)
    cfg = make_cfg(batch_size=2, gpus=2, **{**DDP, "drop_path": 0.2})  # drop path: the ranks' RNG states matter
    fold = F.plan_folds(table, cfg["finetune"])[0]
    straight = _two_ranks((cfg, fold, root, None, tmp_path / "straight"), None)
    assert straight == [(0, "done"), (1, "done")], straight
    out = tmp_path / "resumed"
    assert _two_ranks((cfg, fold, root, None, out), 3) == [(0, "preempted"), (1, "preempted")]  # 1 step into epoch 2
    state = load_checkpoint(out / CHECKPOINT)
    assert state["step"] == 3 and state["fold"]["epoch"] == 1
    assert len(state["rng"]) == 2 and [p["steps"] for p in state["fold"]["partial"]] == [1, 1]
    assert not (out / "metrics.json").exists()
    assert _two_ranks((cfg, fold, root, None, out), None) == [(0, "done"), (1, "done")]
    for name in ("predictions.csv", "log.csv"):
        assert (out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
    a, b = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "straight" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
