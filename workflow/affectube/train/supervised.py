"""The pieces of supervised fine-tuning: the model, one training epoch, predictions as tables.

Kept apart from the stage (:mod:`affectube.train.finetune`) so tests can drive them
directly. Outputs of a model are the dicts of :mod:`affectube.models.heads`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from affectube.errors import ConfigError, DataError
from affectube.models.heads import Outputs, VideoModel, build_head
from affectube.train.runtime import autocast  # bf16 on CUDA, as pretraining (one definition)

log = logging.getLogger(__name__)


@dataclass
class Task:
    """What a fold's model predicts."""

    kind: str  # categorical | continuous | both
    classes: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    bins: int = 0  # bins per target (0: no bin logits)
    target_range: tuple[float, float] = (-1.0, 1.0)

    @property
    def categorical(self) -> bool:
        return self.kind in ("categorical", "both")

    @property
    def continuous(self) -> bool:
        return self.kind in ("continuous", "both")

    def outputs(self) -> Outputs:
        return Outputs(
            num_classes=len(self.classes) if self.categorical else 0,
            num_targets=len(self.targets) if self.continuous else 0,
            num_bins=self.bins if self.continuous else 0,
            target_range=tuple(self.target_range),
        )


# ---------------------------------------------------------------- model


def build_backbone(ft: dict, pretrain: dict, encoder_path: str | None, in_chans: int | None = None) -> nn.Module:
    """The encoder of a fold: pretrained checkpoint, fresh ViT, or the SS-VAERR ResNet-GRU.
    ``in_chans``: channels of the clip stores (1 for ``crop.grayscale``); a fresh ViT takes them,
    a checkpoint keeps its own (a mismatch is refused later, naming the stores)."""
    drop_path = float(ft["drop_path"]) if ft["mode"] == "finetune" else 0.0
    if ft["backbone"] == "resnet_gru":
        if ft["init"] not in ("pretrained", "scratch"):
            raise ConfigError(f"params.yaml: finetune.backbone=resnet_gru starts from scratch or from pretraining "
                              f"(pretrain.model: resnet18), not from finetune.init={ft['init']}")
        from affectube.models.resnet_gru import ResNetGRU

        model = ResNetGRU(num_frames=int(pretrain["num_frames"]), drop_path=drop_path)
        if ft["init"] == "pretrained":  # the front end and trunk of a pretext on pretrain.model: resnet18; a fresh GRU
            if not encoder_path:
                raise ConfigError("finetune.init=pretrained but no --encoder checkpoint was given")
            model.load_trunk(encoder_path)
        return model
    from affectube.models import build_encoder, load_encoder

    if ft["init"] not in ("pretrained", "scratch"):  # a checkpoint: released, affectube's, or experiment:NAME's fold model
        from affectube.export import load_any_encoder

        if ft["init"].startswith("experiment:") and not encoder_path:
            raise ConfigError(f"finetune.init={ft['init']} but no --encoder (that experiment's fold model) was given")
        return load_any_encoder(encoder_path or ft["init"], drop_path=drop_path, num_heads=ft.get("init_heads"))
    if ft["init"] == "pretrained":
        if not encoder_path:
            raise ConfigError("finetune.init=pretrained but no --encoder checkpoint was given")
        return load_encoder(encoder_path, drop_path=drop_path)
    return build_encoder(pretrain, drop_path=drop_path, in_chans=in_chans)


def build_model(ft: dict, task: Task, encoder: nn.Module) -> VideoModel:
    """``encoder`` (from :func:`build_backbone`) + the head of ``finetune.head`` for ``task``."""
    # a model saved before finetune.pool_norm / head_init_scale existed is rebuilt as it was trained
    pooled_norm = ft.get("pool_norm", "encoder_norm") == "fc_norm"
    head = build_head(ft["head"], encoder.embed_dim, task.outputs(), hidden=int(ft.get("gru_hidden", 128)),
                      dropout=float(ft.get("head_dropout", 0.0)), init_scale=float(ft.get("head_init_scale", 1.0)),
                      pooled_norm=pooled_norm)
    model = VideoModel(encoder, head, delta=ft.get("input", "frames") == "delta")  # older runs: frames
    if ft["mode"] == "frozen":
        model.encoder.requires_grad_(False)
    return model


