"""Stage ``finetune``: train and test one fold of one experiment.

``python -m affectube finetune --cfg JSON --folds results/folds/{exp}.json --fold K
--stores-dir results/clips/{dataset} --encoder results/pretrain/encoder.safetensors|''
--out-dir results/finetune/{exp}/fold{K}``

- The fold's train/val/test stores are opened and the subjects and videos actually
  loaded are checked again for leaks (:func:`affectube.eval.folds.check_loaded`).
- Modes (``finetune.mode``): ``finetune`` (every weight trained, layer-wise lr decay,
  drop path) or ``frozen`` (encoder weights and buffers untouched: a linear/GRU probe);
  ``finetune.init``: ``pretrained`` (``--encoder``) or ``scratch`` (random init);
  ``finetune.backbone: resnet_gru``: the SS-VAERR supervised baseline.
- Early stopping and model selection use the inner validation subjects only
  (``finetune.select_on``: ``evaluate.main_metric`` with ties broken by the validation loss, the
  validation loss, or ``last``: a fixed epoch budget), never an epoch inside the warmup
  (:class:`Selector`); the test subjects are predicted once, with the selected weights.
- Recipe (VideoMAE values in params.yaml's comments): ``finetune.augment`` (random resized crop,
  flip), ``lr`` x batch / 256 (``lr_scale``), ``pool_norm: fc_norm`` (mean-pooled tokens normalised
  by the head, the encoder's final norm skipped), ``head_init_scale``.
- Cluster scale (docs/cluster.md): a checkpoint after every epoch and on SIGTERM/SIGUSR1
  (``checkpoints/state.pt``, :mod:`affectube.train.fold_checkpoint`; exit status 75), from which
  running the fold again continues exactly; ``finetune.gpus`` > 1 runs the fold under torchrun with
  DistributedDataParallel (:mod:`affectube.train.fold_parallel`), ``batch_size`` per process.
  The fold is :func:`setup_fold`, :func:`train_fold` (epochs, selection) and :func:`summarize_fold`.

Writes (atomically) ``predictions.csv``, ``predictions_frames.csv`` (per-frame continuous
predictions; header only when there are none), ``metrics.json``, ``log.csv`` (one row per
epoch: epoch, train_loss, lr, val_loss, val_<main metric>, loss_<part>, and the training metrics
``train_accuracy``, ``train_uar`` (categorical) / ``train_ccc``, ``train_ccc_<target>`` (continuous),
measured on the augmented training clips as the epoch ran) and ``model.safetensors``;
``metrics.json`` ``training`` holds ``best_epoch``, ``warmup_epochs``, ``train_at_best`` (those
training metrics at the selected epoch) and ``lr_peak``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from affectube.errors import ConfigError, DataError
from affectube.eval import metrics as M
from affectube.eval.folds import SIDES, Fold, check_loaded, load_folds
from affectube.io import atomic_path, to_jsonable, write_json
from affectube.train import checkpoint as ckpt
from affectube.train import distributed, preempt, runtime
from affectube.train import fold_checkpoint as FC
from affectube.train import fold_parallel as P
from affectube.train import losses as L
from affectube.train.distributed import DistEnv
from affectube.train.runtime import seed_everything  # noqa: F401  (one definition, shared with pretraining)
from affectube.train import supervised as S

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", required=True, help="JSON with the pretrain, finetune and evaluate sections")
    parser.add_argument("--folds", required=True, help="results/folds/{exp}.json")
    parser.add_argument("--fold", required=True, type=int, help="fold index")
    parser.add_argument("--stores-dir", required=True, help="directory of the dataset's clip stores ({video_id}.h5)")
    parser.add_argument("--encoder", default="", help="pretrained encoder.safetensors ('' = none: init scratch)")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--threads", type=int, default=0, help="the job's cores: torch CPU threads unless finetune.threads is set (0 = torch's default)")
    parser.add_argument("--stop-after-steps", type=int, default=None, help=argparse.SUPPRESS)  # tests: as if preempted


def run(args: argparse.Namespace) -> int:
    from affectube.config import parse_cfg, sections

    cfg = sections(parse_cfg(args.cfg), "pretrain", "finetune", "evaluate")
    folds = {f.index: f for f in load_folds(args.folds)}
    if args.fold not in folds:
        raise DataError(f"{args.folds}: no fold {args.fold} (have {sorted(folds)})")
    gpus = int(cfg["finetune"]["gpus"])
    if gpus > 1 and torch.cuda.is_available():
        distributed.relaunch_with_torchrun(gpus)  # as pretraining: torchrun on this node's GPUs (DDP)
    env, device = distributed.init()  # ranks from torchrun/srun, or one process
    preempt.install()  # SIGTERM/SIGUSR1 -> checkpoint after the current step, exit 75 (resumed when run again)
    try:
        result = finetune_fold(cfg, folds[args.fold], Path(args.stores_dir), args.encoder or None, Path(args.out_dir),
                               threads=cfg["finetune"]["threads"] or args.threads, env=env, device=device,
                               stop_after_steps=args.stop_after_steps)
    except FC.FoldPreempted as stopped:
        log.warning("fold %d %s", args.fold, stopped)
        return stopped.exit_status
    finally:
        preempt.uninstall()
        distributed.cleanup()
    log.info("fold %d done: %s", args.fold, json.dumps({k: v for k, v in result["test"].items() if isinstance(v, float)}))
    return 0


# ---------------------------------------------------------------- setup



def make_task(ft: dict, classes: list[str]) -> S.Task:
    return S.Task(ft["task"], classes=classes, targets=list(ft["targets"]), bins=int(ft["bins"]),
                  target_range=tuple(ft["target_range"]))


def check_selection(ft: dict, main_metric: str, task: S.Task) -> None:
    if ft["select_on"] != "main_metric":
        return
    categorical = main_metric in M.CATEGORICAL
    if categorical and not task.categorical or not categorical and not task.continuous:
        raise ConfigError(f"params.yaml: evaluate.main_metric={main_metric!r} cannot be computed for finetune.task={task.kind!r}"
                          " (choose a matching metric or finetune.select_on: val_loss)")


def fold_stores(fold: Fold, stores_dir: Path) -> dict[str, list[Path]]:
    out = {}
    for side in SIDES:
        paths = [stores_dir / f"{v}.h5" for v in fold.videos(side)]
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise DataError(f"{missing[0]}: clip store of fold {fold.index} ({side}) not found ({len(missing)} missing)")
        out[side] = paths
    return out


def drop_other_classes(ft: dict, stores: dict, identity: dict, classes: list[str]):
    """A categorical task with explicit ``finetune.classes`` trains and tests only on videos of those
    emotions (others, e.g. MEAD's contempt when comparing with CREMA-D, would carry no label).
    Returns the kept stores and identities per side, and the videos left out."""
    if ft["task"] != "categorical" or not ft["classes"]:
        return stores, identity, []
    keep_stores, keep_ids, dropped = {}, {}, []
    col = ft["label"]
    for side in SIDES:
        pairs = list(zip(stores[side], identity[side]))
        keep = [(p, i) for p, i in pairs if str(i["labels"].get(col)) in classes]
        dropped += [{"side": side, "video_id": i["video_id"], "emotion": str(i["labels"].get(col))}
                    for p, i in pairs if str(i["labels"].get(col)) not in classes]
        keep_stores[side] = [p for p, _ in keep]
        keep_ids[side] = [i for _, i in keep]
        if pairs and not keep and side != "val":
            raise DataError(f"fold: no {side} video has a {col} in finetune.classes {classes}")
    return keep_stores, keep_ids, dropped


def open_datasets(stores: dict[str, list[Path]], geom: dict, ft: dict, classes, seed: int, output: str = "float") -> dict:
    """``output="uint8"``: the loaders ship uint8 crops, transformed where the model runs
    (:func:`affectube.train.supervised.clip_input`; :func:`affectube.clips.dataset.loader_output`)."""
    from affectube.clips.dataset import ClipDataset

    common = dict(num_frames=geom["num_frames"], sample_stride=geom["sample_stride"], input_size=geom["input_size"],
                  classes=classes, targets=list(ft["targets"]), seed=seed,
                  **{k: geom[k] for k in ("mean", "std") if k in geom})  # an imported checkpoint's normalisation
    out = {}
    for side in SIDES:
        if not stores[side]:
            out[side] = None
            continue
        train = side == "train"
        out[side] = ClipDataset([str(p) for p in stores[side]], mode="train" if train else "test",
                                test_clips=int(ft["test_clips"]), output=output, **augment_args(ft, train), label=ft["label"],
                                event=ft["event"], event_jitter=float(ft["event_jitter"]), **common)
    return out


def augment_args(ft: dict, train: bool) -> dict:
    """ClipDataset's augmentation from ``finetune.augment`` (training clips only): a random resized
    crop (``crop``, ``scale``, ``ratio``) and a flip (``flip``). VideoMAE's Kinetics recipe (crop
    0.08-1 at 224 px, plus RandAugment, mixup, cutmix) is not a face recipe: on 64-px face crops a
    0.6-1 crop kept a tiny ViT from fitting 12 MEAD clips (docs: anchors, "Fine-tuning on faces")."""
    aug = ft["augment"]
    if not train:
        return {"augment": False}
    return {"augment": bool(aug["crop"]) or float(aug["flip"]) > 0, "crop": bool(aug["crop"]),
            "scale": tuple(aug["scale"]), "ratio": tuple(aug["ratio"]), "flip": float(aug["flip"])}


def store_identities(paths: list[Path]) -> list[dict]:
    """Subject, video id and clip-level labels recorded in each store (what is actually loaded).
    Read through the loader's per-process index (:func:`affectube.clips.dataset.store_index`: each
    store opened and verified once per process, not again here, in the datasets and for its
    preprocessing)."""
    from affectube.clips.dataset import store_index

    out = []
    for p in paths:
        m = store_index(p)
        out.append({"subject": str(m["subject"]), "video_id": str(m["video_id"]), "labels": dict(m["labels"])})
    return out


def discover_classes(ft: dict, identities: list[dict]) -> list[str]:
    """finetune.classes, else every emotion recorded in the fold's stores (all of the dataset's videos
    for the subject-wise protocols, so every fold gets the same list)."""
    if ft["task"] == "continuous":
        return []
    if ft["classes"]:
        return list(ft["classes"])
    col = ft["label"]
    classes = sorted({str(i["labels"][col]) for i in identities if i["labels"].get(col) not in (None, "")})
    if len(classes) < 2:
        raise DataError(f"the clip stores hold {len(classes)} class(es) {classes} of finetune.label {col!r}: a categorical task needs at least 2")
    return classes


# ---------------------------------------------------------------- the fold


@dataclass
class FoldRun:
    """Everything :func:`setup_fold` builds for a fold (data, model, optimizer) and the epochs use."""

    cfg: dict
    fold: Fold
    encoder_path: str | None
    env: DistEnv
    device: torch.device
    t0: float
    seed: int
    main_metric: str
    stores: dict
    geom: dict
    identity: dict
    classes: list
    task: S.Task
    other_classes: list
    data: dict
    skipped: list
    model: torch.nn.Module
    frozen: bool
    class_weight: torch.Tensor | None
    loss_fn: L.CompositeLoss
    optimizer: torch.optim.Optimizer
    scheduler: object

    @property
    def ft(self) -> dict:
        return self.cfg["finetune"]


def finetune_fold(cfg: dict, fold: Fold, stores_dir: Path, encoder_path: str | None, out_dir: Path, threads: int = 0,
                  env: DistEnv | None = None, device: torch.device | None = None,
                  stop_after_steps: int | None = None) -> dict:
    """Train, select and test one fold; resumes from ``out_dir/checkpoints/state.pt`` when there is one.

    Raises :class:`~affectube.train.fold_checkpoint.FoldPreempted` after writing a checkpoint when a
    preemption signal arrived (:mod:`affectube.train.preempt`) or, in tests, after ``stop_after_steps``
    optimizer steps. ``env``: this process's rank (default: one process; the CLI passes torchrun's).
    """
    run = setup_fold(cfg, fold, stores_dir, encoder_path, threads, env or DistEnv(), device)
    history, selector = train_fold(run, Path(out_dir), stop_after_steps)
    return summarize_fold(run, history, selector, Path(out_dir))


def setup_fold(cfg: dict, fold: Fold, stores_dir: Path, encoder_path: str | None, threads: int, env: DistEnv,
               device: torch.device | None = None) -> FoldRun:
    ft, pretrain = cfg["finetune"], cfg["pretrain"]
    main_metric = cfg["evaluate"]["main_metric"]
    if threads:
        torch.set_num_threads(threads)
    seed = int(ft["seed"])
    seed_everything(seed)
    t0 = time.time()

    stores = fold_stores(fold, stores_dir)
    encoder = S.build_backbone(ft, pretrain, encoder_path, in_chans=store_channels(stores["train"]))
    geom = S.clip_geometry(encoder, pretrain)  # a checkpoint's own frames/size win
    identity = {side: store_identities(stores[side]) for side in SIDES}
    check_loaded(fold, {s: {i["subject"] for i in identity[s]} for s in SIDES},
                 {s: {i["video_id"] for i in identity[s]} for s in SIDES}, source=str(stores_dir))
    classes = discover_classes(ft, [i for s in SIDES for i in identity[s]])
    task = make_task(ft, classes)
    check_selection(ft, main_metric, task)
    stores, identity, other_classes = drop_other_classes(ft, stores, identity, classes)
    if other_classes:
        log.info("fold %d: %d videos of emotions outside finetune.classes left out: %s", fold.index,
                 len(other_classes), ", ".join(sorted({v["emotion"] for v in other_classes})))
    from affectube.clips.dataset import loader_output

    device = device or runtime.training_device(env.local_rank)  # the job's GPU, if any
    log.info("fold %d: device %s, %d process(es)", fold.index,
             device if device.type == "cpu" else torch.cuda.get_device_name(device), env.world_size)
    data = open_datasets(stores, geom, ft, classes or None, seed, output=loader_output(device))
    check_channels(encoder, data["train"], stores_dir)
    skipped = [x for s in SIDES if data[s] is not None for x in data[s].skipped]
    log.info("fold %d: train %d clips (%s), val %d (%s), test %d (%s)", fold.index,
             *(x for s in SIDES for x in ((len(data[s]) if data[s] is not None else 0),
                                          ",".join(sorted({i["subject"] for i in identity[s]})))))

    seed_everything(seed + 1)
    model = S.build_model(ft, task, encoder).to(device)
    frozen = ft["mode"] == "frozen"
    class_weight = None
    if task.categorical and ft["class_weights"]:
        class_weight = L.balanced_class_weights(train_labels(data["train"]), len(classes))
        log.info("class weights: %s", dict(zip(classes, class_weight.tolist())))
    loss_fn = L.CompositeLoss(L.task_losses(ft["losses"], ft["task"]), ft["task"], L.Bins(int(ft["bins"]), *map(float, ft["target_range"])),
                              float(ft["label_smoothing"]), class_weight.to(device) if class_weight is not None else None)
    steps = P.steps_per_epoch(len(data["train"]), int(ft["batch_size"]), env)
    optimizer, scheduler = make_optimizer(model, ft, steps, frozen, env.world_size)
    ident = FC.identity(cfg, fold.to_json(), [p for s in SIDES for p in stores[s]], encoder_path, env.world_size)
    return FoldRun(cfg=cfg, fold=fold, encoder_path=encoder_path, env=env, device=device, t0=t0, seed=seed,
                   main_metric=main_metric, stores=stores, geom=geom, identity=ident, classes=classes, task=task,
                   other_classes=other_classes, data=data, skipped=skipped, model=model, frozen=frozen,
                   class_weight=class_weight, loss_fn=loss_fn, optimizer=optimizer, scheduler=scheduler)


def train_fold(run: FoldRun, out_dir: Path, stop_after_steps: int | None = None) -> tuple[list[dict], "Selector"]:
    """The epochs, with selection and early stopping; checkpoints after every epoch and on preemption.
    Returns the log rows and the selector (whose weights :func:`summarize_fold` tests)."""
    ft, env, fold = run.ft, run.env, run.fold
    batch, workers, epochs = int(ft["batch_size"]), int(ft["num_workers"]), int(ft["epochs"])
    selector = Selector(ft, run.main_metric, has_val=run.data["val"] is not None)
    store = FC.FoldCheckpoint(out_dir, run.identity, env)
    history, done, partial, finished = [], 0, None, False
    state = store.load()
    if state is not None:  # after everything that draws random numbers: the RNG states are restored too
        ckpt.restore(state, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler, rank=env.rank)
        saved = state["fold"]
        history, done, finished = [dict(r) for r in saved["history"]], int(saved["epoch"]), bool(saved["finished"])
        selector.load_state_dict(saved["selector"])
        if saved["partial"]:
            partial = S.EpochStats.from_state(saved["partial"][env.rank])
        log.info("fold %d: %s from %s", fold.index, FC.resume_message(state), store.path)
    model = P.wrap(run.model, env, run.device)

    def stop_requested() -> bool:
        simulated = stop_after_steps is not None and run.scheduler.last_epoch >= stop_after_steps
        return distributed.any_rank(preempt.requested() or simulated)

    def save(epoch: int, partial=None) -> None:
        store.save(model=run.model, optimizer=run.optimizer, scheduler=run.scheduler, step=run.scheduler.last_epoch,
                   epoch=epoch, history=history, selector=selector.state_dict(), finished=finished, partial=partial)

    val = validation_clips(run.data["val"])
    epoch = done
    while not finished and epoch < epochs:
        epoch += 1
        train_ds = run.data["train"]
        train_ds.set_epoch(epoch)  # new clip starts and augmentations every epoch
        stats, partial = partial or S.EpochStats(), None
        sampler = P.EpochSampler(len(train_ds), epoch, env, run.seed, start=stats.steps * batch)
        train = S.train_epoch(model, P.make_loader(train_ds, batch, sampler, run.seed, workers), run.loss_fn,
                              run.optimizer, run.scheduler, run.frozen, task_targets=run.task.targets, stats=stats,
                              should_stop=stop_requested)
        if train is None:  # preempted inside the epoch
            save(epoch - 1, partial=stats)
            raise FC.FoldPreempted(store.path, epoch - 1, run.scheduler.last_epoch)
        if env.distributed:
            train = P.epoch_stats(stats, env).result(run.task.targets)
        row = {"epoch": epoch, "train_loss": train["loss"], "lr": max(g["lr"] for g in run.optimizer.param_groups)}
        value = vloss = math.nan
        if run.data["val"] is not None:
            vclips, vframes, vloss = P.predict(run.model, val, batch, run.seed, workers, run.task, fold.index,
                                               env, run.loss_fn)
            value = M.main_value(evaluate_predictions(vclips, vframes), run.main_metric)
        row.update({"val_loss": vloss, f"val_{run.main_metric}": value})
        row.update({k: v for k, v in train.items() if k != "loss"})
        history.append(row)
        log.info("epoch %d: train_loss %.4f %s val_loss %.4f val_%s %.4f", epoch, row["train_loss"],
                 " ".join(f"{k} {v:.3f}" for k, v in train.items() if k in ("train_accuracy", "train_uar", "train_ccc")),
                 row["val_loss"], run.main_metric, row[f"val_{run.main_metric}"])
        stop = selector.update(epoch, value, vloss, run.model)
        finished = stop or epoch == epochs
        save(epoch)
        if stop:
            log.info("early stop after epoch %d (best %d on %s)", epoch, selector.epoch, selector.selected_on)
        if stop_requested():
            raise FC.FoldPreempted(store.path, epoch, run.scheduler.last_epoch)
    return history, selector


VAL_CACHE_BYTES = 1 << 30  # inner-validation clips kept in memory up to this size (else read every epoch)


def validation_clips(ds):
    """The inner-validation clips predicted after every epoch: read once and kept in memory when they
    are the same every epoch (test mode: fixed starts, no augmentation) and small enough
    (:data:`VAL_CACHE_BYTES`); the same items as reading them again, without the reads, checks and
    transforms of every epoch."""
    if ds is None or not ds.deterministic() or ds.nbytes() > VAL_CACHE_BYTES:
        return ds
    return ds.materialize()


def summarize_fold(run: FoldRun, history: list[dict], selector: "Selector", out_dir: Path) -> dict:
    """Test the selected weights; write the fold's outputs (rank 0; ``metrics.json`` last), then drop
    the checkpoint."""
    ft, env, fold, task, data = run.ft, run.env, run.fold, run.task, run.data
    batch, workers, model = int(ft["batch_size"]), int(ft["num_workers"]), run.model
    if selector.state is not None:  # else: the weights of the last epoch run
        model.load_state_dict(selector.state)
    best = {"epoch": selector.epoch or len(history), "selected_on": selector.selected_on}
    at_best = history[best["epoch"] - 1]

    clips, frames, test_loss = P.predict(model, data["test"], batch, run.seed, workers, task, fold.index, env, run.loss_fn)
    test_metrics = evaluate_predictions(clips, frames)
    val_metrics = {}
    if data["val"] is not None:
        vclips, vframes, _ = P.predict(model, data["val"], batch, run.seed, workers, task, fold.index, env)
        val_metrics = evaluate_predictions(vclips, vframes)
    # the selected model on its own training videos, sampled as the test ones (no augmentation):
    # did it fit them? (the report flags an underfit fold)
    tclips, tframes, _ = P.predict(model, data["train"].as_test(), batch, run.seed, workers, task, fold.index, env)
    train_metrics = evaluate_predictions(tclips, tframes)
    model.cpu()  # saved from the CPU
    n_params, n_train = runtime.param_counts(model)
    classes, class_weight = run.classes, run.class_weight
    summary = {
        "fold": fold.index,
        "subjects": {s: getattr(fold, s) for s in SIDES},
        "videos": {s: len(fold.videos(s)) for s in SIDES},
        "clips": {s: (len(data[s]) if data[s] is not None else 0) for s in SIDES},
        "skipped_stores": [{"path": p, "reason": r} for p, r in run.skipped],
        "other_class_videos": run.other_classes,
        "main_metric": run.main_metric,
        "test": test_metrics,
        "val": val_metrics,
        "train": train_metrics,
        "test_loss": test_loss,
        "training": {
            "best_epoch": best["epoch"],
            "epochs_run": len(history),
            "selected_on": best["selected_on"],
            "warmup_epochs": int(ft["warmup_epochs"]),
            # training metrics of the selected epoch (augmented training clips, as in log.csv)
            "train_at_best": {k: at_best[k] for k in at_best if k.startswith("train_") and k != "train_loss"},
            "lr_peak": peak_lr(ft, env.world_size),
            "processes": env.world_size,
            "global_batch": batch * env.world_size,
            "mode": ft["mode"],
            "init": ft["init"],
            "backbone": ft["backbone"],
            "head": ft["head"],
            "task": ft["task"],
            "losses": L.task_losses(ft["losses"], ft["task"]),
            "classes": classes,
            "targets": task.targets if task.continuous else [],
            "class_weights": dict(zip(classes, class_weight.tolist())) if class_weight is not None else None,
            "params_total": n_params,
            "params_trainable": n_train,
            "clip": run.geom,
            "seconds": round(time.time() - run.t0, 2),
            "encoder": run.encoder_path or "",
        },
    }
    if env.is_main:
        write_outputs(out_dir, clips, frames, history, summary, model, run.cfg, task, store_preprocessing(run.stores["train"]))
        FC.FoldCheckpoint(out_dir, run.identity, env).remove()
    distributed.barrier()
    return summary


def train_labels(ds) -> list[int]:
    return [int(x) for x in ds.labels()]


def store_channels(paths: list[Path]) -> int | None:
    """Channels of the first training store's frames (1: grayscale crops, 3: colour), None without stores."""
    from affectube.clips.dataset import store_index

    if not paths:
        return None
    return int(store_index(paths[0])["channels"])


