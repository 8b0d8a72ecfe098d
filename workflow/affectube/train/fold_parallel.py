"""One fine-tuning fold over several processes (``finetune.gpus`` > 1, torchrun, DDP).

The same process group as pretraining (:mod:`affectube.train.distributed`: torchrun or
``srun`` ranks, NCCL on GPUs, gloo on the CPU). What a fold needs on top of it:

- :class:`EpochSampler`: epoch ``e`` of the training clips is a permutation seeded by
  ``seed + e`` (:meth:`ResumableSampler.epoch_indices`: padded by wrapping to a multiple of
  the world size, rank ``r`` takes every ``world``-th clip from ``r``), started ``start`` clips
  in (a resumed epoch). With one process it is simply that permutation; with W processes of
  ``batch_size`` b, step k of the W ranks together covers exactly the clips of step k of one
  process with batch ``W x b`` (when the epoch's clips divide by W), so the global batch is
  ``finetune.batch_size x W`` and the learning rate is scaled by it (``lr_scale: batch``).
- :func:`wrap`: DistributedDataParallel (``find_unused_parameters``: a frozen encoder, or the
  encoder's final norm skipped by ``pool_norm: fc_norm``, leave parameters without gradients).
- :func:`predict`: validation/test clips split into contiguous blocks, one per rank, predicted
  with the plain module and gathered on every rank in clip order (every rank then computes the
  same metrics and takes the same selection decision); frame rows are averaged after gathering;
  the loss is the clip-weighted mean over ranks.
- :func:`epoch_stats`: every rank's training sums added up (loss, clips, training metrics).
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch.utils.data import DataLoader, Sampler

from affectube.train import distributed
from affectube.train import supervised as S
from affectube.train.distributed import DistEnv, ResumableSampler


class EpochSampler(Sampler[int]):
    """This rank's clips of one epoch, from the ``start``-th on (see the module docstring)."""

    def __init__(self, n: int, epoch: int, env: DistEnv, seed: int, start: int = 0, shuffle: bool = True):
        self.indices = ResumableSampler(n, env.rank, env.world_size, seed, shuffle).epoch_indices(epoch)[start:]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def per_rank(n: int, env: DistEnv) -> int:
    """Training clips per rank and epoch (padded: every rank the same number)."""
    return math.ceil(n / env.world_size)


def steps_per_epoch(n: int, batch_size: int, env: DistEnv) -> int:
    return math.ceil(per_rank(n, env) / batch_size)


def make_loader(ds, batch_size: int, sampler, seed: int, workers: int) -> DataLoader:
    # own generator: a DataLoader without one draws its worker base seed from torch's global
    # generator at every iteration, and a resumed run would then draw once more than the original
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, generator=g, drop_last=False)


def block(n: int, env: DistEnv) -> range:
    """Rank ``env.rank``'s contiguous share of ``n`` items (the first ranks take one more)."""
    base, extra = divmod(n, env.world_size)
    start = env.rank * base + min(env.rank, extra)
    return range(start, start + base + (1 if env.rank < extra else 0))


def wrap(model: torch.nn.Module, env: DistEnv, device: torch.device) -> torch.nn.Module:
    if not env.distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def predict(model, ds, batch_size: int, seed: int, workers: int, task: S.Task, fold: int, env: DistEnv, loss_fn=None):
    """:func:`affectube.train.supervised.predict` over all of ``ds``, shared among the ranks."""
    model = getattr(model, "module", model)
    if not env.distributed:
        return S.predict(model, make_loader(ds, batch_size, range(len(ds)), seed, workers), task, fold, loss_fn)
    mine = block(len(ds), env)
    clips, frames, loss = S.predict(model, make_loader(ds, batch_size, mine, seed, workers), task, fold, loss_fn,
                                    aggregate=False)
    parts = distributed.gather_objects((clips, frames, loss, len(mine)))
    clips = _concat([p[0] for p in parts])
    frames = S.aggregate_frames(_concat([p[1] for p in parts]))
    counted = [(p[2], p[3]) for p in parts if p[3] > 0]
    total = sum(n for _, n in counted)
    loss = sum(v * n for v, n in counted) / total if total else float("nan")
    return clips, frames, loss


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    full = [f for f in frames if len(f)]
    if not full:
        return frames[0]
    return pd.concat(full, ignore_index=True) if len(full) > 1 else full[0]


def epoch_stats(stats: S.EpochStats, env: DistEnv) -> S.EpochStats:
    if not env.distributed:
        return stats
    return S.EpochStats.merged(distributed.gather_objects(stats))
