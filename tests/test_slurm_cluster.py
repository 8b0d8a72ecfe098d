"""A real single-node SLURM (Debian's munge/slurmctld/slurmd): the profile, torchrun and preemption.

The module brings the cluster up with ``.ci/slurm_up.sh`` (a node with 2 CPUs and two fake
``gpu`` GRES backed by /dev/null) and stops every daemon it started, by PID, with
``.ci/slurm_down.sh``. It needs root and apt-get (or SLURM already installed): outside CI it is
skipped with a message when they are missing; under ``CI=1`` it fails instead.

Every ``snakemake`` runs under ``timeout -s INT`` (Snakemake ignores SIGTERM while it waits for
cluster jobs; SIGINT makes it cancel them and stop), and every ``sbatch -W`` under a timeout.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
PARTITION = "debug"
pytestmark = [pytest.mark.slow, pytest.mark.slurm]


# ---------------------------------------------------------------- the cluster
def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the SLURM tests need root (they install and start munged/slurmctld/slurmd)"
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        return "the SLURM tests need Debian's slurmctld/slurmd packages or apt-get to install them"
    return None


def _skip_or_fail(msg: str):
    if os.environ.get("CI"):
        pytest.fail(msg + " -- required under CI")
    pytest.skip(msg)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = _unavailable()
    if reason:
        _skip_or_fail(reason)
    state = tmp_path_factory.mktemp("slurm-state")
    env = {**os.environ, "AFFECTUBE_SLURM_STATE": str(state), "AFFECTUBE_SLURM_PARTITION": PARTITION}
    up = subprocess.run(["bash", str(REPO / ".ci" / "slurm_up.sh")], env=env, capture_output=True, text=True, timeout=600)
    if up.returncode == 3:
        _skip_or_fail(f"cannot bring up SLURM: {up.stderr.strip()}")
    assert up.returncode == 0, f".ci/slurm_up.sh failed ({up.returncode}):\n{up.stdout}\n{up.stderr}"
    started = {p.stem: int(p.read_text()) for p in state.glob("*.pid")}
    try:
        yield {"host": subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip(), "log": up.stderr}
    finally:
        down = subprocess.run(["bash", str(REPO / ".ci" / "slurm_down.sh")], env=env, capture_output=True, text=True, timeout=180)
        assert down.returncode == 0, down.stderr
        left = {name: pid for name, pid in started.items() if _alive(pid)}
        assert not left, f"daemons still running after .ci/slurm_down.sh: {left}"


def sbatch_wait(script: str, workdir: Path, *args: str, timeout: int = 300) -> tuple[str, str]:
    """``sbatch -W`` a bash script; return (job id, its output)."""
    path = workdir / "job.sh"
    path.write_text("#!/bin/bash\nset -euo pipefail\n" + script)
    out = workdir / "job.out"
    proc = subprocess.run(
        ["timeout", "-s", "INT", str(timeout), "sbatch", "-W", "--parsable", f"--partition={PARTITION}",
         f"--output={out}", f"--chdir={REPO}", *args, str(path)],
        capture_output=True, text=True, timeout=timeout + 30,
    )  # fmt: skip
    text = out.read_text() if out.exists() else ""
    assert proc.returncode == 0, f"sbatch failed ({proc.returncode}): {proc.stderr}\n{text[-4000:]}"
    return proc.stdout.strip().split(";")[0], text


# ---------------------------------------------------------------- torchrun inside SLURM jobs
def _expected_weights():
    """One process on both ranks' batches = what DDP's gradient averaging must give."""
    import torch

    import slurm_ddp_probe as probe

    net = probe.model()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for x0, x1 in zip(probe.batches(0), probe.batches(1)):
        opt.zero_grad()
        net(torch.cat([x0, x1])).pow(2).mean().backward()
        opt.step()
    return net.weight.detach().flatten().tolist(), net.bias.detach().flatten().tolist()


def _check_ranks(out: Path, job: str):
    import numpy as np

    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    weight, bias = _expected_weights()
    for r, res in enumerate(ranks):
        assert res["rank"] == r and res["world_size"] == 2 and res["source"] == "torchrun"
        assert res["backend"] == "gloo" and res["mean_rank_plus_1"] == 1.5
        assert res["slurm_job_id"] == job
        np.testing.assert_allclose(res["weight"], weight, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res["bias"], bias, rtol=1e-5, atol=1e-6)
    return ranks


LAUNCH = f"export PYTHONPATH={REPO / 'workflow'}:{REPO / 'tests'}\n{sys.executable} -m affectube launch"


def test_torchrun_two_processes_in_a_job(slurm, tmp_path):
    out = tmp_path / "ranks"
    job, log = sbatch_wait(f"{LAUNCH} --nproc-per-node 2 --module slurm_ddp_probe -- {out}\n", tmp_path, "--cpus-per-task=2")
    assert "torch.distributed.run --standalone --nnodes=1 --nproc-per-node=2" in log
    _check_ranks(out, job)


def test_torchrun_agents_started_by_srun(slurm, tmp_path):
    """The multi-node path on one node: srun starts 2 torchrun agents that meet on the allocation's first host."""
    out = tmp_path / "ranks"
    job, log = sbatch_wait(f"{LAUNCH} --agents-per-node 2 --module slurm_ddp_probe -- {out}\n", tmp_path, "--cpus-per-task=2")
    assert re.search(r"srun --nodes=1 --ntasks=2 --ntasks-per-node=2 .*--rdzv-backend=c10d "
                     rf"--rdzv-endpoint={slurm['host']}:{20000 + int(job) % 20000} --rdzv-id={job}", log), log  # fmt: skip
    ranks = _check_ranks(out, job)
    assert sorted(r["slurm_procid"] for r in ranks) == ["0", "1"], "each agent is its own srun task"


