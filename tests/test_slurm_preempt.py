"""Preemption: SIGTERM/SIGUSR1 -> flag -> checkpoint + exit 75 -> resume to the same weights."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from affectube.train import preempt

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{REPO / 'workflow'}:{REPO / 'tests'}", "OMP_NUM_THREADS": "1"}


@pytest.fixture
def clean_preempt():
    preempt.uninstall()
    preempt.reset()
    yield
    preempt.uninstall()
    preempt.reset()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_sets_flag_instead_of_killing(clean_preempt, sig):
    assert preempt.install()
    assert not preempt.requested()
    os.kill(os.getpid(), sig)
    time.sleep(0.05)  # Python runs the handler at the next bytecode boundary
    assert preempt.requested()
    assert preempt.received() == signal.Signals(sig).name


def test_uninstall_restores_previous_handlers(clean_preempt):
    before = signal.getsignal(signal.SIGUSR1)
    preempt.install()
    assert signal.getsignal(signal.SIGUSR1) is not before
    preempt.uninstall()
    assert signal.getsignal(signal.SIGUSR1) is before


def test_install_outside_main_thread_is_refused(clean_preempt):
    result = []
    t = threading.Thread(target=lambda: result.append(preempt.install()))
    t.start()
    t.join()
    assert result == [False]
    assert signal.getsignal(signal.SIGTERM) is not preempt._handler


# ---------------------------------------------------------------- a real training run, interrupted
STEPS = 80


def _start(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "slurm_preempt_probe", str(out), str(STEPS)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=open(out.parent / f"{out.name}.stderr", "a"),
    )


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _interrupt(out: Path, sig: int, after_steps: int, timeout: float = 240) -> int:
    """Run the probe in ``out``; send ``sig`` once its per-step log has ``after_steps`` rows."""
    proc = _start(out)
    partial = out / "checkpoints" / "log.csv"
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            rows = _rows(partial)
            if rows and int(rows[-1]["step"]) >= after_steps:
                proc.send_signal(sig)
                break
            time.sleep(0.02)
        return proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _encoder(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.slow
def test_preempted_training_resumes_to_the_same_weights(tmp_path):
    import torch

    from affectube.train.checkpoint import load_checkpoint

    reference = tmp_path / "uninterrupted"
    ref_proc = _start(reference)  # runs alongside the interrupted chain

    out = tmp_path / "preempted"
    assert _interrupt(out, signal.SIGTERM, after_steps=15) == preempt.EXIT_PREEMPTED
    first = load_checkpoint(out / "checkpoints" / "last.pt")["step"]
    assert 15 <= first < STEPS, first
    assert not (out / "encoder.safetensors").exists(), "a preempted run must not write final outputs"

    assert _interrupt(out, signal.SIGUSR1, after_steps=first + 15) == preempt.EXIT_PREEMPTED
    second = load_checkpoint(out / "checkpoints" / "last.pt")["step"]
    assert first + 15 <= second < STEPS, (first, second)

    final = _start(out)
    assert final.wait(timeout=300) == 0
    assert ref_proc.wait(timeout=300) == 0

    rows = _rows(out / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1)), "every step logged exactly once"
    assert [r["loss"] for r in rows] == [r["loss"] for r in _rows(reference / "log.csv")]
    a, b = _encoder(reference / "encoder.safetensors"), _encoder(out / "encoder.safetensors")
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after two preemptions"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_at_step"] == second
