"""SS-VAERR's supervised baseline: 3D conv front end + ResNet-18 trunk + 2-layer GRU.

Grayscale face crops ``[B, 1, T, H, W]`` (an RGB clip is converted with the ITU-R BT.601
luma weights, on the normalised values) -> ``Conv3d(1, 64, (5, 7, 7), stride (1, 2, 2))``
+ BatchNorm + ReLU + ``MaxPool3d((1, 3, 3), stride (1, 2, 2))`` -> the four residual stages
of timm's ``resnet18`` applied to every frame -> global average pool (512 per frame) ->
a 2-layer GRU (hidden 256) -> per-frame features ``[B, T, 256]``.

The front end and trunk are those of :mod:`affectube.models.resnet_trunk` (same parameter names), so
``finetune.backbone: resnet_gru`` with ``finetune.init: pretrained`` starts them from a pretext's
``encoder.safetensors`` of ``pretrain.model: resnet18`` (:meth:`ResNetGRU.load_trunk`; the GRU starts fresh,
as in SS-VAERR, whose pretext trains the visual front end and fine-tuning adds the temporal model).

It has the encoder interface of :mod:`affectube.models` (``forward_features``,
``embed_dim``, ``grid = (T, 1, 1)``, ``layer_id``/``num_layers``), so every head and
the fine-tuning stage use it like a ViT encoder; its natural head is the per-frame one
(``finetune.head: gru`` adds another GRU; ``linear`` pools the frames).
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn

from affectube.models.resnet_trunk import LUMA, frame_features, frontend_3d, resnet18_stages  # noqa: F401  (LUMA: API)


class ResNetGRU(nn.Module):
    def __init__(self, num_frames: int, hidden: int = 256, gru_layers: int = 2, drop_path: float = 0.0, **_):
        super().__init__()
        self.frontend = frontend_3d()
        self.trunk = resnet18_stages(drop_path)
        self.gru = nn.GRU(512, hidden, num_layers=gru_layers, batch_first=True)
        self.embed_dim = hidden
        self.grid = (int(num_frames), 1, 1)
        self.num_layers = 6  # layer ids for lr decay: 0 front end, 1-4 residual stages, 5 GRU
        self.pretrained_from = None  # the encoder file of load_trunk

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.gru(frame_features(self.frontend, self.trunk, x))
        return seq

    def layer_id(self, name: str) -> int:
        """Depth of a parameter for layer-wise lr decay: 0 front end, 1-4 residual stages, 5 GRU."""
        if name.startswith("frontend"):
            return 0
        if name.startswith("trunk."):
            return 1 + int(name.split(".")[1])
        return self.num_layers - 1

    def load_trunk(self, path: str | os.PathLike) -> None:
        """Front end + trunk from a pretext's ``encoder.safetensors`` of ``pretrain.model: resnet18`` (the GRU
        keeps its initialisation). Another encoder (a ViT) is an error naming the file."""
        from safetensors.torch import load_file

        from affectube.errors import DataError
        from affectube.models.build import load_weights, read_encoder_metadata
        from affectube.models.resnet_trunk import NAME

        spec, _ = read_encoder_metadata(path)
        if spec.model != NAME:
            raise DataError(f"{path}: a {spec.model} encoder; finetune.backbone=resnet_gru starts only from a "
                            f"pretrain.model={NAME} encoder (or use finetune.backbone: encoder)")
        state = load_file(str(path))
        own = {k: v for k, v in self.state_dict().items() if k.startswith(("frontend.", "trunk."))}
        trunk = nn.Module()
        trunk.frontend, trunk.trunk = self.frontend, self.trunk
        load_weights(trunk, state, path)  # every trunk key, shapes checked, nothing left over
        assert set(own) == set(state)
        self.pretrained_from = str(path)
