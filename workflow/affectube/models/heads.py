"""Prediction heads on top of an encoder's tokens, and the model that joins them.

An encoder (``forward_features(x) -> tokens [B, N, D]``, ``embed_dim``, ``grid`` =
``(T', H', W')``) feeds a head; the tokens are viewed as ``S = N / (H' W')`` time steps
of ``H' W'`` tokens each.

- :class:`LinearHead` (VideoMAE): mean over all tokens -> LayerNorm -> dropout -> Linear.
  One prediction per clip (``S = 1``).
- :class:`TemporalGRUHead` (SS-VAERR style): the spatial mean of each time step -> GRU ->
  LayerNorm -> Linear per step, i.e. one continuous prediction per time step (upsampled
  to frames by the fine-tuning stage); class logits from the mean over steps.

Every head returns a dict: ``logits`` ``[B, C]`` (categorical), ``reg`` ``[B, S, D]``
(continuous; squashed into ``target_range`` with a scaled sigmoid, as SS-VAERR's
``2 sigmoid - 1``), ``bins`` ``[B, S, D, K]`` (logits over K bins per target, for
``bin_ce``/``ncce``). Absent parts are omitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class Outputs:
    num_classes: int = 0
    num_targets: int = 0
    num_bins: int = 0
    target_range: tuple[float, float] | None = (-1.0, 1.0)

    @property
    def width(self) -> int:
        return self.num_classes + self.num_targets * (1 + self.num_bins)


def split_outputs(y: torch.Tensor, spec: Outputs) -> dict:
    """``[B, S, width]`` -> the dict of named outputs (logits averaged over steps)."""
    out, i = {}, 0
    if spec.num_classes:
        out["logits"] = y[..., : spec.num_classes].mean(1)
        i = spec.num_classes
    if spec.num_targets:
        reg = y[..., i : i + spec.num_targets]
        if spec.target_range is not None:
            lo, hi = spec.target_range
            reg = lo + (hi - lo) * torch.sigmoid(reg)
        out["reg"] = reg
        i += spec.num_targets
        if spec.num_bins:
            b, s = y.shape[:2]
            out["bins"] = y[..., i : i + spec.num_targets * spec.num_bins].reshape(b, s, spec.num_targets, spec.num_bins)
    return out


def steps(tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """``[B, N, D]`` -> ``[B, S, D]``: the mean over the spatial tokens of each time step."""
    b, n, d = tokens.shape
    per_step = int(grid[1]) * int(grid[2])
    if n % per_step:
        raise ValueError(f"{n} tokens are not a whole number of time steps of {per_step} ({grid})")
    return tokens.reshape(b, n // per_step, per_step, d).mean(2)


def scale_init(fc: nn.Linear, init_scale: float) -> None:
    """VideoMAE's head init: trunc-normal weights (std 0.02) and zero bias, then both x ``init_scale``
    (VideoMAE: 0.001, so the first logits are ~0 and the head starts at chance)."""
    nn.init.trunc_normal_(fc.weight, std=0.02)
    nn.init.zeros_(fc.bias)
    with torch.no_grad():
        fc.weight.mul_(init_scale)
        fc.bias.mul_(init_scale)


class LinearHead(nn.Module):
    """Mean of the tokens -> ``norm`` (VideoMAE's ``fc_norm``) -> dropout -> Linear.
    ``pooled_norm=True`` (:attr:`wants_final_norm` False): the encoder's own final norm is skipped
    and ``fc_norm`` normalises the pooled token, as VideoMAE with mean pooling."""

    def __init__(self, dim: int, spec: Outputs, dropout: float = 0.0, init_scale: float = 1.0, pooled_norm: bool = False):
        super().__init__()
        self.spec = spec
        self.wants_final_norm = not pooled_norm
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, spec.width)
        scale_init(self.fc, init_scale)

    def forward(self, tokens: torch.Tensor, grid) -> dict:
        pooled = self.norm(tokens.mean(1))
        return split_outputs(self.fc(self.drop(pooled)).unsqueeze(1), self.spec)


class TemporalGRUHead(nn.Module):
    def __init__(self, dim: int, spec: Outputs, hidden: int = 128, layers: int = 1, dropout: float = 0.0,
                 init_scale: float | None = None, pooled_norm: bool = False):
        super().__init__()
        self.spec = spec
        self.wants_final_norm = True  # the GRU reads normalised per-step tokens
        self.gru = nn.GRU(dim, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.norm = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, spec.width)
        if init_scale is not None:
            scale_init(self.fc, init_scale)

    def forward(self, tokens: torch.Tensor, grid) -> dict:
        seq, _ = self.gru(steps(tokens, grid))
        return split_outputs(self.fc(self.drop(self.norm(seq))), self.spec)


HEADS = {"linear": LinearHead, "gru": TemporalGRUHead}


def build_head(name: str, dim: int, spec: Outputs, **kwargs) -> nn.Module:
    if name == "linear":
        kwargs.pop("hidden", None)
    return HEADS[name](dim, spec, **kwargs)


class VideoModel(nn.Module):
    """encoder + head; ``forward(video) -> dict`` of outputs (see module doc)."""

    def __init__(self, encoder: nn.Module, head: nn.Module, delta: bool = False):
        super().__init__()
        self.encoder = encoder
        self.head = head
        # finetune.input: delta: the encoder reads each frame minus the clip's first frame (what changed)
        self.delta = bool(delta)
        # a head that normalises the pooled tokens itself (fc_norm) reads the encoder's un-normalised tokens
        self.skip_final_norm = not getattr(head, "wants_final_norm", True) and _has_final_norm(encoder)

    def forward(self, video: torch.Tensor) -> dict:
        if self.delta:  # [B, C, T, H, W]: the first frame becomes 0, the others their change from it
            video = video - video[:, :, :1]
        if self.skip_final_norm:
            tokens = self.encoder.forward_features(video, final_norm=False)
        else:
            tokens = self.encoder.forward_features(video)
        return self.head(tokens, tuple(self.encoder.grid))


def _has_final_norm(encoder: nn.Module) -> bool:
    import inspect

    return "final_norm" in inspect.signature(encoder.forward_features).parameters
