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
from pathlib import Path

import pandas as pd
import torch

from affectube.errors import ConfigError, DataError
from affectube.eval import metrics as M
from affectube.eval.folds import SIDES, Fold, check_loaded, load_folds
from affectube.io import atomic_path, write_json
from affectube.train import losses as L
from affectube.train import runtime
from affectube.train.runtime import seed_everything  # noqa: F401  (one definition, shared with pretraining)
from affectube.train import supervised as S

log = logging.getLogger(__name__)
FORMAT = "affectube-finetuned/1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", required=True, help="JSON with the pretrain, finetune and evaluate sections")
    parser.add_argument("--folds", required=True, help="results/folds/{exp}.json")
    parser.add_argument("--fold", required=True, type=int, help="fold index")
    parser.add_argument("--stores-dir", required=True, help="directory of the dataset's clip stores ({video_id}.h5)")
    parser.add_argument("--encoder", default="", help="pretrained encoder.safetensors ('' = none: init scratch)")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--threads", type=int, default=0, help="the job's cores: torch CPU threads unless finetune.threads is set (0 = torch's default)")


def run(args: argparse.Namespace) -> int:
    from affectube.config import parse_cfg

    cfg = validate_sections(parse_cfg(args.cfg))
    folds = {f.index: f for f in load_folds(args.folds)}
    if args.fold not in folds:
        raise DataError(f"{args.folds}: no fold {args.fold} (have {sorted(folds)})")
    result = finetune_fold(cfg, folds[args.fold], Path(args.stores_dir), args.encoder or None, Path(args.out_dir),
                           threads=cfg["finetune"]["threads"] or args.threads)
    log.info("fold %d done: %s", args.fold, json.dumps({k: v for k, v in result["test"].items() if isinstance(v, float)}))
    return 0


def validate_sections(raw: dict) -> dict:
    """Validate the sections the rule passes (pretrain/finetune/evaluate), filling schema defaults."""
    from affectube.config import load_schema, validate

    schema = load_schema()
    out = dict(raw)
    for name in ("pretrain", "finetune", "evaluate"):
        sub = {"$schema": schema.get("$schema"), **schema["properties"][name]}
        out[name] = validate(raw.get(name, {}), source=f"--cfg {name}", schema=sub)
    return out


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
                  classes=classes, targets=list(ft["targets"]), seed=seed)
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
    """Subject, video id and clip-level labels recorded in each store (what is actually loaded)."""
    from affectube.clips.store import open_store

    out = []
    for p in paths:
        with open_store(p) as store:
            out.append({"subject": str(store.subject), "video_id": str(store.video_id), "labels": dict(store.labels)})
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


def loader(ds, batch_size: int, shuffle: bool, seed: int, workers: int):
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=workers, generator=g,
                                       drop_last=False)


# ---------------------------------------------------------------- the fold


def finetune_fold(cfg: dict, fold: Fold, stores_dir: Path, encoder_path: str | None, out_dir: Path, threads: int = 0) -> dict:
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

    device = runtime.training_device()  # the job's GPU, if any
    log.info("fold %d: device %s", fold.index, device if device.type == "cpu" else torch.cuda.get_device_name(device))
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
    loss_fn = L.CompositeLoss(dict(ft["losses"]), ft["task"], L.Bins(int(ft["bins"]), *map(float, ft["target_range"])),
                              float(ft["label_smoothing"]), class_weight.to(device) if class_weight is not None else None)

    train_loader = loader(data["train"], int(ft["batch_size"]), True, seed, int(ft["num_workers"]))
    val_loader = loader(data["val"], int(ft["batch_size"]), False, seed, int(ft["num_workers"])) if data["val"] is not None else None
    test_loader = loader(data["test"], int(ft["batch_size"]), False, seed, int(ft["num_workers"]))
    optimizer, scheduler = make_optimizer(model, ft, len(train_loader), frozen)

    history = []
    selector = Selector(ft, main_metric, has_val=val_loader is not None)
    for epoch in range(1, int(ft["epochs"]) + 1):
        data["train"].set_epoch(epoch)  # new clip starts and augmentations every epoch
        train = S.train_epoch(model, train_loader, loss_fn, optimizer, scheduler, frozen, task_targets=task.targets)
        row = {"epoch": epoch, "train_loss": train["loss"], "lr": max(g["lr"] for g in optimizer.param_groups)}
        value = vloss = math.nan
        if val_loader is not None:
            vclips, vframes, vloss = S.predict(model, val_loader, task, fold.index, loss_fn)
            value = M.main_value(evaluate_predictions(vclips, vframes), main_metric)
        row.update({"val_loss": vloss, f"val_{main_metric}": value})
        row.update({k: v for k, v in train.items() if k != "loss"})
        history.append(row)
        log.info("epoch %d: train_loss %.4f %s val_loss %.4f val_%s %.4f", epoch, row["train_loss"],
                 " ".join(f"{k} {v:.3f}" for k, v in train.items() if k in ("train_accuracy", "train_uar", "train_ccc")),
                 row["val_loss"], main_metric, row[f"val_{main_metric}"])
        if selector.update(epoch, value, vloss, model):
            log.info("early stop after epoch %d (best %d on %s)", epoch, selector.epoch, selector.selected_on)
            break
    if selector.state is not None:  # else: the weights of the last epoch run
        model.load_state_dict(selector.state)
    best = {"epoch": selector.epoch or len(history), "selected_on": selector.selected_on}
    at_best = history[best["epoch"] - 1]

    clips, frames, test_loss = S.predict(model, test_loader, task, fold.index, loss_fn)
    test_metrics = evaluate_predictions(clips, frames)
    val_metrics = {}
    if val_loader is not None:
        vclips, vframes, _ = S.predict(model, val_loader, task, fold.index)
        val_metrics = evaluate_predictions(vclips, vframes)
    # the selected model on its own training videos, sampled as the test ones (no augmentation):
    # did it fit them? (the report flags an underfit fold)
    train_eval = data["train"].as_test()
    tclips, tframes, _ = S.predict(model, loader(train_eval, int(ft["batch_size"]), False, seed, int(ft["num_workers"])),
                                   task, fold.index)
    train_metrics = evaluate_predictions(tclips, tframes)
    model.cpu()  # saved from the CPU
    n_params, n_train = runtime.param_counts(model)
    summary = {
        "fold": fold.index,
        "subjects": {s: getattr(fold, s) for s in SIDES},
        "videos": {s: len(fold.videos(s)) for s in SIDES},
        "clips": {s: (len(data[s]) if data[s] is not None else 0) for s in SIDES},
        "skipped_stores": [{"path": p, "reason": r} for p, r in skipped],
        "other_class_videos": other_classes,
        "main_metric": main_metric,
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
            "lr_peak": peak_lr(ft),
            "mode": ft["mode"],
            "init": ft["init"],
            "backbone": ft["backbone"],
            "head": ft["head"],
            "task": ft["task"],
            "losses": dict(ft["losses"]),
            "classes": classes,
            "targets": task.targets if task.continuous else [],
            "class_weights": dict(zip(classes, class_weight.tolist())) if class_weight is not None else None,
            "params_total": n_params,
            "params_trainable": n_train,
            "clip": geom,
            "seconds": round(time.time() - t0, 2),
            "encoder": encoder_path or "",
        },
    }
    write_outputs(out_dir, clips, frames, history, summary, model, cfg, task, store_preprocessing(stores["train"]))
    return summary


