"""AdamW with VideoMAE's recipe: parameter groups, lr scaling, warmup + cosine, layer-wise decay.

* lr = base_lr x global_batch / 256 (:func:`scaled_lr`);
* no weight decay on biases, norms (every 1-D parameter), position embeddings, mask tokens
  (names from the model's ``no_weight_decay()``);
* optional layer-wise lr decay: parameter groups carry ``lr_scale`` = decay ** (L - 1 - layer)
  where ``layer``/``L`` come from an encoder's ``layer_id``/``num_layers``; parameters outside
  the encoder (heads, decoders) get the top layer (scale 1). Fine-tuning reuses this;
* the schedule is a ``LambdaLR`` (step-wise linear warmup from 0, then cosine to ``min_lr``),
  so its state is plain numbers and round-trips through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable

import torch
import torch.nn as nn


def scaled_lr(base_lr: float, global_batch: int) -> float:
    return base_lr * global_batch / 256


def no_decay(name: str, param: torch.Tensor, skip: Iterable[str] = ()) -> bool:
    return param.ndim <= 1 or name in set(skip) or name.endswith(("pos_embed.weight", "mask_token", "pos_embed"))


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    layer_decay: float | None = None,
    encoder: nn.Module | None = None,
) -> list[dict]:
    """AdamW parameter groups: (decay / no decay) x (layer, with ``layer_decay`` and ``encoder``).

    ``encoder`` is the sub-module whose ``layer_id``/``num_layers`` define the layers
    (default: ``model.encoder`` if present, else ``model`` if it has ``layer_id``).
    Groups carry ``lr`` (already scaled), ``lr_scale``, ``weight_decay`` and ``layer``.
    """
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    if encoder is None:
        encoder = getattr(model, "encoder", model if hasattr(model, "layer_id") else None)
    if encoder is not None and encoder is not model and hasattr(encoder, "no_weight_decay"):
        prefix = _prefix(model, encoder)  # encoder-relative names -> model names
        skip |= {f"{prefix}{n}" for n in encoder.no_weight_decay()}
    layer_of: dict[int, int] = {}
    num_layers = 1
    if layer_decay is not None and encoder is not None:
        num_layers = encoder.num_layers
        layer_of = {id(p): encoder.layer_id(n) for n, p in encoder.named_parameters()}
    groups: dict[tuple[int, bool], dict] = defaultdict(dict)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = layer_of.get(id(param), num_layers - 1)
        decay = not no_decay(name, param, skip)
        key = (layer, decay)
        if not groups[key]:
            scale = layer_decay ** (num_layers - 1 - layer) if layer_decay is not None else 1.0
            groups[key] = {
                "params": [],
                "names": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr_scale": scale,
                "lr": lr * scale,
                "layer": layer,
            }
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def _prefix(model: nn.Module, sub: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is sub:
            return f"{name}." if name else ""
    return ""


def build_optimizer(groups: list[dict], lr: float, betas=(0.9, 0.95), fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over ``groups`` (``names`` are dropped: optimizer state must hold only tensors/numbers)."""
    clean = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    kwargs = {}
    if fused is None:
        fused = all(p.is_cuda for g in clean for p in g["params"])
    if fused:
        kwargs["fused"] = True
    else:
        kwargs["foreach"] = True
    return torch.optim.AdamW(clean, lr=lr, betas=tuple(betas), **kwargs)


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr at ``step`` (0-based): linear 0->1 over ``warmup`` steps, cosine to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupCosine:
    """The ``LambdaLR`` multiplier; its ``__dict__`` (three numbers) is what the scheduler state stores."""

    def __init__(self, total: int, warmup: int, min_ratio: float = 0.0):
        self.total, self.warmup, self.min_ratio = total, warmup, min_ratio

    def __call__(self, step: int) -> float:
        return warmup_cosine(step, self.total, self.warmup, self.min_ratio)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, lr: float, min_lr: float = 0.0):
    """Step-wise warmup + cosine from each group's initial lr (lr x lr_scale) down to min_lr x lr_scale."""
    min_ratio = min(min_lr / lr, 1.0) if lr > 0 else 0.0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total_steps, warmup_steps, min_ratio))
