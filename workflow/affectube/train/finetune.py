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
  (``finetune.select_on``: ``evaluate.main_metric`` or the validation loss); the test
  subjects are predicted once, with the selected weights.

Writes (atomically) ``predictions.csv``, ``predictions_frames.csv`` (per-frame continuous
predictions; header only when there are none), ``metrics.json``, ``log.csv`` (one row per
epoch: epoch, train_loss, val_loss, val_<main metric>, lr, ...) and ``model.safetensors``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from affectube.errors import ConfigError, DataError
from affectube.eval import metrics as M
from affectube.eval.folds import SIDES, Fold, check_loaded, load_folds
from affectube.io import atomic_path, write_json
from affectube.train import losses as L
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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
                                test_clips=int(ft["test_clips"]), augment=train, output=output, label=ft["label"],
                                event=ft["event"], event_jitter=float(ft["event_jitter"]), **common)
    return out


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
    encoder = S.build_backbone(ft, pretrain, encoder_path)
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

    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")  # the job's GPU, if any
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

    history, best = [], {"score": -math.inf, "epoch": 0, "state": None, "selected_on": None}
    stale = 0
    for epoch in range(1, int(ft["epochs"]) + 1):
        data["train"].set_epoch(epoch)  # new clip starts and augmentations every epoch
        train = S.train_epoch(model, train_loader, loss_fn, optimizer, scheduler, frozen)
        row = {"epoch": epoch, "train_loss": train["loss"], "lr": max(g["lr"] for g in optimizer.param_groups)}
        if val_loader is not None:
            vclips, vframes, vloss = S.predict(model, val_loader, task, fold.index, loss_fn)
            vmetrics = evaluate_predictions(vclips, vframes)
            value = M.main_value(vmetrics, main_metric)
            row.update({"val_loss": vloss, f"val_{main_metric}": value})
            score, selected_on = selection_score(ft, main_metric, value, vloss)
        else:
            row.update({"val_loss": math.nan, f"val_{main_metric}": math.nan})
            score, selected_on = float(epoch), "last_epoch (no inner validation subjects)"
        row.update({k: v for k, v in train.items() if k != "loss"})
        history.append(row)
        log.info("epoch %d: train_loss %.4f val_loss %.4f val_%s %.4f", epoch, row["train_loss"], row["val_loss"], main_metric,
                 row[f"val_{main_metric}"])
        if score > best["score"]:
            best = {"score": score, "epoch": epoch, "state": copy.deepcopy(model.state_dict()), "selected_on": selected_on}
            stale = 0
        else:
            stale += 1
            if stale >= int(ft["patience"]):
                log.info("early stop after epoch %d (best %d on %s)", epoch, best["epoch"], best["selected_on"])
                break
    model.load_state_dict(best["state"])

    clips, frames, test_loss = S.predict(model, test_loader, task, fold.index, loss_fn)
    test_metrics = evaluate_predictions(clips, frames)
    val_metrics = {}
    if val_loader is not None:
        vclips, vframes, _ = S.predict(model, val_loader, task, fold.index)
        val_metrics = evaluate_predictions(vclips, vframes)
    model.cpu()  # saved from the CPU
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
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
        "test_loss": test_loss,
        "training": {
            "best_epoch": best["epoch"],
            "epochs_run": len(history),
            "selected_on": best["selected_on"],
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


def check_channels(encoder, ds, source: Path) -> None:
    spec = getattr(encoder, "spec", None)
    if spec is not None and int(spec.in_chans) != int(ds.channels):
        raise DataError(f"{source}: the clip stores have {ds.channels} channel(s) but the encoder expects {spec.in_chans}"
                        " (crop.grayscale and the pretraining crops must agree)")


def make_optimizer(model, ft: dict, steps_per_epoch: int, frozen: bool):
    from affectube.train.optim import build_optimizer, build_scheduler, param_groups

    lr = float(ft["lr"])
    decay = float(ft["layer_decay"]) if not frozen else None
    groups = param_groups(model, lr, float(ft["weight_decay"]), layer_decay=decay, encoder=model.encoder)
    optimizer = build_optimizer(groups, lr, betas=(0.9, 0.999), fused=False)
    total = max(1, int(ft["epochs"]) * steps_per_epoch)
    scheduler = build_scheduler(optimizer, total, int(ft["warmup_epochs"]) * steps_per_epoch, lr, min_lr=lr * 0.01)
    return optimizer, scheduler


def selection_score(ft: dict, main_metric: str, value: float, val_loss: float) -> tuple[float, str]:
    if ft["select_on"] == "main_metric" and not math.isnan(value):
        return (value if M.higher_is_better(main_metric) else -value), f"val_{main_metric}"
    if ft["select_on"] == "main_metric":
        log.warning("val_%s is undefined on this inner validation set; selecting on val_loss this epoch", main_metric)
    return -val_loss, "val_loss"


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
