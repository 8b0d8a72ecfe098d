"""Stage ``launch``: start another stage on the GPUs/nodes of this job (torchrun under SLURM).

``python -m affectube launch --gpus {resources.gpu} --nodes {resources.nodes} -- pretrain ...``

The rule's resources are the request; inside a SLURM allocation the allocation is the
truth (``scontrol show job``: nodes, host names, CPUs and GPUs per node), because
Snakemake's SLURM plugin strips most ``SLURM_*`` variables before running a rule:

* one node, one process per node: ``exec python -m affectube STAGE ...`` (the stage itself
  re-launches with torchrun on ``pretrain.gpus`` local GPUs, see
  :func:`affectube.train.distributed.relaunch_with_torchrun`);
* one node, ``--nproc-per-node N`` > 1: ``torchrun --standalone --nproc-per-node N``;
* several nodes: ``srun`` starts one torchrun agent per node, which meet through the c10d
  rendezvous on the first node of the allocation (``--rdzv-endpoint host:port``, the port
  derived from the job id); torchrun gives every worker RANK/WORLD_SIZE/MASTER_ADDR.

The launcher replaces itself with the command (``exec``), so the scheduler's signals reach
the trainer directly (see :mod:`affectube.train.preempt`).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Mapping, Sequence

from affectube.errors import UserError

log = logging.getLogger(__name__)

PORT_BASE = 20000  # rendezvous port = PORT_BASE + job id % PORT_SPAN
PORT_SPAN = 20000


@dataclass(frozen=True)
class Allocation:
    """What SLURM granted to this job."""

    job_id: str
    hosts: tuple[str, ...]
    cpus_per_node: int
    gpus_per_node: int
    in_step: bool = False  # running inside an srun job step (not the batch script)

    @property
    def nodes(self) -> int:
        return len(self.hosts)


@dataclass(frozen=True)
class Request:
    """What the rule asked for (its resources) plus launcher options."""

    stage: tuple[str, ...]
    gpus: int = 0
    nodes: int = 1
    nproc_per_node: int | None = None  # None: one per GPU (or 1 without GPUs)
    agents_per_node: int = 1  # torchrun agents per node (1 in production; tests use 2 on one node)
    port: int | None = None
    module: str = "affectube"  # python -m MODULE STAGE...


# ---------------------------------------------------------------- the SLURM allocation
def parse_scontrol_job(text: str) -> dict[str, str]:
    """``scontrol show job -d -o ID`` -> {key: value}; per-node ``GRES=`` entries joined by ``;``."""
    out: dict[str, str] = {}
    for token in text.split():
        if "=" not in token:
            continue
        key, value = token.split("=", 1)
        if key == "GRES" and key in out:
            out[key] += ";" + value
        else:
            out.setdefault(key, value)
    return out


def gpus_in_gres(gres: str) -> int:
    """GPUs in one node's allocated GRES: ``gpu:2(IDX:0-1)``, ``gpu:a100:4(IDX:0-3),shard:0`` -> 2, 4."""
    total = 0
    for item in re.split(r",(?![^(]*\))", gres):
        item = item.split("(", 1)[0]
        parts = item.split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def allocation(environ: Mapping[str, str] | None = None) -> Allocation | None:
    """This job's allocation from ``scontrol`` (None outside SLURM)."""
    env = os.environ if environ is None else environ
    job_id = env.get("SLURM_JOB_ID")
    if not job_id:
        return None
    if shutil.which("scontrol") is None:
        raise UserError(f"SLURM_JOB_ID={job_id} is set but scontrol is not on PATH: cannot read the allocation")
    info = parse_scontrol_job(_run(["scontrol", "show", "job", "-d", "-o", job_id]))
    nodelist = info.get("NodeList", "")
    if not nodelist or nodelist == "(null)":
        raise UserError(f"SLURM job {job_id} has no nodes yet (scontrol: NodeList={nodelist!r})")
    hosts = tuple(_run(["scontrol", "show", "hostnames", nodelist]).split())
    num_cpus = int(info.get("NumCPUs", "1"))
    per_node_gpus = [gpus_in_gres(g) for g in info.get("GRES", "").split(";") if g]
    return Allocation(
        job_id=job_id,
        hosts=hosts,
        cpus_per_node=max(1, num_cpus // max(1, len(hosts))),
        gpus_per_node=min(per_node_gpus) if per_node_gpus else 0,
        in_step="SLURM_STEP_ID" in env or "SLURM_STEPID" in env,
    )


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"{shlex.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


# ---------------------------------------------------------------- the command
def command(req: Request, alloc: Allocation | None, python: str = sys.executable) -> list[str]:
    """The argv that runs ``req.stage`` on the resources (a pure function: tests call it)."""
    if not req.stage:
        raise UserError("no stage to run (usage: affectube launch [options] -- STAGE ARGS...)")
    if req.agents_per_node < 1:
        raise UserError(f"--agents-per-node must be >= 1, got {req.agents_per_node}")
    if alloc is None:
        if req.nodes > 1:
            raise UserError(f"--nodes {req.nodes} needs a SLURM allocation (no SLURM_JOB_ID in the environment)")
        nodes, gpus = 1, req.gpus
    else:
        if req.nodes != alloc.nodes:
            raise UserError(
                f"the rule asks for {req.nodes} node(s) but SLURM job {alloc.job_id} has {alloc.nodes} "
                f"({','.join(alloc.hosts)}); set the rule's `nodes` resource and the job's --nodes alike"
            )
        if req.gpus > 0 and alloc.gpus_per_node == 0:
            raise UserError(
                f"the rule asks for {req.gpus} GPU(s) but SLURM job {alloc.job_id} has none "
                "(check the profile's gpu/gres resources and the partition)"
            )
        if req.gpus > 0 and alloc.gpus_per_node != req.gpus:
            log.warning("the rule asks for %d GPU(s) per node, SLURM granted %d: using %d", req.gpus, alloc.gpus_per_node, alloc.gpus_per_node)
        nodes, gpus = alloc.nodes, alloc.gpus_per_node
    nproc = req.nproc_per_node if req.nproc_per_node is not None else max(1, gpus)
    if nproc < 1:
        raise UserError(f"--nproc-per-node must be >= 1, got {nproc}")
    stage = list(req.stage)
    agents = nodes * req.agents_per_node

    if agents == 1:
        if nproc == 1 or req.nproc_per_node is None:
            # one process; a stage that wants several local GPUs re-launches itself under torchrun
            return [python, "-m", req.module, *stage]
        return [python, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc-per-node={nproc}",
                "-m", req.module, *stage]  # fmt: skip

    if alloc is None:
        raise UserError("several torchrun agents need a SLURM allocation (srun starts one per node)")
    if alloc.in_step:
        raise UserError(
            f"{nodes} node(s) x {req.agents_per_node} agent(s) must be started from the job's batch script, "
            "but this runs inside an srun step (Snakemake's SLURM plugin does that unless the rule has an `mpi` "
            "resource: see AFFECTUBE_PRETRAIN_NODES in slurm/profile.yaml)"
        )
    if gpus and req.agents_per_node > 1:
        raise UserError("--agents-per-node > 1 is for CPU tests; with GPUs run one agent per node")
    port = req.port or PORT_BASE + int(re.sub(r"\D", "", alloc.job_id) or 0) % PORT_SPAN
    srun = ["srun", f"--nodes={nodes}", f"--ntasks={agents}", f"--ntasks-per-node={req.agents_per_node}",
            f"--cpus-per-task={max(1, alloc.cpus_per_node // req.agents_per_node)}", "--kill-on-bad-exit=1",
            "--export=ALL"]  # fmt: skip
    if gpus:
        srun.append(f"--gres=gpu:{gpus}")
    torchrun = [python, "-m", "torch.distributed.run", f"--nnodes={agents}", f"--nproc-per-node={nproc}",
                "--rdzv-backend=c10d", f"--rdzv-endpoint={alloc.hosts[0]}:{port}", f"--rdzv-id={alloc.job_id}",
                "--max-restarts=0"]  # fmt: skip
    return [*srun, *torchrun, "-m", req.module, *stage]


# ---------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per node the rule asked for (resources.gpu)")
    parser.add_argument("--nodes", type=int, default=1, help="nodes the rule asked for (resources.nodes)")
    parser.add_argument("--nproc-per-node", type=int, default=None, help="processes per node (default: one per GPU)")
    parser.add_argument("--agents-per-node", type=int, default=1, help=argparse.SUPPRESS)  # tests: 2 "nodes" on one
    parser.add_argument("--port", type=int, default=None, help="rendezvous port (default: derived from the job id)")
    parser.add_argument("--module", default="affectube", help="python module to run (default: affectube)")
    parser.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    parser.add_argument("stage", nargs=argparse.REMAINDER, help="-- STAGE ARGS... (an affectube stage)")


def run(args: argparse.Namespace) -> int:
    stage = list(args.stage)
    if stage[:1] == ["--"]:
        stage = stage[1:]
    req = Request(
        stage=tuple(stage),
        gpus=args.gpus,
        nodes=args.nodes,
        nproc_per_node=args.nproc_per_node,
        agents_per_node=args.agents_per_node,
        port=args.port,
        module=args.module,
    )
    cmd = command(req, allocation())
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    log.info("launch: %s", shlex.join(cmd))
    return exec_command(cmd)


def exec_command(cmd: Sequence[str]) -> int:
    """Replace this process with ``cmd`` (signals then reach it directly); never returns."""
    sys.stdout.flush()
    sys.stderr.flush()
    exe = cmd[0] if os.path.sep in cmd[0] else shutil.which(cmd[0])
    if exe is None:
        raise UserError(f"{cmd[0]} not found on PATH")
    os.execv(exe, list(cmd))
    return 0  # not reached
