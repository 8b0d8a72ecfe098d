"""``pretrain.method: masked``: masked video autoencoding (VideoMAE / SVFAP), the stage's original pretext.

The model is ``pretrain.model``'s encoder + decoder (:mod:`affectube.models.videomae`); the loss is
the MSE between predicted and (per-patch normalised) pixels of the masked tubelets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from affectube.errors import ConfigError
from affectube.models import create_model
from affectube.models.layers import mask_index


class MaskedReconstruction:
    name = "masked"
    figure = True  # reconstruction.png

    def build_model(self, spec, pcfg: dict, dataset=None) -> torch.nn.Module:
        return create_model(spec.model, spec)

    def build_dataset(self, stores, pcfg: dict, grid, datasets=None, output: str = "float"):
        from affectube.models.registry import NOT_PRETRAINABLE
        from affectube.train.pretrain import build_masked_dataset

        if pcfg["model"] in NOT_PRETRAINABLE:  # before reading any store: the ResNet-18 trunk has no tokens to mask
            raise ConfigError(f"params.yaml: {NOT_PRETRAINABLE[pcfg['model']]}")

        return build_masked_dataset(stores, pcfg, grid, datasets, output=output)

    def loss(self, forward, model, batch, dataset, device, autocast) -> torch.Tensor:
        index = mask_index(batch[1]).to(device, non_blocking=True)  # counted on the CPU: no sync
        video, _ = dataset.to_device(batch, device)  # uint8 path: crop/resize/normalise here
        with autocast():
            pred = forward(video, index)
        return F.mse_loss(pred.float(), model.targets(video, index))

    def after_step(self, model, done: int, total: int) -> None:
        pass

    def visible_tokens(self, dataset) -> int:
        return int((~dataset[0][1]).sum())
