"""The 3D-conv + ResNet-18 trunk of SS-VAERR's visual encoder, as a pretext encoder (``pretrain.model: resnet18``).

Grayscale face crops ``[B, 1, T, H, W]`` (an RGB clip is converted with the ITU-R BT.601 luma weights, on
the normalised values) -> ``Conv3d(1, 64, (5, 7, 7), stride (1, 2, 2))`` + BatchNorm + ReLU +
``MaxPool3d((1, 3, 3), stride (1, 2, 2))`` -> the four residual stages of timm's ``resnet18`` applied to
every frame -> global average pool: one 512-d feature per frame, ``[B, T, 512]``.

It has the encoder interface of :mod:`affectube.models` (``forward_features``, ``embed_dim``,
``grid = (T, 1, 1)``, ``num_tokens``, ``spec``, ``layer_id``/``num_layers``), so the view-based and audio
pretexts train it as they train a ViT (a clip's embedding: the mean over its frames) and
``encoder.safetensors`` keeps it with its spec. Fine-tuning starts from it either as an encoder
(``finetune.backbone: encoder``, any head; ``head: gru`` is SS-VAERR's temporal model) or inside the
ResNet-18 + GRU baseline (``finetune.backbone: resnet_gru``, :meth:`ResNetGRU.load_trunk
<affectube.models.resnet_gru.ResNetGRU.load_trunk>`). Masked reconstruction needs a ViT's tokens: with
``pretrain.method: masked`` this model is refused (:data:`affectube.models.registry.NOT_PRETRAINABLE`).

timm is imported when the trunk is built (not when :mod:`affectube.models` is imported).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from affectube.models.registry import register_encoder
from affectube.models.spec import ModelSpec

NAME = "resnet18"
LUMA = (0.299, 0.587, 0.114)
FEATURES = 512  # resnet18's last stage


def frontend_3d() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(1, 64, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3), bias=False),
        nn.BatchNorm3d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
    )


def resnet18_stages(drop_path: float = 0.0) -> nn.Sequential:
    """timm's resnet18 without its 2D stem (the 3D front end replaces conv1/bn1/maxpool)."""
    import timm

    resnet = timm.create_model("resnet18", pretrained=False, num_classes=0, drop_path_rate=drop_path)
    return nn.Sequential(resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)


def to_gray(x: torch.Tensor, who: str = "ResNet-18 trunk") -> torch.Tensor:
    if x.shape[1] == 3:
        w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1, 1)
        return (x * w).sum(1, keepdim=True)
    if x.shape[1] != 1:
        raise ValueError(f"{who} expects 1 or 3 channels, got {x.shape[1]}")
    return x


def frame_features(frontend: nn.Module, trunk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` [B,C,T,H,W] -> the trunk's pooled per-frame features ``[B, T, 512]``."""
    x = to_gray(x)
    b, _, t = x.shape[:3]
    f = frontend(x)  # [B, 64, T, h, w]
    f = f.transpose(1, 2).reshape(b * t, 64, *f.shape[-2:])
    return trunk(f).mean((-2, -1)).reshape(b, t, FEATURES)


class ResNetTrunk(nn.Module):
    """3D conv front end + ResNet-18 stages: per-frame features ``[B, T, 512]`` (no temporal model)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.frontend = frontend_3d()
        self.trunk = resnet18_stages(spec.drop_path)
        self.embed_dim = FEATURES
        self.grid = (int(spec.num_frames), 1, 1)
        self.num_tokens = int(spec.num_frames)
        self.num_layers = 5  # layer ids for lr decay: 0 front end, 1-4 residual stages

    def forward_features(self, x: torch.Tensor, mask=None, final_norm: bool = True) -> torch.Tensor:
        if mask is not None:
            raise ValueError("the ResNet-18 trunk has no tokens to mask (masked reconstruction needs a ViT encoder)")
        return frame_features(self.frontend, self.trunk, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def layer_id(self, name: str) -> int:
        name = name.removeprefix("encoder.")
        if name.startswith("frontend"):
            return 0
        if name.startswith("trunk."):
            return 1 + int(name.split(".")[1])
        return self.num_layers - 1

    def no_weight_decay(self) -> set[str]:
        return set()  # BatchNorm weights and biases are 1-D: the optimizer's groups leave them undecayed


register_encoder(
    NAME, ResNetTrunk,
    no_pretraining=("pretrain.model=resnet18 (SS-VAERR's 3D-conv + ResNet-18 trunk) is a CNN without tokens to mask: "
                    "pretrain.method=masked needs a ViT encoder (videomae or svfap); train it with method byol, dino or audio"),
)  # fmt: skip
