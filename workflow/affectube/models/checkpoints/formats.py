"""Each publisher's key layout, rewritten into one canonical VideoMAE-style layout.

Canonical keys (those of MCG-NJU/VideoMAE's fine-tuning ``VisionTransformer``)::

    patch_embed.proj.{weight,bias}   pos_embed (learned only)   norm.*   fc_norm.*
    blocks.N.{norm1,norm2}.*  blocks.N.attn.qkv.weight  blocks.N.attn.{q_bias,v_bias}
    blocks.N.attn.proj.*  blocks.N.mlp.{fc1,fc2}.*

A :class:`Layout` holds the canonical tensors, the checkpoint keys that were dropped, notes,
and what the publisher's code fixes outside the weights (LayerNorm eps, input size,
normalisation constants; heads: :mod:`.heads`). SVFAP keeps its own TPSBT keys (see :mod:`.svfap`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from affectube.clips.transforms import IMAGENET_MEAN, IMAGENET_STD
from affectube.errors import DataError


@dataclass
class Layout:
    format: str
    state: dict[str, torch.Tensor]
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    eps: float = 1e-6
    input_size: int = 224
    num_frames: int = 16
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    sinusoidal_stored: bool = False  # the file stores a fixed table under pos_embed (MARLIN)


def split(state: dict, keep_prefix: str, drop_prefixes: tuple[str, ...]) -> tuple[dict, list[str]]:
    """Keys under ``keep_prefix`` (prefix removed) and the dropped rest."""
    kept, dropped = {}, []
    for k, v in state.items():
        if k.startswith(keep_prefix) and not k.startswith(drop_prefixes):
            kept[k[len(keep_prefix):]] = v
        else:
            dropped.append(k)
    return kept, dropped


# ---------------------------------------------------------------- VideoMAE / VideoMAEv2


def videomae_pretrain(state: dict, name: str) -> Layout:
    """``encoder.*`` + ``decoder.*``, ``encoder_to_decoder``, ``mask_token`` (run_mae_pretraining)."""
    kept, dropped = split(state, "encoder.", ("encoder.head.",))
    return _check_cos(Layout(name, kept, dropped))


def videomae_finetune(state: dict, name: str) -> Layout:
    """``blocks.*``, ``fc_norm``, ``head`` (run_class_finetuning)."""
    kept = {k: v for k, v in state.items() if not k.startswith(("head.", "fc_dropout."))}
    dropped = sorted(set(state) - set(kept))
    layout = _check_cos(Layout(name, kept, dropped))
    if "fc_norm.weight" in kept:
        layout.notes.append("fc_norm (applied by the publisher to the mean-pooled token) -> the encoder's final norm "
                            "(applied per token; with finetune.pool_norm: fc_norm the head's own norm is used instead)")
    return layout


def _check_cos(layout: Layout) -> Layout:
    if any(k.endswith("attn.scale") for k in layout.state):
        raise DataError("cosine attention (VideoMAEv2 cos_attn: attn.scale) is not supported by affectube's ViT")
    if any(re.search(r"gamma_\d$", k) for k in layout.state):
        raise DataError("layer scale (gamma_1/gamma_2, init_values > 0) is not supported by affectube's ViT")
    return layout


# ---------------------------------------------------------------- MARLIN

MARLIN_RENAMES = [
    (r"^patch_embedding\.projection\.", "patch_embed.proj."),
    (r"^pos_embedding\.emb$", "pos_embed"),
    (r"\.mlp\.layers\.0\.linear\.", ".mlp.fc1."),
    (r"\.mlp\.layers\.1\.linear\.", ".mlp.fc2."),
]


def marlin(state: dict, name: str = "marlin") -> Layout:
    """ControlNet/MARLIN: ``encoder.*`` (+ ``decoder.*``, ``enc_dec_proj``, Lightning's ``discriminator.*``).
    MARLIN's LayerNorms use torch's default eps (1e-5) and its input is RGB in [0, 1] (no normalisation)."""
    kept, dropped = split(state, "encoder.", ())
    out = {}
    for k, v in kept.items():
        for pat, rep in MARLIN_RENAMES:
            k = re.sub(pat, rep, k)
        out[k] = v
    layout = _check_cos(Layout(name, out, dropped, eps=1e-5, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0]))
    layout.sinusoidal_stored = True
    return layout


# ---------------------------------------------------------------- Hugging Face transformers

HF_RENAMES = [
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"^encoder\.layer\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.q_bias$", r"blocks.\1.attn.q_bias"),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.v_bias$", r"blocks.\1.attn.v_bias"),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.query\.bias$", r"blocks.\1.attn.q_bias"),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.value\.bias$", r"blocks.\1.attn.v_bias"),
    (r"^layernorm\.", "norm."),
]


def hf_videomae(state: dict, config: dict | None, name: str = "transformers-videomae") -> Layout:
    """``transformers`` VideoMAE (``VideoMAEModel``, ``...ForPreTraining``, ``...ForVideoClassification``)."""
    src = {k.removeprefix("videomae."): v for k, v in state.items()}
    out, dropped, qkv = {}, [], {}
    for k, v in src.items():
        m = re.match(r"^encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.weight$", k)
        if m:
            qkv.setdefault(int(m.group(1)), {})[m.group(2)] = v
            continue
        if k.startswith(("decoder.", "encoder_to_decoder.", "mask_token", "classifier.")):
            dropped.append(k)
            continue
        new = k
        for pat, rep in HF_RENAMES:
            new = re.sub(pat, rep, new)
        if new == k and not k.startswith("fc_norm."):
            dropped.append(k)
            continue
        out[new] = v
    for i, parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise DataError(f"transformers layout: layer {i} lacks one of query/key/value weights")
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat([parts["query"], parts["key"], parts["value"]], 0)
    cfg = config or {}
    layout = Layout(name, out, dropped, eps=float(cfg.get("layer_norm_eps", 1e-12)),
                    input_size=int(cfg.get("image_size", 224)),
                    num_frames=int(cfg.get("num_frames", 16)))
    if config is None:
        layout.notes.append("no config.json beside the weights: LayerNorm eps 1e-12, heads of the published width, 224 px, 16 frames")
    if "fc_norm.weight" in out:
        layout.notes.append("fc_norm -> the encoder's final norm (per token)")
    return layout
