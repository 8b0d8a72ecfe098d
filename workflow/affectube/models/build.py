"""Build models from params, save encoders as safetensors, load them back (no pickles).

``encoder.safetensors`` holds the encoder's weights and, in its metadata, the JSON of
its :class:`ModelSpec` (``affectube.spec``) plus free-form provenance
(``affectube.info``), so :func:`load_encoder` needs nothing else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn

from affectube.errors import DataError
from affectube.io import atomic_path
from affectube.models.registry import create_encoder, create_model
from affectube.models.spec import ModelSpec

FORMAT = "affectube-encoder/1"


def build_pretrain_model(pretrain_cfg: dict, **overrides) -> nn.Module:
    """The self-supervised model (encoder + decoder) of a ``pretrain`` params section."""
    spec = ModelSpec.from_cfg(pretrain_cfg, **overrides)
    return create_model(spec.model, spec)


def build_encoder(pretrain_cfg: dict, drop_path: float = 0.0, in_chans: int | None = None, **overrides) -> nn.Module:
    """A freshly initialised encoder of a ``pretrain`` params section (fine-tuning from scratch)."""
    if in_chans is not None:
        overrides["in_chans"] = in_chans
    spec = ModelSpec.from_cfg(pretrain_cfg, drop_path=drop_path, **overrides)
    return create_encoder(spec.model, spec)


def encoder_state(encoder: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}


def save_encoder(path: str | os.PathLike, encoder: nn.Module, info: dict | None = None) -> None:
    """Write ``encoder``'s weights + spec atomically to ``path`` (safetensors)."""
    from safetensors.torch import save_file

    metadata = {
        "format": FORMAT,
        "affectube.spec": json.dumps(encoder.spec.to_dict(), sort_keys=True),
        "affectube.info": json.dumps(info or {}, sort_keys=True, default=str),
    }
    with atomic_path(path) as tmp:
        save_file(encoder_state(encoder), str(tmp), metadata=metadata)


def read_encoder_metadata(path: str | os.PathLike) -> tuple[ModelSpec, dict]:
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such encoder file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise DataError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise DataError(f"{path}: not an affectube encoder (metadata format={meta.get('format')!r}, expected {FORMAT})")
    spec = ModelSpec.from_cfg(json.loads(meta["affectube.spec"]))
    return spec, json.loads(meta.get("affectube.info", "{}"))


def load_encoder(path: str | os.PathLike, drop_path: float | None = None, map_location: str = "cpu") -> nn.Module:
    """Rebuild the encoder saved by :func:`save_encoder` and load its weights."""
    from safetensors.torch import load_file

    spec, info = read_encoder_metadata(path)
    if drop_path is not None:
        spec = spec.replace(drop_path=drop_path)
    encoder = create_encoder(spec.model, spec)
    load_weights(encoder, load_file(str(path), device=map_location), path)
    encoder.info = info
    return encoder


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], source) -> None:
    """``load_state_dict`` that names the file and the mismatching keys/shapes."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}")
        if shapes:
            parts.append(f"shape mismatch {shapes[:5]}")
        raise DataError(f"{source}: weights do not fit the model: {'; '.join(parts)}")
    module.load_state_dict(state)


def init_encoder_from(encoder: nn.Module, path: str | os.PathLike):
    """Initialise ``encoder`` from another run (an ``encoder.safetensors`` or a training checkpoint)
    or from a released checkpoint (VideoMAE, VideoMAEv2, MARLIN, SVFAP, transformers: see
    :mod:`affectube.models.checkpoints`; returns its :class:`ImportReport`)."""
    from safetensors.torch import load_file

    from affectube.models.checkpoints import init_from_checkpoint, is_affectube_file

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: pretrain.init_from: no such file")
    if not is_affectube_file(path):
        return init_from_checkpoint(encoder, path)
    if path.suffix == ".safetensors":
        read_encoder_metadata(path)
        state = load_file(str(path))
    else:
        from affectube.train.checkpoint import load_checkpoint

        model_state = load_checkpoint(path)["model"]
        state = {k.removeprefix("encoder."): v for k, v in model_state.items() if k.startswith("encoder.")}
    load_weights(encoder, state, path)