def check_channels(encoder, ds, source: Path) -> None:
    spec = getattr(encoder, "spec", None)
    if spec is not None and int(spec.in_chans) != int(ds.channels):
        raise DataError(f"{source}: the clip stores have {ds.channels} channel(s) but the encoder expects {spec.in_chans}"
                        " (crop.grayscale and the pretraining crops must agree)")


def peak_lr(ft: dict, world_size: int = 1) -> float:
    """The peak learning rate: ``finetune.lr`` x global batch / 256 with ``lr_scale: batch`` (VideoMAE's
    rule, as pretraining's ``base_lr``; MAE-DFER fine-tunes with base 1e-3), else ``finetune.lr`` as given.
    ``finetune.batch_size`` is per process: the global batch is ``batch_size x world_size`` (the
    processes of ``finetune.gpus``)."""
    from affectube.train.optim import scaled_lr

    lr = float(ft["lr"])
    return scaled_lr(lr, int(ft["batch_size"]) * world_size) if ft["lr_scale"] == "batch" else lr


def make_optimizer(model, ft: dict, steps_per_epoch: int, frozen: bool, world_size: int = 1):
    from affectube.train.optim import build_optimizer, build_scheduler, param_groups

    lr = peak_lr(ft, world_size)
    decay = float(ft["layer_decay"]) if not frozen else None
    groups = param_groups(model, lr, float(ft["weight_decay"]), layer_decay=decay, encoder=model.encoder)
    optimizer = build_optimizer(groups, lr, betas=(0.9, 0.999), fused=False)
    total = max(1, int(ft["epochs"]) * steps_per_epoch)
    scheduler = build_scheduler(optimizer, total, int(ft["warmup_epochs"]) * steps_per_epoch, lr, min_lr=lr * 0.01)
    return optimizer, scheduler


