"""SVFAP (Sun et al. 2023): the temporal-pyramid, spatial-bottleneck encoder (TPSBT).

Stage 1 is a plain ViT over the tubelet tokens. Each later stage

1. halves time with a Conv1d (kernel = stride = 2) over each spatial position,
2. summarises each time step's tokens into ``svfap_tokens`` bottleneck tokens by a
   learned softmax pooling (an MLP scores every token for every bottleneck slot),
3. runs ``depth - 1`` cross/self blocks on the bottleneck tokens (cross-attention to the
   stage's full-resolution tokens, then self-attention among bottleneck tokens, MLP),
4. brings the information back with one reverse block: the full-resolution tokens
   cross-attend to the bottleneck tokens, then self-attend.

Stage outputs are repeated back to the full time resolution and summed with stage
1's output (multi-scale fusion), so ``forward_features`` returns one token per grid
position like the ViT.

Difference from the released pretraining code: there the reverse block's context is
the patch embedding of *all* tokens, masked ones included, so masked pixels leak into
the reconstruction. Here every stage sees only the visible tokens (the context of the
reverse block is the bottleneck, as in the released fine-tuning model), which the
masked-pixel invariance test checks.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from affectube.models.block import DropPath
from affectube.models.encoder import VideoEncoder, vit_block
from affectube.models.layers import drop_path_rates, init_vit_weights
from affectube.models.registry import register
from affectube.models.spec import ModelSpec
from affectube.models.videomae import MaskedVideoAutoencoder

TEMPORAL_KERNEL = 2
BOTTLENECK_HIDDEN = 128


class CrossAttention(nn.Module):
    """Queries from ``x``, keys/values from ``context``; fused scaled-dot-product attention."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        m = context.shape[1]
        q = self.q(x).reshape(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.kv(context).reshape(b, m, 2, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class CrossSelfBlock(nn.Module):
    """Cross-attention to a context, then a ViT block (self-attention + MLP)."""

    def __init__(self, dim: int, heads: int, drop_path: float = 0.0, mlp_ratio: float = 4.0,
                 eps: float = 1e-6, block_eps: float = 1e-5):
        super().__init__()
        self.cross_norm = nn.LayerNorm(dim, eps=eps)
        self.context_norm = nn.LayerNorm(dim, eps=eps)
        self.cross_attn = CrossAttention(dim, heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.block = vit_block(dim, heads, drop_path, mlp_ratio, block_eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.cross_attn(self.cross_norm(x), self.context_norm(context)))
        return self.block(x)


class BottleneckPool(nn.Module):
    """Each time step's S tokens -> M bottleneck tokens (softmax-weighted sums of the S tokens)."""

    def __init__(self, dim: int, num_tokens: int, hidden: int = BOTTLENECK_HIDDEN, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, num_tokens))

    def forward(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        b, n, d = x.shape
        weights = self.score(self.norm(x)).reshape(b, steps, n // steps, -1).softmax(dim=2)  # [B, T, S, M]
        pooled = torch.einsum("btsm,btsd->btmd", weights, x.reshape(b, steps, n // steps, d))
        return pooled.reshape(b, -1, d)


class TPSBT(VideoEncoder):
    """Temporal pyramid + spatial bottleneck transformer over (visible) tubelet tokens."""

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        width, heads, stages = spec.dim, spec.heads, spec.svfap_stages
        rates = iter(drop_path_rates(spec.drop_path, sum(stages)))
        mlp, eps = spec.mlp_ratio, spec.final_eps
        blocks: list[nn.Module] = [vit_block(width, heads, next(rates), mlp, spec.block_eps) for _ in range(stages[0])]
        self.temporal_downsamples = nn.ModuleList()
        self.spatial_pools = nn.ModuleList()
        self.stage_starts = [0]
        for depth in stages[1:]:
            self.stage_starts.append(len(blocks))
            self.temporal_downsamples.append(nn.Conv1d(width, width, TEMPORAL_KERNEL, stride=TEMPORAL_KERNEL))
            self.spatial_pools.append(BottleneckPool(width, spec.svfap_tokens, eps=eps))
            blocks += [CrossSelfBlock(width, heads, next(rates), mlp, eps, spec.block_eps) for _ in range(depth)]
        self.blocks = nn.ModuleList(blocks)
        self.apply(init_vit_weights)

    def _run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        steps = self.grid[0]  # tube masks keep the same spatial positions at every time step
        stages = self.spec.svfap_stages
        for block in self.blocks[: stages[0]]:
            x = block(x)
        fused = x
        for s, depth in enumerate(stages[1:], start=1):
            # temporal pyramid: halve time at every (visible) spatial position
            spatial = x.shape[1] // steps
            x = x.reshape(b, steps, spatial, d).permute(0, 2, 3, 1).reshape(b * spatial, d, steps)
            x = self.temporal_downsamples[s - 1](x)
            steps = x.shape[-1]
            x = x.reshape(b, spatial, d, steps).permute(0, 3, 1, 2).reshape(b, steps * spatial, d)
            # spatial bottleneck
            stage_blocks = self.blocks[self.stage_starts[s] : self.stage_starts[s] + depth]
            z = self.spatial_pools[s - 1](x, steps)
            for block in stage_blocks[:-1]:
                z = block(z, context=x)
            x = stage_blocks[-1](x, context=z)  # full resolution <- bottleneck (never the masked tokens)
            # back to full time resolution and fuse
            up = x.reshape(b, steps, spatial, d).repeat_interleave(self.grid[0] // steps, dim=1)
            fused = fused + up.reshape(b, -1, d)
        return fused

    def _extra_layer_id(self, name: str) -> int:
        # the downsampling layers of stage s belong to that stage's first block
        for prefix in ("temporal_downsamples.", "spatial_pools."):
            if name.startswith(prefix):
                return self.stage_starts[int(name.split(".")[1]) + 1] + 1
        return self.num_layers - 1


def build_svfap_encoder(spec: ModelSpec) -> TPSBT:
    return TPSBT(spec)


@register("svfap", encoder=build_svfap_encoder)
def build_svfap(spec: ModelSpec) -> MaskedVideoAutoencoder:
    return MaskedVideoAutoencoder(spec, build_svfap_encoder(spec))
