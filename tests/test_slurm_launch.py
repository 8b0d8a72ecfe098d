"""affectube.train.launch: the command that runs a stage on the job's GPUs/nodes (no SLURM needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from affectube.errors import UserError
from affectube.train.launch import Allocation, Request, command, gpus_in_gres, parse_scontrol_job

REPO = Path(__file__).resolve().parents[1]
PY = "/env/bin/python"
STAGE = ("pretrain", "--cfg", "{}", "--out-dir", "results/pretrain")

# `scontrol show job -d -o` of a 1-node job with 2 (fake) GPUs, as printed by SLURM 22.05 here
SCONTROL_ONE = (
    "JobId=6 JobName=j.sh UserId=root(0) JobState=RUNNING NodeList=vm BatchHost=vm NumNodes=1 NumCPUs=2 "
    "NumTasks=1 CPUs/Task=2 TRES=cpu=2,mem=21694M,node=1,billing=2 JOB_GRES=gpu:2   Nodes=vm CPU_IDs=0-1 "
    "Mem=21694 GRES=gpu:2(IDX:0-1) MinCPUsNode=2 Command=/tmp/j.sh TresPerJob=gres:gpu:2"
)
# two nodes listed separately, typed GPUs
SCONTROL_TWO = (
    "JobId=77 NodeList=gpu[03-04] NumNodes=2 NumCPUs=64 JOB_GRES=gpu:a100:8   Nodes=gpu03 CPU_IDs=0-31 Mem=0 "
    "GRES=gpu:a100:4(IDX:0-3)   Nodes=gpu04 CPU_IDs=0-31 Mem=0 GRES=gpu:a100:4(IDX:0-3) TresPerNode=gres:gpu:a100:4"
)


def test_parse_scontrol_job_keeps_every_node_gres():
    one = parse_scontrol_job(SCONTROL_ONE)
    assert one["NodeList"] == "vm" and one["NumNodes"] == "1" and one["NumCPUs"] == "2"
    assert one["GRES"] == "gpu:2(IDX:0-1)"
    two = parse_scontrol_job(SCONTROL_TWO)
    assert two["GRES"] == "gpu:a100:4(IDX:0-3);gpu:a100:4(IDX:0-3)"


@pytest.mark.parametrize(
    "gres,n",
    [("gpu:2(IDX:0-1)", 2), ("gpu:a100:4(IDX:0-3)", 4), ("gpu:a100:1(IDX:0),gpu:v100:2(IDX:1-2)", 3),
     ("shard:8(IDX:0-7)", 0), ("", 0), ("(null)", 0)],
)  # fmt: skip
def test_gpus_in_gres(gres, n):
    assert gpus_in_gres(gres) == n


def test_outside_slurm_one_process_runs_the_stage_itself():
    assert command(Request(STAGE), None, PY) == [PY, "-m", "affectube", *STAGE]
    # several local GPUs: the stage re-launches itself under torchrun (affectube.train.distributed)
    assert command(Request(STAGE, gpus=4), None, PY) == [PY, "-m", "affectube", *STAGE]


def test_explicit_processes_per_node_use_torchrun_standalone():
    cmd = command(Request(STAGE, nproc_per_node=2), None, PY)
    assert cmd == [PY, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc-per-node=2",
                   "-m", "affectube", *STAGE]  # fmt: skip


def test_several_nodes_need_slurm():
    with pytest.raises(UserError, match="needs a SLURM allocation"):
        command(Request(STAGE, nodes=2), None, PY)


def test_multi_node_allocation_srun_one_torchrun_agent_per_node():
    alloc = Allocation(job_id="77", hosts=("gpu03", "gpu04"), cpus_per_node=32, gpus_per_node=4)
    cmd = command(Request(STAGE, gpus=0, nodes=2), alloc, PY)
    srun, rest = cmd[: cmd.index(PY)], cmd[cmd.index(PY) :]
    assert srun[0] == "srun"
    assert {"--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=32", "--gres=gpu:4"} <= set(srun)
    assert rest[:3] == [PY, "-m", "torch.distributed.run"]
    assert "--nnodes=2" in rest and "--nproc-per-node=4" in rest  # GPUs per node from the allocation
    assert "--rdzv-backend=c10d" in rest and "--rdzv-id=77" in rest
    assert "--rdzv-endpoint=gpu03:20077" in rest  # first node of the allocation, port from the job id
    assert rest[-len(STAGE) - 2 :] == ["-m", "affectube", *STAGE]


def test_rule_and_allocation_must_agree_on_nodes():
    alloc = Allocation(job_id="5", hosts=("a", "b"), cpus_per_node=4, gpus_per_node=0)
    with pytest.raises(UserError, match="asks for 1 node"):
        command(Request(STAGE, nodes=1), alloc, PY)


def test_gpus_requested_but_none_allocated_is_an_error():
    alloc = Allocation(job_id="5", hosts=("a",), cpus_per_node=4, gpus_per_node=0)
    with pytest.raises(UserError, match="asks for 2 GPU"):
        command(Request(STAGE, gpus=2), alloc, PY)


def test_multi_node_from_inside_a_job_step_is_refused():
    alloc = Allocation(job_id="5", hosts=("a", "b"), cpus_per_node=4, gpus_per_node=1, in_step=True)
    with pytest.raises(UserError, match="batch script"):
        command(Request(STAGE, nodes=2, gpus=1), alloc, PY)


def test_agents_per_node_puts_two_agents_on_one_node():
    alloc = Allocation(job_id="9", hosts=("vm",), cpus_per_node=2, gpus_per_node=0)
    cmd = command(Request(STAGE, agents_per_node=2), alloc, PY)
    assert {"--nodes=1", "--ntasks=2", "--ntasks-per-node=2", "--cpus-per-task=1"} <= set(cmd)
    assert "--nnodes=2" in cmd and "--nproc-per-node=1" in cmd and "--rdzv-endpoint=vm:20009" in cmd


def test_cli_dry_run_passes_the_stage_arguments_through():
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    env.pop("SLURM_JOB_ID", None)
    out = subprocess.run(
        [sys.executable, "-m", "affectube", "launch", "--nproc-per-node", "2", "--dry-run", "--",
         "pretrain", "--cfg", '{"a": 1}', "--stores", "x y.h5"],
        capture_output=True, text=True, env=env, check=True,
    ).stdout  # fmt: skip
    assert out.strip().endswith("""-m affectube pretrain --cfg '{"a": 1}' --stores 'x y.h5'""")
    assert "--standalone" in out and "--nproc-per-node=2" in out


def test_cli_reports_a_bad_request_in_one_line():
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    env.pop("SLURM_JOB_ID", None)
    proc = subprocess.run(
        [sys.executable, "-m", "affectube", "launch", "--nodes", "2", "--", "pretrain"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "needs a SLURM allocation" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
