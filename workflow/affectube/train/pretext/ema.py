"""Exponential moving averages of a network (BYOL's target, DINO's teacher), and what BYOL and DINO share:
:class:`EMAPretext` (the model: an online encoder with heads and their EMA copies) and :class:`EMAViewMethod`
(the method: a loss on a batch of views, the EMA update after every optimizer step).

``target <- m * target + (1 - m) * online`` for every parameter (buffers such as BatchNorm's
running statistics are copied), with the momentum of BYOL (Grill et al. 2020, eq. in sec. 3.1)
rising from ``base`` to 1 along a cosine:

    m(k) = 1 - (1 - base) * (cos(pi * k / K) + 1) / 2,    k = optimizer steps done before the update, K = total steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def cosine_momentum(step: int, total: int, base: float) -> float:
    """EMA momentum after ``step`` of ``total`` optimizer steps (0-based: ``step = 0`` gives ``base``)."""
    progress = min(max(step, 0) / max(total, 1), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In place: each parameter of ``target`` <- ``momentum`` x itself + (1 - ``momentum``) x ``online``'s;
    buffers are copied. The two modules must have the same structure."""
    t_params, o_params = list(target.parameters()), list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError(f"EMA: target has {len(t_params)} parameters, online {len(o_params)}")
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, [p.detach() for p in o_params], alpha=1.0 - momentum)
    for tb, ob in zip(target.buffers(), online.buffers()):
        tb.copy_(ob)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with ``requires_grad=False`` everywhere (an EMA target's start)."""
    import copy

    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


class EMAPretext(nn.Module):
    """An online ``encoder`` (+ heads) and EMA copies of some of them. Subclasses set ``ema_pairs``:
    ``(target attribute, online attribute)`` names, e.g. ``("target_encoder", "encoder")``."""

    ema_pairs: tuple[tuple[str, str], ...] = ()

    def __init__(self, encoder: nn.Module, momentum: float):
        super().__init__()
        self.spec = encoder.spec
        self.encoder = encoder
        self.base_momentum = float(momentum)  # EMA momentum at step 0 (rises to 1 along a cosine)

    def make_targets(self) -> None:
        """The EMA copies, once the online modules exist."""
        for target, online in self.ema_pairs:
            setattr(self, target, frozen_copy(getattr(self, online)))

    @property
    def num_tokens(self) -> int:
        return self.encoder.num_tokens

    def no_weight_decay(self) -> set[str]:
        return {f"encoder.{n}" for n in self.encoder.no_weight_decay()}

    def update_target(self, momentum: float) -> None:
        for target, online in self.ema_pairs:
            ema_update(getattr(self, target), getattr(self, online), momentum)


class EMAViewMethod:
    """The ``pretrain.method`` object of an :class:`EMAPretext` trained on views of a clip (BYOL, DINO):
    subclasses add ``name``, ``build_model`` and ``build_dataset``."""

    figure = False  # the rule's reconstruction.png shows the views (pretext/figure.py)

    def loss(self, forward, model, batch, dataset, device, autocast) -> torch.Tensor:
        views = dataset.to_device(batch, device)
        with autocast():
            return forward(*views).float()

    def after_step(self, model: EMAPretext, done: int, total: int) -> None:
        model.update_target(cosine_momentum(done - 1, total, model.base_momentum))

    def visible_tokens(self, dataset) -> int:
        return 0
