"""Models are built by name: ``create_model("videomae", **config)``.

Two registries, filled by the model modules with decorators:

* ``PRETRAIN_MODELS``: name -> builder of the self-supervised model (encoder + decoder),
* ``ENCODERS``: name -> builder of the encoder alone (what fine-tuning starts from).

Every builder takes a :class:`affectube.models.spec.ModelSpec` (named sizes live there too).
The registry imports no model (timm's layout): ``affectube.models`` imports the model modules,
which register themselves, so any import of the package fills the tables.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from affectube.errors import UserError
from affectube.models.spec import ModelSpec


PRETRAIN_MODELS: dict[str, Callable[..., nn.Module]] = {}
ENCODERS: dict[str, Callable[..., nn.Module]] = {}
# encoders without a masked-reconstruction model (the ResNet-18 trunk): name -> why ``create_model`` refuses it
NOT_PRETRAINABLE: dict[str, str] = {}


def register(name: str, *, encoder: Callable[..., nn.Module]):
    """Class/function decorator: register a pretraining model and its encoder under ``name``."""

    def wrap(builder: Callable[..., nn.Module]):
        PRETRAIN_MODELS[name] = builder
        ENCODERS[name] = encoder
        return builder

    return wrap


def register_encoder(name: str, builder: Callable[..., nn.Module], *, no_pretraining: str) -> None:
    """Register an encoder that has no self-supervised (masked reconstruction) model; ``no_pretraining``
    is the error :func:`create_model` raises for it (the view-based/audio pretexts train it still)."""
    ENCODERS[name] = builder
    NOT_PRETRAINABLE[name] = no_pretraining


def _lookup(table: dict, name: str, what: str):
    if table is PRETRAIN_MODELS and name in NOT_PRETRAINABLE:
        raise UserError(NOT_PRETRAINABLE[name])
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
    if spec is None:
        return ModelSpec.from_cfg({**config, "model": name})
    if config:
        raise TypeError("pass either a ModelSpec or its keys, not both")
    return spec.replace(model=name)


def available() -> list[str]:
    return sorted(PRETRAIN_MODELS)