class Selector:
    """Which epoch's weights are kept (``finetune.select_on``), and when to stop early (``patience``).

    - ``last``: the last epoch run (a fixed epoch budget, no early stopping); also when there are no
      inner-validation subjects;
    - ``main_metric``: the best ``val_<evaluate.main_metric>``, ties broken by the lower validation
      loss (a 6-video validation set moves UAR in steps of 1/6: ties are common), then by the later
      epoch; ``val_loss``: the lowest validation loss, ties to the later epoch.
    - No epoch inside the warmup (``warmup_epochs``) is selected, nor counts towards patience,
      unless the run has no epoch after it: an untrained model is not kept.
    - NaN: an epoch whose main metric is NaN ranks below every epoch that has one and among such
      epochs the validation loss decides (a metric is never compared with a loss); a NaN loss ranks
      last. The weights kept always exist (never ``load_state_dict(None)``).
    """

    def __init__(self, ft: dict, main_metric: str, has_val: bool):
        self.mode = ft["select_on"] if has_val else "last"
        self.main_metric = main_metric
        self.sign = 1.0 if M.higher_is_better(main_metric) else -1.0
        self.warmup = int(ft["warmup_epochs"])
        self.last_epoch = int(ft["epochs"])
        self.patience = int(ft["patience"])
        self.key, self.epoch, self.state, self.stale = None, 0, None, 0
        self.selected_on = "last_epoch" + ("" if has_val else " (no inner validation subjects)")

    def _key(self, value: float, val_loss: float) -> tuple:
        """Sort key, higher is better: (has metric, metric, -loss) for main_metric, (has loss, -loss) for val_loss."""
        loss = -val_loss if not math.isnan(val_loss) else -math.inf
        if self.mode == "main_metric":
            ok = not math.isnan(value)
            return (ok, self.sign * value if ok else -math.inf, loss)
        return (not math.isnan(val_loss), loss)

    def update(self, epoch: int, value: float, val_loss: float, model) -> bool:
        """Record an epoch after its training; return True when training should stop early."""
        if self.mode == "last":
            self.epoch = epoch  # the weights at the end are the last epoch's
            return False
        if epoch <= self.warmup and epoch < self.last_epoch:
            return False  # inside the warmup: never selected (the last epoch run is kept if nothing else is)
        key = self._key(value, val_loss)
        if self.key is None or key >= self.key:  # an exact tie goes to the later epoch
            improved = self.key is None or key > self.key
            self.key, self.epoch, self.state = key, epoch, copy.deepcopy(model.state_dict())
            if self.mode == "main_metric":
                self.selected_on = f"val_{self.main_metric}" if key[0] else f"val_loss (val_{self.main_metric} undefined)"
            else:
                self.selected_on = "val_loss" if key[0] else "last_epoch (val_loss undefined)"
            self.stale = 0 if improved else self.stale + 1
        else:
            self.stale += 1
        return self.stale >= self.patience

    def state_dict(self) -> dict:
        """What a fold checkpoint keeps (:mod:`affectube.train.fold_checkpoint`): best key, epoch,
        weights, patience counter and the selection's name."""
        return {"key": list(self.key) if self.key is not None else None, "epoch": self.epoch, "state": self.state,
                "stale": self.stale, "selected_on": self.selected_on}

    def load_state_dict(self, state: dict) -> None:
        self.key = tuple(state["key"]) if state["key"] is not None else None
        self.epoch, self.state, self.stale = int(state["epoch"]), state["state"], int(state["stale"])
        self.selected_on = state["selected_on"]


