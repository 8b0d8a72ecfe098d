"""``pretrain.method: byol``: BYOL for video (Grill et al. 2020; as a video pretext, Feichtenhofer et al. 2021
"A large-scale study on unsupervised spatiotemporal representation learning", and SS-VAERR's Video-BYOL).

Two views of a clip (different temporal windows of the same video, each with its own random resized
crop, flip and colour jitter: :mod:`.views`) go through the online network (encoder -> mean of the
tokens -> projector MLP -> predictor MLP) and the target network (an EMA copy of encoder + projector,
no gradient). The loss is the symmetric normalised MSE

    L = || p1/|p1| - z2'/|z2'| ||^2 + || p2/|p2| - z1'/|z1'| ||^2     (= 4 - 2 cos(p1, z2') - 2 cos(p2, z1'))

averaged over the batch; after every optimizer step the target moves towards the online network with
momentum m(k) = 1 - (1 - base) (cos(pi k / K) + 1) / 2 (:mod:`.ema`).

Differences from the original: the projector/predictor are ``pretrain.head_hidden`` -> ``pretrain.head_dim``
(BYOL: 4096 -> 256) to suit small encoders; the encoder is ``pretrain.model``'s, pooled by the mean of its tokens
(a video ViT, or SS-VAERR's 3D-conv + ResNet-18 trunk: the mean of its per-frame features); colour jitter has no
blur/solarisation; views are two clips of the same video. Their BatchNorm is over the global batch (all ranks), as BYOL's.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from affectube.models import create_encoder
from affectube.train.pretext.batchnorm import GlobalBatchNorm1d
from affectube.train.pretext.ema import EMAPretext, EMAViewMethod


def mlp(dim_in: int, hidden: int, dim_out: int) -> nn.Sequential:
    """BYOL's projector/predictor: Linear -> BatchNorm (over the global batch) -> ReLU -> Linear."""
    return nn.Sequential(nn.Linear(dim_in, hidden), GlobalBatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim_out))


def pooled(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A clip's embedding: the mean of the encoder's (normalised) tokens, ``[B, D]``."""
    return encoder.forward_features(x).mean(dim=1)


def normalised_mse(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``|| p/|p| - z/|z| ||^2`` per row (= 2 - 2 cos)."""
    return (F.normalize(p.float(), dim=-1) - F.normalize(z.float(), dim=-1)).pow(2).sum(-1)


class BYOL(EMAPretext):
    ema_pairs = (("target_encoder", "encoder"), ("target_projector", "projector"))

    def __init__(self, encoder: nn.Module, hidden: int, dim: int, momentum: float = 0.99):
        super().__init__(encoder, momentum)
        self.projector = mlp(encoder.embed_dim, hidden, dim)
        self.predictor = mlp(dim, hidden, dim)
        self.make_targets()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The online projection ``z`` of clips ``x`` (what the collapse check looks at)."""
        return self.projector(pooled(self.encoder, x))

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        return self.target_projector(pooled(self.target_encoder, x))

    def forward(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        """The symmetric loss of a batch of view pairs (a scalar)."""
        b = v1.shape[0]
        both = torch.cat([v1, v2])  # one pass through each network (BatchNorm sees both views)
        p = self.predictor(self.projector(pooled(self.encoder, both)))
        z = self.target(both)
        p1, p2 = p[:b], p[b:]
        z1, z2 = z[:b], z[b:]
        return (normalised_mse(p1, z2) + normalised_mse(p2, z1)).mean()


class BYOLMethod(EMAViewMethod):
    name = "byol"

    def build_model(self, spec, pcfg: dict, dataset=None) -> nn.Module:
        return BYOL(create_encoder(spec.model, spec), pcfg["head_hidden"], pcfg["head_dim"], pcfg["ema_momentum"])

    def build_dataset(self, stores, pcfg: dict, grid, datasets=None, output: str = "float"):
        from affectube.train.pretext.data import view_dataset

        return view_dataset(stores, pcfg, views=2, datasets=datasets, output=output)
