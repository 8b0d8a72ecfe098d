"""torch.distributed set-up for torchrun and SLURM, and a resumable distributed sampler.

Ranks come from, in order:

1. torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``);
2. a SLURM job step started by ``srun`` (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``;
   the master is the first host of ``SLURM_STEP_NODELIST``/``SLURM_NODELIST`` and the port
   is derived from ``SLURM_JOB_ID`` unless ``MASTER_PORT`` is set);
3. otherwise a single process.

The backend is NCCL when CUDA is available and gloo on CPU. :func:`relaunch_with_torchrun`
lets a stage started as one process re-execute itself under torchrun on N local GPUs
(``pretrain.gpus > 1``), so Snakemake rules stay a plain ``python -m affectube ...``.
"""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from affectube.errors import UserError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    source: str = "single"  # torchrun | slurm | single

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def detect(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Where this process sits in the job (no side effects)."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", 29500)),
            source="torchrun",
        )
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1 and _in_slurm_step(env):
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
        job = int(env.get("SLURM_JOB_ID", "0") or 0)
        return DistEnv(
            rank=int(env["SLURM_PROCID"]),
            world_size=int(env["SLURM_NTASKS"]),
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            master_addr=env.get("MASTER_ADDR") or first_host(nodelist),
            master_port=int(env.get("MASTER_PORT") or 15000 + job % 20000),
            source="slurm",
        )
    return DistEnv()


def _in_slurm_step(env: Mapping[str, str]) -> bool:
    # srun sets the step variables; a batch script alone (one process) must not wait for peers
    return any(k in env for k in ("SLURM_STEP_ID", "SLURM_STEPID", "SLURM_STEP_NUM_TASKS"))


def first_host(nodelist: str) -> str:
    """First host name of a SLURM node list: ``gpu[03-05,9],cpu1`` -> ``gpu03``."""
    m = re.match(r"^([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise UserError(f"cannot parse SLURM node list {nodelist!r}")
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def init(env: DistEnv | None = None) -> tuple[DistEnv, torch.device]:
    """Initialise the process group when there is more than one process; pick the device."""
    from affectube.train.runtime import training_device

    env = env or detect()
    device = training_device(env.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if env.distributed and not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", env.master_addr)
        os.environ.setdefault("MASTER_PORT", str(env.master_port))
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=env.rank, world_size=env.world_size, device_id=device if device.type == "cuda" else None)
    return env, device


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= dist.get_world_size()
    return value


def all_reduce_max(value: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any (one all-reduce; e.g. a preemption signal)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return bool(flag)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    return bool(all_reduce_max(torch.tensor(float(flag), device=device)).item() > 0)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a list indexed by rank; ``[obj]`` without a process group)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def relaunch_with_torchrun(nproc: int, argv: list[str] | None = None) -> None:
    """Re-execute ``python -m affectube <argv>`` under torchrun on ``nproc`` local processes.

    Does nothing when already inside a distributed launch or when ``nproc <= 1``.
    """
    if nproc <= 1 or detect().source != "single":
        return
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "affectube", *argv]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, cmd)


class ResumableSampler(Sampler[int]):
    """An endless, deterministic, rank-sharded stream of sample codes ``epoch * n + index``.

    Epoch ``e`` is a permutation of ``range(n)`` seeded by ``seed + e`` (padded by wrapping to
    a multiple of ``world_size``, like ``DistributedSampler``); rank ``r`` takes every
    ``world_size``-th element starting at ``r``. ``start`` skips the first ``start`` samples of
    this rank's stream, so a resumed run reads exactly what an uninterrupted one would.
    The epoch is part of each code so datasets can seed per-sample randomness (masks,
    augmentation) from ``(seed, epoch, index)`` independently of workers and ranks.
    """

    def __init__(self, n: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True, start: int = 0):
        if n < 1:
            raise UserError("no training samples")
        self.n, self.rank, self.world_size = n, rank, world_size
        self.seed, self.shuffle, self.start = seed, shuffle, start
        self.per_rank = math.ceil(n / world_size)

    def epoch_indices(self, epoch: int) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world_size
        order = (order * math.ceil(total / self.n))[:total]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.per_rank)
        while True:
            for index in self.epoch_indices(epoch)[offset:]:
                yield epoch * self.n + index
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # one epoch (the stream itself is endless)
        return self.per_rank
