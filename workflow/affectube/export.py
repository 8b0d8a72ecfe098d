"""Stage ``export``: an affectube encoder in the Hugging Face ``transformers`` VideoMAE layout.

``python -m affectube export --model PATH --out-dir DIR`` writes ``DIR/config.json``
(``VideoMAEConfig``, ``architectures: [VideoMAEModel]``), ``DIR/model.safetensors`` and
``DIR/preprocessor_config.json`` (``VideoMAEImageProcessor``: input size and the
normalisation constants the encoder was trained with), so that
``transformers.VideoMAEModel.from_pretrained(DIR)`` loads it offline and its
``last_hidden_state`` equals affectube's ``encoder.forward_features`` (``pixel_values`` are
``[B, T, C, H, W]`` there, ``[B, C, T, H, W]`` here).

``PATH``: an ``encoder.safetensors`` (pretraining), a fine-tuned ``model.safetensors`` (its
encoder; the head is not exported), a finetune run directory (``--fold``, default 0), or a
released checkpoint (imported first, see :mod:`affectube.models.checkpoints`).

Mapping: timm's fused ``qkv`` -> ``query``/``key``/``value`` weights and ``q_bias``/``v_bias``
(transformers has no key bias; a key bias adds the same value to every logit of a query, which
the softmax cancels, so dropping it changes nothing); ``norm`` -> ``layernorm``
(``use_mean_pooling: false``). Only the plain ViT (``pretrain.model: videomae``) with the fixed
sine-cosine position table has a transformers counterpart.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import torch
import torch.nn as nn

from affectube.clips.transforms import IMAGENET_MEAN, IMAGENET_STD
from affectube.errors import DataError, UserError
from affectube.io import atomic_path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="encoder.safetensors, a fine-tuned model.safetensors, a finetune run "
                                                       "dir, or a released checkpoint")
    parser.add_argument("--fold", type=int, default=0, help="fold of a run directory (default 0)")
    parser.add_argument("--out-dir", required=True, help="output directory (transformers layout)")
    parser.add_argument("--num-heads", type=int, default=None,
                        help="attention heads of a released checkpoint of a non-published width that does not name them")


def run(args: argparse.Namespace) -> int:
    encoder = load_any_encoder(args.model, fold=args.fold, num_heads=args.num_heads)
    export_encoder(encoder, Path(args.out_dir))
    log.info("exported %s -> %s (transformers VideoMAEModel layout)", args.model, args.out_dir)
    return 0


# ---------------------------------------------------------------- any source -> encoder


def load_any_encoder(path: str | os.PathLike, fold: int = 0, num_heads: int | None = None, drop_path: float = 0.0) -> nn.Module:
    """The encoder of an affectube file/run, or of a released checkpoint. ``encoder.info`` holds its
    provenance and, when known, its preprocessing (``preprocessing``: input_size, num_frames, mean, std)."""
    from affectube.models import finetuned

    path = Path(path)
    if path.is_dir():  # a finetune run (fold K's model) or a transformers directory (config.json + model.safetensors)
        run_model = path / f"fold{fold}" / "model.safetensors"
        if run_model.exists():
            path = run_model
        elif not (path / "model.safetensors").exists():
            raise UserError(f"--model {path}: neither a finetune run with fold{fold}/model.safetensors nor a transformers directory")
        else:
            from affectube.models.checkpoints import is_affectube_file

            if is_affectube_file(path / "model.safetensors"):  # one fold's output directory
                path = path / "model.safetensors"
    elif not path.exists():
        raise UserError(f"--model {path}: no such file")
    meta = {}
    if path.suffix == ".safetensors":
        meta = finetuned.read_metadata(path)
    fmt = meta.get("format")
    if fmt == "affectube-encoder/1":
        from affectube.models import load_encoder

        return load_encoder(path, drop_path=drop_path)
    if fmt == finetuned.FORMAT:
        return _finetuned_encoder(path, meta, drop_path)
    from affectube.models.checkpoints import import_checkpoint

    return import_checkpoint(path, num_heads=num_heads, drop_path=drop_path)[0]


def _finetuned_encoder(path: Path, meta: dict, drop_path: float = 0.0) -> nn.Module:
    from safetensors.torch import load_file

    from affectube.models import ModelSpec, create_encoder, finetuned
    from affectube.models.build import load_weights

    info = finetuned.decode(meta, path, required=())
    spec_json = info.get("encoder_spec")
    if not spec_json:
        raise DataError(f"{path}: a fine-tuned model without an encoder spec (ResNet-GRU baseline?): nothing to export")
    spec = ModelSpec.from_cfg(spec_json).replace(drop_path=drop_path)
    encoder = create_encoder(spec.model, spec)
    state = {k.removeprefix("encoder."): v for k, v in load_file(str(path)).items() if k.startswith("encoder.")}
    load_weights(encoder, state, path)
    pretrain = info.get("pretrain", {})
    encoder.info = {"source": str(path), "pretrain": pretrain}
    return encoder


# ---------------------------------------------------------------- encoder -> transformers layout


def hf_config(spec) -> dict:
    return {
        "architectures": ["VideoMAEModel"], "model_type": "videomae",
        "image_size": spec.input_size, "patch_size": spec.patch, "num_channels": spec.in_chans,
        "num_frames": spec.num_frames, "tubelet_size": spec.tubelet, "hidden_size": spec.dim,
        "num_hidden_layers": spec.encoder_depth, "num_attention_heads": spec.heads,
        "intermediate_size": round(spec.dim * spec.mlp_ratio), "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02,
        "layer_norm_eps": spec.block_eps, "qkv_bias": True, "use_mean_pooling": False,
        "decoder_num_attention_heads": 6, "decoder_hidden_size": 384, "decoder_num_hidden_layers": 4,
        "decoder_intermediate_size": 1536, "norm_pix_loss": True, "torch_dtype": "float32",
    }


def hf_state(encoder: nn.Module) -> dict[str, torch.Tensor]:
    spec = encoder.spec
    if spec.model != "videomae":
        raise UserError(f"export: pretrain.model={spec.model!r} has no transformers counterpart (only videomae)")
    if spec.pos_embed != "sinusoidal":
        raise UserError("export: transformers VideoMAE has only the fixed sine-cosine position table; this encoder's is learned")
    st = {k: v.detach().float().cpu() for k, v in encoder.state_dict().items()}
    d = spec.dim
    out = {"embeddings.patch_embeddings.projection.weight": st["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": st["patch_embed.proj.bias"],
           "layernorm.weight": st["norm.weight"], "layernorm.bias": st["norm.bias"]}
    for i in range(spec.encoder_depth):
        b, h = f"blocks.{i}.", f"encoder.layer.{i}."
        qkv, bias = st[b + "attn.qkv.weight"], st[b + "attn.qkv.bias"]
        out[h + "attention.attention.query.weight"] = qkv[:d]
        out[h + "attention.attention.key.weight"] = qkv[d:2 * d]
        out[h + "attention.attention.value.weight"] = qkv[2 * d:]
        out[h + "attention.attention.q_bias"] = bias[:d]
        out[h + "attention.attention.v_bias"] = bias[2 * d:]
        for ours, theirs in (("attn.proj", "attention.output.dense"), ("norm1", "layernorm_before"),
                             ("norm2", "layernorm_after"), ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")):
            out[h + theirs + ".weight"] = st[b + ours + ".weight"]
            out[h + theirs + ".bias"] = st[b + ours + ".bias"]
    return {k: v.contiguous().clone() for k, v in out.items()}


def export_encoder(encoder: nn.Module, out_dir: Path) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``preprocessor_config.json`` into ``out_dir``."""
    from safetensors.torch import save_file

    spec = encoder.spec
    state = hf_state(encoder)
    if spec.final_eps != spec.block_eps:
        log.warning("export: the final LayerNorm eps %g becomes %g (transformers has one layer_norm_eps): features "
                    "differ by ~1e-6", spec.final_eps, spec.block_eps)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pre = {"mean": spec.input_mean, "std": spec.input_std} if spec.input_mean is not None else {}
    processor = {"image_processor_type": "VideoMAEImageProcessor", "do_resize": True,
                 "size": {"shortest_edge": spec.input_size}, "do_center_crop": True,
                 "crop_size": {"height": spec.input_size, "width": spec.input_size}, "do_rescale": True,
                 "rescale_factor": 1 / 255, "do_normalize": True,
                 "image_mean": list(pre.get("mean", IMAGENET_MEAN)), "image_std": list(pre.get("std", IMAGENET_STD))}
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    for name, doc in (("config.json", hf_config(spec)), ("preprocessor_config.json", processor)):
        with atomic_path(out_dir / name) as tmp:
            Path(tmp).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return out_dir
