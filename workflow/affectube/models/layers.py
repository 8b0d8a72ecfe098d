"""Building blocks shared by the video transformers: tubelet patches, position tables, targets.

Token order everywhere is ``(t, h, w)`` row-major over the grid ``(T', H', W')`` with
``T' = T / tubelet``, ``H' = H / patch``, ``W' = W / patch``. A mask is a bool tensor
``[B, N]`` (True = masked) with the same number of masked tokens in every row.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from affectube.errors import UserError


def token_grid(num_frames: int, input_size: int, tubelet: int, patch: int) -> tuple[int, int, int]:
    """Grid ``(T', H', W')`` of a clip, or a UserError naming the size that does not divide."""
    if num_frames % tubelet:
        raise UserError(f"pretrain.num_frames={num_frames} is not a multiple of pretrain.tubelet={tubelet}")
    if input_size % patch:
        raise UserError(f"pretrain.input_size={input_size} is not a multiple of pretrain.patch={patch}")
    return num_frames // tubelet, input_size // patch, input_size // patch


class PatchEmbed3d(nn.Module):
    """Tubelet embedding: a Conv3d with kernel = stride = ``(tubelet, patch, patch)``.

    ``forward`` embeds every tubelet of a clip; ``forward_visible`` embeds only the
    unmasked ones (the same linear map on the patchified clip, so masked pixels are
    never read and 90% masking skips 90% of the work).
    """

    def __init__(self, in_chans: int, embed_dim: int, tubelet: int, patch: int):
        super().__init__()
        self.in_chans, self.tubelet, self.patch = in_chans, tubelet, patch
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)

    def forward_visible(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Embeddings of the tokens ``index`` ``[B, K]`` only."""
        patches = patchify(x, self.tubelet, self.patch, channels_last=False)  # [B, N, C*t*p*p]
        visible = take(patches, index)
        weight = self.proj.weight.flatten(1)  # [D, C*t*p*p], same order as patchify(channels_last=False)
        return F.linear(visible, weight, self.proj.bias)


def patchify(x: torch.Tensor, tubelet: int, patch: int, channels_last: bool = True) -> torch.Tensor:
    """``[B, C, T, H, W]`` -> ``[B, N, K]``; K ordered ``(t, p, p, c)`` if channels_last else ``(c, t, p, p)``."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // tubelet, tubelet, h // patch, patch, w // patch, patch)
    if channels_last:  # b T' H' W' t p p c  (the VideoMAE target layout)
        x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)
    else:  # b T' H' W' c t p p  (the Conv3d weight layout)
        x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)
    return x.reshape(b, (t // tubelet) * (h // patch) * (w // patch), -1)


def unpatchify(patches: torch.Tensor, grid: tuple[int, int, int], tubelet: int, patch: int, chans: int) -> torch.Tensor:
    """Inverse of ``patchify(..., channels_last=True)``: ``[B, N, t*p*p*c]`` -> ``[B, C, T, H, W]``."""
    b = patches.shape[0]
    gt, gh, gw = grid
    x = patches.reshape(b, gt, gh, gw, tubelet, patch, patch, chans)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, chans, gt * tubelet, gh * patch, gw * patch)


class MaskIndex(NamedTuple):
    """Token indices of a mask: ``visible`` ``[B, N_visible]`` and ``masked`` ``[B, N_masked]``,
    each in grid order. Gathering with indices (not boolean masks) needs no host-device sync."""

    visible: torch.Tensor
    masked: torch.Tensor

    def to(self, device, non_blocking: bool = False) -> "MaskIndex":
        return MaskIndex(self.visible.to(device, non_blocking=non_blocking), self.masked.to(device, non_blocking=non_blocking))


def mask_index(mask: torch.Tensor) -> MaskIndex:
    """Indices of a bool mask ``[B, N]`` (True = masked; the same count in every row).

    Compute it where the mask was made (CPU, in the loader) and move the indices to the
    device: counting on the CPU costs nothing, on a GPU it would stall the stream.
    """
    if mask.dtype != torch.bool or mask.dim() != 2:
        raise UserError(f"mask must be bool [B, N], got {tuple(mask.shape)} {mask.dtype}")
    counts = mask.sum(1)
    if counts.numel() and bool((counts != counts[0]).any()):
        raise UserError("every clip in a batch needs the same number of masked tokens (tube masks do)")
    n_masked = int(counts[0]) if counts.numel() else 0
    order = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)  # visible (0) first, then masked (1)
    n_visible = mask.shape[1] - n_masked
    return MaskIndex(order[:, :n_visible].contiguous(), order[:, n_visible:].contiguous())


