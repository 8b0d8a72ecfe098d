"""Stage ``pretrain``: self-supervised pretraining of the video encoder on unlabelled face clips.

``pretrain.method`` chooses the pretext (:mod:`affectube.train.pretext`): ``masked`` (masked video
autoencoding, VideoMAE / SVFAP), ``byol``; every method saves the same ``encoder.safetensors``.

``python -m affectube pretrain --cfg JSON --stores S.h5 ... --out-dir results/pretrain``

Writes ``encoder.safetensors`` (weights + spec metadata), ``log.csv`` (one row per
optimizer step), ``summary.json`` and ``reconstruction.png`` (other methods: the views they train on); keeps
``checkpoints/last.pt`` (every ``pretrain.checkpoint_every`` steps, atomic), from which
a killed or preempted job resumes to the same weights as an uninterrupted run.

One process on CPU or one GPU; ``pretrain.gpus > 1`` re-launches itself with torchrun;
under ``srun`` (SLURM) or ``torchrun`` the ranks come from the environment.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from affectube.config import parse_cfg, sections
from affectube.errors import DataError, UserError
from affectube.io import stable_hash, write_json
from affectube.models import ModelSpec, init_encoder_from, save_encoder
from affectube.models.layers import num_params
from affectube.train import checkpoint as ckpt
from affectube.train import distributed, preempt, runtime
from affectube.train.distributed import DistEnv, ResumableSampler
from affectube.train import pretext
from affectube.train.pretrain_keys import OPERATIONAL_KEYS  # params of how a run is executed, not what it computes
from affectube.train.masked_data import MaskedClips
from affectube.train.optim import build_optimizer, build_scheduler, param_groups, scaled_lr
from affectube.train.reconstruction import save_reconstruction_figure
from affectube.train.step_log import FIELDS, StepLog, read_rows

log = logging.getLogger(__name__)

EXIT_PREEMPTED = preempt.EXIT_PREEMPTED  # checkpoint written: run again to resume


class TrainingDiverged(UserError):
    """The loss or gradient norm became NaN/inf; the last good checkpoint is kept."""


@dataclass
class RunInfo:
    """What the summary records about the data (filled by :func:`run` or by tests)."""

    datasets: list[str] = field(default_factory=list)
    transductive: bool = False
    stores: list[str] = field(default_factory=list)
    excluded_stores: int = 0  # of other datasets (not transductive)
    empty_stores: int = 0  # videos without a usable face track
    data_hash: str = ""
    num_clips: int = 0
    fingerprints: list = field(default_factory=list)  # {dataset, video_id, subject, content} of every store used
    overlap_notes: list = field(default_factory=list)  # stores left out for content equal to the fine-tuning data


# ---------------------------------------------------------------- the training loop
class Pretrainer:
    def __init__(
        self,
        pcfg: dict,
        dataset: MaskedClips,  # or the method's dataset (pretext.get(pcfg["method"]).build_dataset)
        out_dir: str | os.PathLike,
        *,
        env: DistEnv | None = None,
        device: torch.device | None = None,
        info: RunInfo | None = None,
        target_norm: tuple | None = None,
    ):
        self.cfg, self.dataset, self.out = pcfg, dataset, Path(out_dir)
        self.env = env or DistEnv()
        self.device = device or torch.device("cpu")
        self.info = info or RunInfo()
        self.ckpt_path = self.out / "checkpoints" / "last.pt"
        self.partial_log = self.out / "checkpoints" / "log.csv"
        first = dataset.clips([0])[0][0]  # [C,T,H,W] as the model gets it (uint8 path: transformed)
        self.spec = ModelSpec.from_cfg(pcfg, in_chans=int(first.shape[0]))
        if tuple(first.shape[1:]) != (self.spec.num_frames, self.spec.input_size, self.spec.input_size):
            raise DataError(
                f"pretraining clips are {tuple(first.shape)}, the model expects "
                f"[C, {self.spec.num_frames}, {self.spec.input_size}, {self.spec.input_size}]"
            )
        self.accum = pcfg["accum_steps"]
        self.global_batch = pcfg["batch_size"] * self.env.world_size * self.accum
        self.lr = scaled_lr(pcfg["base_lr"], self.global_batch)
        torch.manual_seed(pcfg["seed"])
        self.method = pretext.get(pcfg["method"])
        self.model = self.method.build_model(self.spec, pcfg, dataset)
        if target_norm is not None and hasattr(self.model, "set_target_normalisation"):
            self.model.set_target_normalisation(*target_norm)
        if pcfg["init_from"]:
            init_encoder_from(self.model.encoder, pcfg["init_from"])
            log.info("encoder initialised from %s", pcfg["init_from"])
        self.model.to(self.device)
        if getattr(self.model, "target_mean", None) is not None:
            self.model.target_mean = self.model.target_mean.to(self.device)
            self.model.target_std = self.model.target_std.to(self.device)
        self.optimizer = build_optimizer(param_groups(self.model, self.lr, pcfg["weight_decay"]), self.lr)
        self.scheduler = build_scheduler(self.optimizer, pcfg["steps"], pcfg["warmup_steps"], self.lr, pcfg["min_lr"])
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=False)  # bf16 needs no loss scaling
        self.meta = {
            "params_hash": stable_hash(
                {**{k: v for k, v in pcfg.items() if k not in OPERATIONAL_KEYS}, "global_batch": self.global_batch}
            ),
            "data_hash": self.info.data_hash,
            "world_size": self.env.world_size,
        }

    # ------------------------------------------------------------ pieces
    def _autocast(self):
        return runtime.autocast(self.device)

    def _resume(self) -> int:
        if not self.ckpt_path.exists():
            return 0
        state = ckpt.load_checkpoint(self.ckpt_path)
        old = state["meta"]
        if old.get("params_hash") != self.meta["params_hash"] or old.get("data_hash") != self.meta["data_hash"]:
            log.warning(
                "%s was written with other params or data (params %s vs %s, data %s vs %s): starting from step 0",
                self.ckpt_path, old.get("params_hash", "")[:12], self.meta["params_hash"][:12],
                old.get("data_hash", "")[:12], self.meta["data_hash"][:12],
            )  # fmt: skip
            return 0
        step = ckpt.restore(
            state, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler, rank=self.env.rank
        )
        log.info("resumed from %s at step %d", self.ckpt_path, step)
        return step

    def _save(self, step: int) -> None:
        rngs = distributed.gather_objects(ckpt.rng_state())
        if self.env.is_main:
            ckpt.save_checkpoint(
                self.ckpt_path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                scaler=self.scaler, step=step, rng=rngs, meta={**self.meta, "step": step},
            )  # fmt: skip
        distributed.barrier()

    def _loader(self, start_step: int) -> DataLoader:
        per_rank_batch = self.cfg["batch_size"]
        sampler = ResumableSampler(
            len(self.dataset), self.env.rank, self.env.world_size, self.cfg["seed"],
            start=start_step * self.accum * per_rank_batch,
        )  # fmt: skip
        workers = self.cfg["num_workers"]
        return DataLoader(
            self.dataset,
            batch_size=per_rank_batch,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
        )

    # ------------------------------------------------------------ fit
    def fit(self, stop_after: int | None = None) -> int:
        """Train to ``pretrain.steps``; return 0, or EXIT_PREEMPTED after a preemption checkpoint.

        ``stop_after`` ends the run after that step as if the job had been killed
        (checkpoint kept, no final outputs): tests use it to check resumption.
        """
        steps = self.cfg["steps"]
        start = self._resume()
        main = self.env.is_main
        steplog = StepLog(self.partial_log if main else None, read_rows(self.partial_log, start) if main else [])
        model = self.model
        if self.env.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        forward = torch.compile(model) if self.cfg["compile"] else model
        batches = iter(self._loader(start))
        elapsed0 = float(steplog.rows[-1]["elapsed"]) if steplog.rows else 0.0
        t_begin = time.perf_counter()
        progress = _progress(start, steps, main)
        model.train()
        try:
            for step in range(start, steps):
                t0 = time.perf_counter()
                loss_value, grad_norm, lr, wait = self._step(model, forward, batches, step)
                done = step + 1
                dt = time.perf_counter() - t0
                if main:
                    row = self._log_row(done, loss_value, grad_norm, lr, wait, dt, elapsed0 + time.perf_counter() - t_begin)
                    steplog.append(row)
                    progress.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", clips_s=row["clips_per_s"])
                    progress.update(1)
                code = self._checkpoint_or_stop(done, steps, stop_after)
                if code is not None:
                    return code
        finally:
            progress.close()
            steplog.close()
        if start >= steps and not steplog.rows:
            raise DataError(f"{self.ckpt_path}: checkpoint is at step {start} but its log {self.partial_log} is missing")
        if main:
            self._write_outputs(steplog.rows, start)
        distributed.barrier()
        return 0

    def _step(self, model, forward, batches, step: int) -> tuple[float, float, float, float]:
        """One optimizer step over ``accum`` micro-batches: (loss, gradient norm, lr, seconds waiting for data)."""
        raw = self.model
        wait = 0.0
        losses = []
        for micro in range(self.accum):
            tw = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - tw
            sync = model.no_sync() if (self.env.distributed and micro < self.accum - 1) else contextlib.nullcontext()
            with sync:
                loss = self.method.loss(forward, raw, batch, self.dataset, self.device, self._autocast)
                (loss / self.accum).backward()
            losses.append(loss.detach())
        loss_value = float(distributed.all_reduce_mean(torch.stack(losses).mean()))
        if not math.isfinite(loss_value):
            self._diverged(step, f"loss is {loss_value}")
        clip = self.cfg["clip_grad"] if self.cfg["clip_grad"] is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_([p for p in raw.parameters() if p.requires_grad], clip))
        if not math.isfinite(grad_norm):
            self._diverged(step, f"gradient norm is {grad_norm} (loss {loss_value:.4g})")
        lr = self.optimizer.param_groups[0]["lr"] / self.optimizer.param_groups[0]["lr_scale"]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.method.after_step(raw, step + 1, self.cfg["steps"])  # e.g. the EMA target of BYOL/DINO
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return loss_value, grad_norm, lr, wait

    def _log_row(self, done: int, loss: float, grad_norm: float, lr: float, wait: float, dt: float, elapsed: float) -> dict:
        return {
            "step": done,
            "loss": f"{loss:.6f}",
            "lr": f"{lr:.6g}",
            "grad_norm": f"{grad_norm:.4f}",
            "clips_per_s": f"{self.global_batch / dt:.3f}",
            "tokens_per_s": f"{self.global_batch * self.model.num_tokens / dt:.1f}",
            "data_wait": f"{wait / dt:.4f}",
            "step_time": f"{dt:.4f}",
            "elapsed": f"{elapsed:.3f}",
        }

    def _checkpoint_or_stop(self, done: int, steps: int, stop_after: int | None) -> int | None:
        """The checkpoint/stop policy after step ``done``: a checkpoint every ``checkpoint_every`` steps
        and at the end; on a preemption request (on any rank) or at ``stop_after``, a checkpoint now and
        the exit code (EXIT_PREEMPTED or 0); None: go on."""
        scheduled = done % self.cfg["checkpoint_every"] == 0 or done == steps
        if scheduled:
            self._save(done)
        if _any_rank(preempt.requested()):  # a collective: every rank calls it at every step
            if not scheduled:
                self._save(done)
            log.warning("preemption requested: checkpoint at step %d written to %s", done, self.ckpt_path)
            return EXIT_PREEMPTED
        if stop_after is not None and done >= stop_after:
            if not scheduled:
                self._save(done)
            return 0
        return None

    def _diverged(self, step: int, what: str) -> None:
        kept = f"the last good checkpoint is {self.ckpt_path}" if self.ckpt_path.exists() else "no checkpoint was written yet"
        raise TrainingDiverged(
            f"pretraining diverged at step {step + 1}: {what}; stopped without updating the weights ({kept}). "
            "Lower pretrain.base_lr, raise pretrain.warmup_steps or set pretrain.clip_grad."
        )

    # ------------------------------------------------------------ outputs
    def _write_outputs(self, rows: list[dict], start: int) -> None:
        from affectube.io import atomic_path

        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.out / "log.csv") as tmp:
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, FIELDS)
                writer.writeheader()
                writer.writerows(rows)
        summary = self.summary(rows, start)
        save_encoder(self.out / "encoder.safetensors", self.model.encoder, info=summary)
        self.figure()
        write_json(self.out / "summary.json", summary)

    def figure(self) -> None:
        k = min(self.cfg["recon_clips"], len(self.dataset))
        if not self.method.figure:  # view/audio pretexts: the views they train on (the rule's reconstruction.png)
            from affectube.train.pretext.figure import save_views_figure

            views = self.dataset.clips(range(k))
            target = views[1] if self.method.name == "audio" else None
            views = [views[0]] if target is not None else list(views)
            base = getattr(self.dataset, "base", None) or getattr(self.dataset, "g", None)
            save_views_figure(self.out / "reconstruction.png", self.method.name, views,
                              getattr(base, "mean", None), getattr(base, "std", None), target=target)
            return
        video, mask = self.dataset.clips(range(k), self.device)
        mask = mask.to(self.device)
        save_reconstruction_figure(self.out / "reconstruction.png", self.model, video, mask)

    def summary(self, rows: list[dict], start: int) -> dict:
        def col(name, last=None):
            vals = [float(r[name]) for r in rows]
            return vals[-last:] if last else vals

        steady = rows[1:] if len(rows) > 1 else rows  # the first step includes warm-up costs
        return {
            "model": self.spec.to_dict(),
            "method": self.method.name,
            "pretext_notes": list(getattr(self.dataset, "notes", [])),  # e.g. stores the method skipped
            "params": self.cfg,
            "steps": len(rows),
            "resumed_at_step": start or None,
            "final_loss": float(rows[-1]["loss"]) if rows else None,
            "mean_loss_last10": statistics.fmean(col("loss", 10)) if rows else None,
            "first_loss": float(rows[0]["loss"]) if rows else None,
            "clips_per_s": statistics.median(float(r["clips_per_s"]) for r in steady) if rows else None,
            "tokens_per_s": statistics.median(float(r["tokens_per_s"]) for r in steady) if rows else None,
            "data_wait": statistics.fmean(float(r["data_wait"]) for r in steady) if rows else None,
            "wall_time_s": float(rows[-1]["elapsed"]) if rows else None,
            "global_batch": self.global_batch,
            "lr": self.lr,
            "world_size": self.env.world_size,
            "device": str(self.device) if self.device.type == "cpu" else torch.cuda.get_device_name(self.device),
            "precision": runtime.precision(self.device),
            "encoder_params": num_params(self.model.encoder),
            "total_params": num_params(self.model),
            "tokens_per_clip": self.model.num_tokens,
            "visible_tokens_per_clip": self.method.visible_tokens(self.dataset),
            "data": {
                "datasets": self.info.datasets,
                "transductive": self.info.transductive,
                "stores": len(self.info.stores),
                "excluded_stores": self.info.excluded_stores,
                "empty_stores": self.info.empty_stores,
                "clips": self.info.num_clips or len(self.dataset),
                "data_hash": self.info.data_hash,
                "overlap_notes": self.info.overlap_notes,
                "fingerprints": self.info.fingerprints,  # the report checks pretraining/test overlap on these
            },
            "params_hash": self.meta["params_hash"],
            "torch": torch.__version__,
        }


def _progress(start: int, total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc="pretrain", unit="step", disable=not enabled, file=sys.stderr, mininterval=2)


def _any_rank(flag: bool) -> bool:
    if not distributed.dist.is_initialized():
        return bool(flag)
    return bool(distributed.all_reduce_max(torch.tensor(float(flag))).item() > 0)


# ---------------------------------------------------------------- data from the clip stores
def allowed_datasets(dcfg: dict) -> list[str] | None:
    """Datasets pretraining may read: all (None) when ``data.transductive``, else every pretraining
    dataset but the fine-tuning one (all of whose subjects are tested in cross-validation)."""
    if dcfg["transductive"]:
        return None
    finetune = dcfg["finetune"]
    allowed = [d for d in dcfg["pretrain"] if d != finetune]
    if not allowed:
        raise UserError(
            f"data.transductive is false and data.pretrain {dcfg['pretrain']} has no dataset besides the "
            f"fine-tuning dataset {finetune!r}, whose subjects are all tested: add other datasets to data.pretrain "
            "or set data.transductive: true"
        )
    return allowed


def build_dataset(stores: list[str], pcfg: dict, grid: tuple[int, int, int], datasets: list[str] | None = None,
                  output: str = "float"):
    """``(dataset, ClipDataset)`` of ``pretrain.method`` over the stores of ``datasets`` (None: all)."""
    return pretext.get(pcfg["method"]).build_dataset(stores, pcfg, grid, datasets, output=output)


def build_masked_dataset(stores: list[str], pcfg: dict, grid: tuple[int, int, int], datasets: list[str] | None = None,
                         output: str = "float"):
    """``(MaskedClips, ClipDataset)`` over the stores of ``datasets`` (None: all), with tube masks.
    ``output="uint8"``: the loader ships uint8 crops, transformed on the training device
    (:meth:`MaskedClips.to_device`; :func:`affectube.clips.dataset.loader_output` picks it for CUDA)."""
    from affectube.clips.dataset import ClipDataset
    from affectube.clips.masking import FaceMaskGenerator, TubeMaskGenerator

    base = ClipDataset(
        stores,
        num_frames=pcfg["num_frames"],
        sample_stride=pcfg["sample_stride"],
        input_size=pcfg["input_size"],
        mode="train",
        augment=pcfg["augment"],
        seed=pcfg["seed"],
        datasets=datasets,
        mask_generator=(FaceMaskGenerator(grid, pcfg["mask_ratio"], pcfg["patch"]) if pcfg["masking"] == "face"
                        else TubeMaskGenerator(grid=grid, ratio=pcfg["mask_ratio"])),
        output=output,
        order="video",  # the same batches whether the stores come per video or from clips shard indexes
    )
    if len(base) == 0:
        raise DataError(
            f"no clips to pretrain on: {len(stores)} stores given, datasets allowed: {datasets or 'all'}, "
            f"{len(base.skipped)} without frames (e.g. {base.skipped[:2]})"
        )
    return MaskedClips(base, seed=pcfg["seed"]), base


def data_hash(paths: list[str]) -> str:
    """Identity of the training data: store names and sizes (a complete store is never rewritten in place)."""
    return stable_hash([[Path(p).parent.name, Path(p).name, Path(p).stat().st_size] for p in sorted(paths)])


# ---------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", required=True, help="JSON with the data and pretrain sections (or @file)")
    parser.add_argument("--stores", nargs="+", required=True, help="clip stores (.h5) to pretrain on")
    parser.add_argument("--out-dir", required=True, help="output directory (results/pretrain)")
    parser.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)  # tests: simulate a killed job


def run(args: argparse.Namespace) -> int:
    cfg = sections(parse_cfg(args.cfg), "data", "pretrain")
    pcfg, dcfg = cfg["pretrain"], cfg["data"]
    if pcfg["gpus"] > 1 and torch.cuda.is_available():
        distributed.relaunch_with_torchrun(pcfg["gpus"])
    env, device = distributed.init()
    preempt.install()  # SIGTERM/SIGUSR1 -> checkpoint after the current step, exit EXIT_PREEMPTED
    try:
        spec = ModelSpec.from_cfg(pcfg)
        from affectube.clips.dataset import loader_output

        from affectube.eval.overlap import select_pretrain_stores

        allowed = allowed_datasets(dcfg)
        from affectube.clips.store_table import table_fingerprints
        from affectube.shards.index import expand_stores

        indexes = list(args.stores)
        args.stores = expand_stores(indexes)  # data.shard_size: clips shard indexes stand for their stores
        known = table_fingerprints(indexes)  # from the shards' store tables (no store opened); None: read each store
        stores, prints, notes = select_pretrain_stores(args.stores, dcfg, prints=known)  # by content, not only by dataset name
        for note in notes:
            log.warning("pretraining data: %s", note)
        # every store kept: the loader reads the shards' store tables instead of opening each store (same clips, same order)
        source = indexes if known is not None and stores == args.stores else stores
        dataset, base = build_dataset(source, pcfg, spec.grid, allowed, output=loader_output(device))
        used = base.paths
        by_path = {os.path.normpath(str(s)): p for s, p in zip(stores, prints)}
        info = RunInfo(
            datasets=base.datasets,
            transductive=dcfg["transductive"],
            stores=used,
            excluded_stores=len(args.stores) - len(used) - len(base.skipped),
            empty_stores=len(base.skipped),
            data_hash=data_hash(used),
            num_clips=len(dataset),
            fingerprints=[by_path[k] for k in (os.path.normpath(str(u)) for u in used) if k in by_path],
            overlap_notes=notes,
        )
        if env.is_main:
            log.info(
                "pretraining %s/%s on %d clips from %s (%d stores excluded: transductive=%s), world size %d, device %s, loader %s",
                spec.model, spec.size, len(dataset), ",".join(info.datasets), info.excluded_stores, info.transductive,
                env.world_size, device, base.output,
            )  # fmt: skip
        trainer = Pretrainer(pcfg, dataset, args.out_dir, env=env, device=device, info=info, target_norm=(base.mean, base.std))
        return trainer.fit(stop_after=args.stop_after)
    finally:
        preempt.uninstall()
        distributed.cleanup()