# ---------------------------------------------------------------- the workflow through --profile slurm
# A reduced demo (8 one-second videos of 4 subjects, 2 folds, one experiment, a one-block model)
# on shards of 4 videos (data.shard_size: one faces and one clips job per shard, each sized by its
# own videos), with pretrain.gpus=1 so that the GPU rules ask for a GPU; 40 pretraining steps leave
# time to preempt the job half-way, 12 fine-tuning epochs the same for fold 0.
SHARD_SIZE = 4
OVERRIDES = {
    "data": {"transductive": True, "shard_size": SHARD_SIZE},
    "demo": {"subjects": 4, "videos_per_class": 1, "seconds": 1.0, "fps": 10, "size": 96},
    "decode": {"fps": 10},
    "crop": {"size": 48},
    "pretrain": {"depth": 1, "width": 64, "input_size": 32, "patch": 8, "num_frames": 4, "sample_stride": 1,
                 "tubelet": 2, "decoder_width": 32, "decoder_depth": 1, "batch_size": 2, "steps": 40,
                 "warmup_steps": 5, "checkpoint_every": 20, "gpus": 1, "recon_clips": 1},
    "finetune": {"protocol": "group_kfold", "k": 2, "epochs": 12, "select_on": "last", "batch_size": 2, "test_clips": 1},
    "experiments": {"videomae": {}},
    "figures": {"formats": ["png"]},
}  # fmt: skip
# What runs through SLURM: everything after the demo videos and their manifest (made locally, its
# .snakemake metadata included, so that both runs read the same videos): the faces and clips shard
# jobs, the face QC and everything from pretraining on (13 jobs, 15 sbatch calls with the two preempted attempts). The
# outputs are compared with those of the same run made locally (`--cores 2`) at the same time.
# A shard job's threads: 1 in both runs (the test node has 2 CPUs; threads change nothing but speed).
SHARD_THREADS = ["--set-threads", "faces_shard=1", "clips_shard=1"]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AFFECTUBE_", "SLURM_"))}
    env.update(PATH=f"{VENV_BIN}:{env['PATH']}", **extra)
    return env


def _snakemake(workdir: Path, *args: str, timeout: int, env: dict, popen: bool = False):
    cmd = ["timeout", "-s", "INT", "-k", "30", str(timeout), str(VENV_BIN / "snakemake"), *args]
    if popen:
        log = open(workdir / "snakemake.out", "w")
        return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout + 60)
    assert proc.returncode == 0, f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc


def _test_profile(workdir: Path) -> None:
    """The repository's profile with the test node's limits: less memory, squeue for job status."""
    path = workdir / "slurm" / "profile.yaml"
    profile = yaml.safe_load(path.read_text())
    for rule in ("pretrain", "finetune"):
        profile["set-resources"][rule]["mem_mb"] = "1000 * attempt"
    profile["set-threads"] = {"faces_shard": 1, "clips_shard": 1}  # the node's 2 CPUs (SHARD_THREADS)
    profile.update({
        "slurm-status-command": "squeue",  # no slurmdbd here; MinJobAge=600 keeps finished jobs visible
        "slurm-init-seconds-before-status-checks": 2,
        "seconds-between-status-checks": 3,
        "slurm-keep-successful-logs": True,
        "latency-wait": 10,
        "verbose": True,  # logs each sbatch call
    })  # fmt: skip
    path.write_text(yaml.safe_dump(profile, sort_keys=False))


