"""Supervised losses and their weighted combination (``finetune.losses`` in params.yaml).

Categorical (on class logits ``[N, C]`` and labels ``[N]``, label -1 = none):
  ``ce``      cross-entropy with label smoothing and optional class weights.
Continuous (on predictions ``[N, D]`` and targets ``[N, D]``; N = clips or frames;
non-finite targets are ignored):
  ``mse``     mean squared error.
  ``ccc``     1 - CCC per target dimension (population moments), averaged over dimensions.
  ``bin_ce``  cross-entropy over K equal-width bins of each target's range
              (bin logits ``[N, D, K]``).
  ``ncce``    SS-VAERR's normalised cost-sensitive CE: the per-sample bin CE weighted by
              ``C = 1 + |sum_l k_l (Y_l - P_l)|`` where ``k_l`` are the bin centres,
              ``Y`` the one-hot target bin and ``P`` the predicted bin distribution, i.e.
              1 + the distance between the target bin's centre and the predicted
              expected value. The weight is a constant (no gradient flows through it).

:class:`CompositeLoss` sums ``weight * loss`` over the configured names, checking that
every part of the task (categorical / continuous) has at least one loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from affectube.errors import ConfigError


@dataclass(frozen=True)
class Bins:
    """K equal-width bins over [low, high]; values outside are clipped into the end bins."""

    k: int
    low: float = -1.0
    high: float = 1.0

    def edges(self, device=None, dtype=torch.float32) -> torch.Tensor:
        return torch.linspace(self.low, self.high, self.k + 1, device=device, dtype=dtype)

    def centres(self, device=None, dtype=torch.float32) -> torch.Tensor:
        e = self.edges(device, dtype)
        return (e[:-1] + e[1:]) / 2

    def index(self, y: torch.Tensor) -> torch.Tensor:
        width = (self.high - self.low) / self.k
        return ((y - self.low) / width).floor().clamp(0, self.k - 1).long()


# ---------------------------------------------------------------- categorical


def ce_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0, weight: torch.Tensor | None = None):
    keep = labels >= 0
    if not keep.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], labels[keep], weight=weight, label_smoothing=label_smoothing)


# ---------------------------------------------------------------- continuous


def _finite(pred: torch.Tensor, target: torch.Tensor):
    mask = torch.isfinite(target)
    return mask, torch.where(mask, target, torch.zeros_like(target))


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    mask, target = _finite(pred, target)
    if not mask.any():
        return pred.sum() * 0.0
    return ((pred - target) ** 2)[mask].mean()


def ccc_value(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """CCC per column of ``[N, D]`` tensors, population moments, finite targets only."""
    mask, target = _finite(pred, target)
    m = mask.to(pred.dtype)
    n = m.sum(0).clamp_min(1)
    mp, my = (pred * m).sum(0) / n, (target * m).sum(0) / n
    dp, dy = (pred - mp) * m, (target - my) * m
    vp, vy, cov = (dp**2).sum(0) / n, (dy**2).sum(0) / n, (dp * dy).sum(0) / n
    return 2 * cov / (vp + vy + (mp - my) ** 2 + eps)


def ccc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred, target = pred.reshape(-1, pred.shape[-1]), target.reshape(-1, target.shape[-1])
    usable = torch.isfinite(target).sum(0) >= 2
    if not usable.any():
        return pred.sum() * 0.0
    return (1 - ccc_value(pred, target))[usable].mean()


def _bin_terms(bin_logits: torch.Tensor, target: torch.Tensor, bins: Bins):
    mask, target = _finite(bin_logits[..., 0], target)
    idx = bins.index(target)
    logp = F.log_softmax(bin_logits, dim=-1)
    ce = -logp.gather(-1, idx.unsqueeze(-1)).squeeze(-1)
    return mask, idx, logp, ce


def bin_ce_loss(bin_logits: torch.Tensor, target: torch.Tensor, bins: Bins) -> torch.Tensor:
    mask, _, _, ce = _bin_terms(bin_logits, target, bins)
    return ce[mask].mean() if mask.any() else bin_logits.sum() * 0.0


def ncce_loss(bin_logits: torch.Tensor, target: torch.Tensor, bins: Bins) -> torch.Tensor:
    mask, idx, logp, ce = _bin_terms(bin_logits, target, bins)
    if not mask.any():
        return bin_logits.sum() * 0.0
    k = bins.centres(bin_logits.device, bin_logits.dtype)
    onehot = F.one_hot(idx, bins.k).to(bin_logits.dtype)
    cost = 1 + ((onehot - logp.exp()) * k).sum(-1).abs()
    return (cost.detach() * ce)[mask].mean()


# ---------------------------------------------------------------- registry

# name -> (kind, what it reads from the model output)
LOSSES: dict[str, tuple[str, str]] = {
    "ce": ("categorical", "logits"),
    "mse": ("continuous", "reg"),
    "ccc": ("continuous", "reg"),
    "bin_ce": ("continuous", "bins"),
    "ncce": ("continuous", "bins"),
}


# finetune.losses: null = this loss per part of the task, weight 1 (CCC: SS-VAERR's and AVEC's metric)
DEFAULT_LOSSES = {"categorical": "ce", "continuous": "ccc"}


def task_losses(weights: dict | None, task: str) -> dict[str, float]:
    """``finetune.losses`` as used: the given weights, or (null) the default loss of each part of ``task``."""
    if weights is None:
        return {DEFAULT_LOSSES[part]: 1.0 for part in task_parts(task)}
    return {name: float(w) for name, w in dict(weights).items()}


def task_parts(task: str) -> list[str]:
    return {"categorical": ["categorical"], "continuous": ["continuous"], "both": ["categorical", "continuous"]}[task]


class CompositeLoss:
    """``sum_name weight_name * loss_name``; call with model outputs and targets."""

    def __init__(self, weights: dict[str, float], task: str, bins: Bins, label_smoothing: float = 0.0,
                 class_weight: torch.Tensor | None = None):
        parts = task_parts(task)
        unknown = [n for n in weights if n not in LOSSES]
        if unknown:
            raise ConfigError(f"params.yaml: finetune.losses: unknown loss {unknown[0]!r} (known: {', '.join(LOSSES)})")
        for name in weights:
            if LOSSES[name][0] not in parts:
                raise ConfigError(f"params.yaml: finetune.losses: {name!r} is a {LOSSES[name][0]} loss but finetune.task is {task!r}")
        for part in parts:
            if not any(LOSSES[n][0] == part and w > 0 for n, w in weights.items()):
                raise ConfigError(f"params.yaml: finetune.losses: task {task!r} needs a positive-weight {part} loss (have {weights})")
        self.weights = {n: float(w) for n, w in weights.items() if w > 0}
        self.bins = bins
        self.label_smoothing = label_smoothing
        self.class_weight = class_weight
        self._fns: dict[str, Callable] = {
            "ce": lambda o, t: ce_loss(o["logits"], t["label"], self.label_smoothing, self.class_weight),
            "mse": lambda o, t: mse_loss(o["reg"], t["reg"]),
            "ccc": lambda o, t: ccc_loss(o["reg"], t["reg"]),
            "bin_ce": lambda o, t: bin_ce_loss(o["bins"], t["reg"], self.bins),
            "ncce": lambda o, t: ncce_loss(o["bins"], t["reg"], self.bins),
        }

    @property
    def needs_bins(self) -> bool:
        return any(LOSSES[n][1] == "bins" for n in self.weights)

    def __call__(self, outputs: dict, targets: dict) -> tuple[torch.Tensor, dict[str, float]]:
        total, parts = None, {}
        for name, w in self.weights.items():
            value = self._fns[name](outputs, targets)
            parts[name] = float(value.detach())
            total = w * value if total is None else total + w * value
        return total, parts


def balanced_class_weights(labels, num_classes: int) -> torch.Tensor:
    """sklearn's 'balanced' weights n / (C * n_c); a class absent from training gets weight 1."""
    labels = torch.as_tensor(labels)
    labels = labels[labels >= 0]
    counts = torch.bincount(labels, minlength=num_classes).double()
    w = torch.where(counts > 0, len(labels) / (num_classes * counts.clamp_min(1)), torch.ones_like(counts))
    return w.float()
