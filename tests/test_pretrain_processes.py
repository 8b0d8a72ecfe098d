"""Pretraining across real processes: torchrun with 2 gloo ranks, and a real SIGTERM.

Both run ``tests/pretrain_util.py`` (the real training loop on synthetic clips, with the
real ``distributed.init`` and preemption handlers) in subprocesses; the reference runs
(one process, uninterrupted) run the same entry point in this process, on one thread.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pretrain_util import main as worker_main
from pretrain_util import one_thread  # noqa: F401  (fixture)
from safetensors.torch import load_file

from affectube.train.checkpoint import load_checkpoint
from affectube.train.pretrain import EXIT_PREEMPTED

REPO = Path(__file__).resolve().parents[1]
WORKER = str(REPO / "tests" / "pretrain_util.py")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "workflow"), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _run(args, timeout=300):
    proc = subprocess.run([sys.executable, *args], env=_env(), capture_output=True, text=True, timeout=timeout)
    return proc


def _losses(out: Path) -> list[float]:
    with open(out / "log.csv", newline="") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


def test_ddp_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    common = {"steps": 3, "warmup_steps": 1, "checkpoint_every": 3}
    assert worker_main([str(tmp_path / "one"), "--set", json.dumps({**common, "batch_size": 4})]) == 0  # in process
    two = _run(
        ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", WORKER, str(tmp_path / "two"),
         "--set", json.dumps({**common, "batch_size": 2})]
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch"] == 4
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), rel=1e-5)
    a, b = load_file(str(tmp_path / "one" / "encoder.safetensors")), load_file(str(tmp_path / "two" / "encoder.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    ranks = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")["rng"]
    assert len(ranks) == 2  # every rank's RNG state is kept


def test_sigterm_checkpoints_exits_75_and_resumes_to_the_same_weights(tmp_path):
    settings = json.dumps({"steps": 30, "warmup_steps": 2, "checkpoint_every": 1000, "batch_size": 2})
    out = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, WORKER, str(out), "--set", settings], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    partial = out / "checkpoints" / "log.csv"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if partial.exists() and len(partial.read_text().splitlines()) >= 3:  # header + 2 steps
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    stopped_at = load_checkpoint(out / "checkpoints" / "last.pt")["step"]
    assert 2 <= stopped_at < 30 and not (out / "encoder.safetensors").exists()
    again = _run([WORKER, str(out), "--set", settings])
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["resumed_at_step"] == stopped_at
    assert worker_main([str(tmp_path / "straight"), "--set", settings]) == 0  # uninterrupted, in process
    a = load_file(str(out / "encoder.safetensors"))
    b = load_file(str(tmp_path / "straight" / "encoder.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(out) == _losses(tmp_path / "straight")