def _rows(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, newline="") as fh:
        return sum(1 for _ in csv.DictReader(fh))


def _squeue_job(comment: str, suffix: str | None = None) -> str | None:
    """A running job whose comment is ``comment`` (or, with ``suffix``, starts with it and ends with that)."""
    out = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i %k"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        job, _, com = line.partition(" ")
        com = com.strip()
        if com == comment if suffix is None else (com.startswith(comment) and com.endswith(suffix)):
            return job
    return None


def _preempt_fold_when_training(proc: subprocess.Popen, stage_log: Path, fold: int, timeout: float) -> str | None:
    """SIGTERM the running fine-tuning job of ``fold`` once its stage has opened its clips (the
    preemption handlers are installed by then; the signal lands early in its 12 epochs)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if stage_log.exists() and f"fold {fold}: train " in stage_log.read_text(errors="replace"):
            job = _squeue_job("rule_finetune_wildcards_", suffix=str(fold))
            if job:
                subprocess.run(["scancel", "--signal=TERM", job], check=True)
                return job
        time.sleep(0.1)
    return None


def _preempt_when_training(proc: subprocess.Popen, ckpt_log: Path, min_rows: int, timeout: float) -> str | None:
    """SIGTERM the running pretrain job (as SLURM does on preemption) once it has trained a bit."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if _rows(ckpt_log) >= min_rows:
            job = _squeue_job("rule_pretrain")
            if job:
                subprocess.run(["scancel", "--signal=TERM", job], check=True)
                return job
        time.sleep(0.1)
    return None


