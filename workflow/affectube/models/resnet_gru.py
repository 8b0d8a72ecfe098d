"""SS-VAERR's supervised baseline: 3D conv front end + ResNet-18 trunk + 2-layer GRU.

Grayscale face crops ``[B, 1, T, H, W]`` (an RGB clip is converted with the ITU-R BT.601
luma weights, on the normalised values) -> ``Conv3d(1, 64, (5, 7, 7), stride (1, 2, 2))``
+ BatchNorm + ReLU + ``MaxPool3d((1, 3, 3), stride (1, 2, 2))`` -> the four residual stages
of timm's ``resnet18`` applied to every frame -> global average pool (512 per frame) ->
a 2-layer GRU (hidden 256) -> per-frame features ``[B, T, 256]``.

It has the encoder interface of :mod:`affectube.models` (``forward_features``,
``embed_dim``, ``grid = (T, 1, 1)``, ``layer_id``/``num_layers``), so every head and
the fine-tuning stage use it like a ViT encoder; its natural head is the per-frame one
(``finetune.head: gru`` adds another GRU; ``linear`` pools the frames).
"""

from __future__ import annotations

import torch
import torch.nn as nn

LUMA = (0.299, 0.587, 0.114)


class ResNetGRU(nn.Module):
    def __init__(self, num_frames: int, hidden: int = 256, gru_layers: int = 2, drop_path: float = 0.0, **_):
        super().__init__()
        import timm

        self.frontend = nn.Sequential(
            nn.Conv3d(1, 64, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3), bias=False),
            nn.BatchNorm3d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        resnet = timm.create_model("resnet18", pretrained=False, num_classes=0, drop_path_rate=drop_path)
        # the trunk is resnet18 without its 2D stem (the 3D front end replaces conv1/bn1/maxpool)
        self.trunk = nn.Sequential(resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)
        self.gru = nn.GRU(512, hidden, num_layers=gru_layers, batch_first=True)
        self.embed_dim = hidden
        self.grid = (int(num_frames), 1, 1)
        self.num_layers = 6  # layer ids for lr decay: 0 front end, 1-4 residual stages, 5 GRU

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 3:
            w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1, 1)
            x = (x * w).sum(1, keepdim=True)
        elif x.shape[1] != 1:
            raise ValueError(f"ResNetGRU expects 1 or 3 channels, got {x.shape[1]}")
        b, _, t = x.shape[:3]
        f = self.frontend(x)  # [B, 64, T, h, w]
        f = f.transpose(1, 2).reshape(b * t, 64, *f.shape[-2:])
        f = self.trunk(f).mean((-2, -1)).reshape(b, t, 512)
        seq, _ = self.gru(f)
        return seq

    def layer_id(self, name: str) -> int:
        """Depth of a parameter for layer-wise lr decay: 0 front end, 1-4 residual stages, 5 GRU."""
        if name.startswith("frontend"):
            return 0
        if name.startswith("trunk."):
            return 1 + int(name.split(".")[1])
        return self.num_layers - 1