def clip_geometry(encoder: nn.Module, pretrain: dict) -> dict:
    """Frames, stride and size of the clips an encoder reads (a checkpoint's own spec wins)."""
    spec = getattr(encoder, "spec", None)
    geom = {
        "num_frames": int(getattr(spec, "num_frames", pretrain["num_frames"])),
        "input_size": int(getattr(spec, "input_size", pretrain["input_size"])),
        "sample_stride": int(pretrain["sample_stride"]),
    }
    if getattr(spec, "input_mean", None) is not None:  # an imported checkpoint's own normalisation (MARLIN: [0, 1])
        geom.update(mean=list(spec.input_mean), std=list(spec.input_std))
    return geom


def set_train_mode(model: VideoModel, frozen: bool) -> None:
    model.train()
    if frozen:  # dropout/drop path/BatchNorm statistics of a frozen encoder stay put
        getattr(model, "module", model).encoder.eval()  # .module: under DistributedDataParallel


# ---------------------------------------------------------------- targets


def to_frames(outputs: dict, num_frames: int) -> dict:
    """Per-step outputs ``[B, S, ...]`` -> per-frame ``[B, T, ...]`` (each step covers T/S frames)."""
    out = dict(outputs)
    for key in ("reg", "bins"):
        if key in out and out[key].shape[1] > 1:
            s = out[key].shape[1]
            if num_frames % s:
                raise DataError(f"{num_frames} frames do not divide into the model's {s} time steps")
            out[key] = out[key].repeat_interleave(num_frames // s, dim=1)
    return out


def loss_targets(outputs: dict, batch: dict) -> tuple[dict, dict]:
    """(outputs, targets) aligned for :class:`~affectube.train.losses.CompositeLoss`."""
    targets = {"label": batch["label"]}
    if "reg" in outputs:
        if outputs["reg"].shape[1] == 1:  # one prediction per clip
            targets["reg"] = batch["targets"].unsqueeze(1)
        else:  # one per time step -> per frame
            frames = batch["frame_targets"]
            outputs = to_frames(outputs, frames.shape[1])
            targets["reg"] = frames
    return outputs, targets


def clip_input(batch: dict, loader) -> torch.Tensor:
    """The batch's clips as the model takes them, float32 [B,C,T,S,S]. On the uint8 path
    (``ClipDataset(output="uint8")``: items carry the stored crops and a ``window``) the dataset's
    transform crops/resizes/normalises them here, on the device they are on."""
    if "window" in batch:
        return loader.dataset.transform.apply(batch["video"], batch["window"])
    return batch["video"]


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def on_device(batch: dict, device: torch.device) -> dict:
    """The batch's tensors on ``device`` (others as they are); a no-op on the CPU."""
    if device.type == "cpu":
        return batch
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}



class EpochStats:
    """Running sums of one training epoch: the loss (and its parts), the clips seen, the optimizer
    steps done and what the model predicted for its training clips. A checkpoint taken mid-epoch
    keeps them (:meth:`state_dict`), so a resumed epoch reports what an uninterrupted one would;
    under DDP every rank keeps its own and :meth:`merged` adds them up (rank order)."""

    def __init__(self):
        self.total, self.n, self.steps, self.parts = 0.0, 0, 0, {}
        self.seen = {"label": [], "pred": [], "target": [], "reg": []}

    def add(self, loss: float, b: int, parts: dict, outputs: dict, raw: dict, batch: dict) -> None:
        _collect(self.seen, outputs, raw, batch)
        self.total += loss * b
        self.n += b
        self.steps += 1
        for k, v in parts.items():
            self.parts[k] = self.parts.get(k, 0.0) + v * b

    def state_dict(self) -> dict:
        """Plain values and tensors (``torch.load(weights_only=True)`` reads them back)."""
        return {"total": self.total, "n": self.n, "steps": self.steps, "parts": dict(self.parts),
                "seen": {k: torch.cat(v) if v else None for k, v in self.seen.items()}}

    @classmethod
    def from_state(cls, state: dict) -> "EpochStats":
        out = cls()
        out.total, out.n, out.steps, out.parts = float(state["total"]), int(state["n"]), int(state["steps"]), dict(state["parts"])
        out.seen = {k: ([v] if v is not None else []) for k, v in state["seen"].items()}
        return out

    @classmethod
    def merged(cls, parts: list["EpochStats"]) -> "EpochStats":
        if len(parts) == 1:
            return parts[0]
        out = cls()
        for p in parts:
            out.total += p.total
            out.n += p.n
            for k, v in p.parts.items():
                out.parts[k] = out.parts.get(k, 0.0) + v
            for k in out.seen:
                out.seen[k] += p.seen[k]
        out.steps = max(p.steps for p in parts)
        return out

    def result(self, task_targets: list[str] | None = None) -> dict:
        if self.n == 0:
            raise DataError("the training set yielded no clips")
        return {"loss": self.total / self.n, **{f"loss_{k}": v / self.n for k, v in self.parts.items()},
                **train_metrics(self.seen, task_targets)}