def evaluate_predictions(clips: pd.DataFrame, frames: pd.DataFrame) -> dict:
    out = M.evaluate_table(clips)
    if len(frames) and M.targets_of(frames):
        out.update(M.evaluate_frames(frames))
    return out


# ---------------------------------------------------------------- outputs


def store_preprocessing(paths: list[Path]) -> dict:
    """Decode, face and crop params recorded in the training stores (predict reuses exactly these)."""
    from affectube.clips.dataset import store_index

    seen = {}
    for p in paths:
        rec = store_index(p)["preprocessing"]
        if seen and rec != seen:
            raise DataError(f"{p}: preprocessed with other decode/face/crop params than {paths[0]}: rebuild the clip stores")
        seen = rec
    return seen


def write_outputs(out_dir: Path, clips, frames, history, summary, model, cfg, task, preprocessing=None) -> None:
    from affectube.models.finetuned import save_finetuned

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, df in (("predictions.csv", clips), ("predictions_frames.csv", frames), ("log.csv", pd.DataFrame(history))):
        with atomic_path(out_dir / name) as tmp:
            df.to_csv(tmp, index=False)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    spec = getattr(model.encoder, "spec", None)
    save_finetuned(out_dir / "model.safetensors", state, finetune=cfg["finetune"], pretrain=cfg["pretrain"],
                   encoder_spec=spec.to_dict() if spec is not None else None, preprocessing=preprocessing, task=task)
    write_json(out_dir / "metrics.json", to_jsonable(summary, finite=True))  # last: its presence means the fold is complete
