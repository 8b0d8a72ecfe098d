"""``pretrain.method: dino``: DINO for video (Caron et al. 2021; as a video pretext, SVT: Ranasinghe et al. 2022,
and SS-VAERR's DINO baseline).

Multi-crop (:mod:`.multicrop`): 2 global views (whole clips, large crops) and ``pretrain.dino_local``
local views (half the time span, small crops) of one video. The student (encoder -> mean of the tokens
-> DINO head: a 3-layer MLP to a ``head_dim`` bottleneck, L2-normalised, then a weight-normalised linear
layer to ``dino_out`` = K prototypes) sees every view; the teacher (an EMA of the student, no gradient)
sees the global views only. With teacher logits ``t`` and student logits ``s``:

    P_teacher = softmax((t - c) / tau_t),   log P_student = log_softmax(s / tau_s)
    L = mean over (global view i, view j != i) of  - sum_k P_teacher_i[k] log P_student_j[k]
    c <- m_c c + (1 - m_c) mean over the batch (all ranks) of t            (centering, after the loss)

and the teacher follows the student with the cosine momentum schedule of :mod:`.ema`.

Differences from the original: local views have the global tensor size (repeated frames, resized
crops: the ViT keeps a fixed token grid) instead of 96 px; the encoder is ``pretrain.model``'s (a video ViT, or
SS-VAERR's 3D-conv + ResNet-18 trunk); the teacher temperature is constant
(``dino_teacher_temp``; DINO warms it up from 0.04 to 0.07); the last layer is never frozen; K and the
head are small by default for small encoders.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from affectube.models import create_encoder
from affectube.train import distributed
from affectube.train.pretext.batchnorm import GlobalBatchNorm1d
from affectube.train.pretext.byol import pooled
from affectube.train.pretext.ema import EMAPretext, EMAViewMethod


class DINOHead(nn.Module):
    def __init__(self, dim_in: int, hidden: int, bottleneck: int, out: int):
        super().__init__()
        # with BatchNorm (DINO's use_bn option): the mean-pooled tokens of a small video ViT differ little between
        # clips, and without it the centred teacher drifts to the uniform distribution (measured: docs/pretrain.md)
        # over the global batch (all ranks), as DINO's SyncBatchNorm
        self.mlp = nn.Sequential(nn.Linear(dim_in, hidden), GlobalBatchNorm1d(hidden), nn.GELU(), nn.Linear(hidden, hidden),
                                 GlobalBatchNorm1d(hidden), nn.GELU(), nn.Linear(hidden, bottleneck))
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, out, bias=False))
        with torch.no_grad():
            self.last.parametrizations.weight.original0.fill_(1.0)  # g = 1 (DINO's norm_last_layer)
        self.last.parametrizations.weight.original0.requires_grad_(False)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(F.normalize(self.mlp(x), dim=-1))


def teacher_probs(logits: torch.Tensor, center: torch.Tensor, temp: float) -> torch.Tensor:
    """DINO's centred and sharpened teacher distribution ``softmax((t - c) / tau_t)``."""
    return F.softmax((logits.float() - center) / temp, dim=-1)


def dino_loss(teacher: list[torch.Tensor], student: list[torch.Tensor], student_temp: float) -> torch.Tensor:
    """Mean cross-entropy ``-sum P_t log P_s`` over every (teacher view i, student view j != i) pair."""
    total, pairs = 0.0, 0
    for i, pt in enumerate(teacher):
        for j, s in enumerate(student):
            if i == j:
                continue
            total = total + torch.sum(-pt * F.log_softmax(s.float() / student_temp, dim=-1), dim=-1).mean()
            pairs += 1
    return total / pairs


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the rows of ``p``."""
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean()


class DINO(EMAPretext):
    ema_pairs = (("teacher_encoder", "encoder"), ("teacher_head", "head"))

    def __init__(self, encoder: nn.Module, hidden: int, bottleneck: int, out: int, *, n_global: int = 2,
                 teacher_temp: float = 0.04, student_temp: float = 0.1, center_momentum: float = 0.9, momentum: float = 0.996):
        super().__init__(encoder, momentum)
        self.head = DINOHead(encoder.embed_dim, hidden, bottleneck, out)
        self.make_targets()
        self.register_buffer("center", torch.zeros(1, out))
        self.n_global, self.teacher_temp, self.student_temp = int(n_global), float(teacher_temp), float(student_temp)
        self.center_momentum = float(center_momentum)
        self.last_teacher_entropy = math.nan  # of the last batch (a collapse check: 0 = one-hot, log K = uniform)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The student's bottleneck embedding of clips ``x`` (before the prototypes)."""
        return self.head.mlp(pooled(self.encoder, x))

    def student(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(pooled(self.encoder, x))

    @torch.no_grad()
    def teacher(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher_head(pooled(self.teacher_encoder, x))

    def forward(self, *views: torch.Tensor) -> torch.Tensor:
        """The loss of a batch of multi-crop views (global first); updates the center afterwards."""
        b = views[0].shape[0]
        t = self.teacher(torch.cat(views[: self.n_global])).float()
        s = self.student(torch.cat(views))
        probs = teacher_probs(t, self.center, self.teacher_temp)
        loss = dino_loss(list(probs.split(b)), list(s.split(b)), self.student_temp)
        self.last_teacher_entropy = float(entropy(probs))
        if self.training:
            self.update_center(t)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """``c <- m c + (1 - m) x`` the batch mean of the teacher logits (averaged over ranks)."""
        batch_center = distributed.all_reduce_mean(teacher_logits.mean(dim=0, keepdim=True))
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


class DINOMethod(EMAViewMethod):
    name = "dino"

    def build_model(self, spec, pcfg: dict, dataset=None) -> nn.Module:
        return DINO(create_encoder(spec.model, spec), pcfg["head_hidden"], pcfg["head_dim"], pcfg["dino_out"],
                    teacher_temp=pcfg["dino_teacher_temp"], student_temp=pcfg["dino_student_temp"],
                    center_momentum=pcfg["dino_center_momentum"], momentum=pcfg["ema_momentum"])  # fmt: skip

    def build_dataset(self, stores, pcfg: dict, grid, datasets=None, output: str = "float"):
        from affectube.train.pretext.data import clip_dataset
        from affectube.train.pretext.multicrop import GLOBAL_SCALE, LOCAL_SCALE, MultiCropClips

        if pcfg["num_frames"] % 2:
            raise ValueError(f"pretrain.method=dino: local views take half the frames: num_frames={pcfg['num_frames']} must be even")
        g = clip_dataset(stores, pcfg, datasets, output, scale=GLOBAL_SCALE)
        local = clip_dataset(stores, pcfg, datasets, output, scale=LOCAL_SCALE, num_frames=pcfg["num_frames"] // 2)
        return MultiCropClips(g, local, 2, pcfg["dino_local"], seed=pcfg["seed"]), g