def train_epoch(model, loader, loss_fn, optimizer, scheduler, frozen: bool, clip_grad: float | None = 1.0,
                progress_every: int = 10, task_targets: list[str] | None = None, stats: EpochStats | None = None,
                should_stop=None) -> dict | None:
    """One epoch; returns the mean loss (``loss``, ``loss_<part>``) and the training metrics of
    :func:`train_metrics` (``task_targets`` name the continuous targets).

    ``stats``: the sums so far (a resumed epoch; ``loader`` then yields only the remaining batches);
    they are updated in place. ``should_stop()`` is asked after every optimizer step but the
    epoch's last: when it says True the epoch stops there and ``None`` is returned (``stats``
    holds the partial epoch, for a checkpoint). ``model`` may be wrapped in DistributedDataParallel.
    """
    set_train_mode(model, frozen)
    stats = stats if stats is not None else EpochStats()
    params = [p for p in model.parameters() if p.requires_grad]
    device = model_device(model)
    remaining = len(loader)
    for step, batch in enumerate(loader):
        batch = on_device(batch, device)
        with autocast(device):
            raw = model(clip_input(batch, loader))
        outputs, targets = loss_targets({k: v.float() for k, v in raw.items()}, batch)
        loss, parts = loss_fn(outputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad:
            torch.nn.utils.clip_grad_norm_(params, clip_grad)
        optimizer.step()
        scheduler.step()
        stats.add(float(loss.detach()), len(batch["label"]), parts, outputs, raw, batch)
        if progress_every and stats.steps % progress_every == 0:
            log.info("  step %d: loss %.4f", stats.steps, float(loss))
        if should_stop is not None and step + 1 < remaining and should_stop():
            return None
    return stats.result(task_targets)


def _collect(seen: dict, outputs: dict, raw: dict, batch: dict) -> None:
    if "logits" in raw:
        seen["label"].append(batch["label"].detach().cpu())
        seen["pred"].append(raw["logits"].detach().float().argmax(-1).cpu())
    if "reg" in raw:
        seen["target"].append(batch["targets"].detach().float().cpu())
        seen["reg"].append(raw["reg"].detach().float().mean(1).cpu())


def train_metrics(seen: dict, targets: list[str] | None = None) -> dict:
    """Training accuracy / UAR (categorical) and CCC (continuous, clip level) of the predictions the
    model made for its training clips during the epoch (augmented clips, weights changing as it went):
    ``train_accuracy``, ``train_uar``, ``train_ccc`` (mean over targets) and ``train_ccc_<target>``."""
    from affectube.eval import metrics as M

    out = {}
    if seen["label"]:
        y, p = torch.cat(seen["label"]).numpy(), torch.cat(seen["pred"]).numpy()
        keep = y >= 0
        out["train_accuracy"] = M.accuracy(y[keep], p[keep]) if keep.any() else float("nan")
        out["train_uar"] = M.uar(y[keep], p[keep]) if keep.any() else float("nan")
    if seen["reg"]:
        y, p = torch.cat(seen["target"]).numpy(), torch.cat(seen["reg"]).numpy()
        names = list(targets) if targets else [str(i) for i in range(y.shape[1])]
        cont = M.continuous_metrics(y, p, names)
        out["train_ccc"] = cont["ccc"]
        out.update({f"train_ccc_{t}": cont[f"ccc_{t}"] for t in names})
    return out


# ---------------------------------------------------------------- predictions


@torch.no_grad()
def predict(model, loader, task: Task, fold: int, loss_fn=None, aggregate: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Clip rows (``predictions.csv``), frame rows (``predictions_frames.csv``) and the mean loss.
    ``aggregate=False``: the frame rows of every clip as they are (:func:`aggregate_frames` later,
    once the shards of several processes are put together)."""
    model.eval()
    rows, frame_rows = [], []
    loss_sum, n = 0.0, 0
    device = model_device(model)
    for batch in loader:
        moved = on_device(batch, device)
        with autocast(device):
            raw = model(clip_input(moved, loader))
        raw = {k: v.float() for k, v in raw.items()}
        if loss_fn is not None:
            outputs, targets = loss_targets(raw, moved)
            loss, _ = loss_fn(outputs, targets)
            loss_sum += float(loss) * len(batch["label"])
            n += len(batch["label"])
        raw = {k: v.cpu() for k, v in raw.items()}  # rows are built from the CPU batch
        rows += _clip_rows(raw, batch, task, fold)
        if task.continuous and raw["reg"].shape[1] > 1:
            frame_rows += _frame_rows(raw, batch, task, fold)
    clip_cols = ["fold", "subject", "video_id", "dataset", "clip", "y_true", "y_pred"]
    clip_cols += [f"prob_{c}" for c in task.classes] if task.categorical else []
    clip_cols += [f"{s}_{t}" for t in task.targets for s in ("true", "pred")] if task.continuous else []
    clips = pd.DataFrame(rows, columns=clip_cols)
    frame_cols = ["fold", "subject", "video_id", "time"]
    if frame_rows:
        frame_cols += [f"{s}_{t}" for t in task.targets for s in ("true", "pred")]
    frames = pd.DataFrame(frame_rows, columns=frame_cols)
    if aggregate:
        frames = aggregate_frames(frames)
    return clips, frames, (loss_sum / n if n else float("nan"))


def aggregate_frames(frames: pd.DataFrame) -> pd.DataFrame:
    """Overlapping test clips: one row per (video, frame time), predictions averaged."""
    if not len(frames):
        return frames
    return frames.groupby(["fold", "subject", "video_id", "time"], as_index=False, sort=True).mean()


def _meta(batch, i) -> dict:
    return {"subject": str(batch["subject"][i]), "video_id": str(batch["video_id"][i]),
            "dataset": str(batch["dataset"][i]), "clip": int(batch["clip"][i])}


def _clip_rows(raw: dict, batch: dict, task: Task, fold: int) -> list[dict]:
    rows = []
    probs = torch.softmax(raw["logits"].float(), -1).numpy() if task.categorical else None
    reg = raw["reg"].float().mean(1).numpy() if task.continuous else None
    for i in range(len(batch["label"])):
        row = {"fold": fold, **_meta(batch, i)}
        if task.categorical:
            label = int(batch["label"][i])
            row["y_true"] = task.classes[label] if label >= 0 else None
            row["y_pred"] = task.classes[int(probs[i].argmax())]
            row.update({f"prob_{c}": float(probs[i, j]) for j, c in enumerate(task.classes)})
        else:
            row["y_true"] = row["y_pred"] = None
        if task.continuous:
            tgt = batch["targets"][i].float().numpy()
            row.update({f"true_{t}": float(tgt[j]) for j, t in enumerate(task.targets)})
            row.update({f"pred_{t}": float(reg[i, j]) for j, t in enumerate(task.targets)})
        rows.append(row)
    return rows


def _frame_rows(raw: dict, batch: dict, task: Task, fold: int) -> list[dict]:
    frames = batch["frame_targets"].float().numpy()  # [B, T, D]
    pred = to_frames({"reg": raw["reg"]}, frames.shape[1])["reg"].float().numpy()
    times = frame_times(batch, frames.shape[1])
    rows = []
    for i in range(frames.shape[0]):
        meta = _meta(batch, i)
        for t in range(frames.shape[1]):
            row = {"fold": fold, "subject": meta["subject"], "video_id": meta["video_id"], "time": float(times[i, t])}
            row.update({f"true_{n}": float(frames[i, t, j]) for j, n in enumerate(task.targets)})
            row.update({f"pred_{n}": float(pred[i, t, j]) for j, n in enumerate(task.targets)})
            rows.append(row)
    return rows


def frame_times(batch: dict, num_frames: int) -> np.ndarray:
    """Seconds of each sampled frame in its source video ``[B, T]`` (from the loader's items)."""
    for key in ("times", "timestamps", "frame_times"):
        if key in batch:
            return np.asarray(batch[key], dtype=np.float64).reshape(-1, num_frames)
    raise DataError("the clip loader gives no per-frame times (item key 'times'); per-frame predictions need them")