def train_labels(ds) -> list[int]:
    return [int(x) for x in ds.labels()]


def store_channels(paths: list[Path]) -> int | None:
    """Channels of the first training store's frames (1: grayscale crops, 3: colour), None without stores."""
    from affectube.clips.store import open_store

    if not paths:
        return None
    with open_store(paths[0]) as store:
        return int(store.attrs["frame_shape"][-1])


def check_channels(encoder, ds, source: Path) -> None:
    spec = getattr(encoder, "spec", None)
    if spec is not None and int(spec.in_chans) != int(ds.channels):
        raise DataError(f"{source}: the clip stores have {ds.channels} channel(s) but the encoder expects {spec.in_chans}"
                        " (crop.grayscale and the pretraining crops must agree)")


def peak_lr(ft: dict) -> float:
    """The peak learning rate: ``finetune.lr`` x batch / 256 with ``lr_scale: batch`` (VideoMAE's rule,
    as pretraining's ``base_lr``; MAE-DFER fine-tunes with base 1e-3), else ``finetune.lr`` as given.
    Fine-tuning runs one process, so the global batch is ``finetune.batch_size``."""
    from affectube.train.optim import scaled_lr

    lr = float(ft["lr"])
    return scaled_lr(lr, int(ft["batch_size"])) if ft["lr_scale"] == "batch" else lr


def make_optimizer(model, ft: dict, steps_per_epoch: int, frozen: bool):
    from affectube.train.optim import build_optimizer, build_scheduler, param_groups

    lr = peak_lr(ft)
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


def evaluate_predictions(clips: pd.DataFrame, frames: pd.DataFrame) -> dict:
    out = M.evaluate_table(clips)
    if len(frames) and M.targets_of(frames):
        out.update(M.evaluate_frames(frames))
    return out


# ---------------------------------------------------------------- outputs


def store_preprocessing(paths: list[Path]) -> dict:
    """Decode, face and crop params recorded in the training stores (predict reuses exactly these)."""
    from affectube.clips.store import open_store

    seen = {}
    for p in paths:
        with open_store(p) as store:
            rec = {"decode": store.attrs["decode"], "crop": store.attrs["crop"], "faces": store.attrs["source"].get("faces"),
                   "channels": int(store.attrs["frame_shape"][-1])}
        if seen and rec != seen:
            raise DataError(f"{p}: preprocessed with other decode/face/crop params than {paths[0]}: rebuild the clip stores")
        seen = rec
    return seen


def write_outputs(out_dir: Path, clips, frames, history, summary, model, cfg, task, preprocessing=None) -> None:
    from safetensors.torch import save_file

    from affectube.eval.aggregate import _clean

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, df in (("predictions.csv", clips), ("predictions_frames.csv", frames), ("log.csv", pd.DataFrame(history))):
        with atomic_path(out_dir / name) as tmp:
            df.to_csv(tmp, index=False)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    spec = getattr(model.encoder, "spec", None)
    metadata = {
        "format": FORMAT,
        "affectube.finetune": json.dumps(cfg["finetune"], sort_keys=True),
        "affectube.pretrain": json.dumps(cfg["pretrain"], sort_keys=True),
        "affectube.encoder_spec": json.dumps(spec.to_dict() if spec is not None else None, sort_keys=True),
        "affectube.preprocessing": json.dumps(preprocessing, sort_keys=True),
        "affectube.task": json.dumps({"kind": task.kind, "classes": task.classes, "targets": task.targets,
                                      "bins": task.bins, "target_range": list(task.target_range)}),
    }
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata=metadata)
    write_json(out_dir / "metrics.json", _clean(summary))  # last: its presence means the fold is complete
