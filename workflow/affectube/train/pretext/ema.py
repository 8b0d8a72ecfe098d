"""Exponential moving averages of a network (BYOL's target, DINO's teacher).

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
