"""Every pretext through SLURM: one ``sbatch`` job per ``pretrain.method`` (masked, byol, dino, audio) runs the
``pretrain`` rule's command (``python -m affectube launch --gpus 0 --nodes 1 -- pretrain --cfg ... --stores ...``)
on a real single-node SLURM (``.ci/slurm_up.sh``: Debian's munged/slurmctld/slurmd; stopped by pid with
``.ci/slurm_down.sh``), on synthetic clip stores with ``audio_logmel``. Each job trains a tiny ViT for 2 steps and
writes the files the rule declares, with the method in its summary.

The whole workflow through the Snakemake SLURM profile (preemption, resume, equality with a local run) is
tests/test_slurm_cluster.py's, with the masked method; what differs per method is inside the stage.
Needs root (or SLURM already up): skipped with a message outside CI, a failure under ``CI=1``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pretext_util import synthetic_audio_stores

REPO = Path(__file__).resolve().parents[1]
METHODS = ["masked", "byol", "dino", "audio"]
pytestmark = [pytest.mark.slow, pytest.mark.slurm]
TINY = {"depth": 1, "width": 64, "input_size": 32, "patch": 8, "num_frames": 4, "sample_stride": 1, "tubelet": 2,
        "batch_size": 2, "steps": 2, "warmup_steps": 1, "checkpoint_every": 2, "head_hidden": 32, "head_dim": 16,
        "dino_out": 20, "dino_local": 1, "decoder_width": 32, "decoder_depth": 1, "mask_ratio": 0.75, "recon_clips": 1}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = None if os.geteuid() == 0 else "needs root (installs and starts munged/slurmctld/slurmd)"
    if not reason and not shutil.which("slurmctld") and not shutil.which("apt-get"):
        reason = "needs Debian's slurmctld/slurmd packages or apt-get"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"SLURM {reason} -- required under CI")
        pytest.skip(f"SLURM {reason}")
    _wait_for_no_cluster(timeout=900)
    state = tmp_path_factory.mktemp("slurm-state")
    env = {**os.environ, "AFFECTUBE_SLURM_STATE": str(state), "AFFECTUBE_SLURM_PARTITION": "debug"}
    up = subprocess.run(["bash", str(REPO / ".ci" / "slurm_up.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, f".ci/slurm_up.sh failed ({up.returncode}):\n{up.stdout}\n{up.stderr}"
    try:
        yield
    finally:
        down = subprocess.run(["bash", str(REPO / ".ci" / "slurm_down.sh")], env=env, capture_output=True, text=True, timeout=180)
        assert down.returncode == 0, down.stderr


def _wait_for_no_cluster(timeout: float) -> None:
    """Under pytest-xdist another module (tests/test_slurm_cluster.py) may hold the one cluster of this machine:
    its teardown would stop the daemons under this module's jobs, so wait until its slurmctld is gone."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pid = Path("/run/slurmctld.pid").read_text().strip() if Path("/run/slurmctld.pid").exists() else ""
        if not pid.isdigit() or not Path(f"/proc/{pid}").exists():
            return
        time.sleep(5)
    pytest.fail(f"a SLURM cluster (slurmctld pid {pid}) still runs after {timeout} s: another module holds it")


def _submit(script: Path, out: Path) -> str:
    proc = subprocess.run(["sbatch", "--parsable", "--partition=debug", "--cpus-per-task=1", "--mem=3000",
                           f"--output={out}", f"--chdir={REPO}", str(script)], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def _wait(jobs: list[str], timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        q = subprocess.run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(jobs)], capture_output=True, text=True)
        states = [line.split()[1] for line in q.stdout.splitlines() if line.strip()]
        if q.returncode == 0 and all(s in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY") for s in states):
            return
        time.sleep(2)
    subprocess.run(["scancel", *jobs])
    pytest.fail(f"SLURM jobs {jobs} not finished after {timeout} s")


def test_every_pretext_trains_in_a_slurm_job_through_the_rules_command(slurm, tmp_path):
    stores = [str(p) for p in synthetic_audio_stores(tmp_path / "clips" / "synth", n=4, frames=12, size=32)]
    data = {"datasets": {d: {"adapter": "folder", "root": f"videos/{d}"} for d in ("synth", "other")},
            "pretrain": ["synth"], "finetune": "other", "transductive": True}  # fmt: skip
    jobs = {}
    for method in METHODS:
        (tmp_path / f"{method}.json").write_text(json.dumps({"data": data, "pretrain": {**TINY, "method": method}}))
        script = tmp_path / f"{method}.sh"
        script.write_text(
            f"#!/bin/bash\nset -euo pipefail\nexport PYTHONPATH={REPO / 'workflow'} OMP_NUM_THREADS=1\n"
            "echo slurm job $SLURM_JOB_ID\n"
            f"exec {sys.executable} -m affectube launch --gpus 0 --nodes 1 -- pretrain --cfg @{tmp_path / method}.json"
            f" --stores {' '.join(stores)} --out-dir {tmp_path / 'out' / method}\n"
        )
        jobs[method] = _submit(script, tmp_path / f"{method}.log")
    _wait(list(jobs.values()), timeout=900)
    for method, job in jobs.items():
        out, log = tmp_path / "out" / method, (tmp_path / f"{method}.log").read_text()
        assert (out / "summary.json").exists(), f"{method} (job {job}) wrote no summary:\n{log[-3000:]}"
        summary = json.loads((out / "summary.json").read_text())
        assert f"slurm job {job}\n" in log and summary["method"] == method and summary["steps"] == 2, (method, summary)
        for name in ("encoder.safetensors", "log.csv", "reconstruction.png", "checkpoints/last.pt"):
            assert (out / name).stat().st_size > 0, f"{method}: {name}"
