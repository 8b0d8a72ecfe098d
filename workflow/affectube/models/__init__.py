"""Video transformers for masked video pretraining (VideoMAE, SVFAP) and their encoders.

Public API (used by pretraining and fine-tuning)::

    create_model(name, spec=None, **keys)      # registry: "videomae", "svfap"
    build_pretrain_model(pretrain_cfg)         # encoder + decoder from params.yaml's pretrain section
    build_encoder(pretrain_cfg, drop_path=...) # encoder alone (fine-tuning from scratch)
    save_encoder(path, encoder, info) / load_encoder(path)   # safetensors + spec metadata

An encoder has ``forward_features(x[B,C,T,H,W]) -> [B,N,D]``, ``embed_dim``, ``grid``,
``num_layers`` and ``layer_id(name)``.
"""

from affectube.models.build import (
    build_encoder,
    build_pretrain_model,
    init_encoder_from,
    load_encoder,
    read_encoder_metadata,
    save_encoder,
)
from affectube.models import resnet_trunk, svfap, videomae  # noqa: F401  (importing a model module registers it)
from affectube.models.registry import available, create_encoder, create_model
from affectube.models.spec import SIZES, ModelSpec

__all__ = [
    "SIZES",
    "ModelSpec",
    "available",
    "build_encoder",
    "build_pretrain_model",
    "create_encoder",
    "create_model",
    "init_encoder_from",
    "load_encoder",
    "read_encoder_metadata",
    "save_encoder",
]
