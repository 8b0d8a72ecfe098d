"""A fine-tuning fold interrupted half way resumes to exactly the uninterrupted result (issue 22).

Real runs of the ``finetune`` CLI (:func:`affectube.cli.main`, in processes forked from this one
so that no second interpreter imports torch and timm) on real clip stores (synthetic faces written with the store
writer, :func:`test_finetune_stage.write_stores`), a one-block ViT, 8 training clips, 6 epochs of
4 steps, with drop path, random resized crops and flips (so the random states matter):

- SIGTERM once 2 epochs are logged: the fold writes its checkpoint after the current step (often
  inside an epoch) and exits with 75; run again, it finishes;
- SIGKILL once 2 epochs are logged: nothing is written on the way out; run again, it resumes from
  the last end-of-epoch checkpoint;
- in-process stops inside epochs 3 and 5 (``stop_after_steps``, as a preemption there).

Each resumed fold must give byte-identical predictions, per-frame predictions and log, the same
metrics.json (but its wall time) and bit-identical weights as the uninterrupted run (same seed,
CPU, one thread). The two CLI processes start together and the reference runs in this process
meanwhile (2 cores). The fresh-interpreter path (``python -m affectube finetune``, exec'd by the
rule) is run by tests/test_finetune_ddp.py under torchrun and by tests/test_slurm_cluster.py.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from test_finetune_stage import make_cfg, write_stores

from affectube.eval import folds as F
from affectube.train import preempt
from affectube.train.checkpoint import load_checkpoint
from affectube.train.distributed import DistEnv
from affectube.train.fold_checkpoint import CHECKPOINT, PARTIAL_LOG, FoldCheckpoint, FoldPreempted

pytestmark = pytest.mark.usefixtures("one_thread")
EPOCHS, STEPS_PER_EPOCH = 6, 4
SETTINGS = {"epochs": EPOCHS, "batch_size": 2, "warmup_epochs": 1, "patience": 10, "drop_path": 0.2,
            "augment": {"crop": True, "scale": [0.8, 1.0], "ratio": [0.75, 1.33], "flip": 0.5}}


def _rows(path: Path) -> int:
    try:
        return len(pd.read_csv(path))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


def _cli(argv: list[str], err: str) -> None:
    """A forked child: ``affectube finetune ARGV`` with stderr to ``err``; exits with its status."""
    fd = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 2)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    logging.getLogger().handlers.clear()  # pytest's capture handlers: the CLI configures its own
    from affectube.cli import main

    code = main(argv)
    sys.stderr.flush()
    os._exit(code)


def _signal_when_logged(proc, out: Path, sig: int, epochs: int, sent: dict, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while proc.is_alive() and time.monotonic() < deadline:
        if _rows(out / PARTIAL_LOG) >= epochs:
            os.kill(proc.pid, sig)
            sent[sig] = _rows(out / PARTIAL_LOG)
            return
        time.sleep(0.02)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The stores, the fold, an uninterrupted run and two CLI runs interrupted by SIGTERM and SIGKILL."""
    from affectube.train.finetune import finetune_fold

    tmp = tmp_path_factory.mktemp("resume")
    root = tmp / "stores"
    table = write_stores(root)
    cfg = make_cfg(**SETTINGS)
    folds = F.plan_folds(table, cfg["finetune"])
    assert len(folds[0].videos("train")) == 8  # 4 steps of 2 per epoch
    F.save_folds(tmp / "folds.json", folds)
    sections = json.dumps({k: cfg[k] for k in ("pretrain", "finetune", "evaluate")})
    import affectube.models  # noqa: F401  (the model modules and timm, imported once, before forking)

    preempt.reset()
    ctx = multiprocessing.get_context("fork")
    procs, sent = {}, {}
    for name in ("term", "kill"):
        argv = ["finetune", "--cfg", sections, "--folds", str(tmp / "folds.json"), "--fold", "0", "--stores-dir",
                str(root), "--encoder", "", "--out-dir", str(tmp / name)]
        procs[name] = ctx.Process(target=_cli, args=(argv, str(tmp / f"{name}.err")))
        procs[name].start()
    watchers = [threading.Thread(target=_signal_when_logged, args=(procs[name], tmp / name, sig, 2, sent))
                for name, sig in (("term", signal.SIGTERM), ("kill", signal.SIGKILL))]
    for w in watchers:
        w.start()
    try:
        finetune_fold(cfg, folds[0], root, None, tmp / "straight", threads=1)  # meanwhile: the reference
        for w in watchers:
            w.join(timeout=300)
        for p in procs.values():
            p.join(timeout=300)
        codes = {name: p.exitcode for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.is_alive():
                p.kill()
                p.join()
    errs = {name: (tmp / f"{name}.err").read_text()[-3000:] for name in procs}
    return {"tmp": tmp, "root": root, "cfg": cfg, "fold": folds[0], "codes": codes, "sent": sent, "errs": errs}


def _resume(runs, out: Path, **kw) -> dict:
    from affectube.train.finetune import finetune_fold

    return finetune_fold(runs["cfg"], runs["fold"], runs["root"], None, out, threads=1, **kw)


def assert_same_fold(a: Path, b: Path) -> None:
    for name in ("predictions.csv", "predictions_frames.csv", "log.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs from the uninterrupted run"
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    for m in (ma, mb):
        m["training"].pop("seconds")
    assert ma == mb
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), "weights differ"
    assert len(pd.read_csv(b / "log.csv")) == EPOCHS, "every epoch logged exactly once"
    assert not (b / CHECKPOINT).exists() and not (b / PARTIAL_LOG).exists(), "the checkpoint outlives the fold"


def test_sigterm_half_way_checkpoints_exits_75_and_resumes_exactly(runs):
    out = runs["tmp"] / "term"
    assert runs["sent"].get(signal.SIGTERM), "the fold ended before it could be interrupted"
    assert runs["codes"]["term"] == preempt.EXIT_PREEMPTED, runs["errs"]["term"]
    assert "preempted: checkpoint at epoch" in runs["errs"]["term"]
    state = load_checkpoint(out / CHECKPOINT)
    assert 2 * STEPS_PER_EPOCH <= state["step"] < EPOCHS * STEPS_PER_EPOCH
    assert state["fold"]["epoch"] >= 2 and not state["fold"]["finished"]
    assert not (out / "metrics.json").exists() and not (out / "predictions.csv").exists(), "outputs of a partial fold"
    # a checkpoint of other params is not resumed
    other = {**state["meta"], "params_hash": "0" * 64}
    assert FoldCheckpoint(out, other, DistEnv()).load() is None
    _resume(runs, out)
    assert_same_fold(runs["tmp"] / "straight", out)


def test_sigkill_half_way_resumes_from_the_last_epoch_exactly(runs):
    out = runs["tmp"] / "kill"
    assert runs["sent"].get(signal.SIGKILL), "the fold ended before it could be killed"
    assert runs["codes"]["kill"] == -signal.SIGKILL, runs["errs"]["kill"]
    state = load_checkpoint(out / CHECKPOINT)
    assert state["fold"]["partial"] is None and state["step"] == state["fold"]["epoch"] * STEPS_PER_EPOCH
    assert 2 <= state["fold"]["epoch"] < EPOCHS and not (out / "metrics.json").exists()
    _resume(runs, out)
    assert_same_fold(runs["tmp"] / "straight", out)


def test_stops_inside_epochs_resume_exactly(runs):
    out = runs["tmp"] / "inside"
    for stop in (2 * STEPS_PER_EPOCH + 2, 4 * STEPS_PER_EPOCH + 1):  # 2 steps into epoch 3, 1 into epoch 5
        with pytest.raises(FoldPreempted, match="run the fold again"):
            _resume(runs, out, stop_after_steps=stop)
        state = load_checkpoint(out / CHECKPOINT)
        assert state["step"] == stop and state["fold"]["epoch"] == stop // STEPS_PER_EPOCH
        assert state["fold"]["partial"][0]["steps"] == stop % STEPS_PER_EPOCH
        assert _rows(out / PARTIAL_LOG) == stop // STEPS_PER_EPOCH
    _resume(runs, out)
    assert_same_fold(runs["tmp"] / "straight", out)