def test_workflow_through_the_profile_equals_a_local_run(slurm, tmp_path, workflow_copy):
    import pandas as pd
    import torch
    from safetensors.torch import load_file

    from affectube.shards.assign import assign

    local = workflow_copy(OVERRIDES, name="local")
    # phase 1, local: the demo videos and their manifest
    _snakemake(local, "--cores", "2", "--until", "manifest", timeout=600, env=_env())
    videos = pd.read_csv(local / "results/manifests/demo.csv", dtype=str)["video_id"].tolist()
    shards = assign(videos, SHARD_SIZE)
    assert len(videos) == 8 and len(shards) >= 2, shards  # a few shard jobs

    cluster = tmp_path / "cluster"
    shutil.copytree(local, cluster, symlinks=True)  # .snakemake metadata included: nothing is "changed"
    _test_profile(cluster)

    # phase 2: the rest through SLURM and, at the same time, locally (the reference)
    env = _env(AFFECTUBE_PARTITION=PARTITION, AFFECTUBE_CPUS_PER_GPU="1")
    # time limits for a loaded machine: the SLURM half (shard jobs included) took 11.4 min at load 7-9 and
    # passed 15 min at load 10-12; on an idle machine it takes a fraction of that
    proc = _snakemake(cluster, "--profile", "slurm", timeout=1500, env=env, popen=True)
    ref = _snakemake(local, "--cores", "2", *SHARD_THREADS, timeout=1500, env=_env(), popen=True)
    try:
        preempted = _preempt_when_training(proc, cluster / "results/pretrain/checkpoints/log.csv", 10, timeout=1000)
        fold_log = cluster / "results/logs/finetune/videomae/fold0.log"
        ft_preempted = _preempt_fold_when_training(proc, fold_log, 0, timeout=1000)
        rc = proc.wait(timeout=1560)
        ref_rc = ref.wait(timeout=1560)
    finally:
        for p in (proc, ref):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                p.wait(timeout=120)
    assert ref_rc == 0, f"local snakemake failed ({ref_rc}):\n{(local / 'snakemake.out').read_text()[-6000:]}"
    out = (cluster / "snakemake.out").read_text()
    assert rc == 0, f"snakemake --profile slurm failed ({rc}):\n{out[-8000:]}"

    # every job went through sbatch; the GPU rules asked for a GPU
    calls = re.findall(r"sbatch call: (sbatch .*)", out)
    by_rule = {}
    for call in calls:
        rule = re.search(r"--comment '?rule_([a-z_]+?)(?:_wildcards_|'| )", call).group(1)
        by_rule.setdefault(rule, []).append(call)
    assert {"faces_shard", "clips_shard", "faces_qc", "pretrain", "folds", "finetune", "evaluate", "figures", "report"} <= set(by_rule), sorted(by_rule)
    assert "faces" not in by_rule and "clips" not in by_rule, "per-video jobs on shards"
    # one faces and one clips job per shard, each sized by its own videos (rules: D.shard_runtime)
    for rule in ("faces_shard", "clips_shard"):
        asked = {re.search(r"--comment '?rule_\w+?_wildcards_demo_(\d+)", c).group(1): c for c in by_rule[rule]}
        assert sorted(asked) == sorted(shards) and len(by_rule[rule]) == len(shards), (rule, by_rule[rule])
        for shard, call in asked.items():
            minutes = int(10 + len(shards[shard]) * 0.5)
            assert f" -t {minutes} " in call + " " and " --mem 3000" in call and "--cpus-per-task=1" in call, call
            assert "--gpus" not in call and "--gres" not in call, call
    for rule in ("pretrain", "finetune"):
        for call in by_rule[rule]:
            assert " --gpus=1" in call and "--cpus-per-gpu=1" in call and f"-p {PARTITION}" in call, call
    for rule in ("faces_qc", "folds", "evaluate", "report"):
        assert all("--gpus" not in c and "--gres" not in c for c in by_rule[rule]), by_rule[rule]
    assert "--signal=TERM@600" in by_rule["pretrain"][0] and "--signal=TERM@600" in by_rule["finetune"][0]
    job_ids = dict(re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/", out))
    assert {"pretrain", "finetune"} <= set(job_ids.values()), job_ids
    for job, rule in job_ids.items():
        info = subprocess.run(["scontrol", "show", "job", "-d", job], capture_output=True, text=True).stdout
        if rule in ("pretrain", "finetune"):
            # slurmctld still knows the finished job (MinJobAge): it was a GPU job
            assert re.search(r"TresPerJob=gres:gpu:1\b", info), f"job {job} ({rule}) asked SLURM for no GPU:\n{info}"

    # the preempted pretraining job exited with 75 and its retry resumed from the checkpoint
    assert preempted, "the pretraining job was never seen running with >= 10 steps done"
    assert len(by_rule["pretrain"]) == 2, "pretrain: expected the preempted attempt and its retry"
    summary = json.loads((cluster / "results/pretrain/summary.json").read_text())
    assert summary["resumed_at_step"] and 10 <= summary["resumed_at_step"] < OVERRIDES["pretrain"]["steps"]
    assert "returned non-zero exit status 75" in _slurm_log(cluster, preempted), "the preempted attempt did not exit with 75"
    # so did the preempted fine-tuning job of fold 0 (checkpoint inside the fold), and its retry resumed it
    assert ft_preempted, "the fine-tuning job of fold 0 was never seen running"
    assert len(by_rule["finetune"]) == 3, "finetune: expected 2 folds and the retry of the preempted one"
    assert "returned non-zero exit status 75" in _slurm_log(cluster, ft_preempted), "the preempted fold did not exit with 75"
    assert "resumed after epoch" in fold_log.read_text(), fold_log.read_text()[-3000:]
    assert not (cluster / "results/finetune/videomae/fold0/checkpoints").exists()

    # outputs equal the local run's
    def same(rel):
        return (local / rel).read_bytes() == (cluster / rel).read_bytes()

    a, b = load_file(str(local / "results/pretrain/encoder.safetensors")), load_file(str(cluster / "results/pretrain/encoder.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "pretrained weights differ from the local run"
    for rel in ["results/folds/videomae.json", "results/evaluate/videomae/metrics.json",
                *(f"results/finetune/videomae/fold{k}/predictions.csv" for k in (0, 1))]:  # fmt: skip
        assert same(rel), f"{rel} differs from the local run"
    for k in (0, 1):
        rel = f"results/finetune/videomae/fold{k}/metrics.json"
        assert _untimed(json.loads((local / rel).read_text())) == _untimed(json.loads((cluster / rel).read_text())), rel
    qc = [pd.read_csv(root / "results/faces/demo/qc.csv").drop(columns=list(TIMING), errors="ignore") for root in (local, cluster)]
    pd.testing.assert_frame_equal(*qc)
    assert len(qc[1]) == 8 and (qc[1]["status"] == "ok").all(), qc[1]
    for shard, members in shards.items():  # the shard jobs processed their videos (one decode each)
        for root in (local, cluster):
            idx = json.loads((root / f"results/clips/demo/shard-{shard}.json").read_text())
            assert {e["video_id"]: e["status"] for e in idx["videos"]} == dict.fromkeys(members, "onepass"), idx
    assert (cluster / "results/report/report.html").stat().st_size > 0


TIMING = {"seconds", "frames_per_second", "elapsed", "wall_time_s"}  # wall-clock measurements differ between runs


def _untimed(obj):
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _slurm_log(root: Path, job: str) -> str:
    logs = list((root / "results/logs/slurm").rglob(f"{job}.log"))
    return logs[0].read_text() if logs else ""
