"""Video encoders: the API fine-tuning relies on, and the plain video ViT.

Every encoder has

* ``forward_features(x[B,C,T,H,W], mask=None) -> tokens [B,N,D]`` (normalised; with a
  mask only the visible tokens are computed and returned, in grid order),
* ``embed_dim``, ``grid`` ``(T', H', W')``, ``spec`` (its :class:`ModelSpec`),
* ``num_layers`` and ``layer_id(param_name)`` in ``[0, num_layers - 1]`` for layer-wise
  lr decay (0 = patch/position embedding, i+1 = block i, num_layers-1 = final norm),
  as in BEiT/VideoMAE.

Blocks are :class:`affectube.models.block.Block`: timm's ``vision_transformer.Block`` layout and
numerics (fused scaled-dot-product attention) without importing timm.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from affectube.models.block import Block
from affectube.models.layers import (
    MaskIndex,
    PatchEmbed3d,
    PositionEmbedding,
    as_index,
    drop_path_rates,
    init_vit_weights,
)
from affectube.models.spec import ModelSpec


def vit_block(dim: int, heads: int, drop_path: float = 0.0, mlp_ratio: float = 4.0, eps: float = 1e-5) -> Block:
    norm = nn.LayerNorm if eps == 1e-5 else partial(nn.LayerNorm, eps=eps)
    return Block(dim, heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path=drop_path, norm_layer=norm)


class VideoEncoder(nn.Module):
    """Tubelet + position embedding; subclasses add ``blocks`` and ``_run_blocks``."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.embed_dim = spec.dim
        self.grid = spec.grid
        self.num_tokens = self.grid[0] * self.grid[1] * self.grid[2]
        self.patch_embed = PatchEmbed3d(spec.in_chans, spec.dim, spec.tubelet, spec.patch)
        self.pos_embed = PositionEmbedding(self.num_tokens, spec.dim, spec.pos_embed)
        self.norm = nn.LayerNorm(spec.dim, eps=spec.final_eps)

    def embed(self, x: torch.Tensor, index: MaskIndex | None) -> torch.Tensor:
        b = x.shape[0]
        if index is None:
            return self.patch_embed(x) + self.pos_embed(b)
        return self.patch_embed.forward_visible(x, index.visible) + self.pos_embed(b, index.visible)

    def forward_features(self, x: torch.Tensor, mask: "torch.Tensor | MaskIndex | None" = None,
                         final_norm: bool = True) -> torch.Tensor:
        """Normalised tokens ``[B, N, D]``; with a mask (bool ``[B, N]`` or :class:`MaskIndex`)
        only the visible ones ``[B, N_visible, D]``, computed from visible pixels alone.
        ``final_norm=False``: the last block's tokens without the final LayerNorm (VideoMAE's
        classifier with mean pooling skips it and normalises the pooled token with ``fc_norm``)."""
        index = None if mask is None else as_index(mask, self.num_tokens)
        tokens = self._run_blocks(self.embed(x, index))
        return self.norm(tokens) if final_norm else tokens

    def forward(self, x: torch.Tensor, mask: "torch.Tensor | MaskIndex | None" = None) -> torch.Tensor:
        return self.forward_features(x, mask)

    def _run_blocks(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ---------------------------------------------------------------- lr decay
    @property
    def num_layers(self) -> int:
        return len(self.blocks) + 2

    def layer_id(self, name: str) -> int:
        """Layer index of parameter ``name`` (relative to this module; an ``encoder.`` prefix is allowed)."""
        name = name.removeprefix("encoder.")
        if name.startswith(("patch_embed", "pos_embed")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self._extra_layer_id(name)

    def _extra_layer_id(self, name: str) -> int:
        return self.num_layers - 1

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed.weight"}


class VideoViT(VideoEncoder):
    """VideoMAE's encoder: a ViT over tubelet tokens (joint space-time attention)."""

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        rates = drop_path_rates(spec.drop_path, spec.encoder_depth)
        self.blocks = nn.ModuleList(vit_block(spec.dim, spec.heads, r, spec.mlp_ratio, spec.block_eps) for r in rates)
        self.apply(init_vit_weights)

    def _run_blocks(self, tokens: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            tokens = block(tokens)
        return tokens