def as_index(mask: "torch.Tensor | MaskIndex", num_tokens: int) -> MaskIndex:
    if isinstance(mask, MaskIndex):
        return mask
    if mask.dim() != 2 or mask.shape[1] != num_tokens:
        raise UserError(f"mask must be bool [B, {num_tokens}], got {tuple(mask.shape)}")
    return mask_index(mask)


def take(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``tokens[b, index[b]]`` for every row b: ``[B, N, D]`` x ``[B, K]`` -> ``[B, K, D]``."""
    return torch.gather(tokens, 1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """The 1-D sine-cosine table of VideoMAE/"Attention is all you need", ``[1, N, D]`` float32."""
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)
    angles = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.empty_like(angles)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.float().unsqueeze(0)


class PositionEmbedding(nn.Module):
    """Fixed sine-cosine (a buffer, not trained) or learned position embedding of N tokens."""

    KINDS = ("sinusoidal", "learned")

    def __init__(self, num_positions: int, dim: int, kind: str = "sinusoidal"):
        super().__init__()
        if kind not in self.KINDS:
            raise UserError(f"pretrain.pos_embed={kind!r}: expected one of {self.KINDS}")
        self.kind = kind
        if kind == "learned":
            self.weight = nn.Parameter(torch.zeros(1, num_positions, dim))
            nn.init.trunc_normal_(self.weight, std=0.02, a=-0.02, b=0.02)
        else:
            self.register_buffer("weight", sinusoid_table(num_positions, dim), persistent=False)

    def forward(self, batch: int, index: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, N, D]``, or only the positions ``index`` ``[B, K]``."""
        pos = self.weight.expand(batch, -1, -1)
        return pos if index is None else take(pos, index)


def patch_targets(
    x: torch.Tensor,
    tubelet: int,
    patch: int,
    normalize: bool = True,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
    eps: float = 1e-6,
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reconstruction targets ``[B, N, t*p*p*C]`` (VideoMAE layout, channels last).

    ``mean``/``std`` (per channel) undo the loader's normalisation first, as VideoMAE
    does; with ``normalize`` every patch is standardised per channel by its own mean
    and unbiased std (over the patch's t*p*p pixels). With ``index`` ``[B, K]`` only
    those tokens' targets are computed (``[B, K, ...]``: the masked ones, in training).
    """
    with torch.no_grad():
        x = x.float()
        if mean is not None and std is not None:
            shape = (1, -1, 1, 1, 1)
            x = x * std.to(x).view(shape) + mean.to(x).view(shape)
        b, c = x.shape[:2]
        k = tubelet * patch * patch
        # statistics over each channel's t*p*p pixels, contiguous in the (c, t, p, p) layout
        patches = patchify(x, tubelet, patch, channels_last=False)  # [B, N, C*t*p*p]
        if index is not None:
            patches = take(patches, index)
        n = patches.shape[1]
        patches = patches.reshape(b, n, c, k)
        if normalize:
            var, mu = torch.var_mean(patches, dim=-1, correction=1, keepdim=True)
            patches = (patches - mu) / (var.sqrt() + eps)
        return patches.transpose(-1, -2).reshape(b, n, k * c)  # -> the (t, p, p, c) layout


def init_vit_weights(module: nn.Module) -> None:
    """VideoMAE's init: xavier-uniform Linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def drop_path_rates(rate: float, depth: int) -> list[float]:
    return [rate * i / max(depth - 1, 1) for i in range(depth)] if depth else []


def heads_for(width: int, head_dim: int = 64) -> int:
    """Attention heads for a width: width/64 (ViT convention), at least 1, dividing the width."""
    heads = max(1, width // head_dim)
    while width % heads:
        heads -= 1
    return heads


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "PatchEmbed3d",
    "PositionEmbedding",
    "MaskIndex",
    "as_index",
    "drop_path_rates",
    "mask_index",
    "take",
    "heads_for",
    "init_vit_weights",
    "num_params",
    "patch_targets",
    "patchify",
    "sinusoid_table",
    "token_grid",
    "unpatchify",
]
