"""BYOL, DINO and the audio pretext under torchrun with 2 gloo processes equal one process with the same global batch.

The worker (tests/pretext_worker.py) pretrains a tiny ViT with each method for 3 steps on synthetic clips (audio: on
synthetic clip stores with ``audio_logmel``, through the method's own dataset): once
in this process (batch 4), once under ``torchrun --nproc_per_node=2`` (batch 2 per rank: the same clips and views
per step, :class:`~affectube.train.distributed.ResumableSampler`). What must agree across ranks does: DDP averages
the gradients, the heads' BatchNorm normalises over the global batch
(:class:`~affectube.train.pretext.batchnorm.GlobalBatchNorm1d`), DINO's center averages the teacher logits of
all ranks, and the EMA target/teacher follows the same weights; the audio pretext has no cross-sample layer. Losses agree to 1e-5 and gradient norms to 1e-4 (relative),
the saved encoders to 1e-5, except the parameters whose gradient is zero up to rounding, where AdamW turns rounding
noise into steps of the learning rate's size (measured: up to 2.7e-4): the final LayerNorm's bias (a shift common
to every token of every clip, removed by the heads' BatchNorm) and the key part of the qkv bias (a constant added to
every attention logit of a query, removed by the softmax).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pretext_util import synthetic_audio_stores
from pretext_worker import main as worker_main
from pretrain_util import one_thread  # noqa: F401  (fixture)
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
METHODS = ["byol", "dino", "audio"]


def _log(out: Path, column: str) -> list[float]:
    with open(out / "log.csv", newline="") as fh:
        return [float(r[column]) for r in csv.DictReader(fh)]


def _comparable(state: dict) -> dict:
    """The encoder's tensors whose gradients are not analytically zero (see the module's docstring)."""
    out = {k: v for k, v in state.items() if k != "norm.bias"}
    for k in [k for k in out if k.endswith("attn.qkv.bias")]:
        q, _, v = out[k].chunk(3)
        out[k] = torch.cat([q, v])
    return out


def test_byol_dino_and_audio_on_two_gloo_processes_match_one_process(tmp_path):
    synthetic_audio_stores(tmp_path / "stores")
    stores = ["--stores", str(tmp_path / "stores")]
    assert worker_main([str(tmp_path / "one"), "--batch", "4", *stores]) == 0  # in process, world size 1
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO / "workflow"), str(REPO / "tests"), env.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(REPO / "tests" / "pretext_worker.py"), str(tmp_path / "two"), "--batch", "2", *stores],
                         env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    for method in METHODS:
        one, both = tmp_path / "one" / method, tmp_path / "two" / method
        summary = json.loads((both / "summary.json").read_text())
        assert summary["method"] == method and summary["world_size"] == 2 and summary["global_batch"] == 4
        for column, rel in (("loss", 1e-5), ("grad_norm", 1e-4)):  # dino's third step: 216.0044 vs 216.0019
            l1, l2 = _log(one, column), _log(both, column)
            assert len(l1) == 3 and l1 == pytest.approx(l2, rel=rel), f"{method} {column}: {l1} vs {l2}"
        a = _comparable(load_file(str(one / "encoder.safetensors")))
        b = _comparable(load_file(str(both / "encoder.safetensors")))
        diff = {k: float((a[k] - b[k]).abs().max()) for k in a}
        assert a.keys() == b.keys() and max(diff.values()) <= 1e-5, f"{method}: {max(diff.items(), key=lambda x: x[1])}"
