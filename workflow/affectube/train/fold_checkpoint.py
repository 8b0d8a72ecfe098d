"""Checkpoints inside a fine-tuning fold: a preempted, timed-out or killed fold resumes exactly.

``{out_dir}/checkpoints/state.pt`` (:mod:`affectube.train.checkpoint`'s format, written
atomically by rank 0) holds everything the rest of the fold depends on:

- model, optimizer and scheduler state, the optimizer steps done;
- the random states of every rank (Python, NumPy, torch CPU and CUDA: drop path, dropout);
  the clips and their augmentations need none, they are drawn from ``(seed, epoch, index)``
  (:class:`affectube.clips.dataset.ClipDataset`) and the epoch's order from ``seed + epoch``
  (:class:`affectube.train.fold_parallel.EpochSampler`);
- ``fold``: the epochs completed, the log rows so far, the selection state
  (:meth:`Selector.state_dict`: best key, epoch, weights, patience counter), whether training has
  ended (all epochs run or stopped early), and, for a checkpoint taken inside an epoch, every
  rank's sums of that epoch (:class:`affectube.train.supervised.EpochStats`: steps done, loss,
  training predictions).

It is written at the end of every epoch and when :mod:`affectube.train.preempt` has seen
SIGTERM/SIGUSR1 (after the current optimizer step; then :class:`FoldPreempted`, exit status 75).
``checkpoints/log.csv`` repeats the log rows so far (to watch a running fold). A checkpoint of
other params, data, encoder or number of processes (:func:`identity`) is ignored with a warning.
Both files are removed once the fold's outputs are written (``metrics.json`` last).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from affectube.io import atomic_path, file_sha256, stable_hash
from affectube.train import checkpoint as ckpt
from affectube.train import distributed
from affectube.train import preempt
from affectube.train.distributed import DistEnv

log = logging.getLogger(__name__)

CHECKPOINT = Path("checkpoints") / "state.pt"
PARTIAL_LOG = Path("checkpoints") / "log.csv"
#: finetune params that change where and how fast a fold runs, not what it computes
OPERATIONAL_KEYS = {"num_workers", "threads", "gpus", "mem_gb", "time_minutes"}


class FoldPreempted(Exception):
    """The fold stopped on a preemption signal after writing its checkpoint: run it again."""

    exit_status = preempt.EXIT_PREEMPTED

    def __init__(self, path: Path, epoch: int, step: int):
        super().__init__(f"preempted: checkpoint at epoch {epoch}, optimizer step {step} written to {path}; "
                         "run the fold again to resume")
        self.path, self.epoch, self.step = path, epoch, step


def identity(cfg: dict, fold_json: dict, stores: list[Path], encoder_path: str | None, world_size: int) -> dict:
    """What a checkpoint must match to be resumed: params, fold, data, encoder, processes."""
    from affectube.train.pretrain import data_hash
    from affectube.train.pretrain_keys import OPERATIONAL_KEYS as PRETRAIN_OPERATIONAL

    ft = {k: v for k, v in cfg["finetune"].items() if k not in OPERATIONAL_KEYS}
    pre = {k: v for k, v in cfg["pretrain"].items() if k not in PRETRAIN_OPERATIONAL}
    return {
        "params_hash": stable_hash({"finetune": ft, "pretrain": pre, "main_metric": cfg["evaluate"]["main_metric"],
                                    "fold": fold_json, "world_size": world_size}),
        "data_hash": data_hash([str(p) for p in stores]),
        "encoder_sha256": file_sha256(encoder_path) if encoder_path else "",
    }


def plain(value: Any) -> Any:
    """NumPy scalars -> Python numbers, recursively (``torch.load(weights_only=True)`` reads these)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


class FoldCheckpoint:
    def __init__(self, out_dir: Path, meta: dict, env: DistEnv):
        self.out_dir, self.meta, self.env = Path(out_dir), dict(meta), env
        self.path, self.log_path = self.out_dir / CHECKPOINT, self.out_dir / PARTIAL_LOG

    def load(self) -> dict | None:
        """The checkpoint when there is one of this fold's params/data/encoder/processes, else None."""
        if not self.path.exists():
            return None
        state = ckpt.load_checkpoint(self.path)
        old = state.get("meta", {})
        differs = [k for k in self.meta if old.get(k) != self.meta[k]]
        if differs or "fold" not in state:
            log.warning("%s was written for other %s: the fold starts from epoch 1", self.path,
                        ", ".join(differs) or "contents")
            return None
        return state

    def save(self, *, model, optimizer, scheduler, step: int, epoch: int, history: list[dict], selector: dict,
             finished: bool, partial=None) -> None:
        """Every rank calls it (RNG states and partial-epoch sums are gathered); rank 0 writes."""
        rngs = distributed.gather_objects(ckpt.rng_state())
        partials = distributed.gather_objects(partial.state_dict() if partial is not None else None)
        if self.env.is_main:
            fold = {"epoch": int(epoch), "history": plain(history), "selector": plain(selector), "finished": bool(finished),
                    "partial": partials if partial is not None else None}
            ckpt.save_checkpoint(self.path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=None,
                                 step=step, rng=rngs, meta=self.meta, extra={"fold": fold})
            with atomic_path(self.log_path) as tmp:
                pd.DataFrame(history).to_csv(tmp, index=False)
        distributed.barrier()

    def remove(self) -> None:
        if self.env.is_main:
            for p in (self.path, self.log_path):
                p.unlink(missing_ok=True)
            try:
                self.path.parent.rmdir()
            except OSError:
                pass


def resume_message(state: dict) -> str:
    fold = state["fold"]
    partial = fold["partial"]
    inside = f", {partial[0]['steps']} step(s) into epoch {fold['epoch'] + 1}" if partial else ""
    return f"resumed after epoch {fold['epoch']}{inside} (optimizer step {state['step']})"
