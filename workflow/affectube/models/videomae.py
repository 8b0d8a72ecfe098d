"""VideoMAE (Tong et al. 2022): masked autoencoding of tube-masked video.

The encoder sees only the visible tubelets; a narrow decoder gets the encoded visible
tokens plus one shared mask token per masked position (each with its position
embedding) and predicts the masked tubelets' pixels. The loss is the MSE on masked
tokens only against each patch's pixels standardised per channel by the patch's
own mean and unbiased std.

:class:`MaskedVideoAutoencoder` is generic over the encoder; SVFAP reuses it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from affectube.models.encoder import VideoViT, vit_block
from affectube.models.layers import (
    MaskIndex,
    PositionEmbedding,
    as_index,
    init_vit_weights,
    patch_targets,
)
from affectube.models.registry import register
from affectube.models.spec import ModelSpec


class MAEDecoder(nn.Module):
    """Mask tokens + visible tokens -> pixels of the masked tubelets ``[B, N_masked, patch_dim]``."""

    def __init__(self, spec: ModelSpec, encoder_dim: int, num_tokens: int):
        super().__init__()
        width = spec.decoder_width
        self.encoder_to_decoder = nn.Linear(encoder_dim, width, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = PositionEmbedding(num_tokens, width, spec.pos_embed)
        self.blocks = nn.ModuleList(vit_block(width, spec.decoder_heads) for _ in range(spec.decoder_depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, spec.patch_dim)
        self.apply(init_vit_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.02, b=0.02)

    def forward(self, visible: torch.Tensor, index: MaskIndex) -> torch.Tensor:
        b = visible.shape[0]
        x_vis = self.encoder_to_decoder(visible) + self.pos_embed(b, index.visible)
        pos_masked = self.pos_embed(b, index.masked)
        # Visible tokens first, then masked ones: the decoder has no other notion of order
        # than the position embeddings, so the tokens need not be unshuffled.
        x = torch.cat([x_vis, self.mask_token.to(x_vis.dtype) + pos_masked], dim=1)
        for block in self.blocks:
            x = block(x)
        n_masked = pos_masked.shape[1]
        return self.head(self.norm(x[:, -n_masked:]))


class MaskedVideoAutoencoder(nn.Module):
    """Encoder (visible tokens only) + :class:`MAEDecoder`, with the VideoMAE loss."""

    def __init__(self, spec: ModelSpec, encoder: nn.Module):
        super().__init__()
        self.spec = spec
        self.encoder = encoder
        self.decoder = MAEDecoder(spec, encoder.embed_dim, encoder.num_tokens)
        # Per-channel mean/std that undo the loader's normalisation before the targets are
        # computed (VideoMAE un-normalises with the ImageNet statistics); None = use x as is.
        self.target_mean: torch.Tensor | None = None
        self.target_std: torch.Tensor | None = None

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.encoder.grid

    @property
    def num_tokens(self) -> int:
        return self.encoder.num_tokens

    def set_target_normalisation(self, mean, std) -> None:
        self.target_mean = torch.as_tensor(mean, dtype=torch.float32)
        self.target_std = torch.as_tensor(std, dtype=torch.float32)

    def forward(self, x: torch.Tensor, mask: "torch.Tensor | MaskIndex") -> torch.Tensor:
        """Predicted pixels of the masked tubelets, ``[B, N_masked, t*p*p*C]`` (masked tokens in grid order).

        ``mask``: bool ``[B, N]`` (True = masked) or its :class:`MaskIndex` (faster on GPU:
        build it on the CPU with :func:`affectube.models.layers.mask_index`)."""
        index = as_index(mask, self.num_tokens)
        visible = self.encoder.forward_features(x, index)
        return self.decoder(visible, index)

    def targets(self, x: torch.Tensor, mask: "torch.Tensor | MaskIndex") -> torch.Tensor:
        spec = self.spec
        masked = as_index(mask, self.num_tokens).masked
        return patch_targets(x, spec.tubelet, spec.patch, spec.norm_target, self.target_mean, self.target_std, index=masked)

    def loss(self, x: torch.Tensor, mask: "torch.Tensor | MaskIndex") -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, predictions)``: MSE over masked tokens (computed in float32)."""
        index = as_index(mask, self.num_tokens)
        pred = self(x, index)
        loss = F.mse_loss(pred.float(), self.targets(x, index))
        return loss, pred

    def no_weight_decay(self) -> set[str]:
        names = {f"encoder.{n}" for n in self.encoder.no_weight_decay()}
        return names | {"decoder.mask_token", "decoder.pos_embed.weight"}


def build_videomae_encoder(spec: ModelSpec) -> VideoViT:
    return VideoViT(spec)


@register("videomae", encoder=build_videomae_encoder)
def build_videomae(spec: ModelSpec) -> MaskedVideoAutoencoder:
    return MaskedVideoAutoencoder(spec, build_videomae_encoder(spec))
