"""Models are built by name: ``create_model("videomae", **config)``.

Two registries, filled by the model modules with decorators:

* ``PRETRAIN_MODELS``: name -> builder of the self-supervised model (encoder + decoder),
* ``ENCODERS``: name -> builder of the encoder alone (what fine-tuning starts from).

Every builder takes a :class:`affectube.models.spec.ModelSpec`.
Named sizes are ViT's (width, depth, heads); ``tiny`` is ViT-Ti (192 x 12, 3 heads):
tests and the CPU demo override its depth with ``pretrain.depth``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from affectube.errors import UserError


@dataclass(frozen=True)
class Size:
    width: int
    depth: int
    heads: int


SIZES: dict[str, Size] = {
    "tiny": Size(192, 12, 3),  # ViT-Ti
    "small": Size(384, 12, 6),  # ViT-S
    "base": Size(768, 12, 12),  # ViT-B (VideoMAE-B, SVFAP-B)
    "large": Size(1024, 24, 16),  # ViT-L
}

PRETRAIN_MODELS: dict[str, Callable[..., nn.Module]] = {}
ENCODERS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str, *, encoder: Callable[..., nn.Module]):
    """Class/function decorator: register a pretraining model and its encoder under ``name``."""

    def wrap(builder: Callable[..., nn.Module]):
        PRETRAIN_MODELS[name] = builder
        ENCODERS[name] = encoder
        return builder

    return wrap


def size(name: str) -> Size:
    if name not in SIZES:
        raise UserError(f"pretrain.size={name!r}: expected one of {sorted(SIZES)}")
    return SIZES[name]


def _lookup(table: dict, name: str, what: str):
    _load_builtin()
    if name not in table:
        raise UserError(f"pretrain.model={name!r}: no {what} of that name (known: {sorted(table)})")
    return table[name]


def create_model(name: str, spec=None, **config) -> nn.Module:
    """The self-supervised model ``name`` (encoder + decoder) from a ModelSpec or its keys."""
    return _lookup(PRETRAIN_MODELS, name, "pretraining model")(_spec(name, spec, config))


def create_encoder(name: str, spec=None, **config) -> nn.Module:
    """The encoder of model ``name`` alone."""
    return _lookup(ENCODERS, name, "encoder")(_spec(name, spec, config))


def _spec(name: str, spec, config: dict):
    from affectube.models.spec import ModelSpec

    if spec is None:
        return ModelSpec.from_cfg({**config, "model": name})
    if config:
        raise TypeError("pass either a ModelSpec or its keys, not both")
    return spec.replace(model=name)


def available() -> list[str]:
    _load_builtin()
    return sorted(PRETRAIN_MODELS)


def _load_builtin() -> None:
    # importing the model modules registers them
    from affectube.models import svfap, videomae  # noqa: F401
