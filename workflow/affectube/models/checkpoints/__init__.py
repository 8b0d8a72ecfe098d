"""Start from released checkpoints: MCG-NJU/VideoMAE, OpenGVLab/VideoMAEv2, ControlNet/MARLIN,
sunlicai/SVFAP and the Hugging Face ``transformers`` VideoMAE layout.

* :func:`import_checkpoint` builds an affectube encoder from a checkpoint file (its own
  architecture, read off the weights; its own input size unless ``num_frames``/``input_size``
  are given) and returns it with an :class:`ImportReport`.
* :func:`init_from_checkpoint` loads a checkpoint into an encoder built from params.yaml
  (``pretrain.init_from``): a shape mismatch is an error naming the key and both shapes.

The format is detected from the keys (:func:`detect`), never guessed; position embeddings
follow :mod:`.posembed`. The checkpoint's input size, frames and normalisation constants are
returned in ``report.preprocessing`` and stored in ``encoder.info["checkpoint"]``.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn as nn

from affectube.errors import DataError
from affectube.models.checkpoints.detect import FORMATS, detect
from affectube.models.checkpoints.report import ImportReport
from affectube.models.checkpoints.source import hf_config, read_state

log = logging.getLogger(__name__)
__all__ = ["FORMATS", "ImportReport", "convert", "detect", "import_checkpoint", "init_from_checkpoint", "is_affectube_file",
           "read_state"]


def is_affectube_file(path: str | os.PathLike) -> bool:
    """An affectube ``encoder.safetensors`` or training checkpoint (``affectube-checkpoint/1``)?"""
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        return False
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                return str((fh.metadata() or {}).get("format", "")).startswith("affectube-")
        except Exception:  # noqa: BLE001  (unreadable: let the caller's loader name the problem)
            return True
    try:
        with torch.serialization.safe_globals([__import__("argparse").Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001
        return True
    return isinstance(obj, dict) and obj.get("format") == "affectube-checkpoint/1"


def convert(path: str | os.PathLike, num_heads: int | None = None):
    """``(spec keys, affectube state, report)`` of a checkpoint, without building a model."""
    from affectube.models.checkpoints import formats as F

    state, meta = read_state(path)
    fmt = detect(state, meta, str(path))
    if fmt == "affectube":
        raise DataError(f"{path}: an affectube encoder: load it with affectube.models.load_encoder")
    if fmt == "svfap-pretrain":
        from affectube.models.checkpoints.svfap import svfap_pretrain

        layout, spec, out, notes = svfap_pretrain(state)
        unused: list[str] = []
    else:
        if fmt == "videomae-pretrain":
            layout = F.videomae_pretrain(state, fmt)
        elif fmt == "videomae-finetune":
            layout = F.videomae_finetune(state, fmt)
        elif fmt == "marlin":
            layout = F.marlin(state, fmt)
        else:
            layout = F.hf_videomae(state, hf_config(meta), fmt)
        from affectube.models.checkpoints.vit import architecture, to_affectube

        spec = architecture(layout)
        out, unused, notes = to_affectube(layout)
        if layout.sinusoidal_stored:
            from affectube.models.checkpoints.posembed import is_sinusoidal

            table = out.pop("pos_embed.weight", None)
            if table is not None and not is_sinusoidal(table):
                out["pos_embed.weight"] = table
                spec["pos_embed"] = "learned"
            elif table is not None:
                notes.append("stored position table is the fixed sine-cosine one: rebuilt, not copied")
    from affectube.models.checkpoints.heads import resolve_heads

    spec["num_heads"], heads_note = resolve_heads(spec["width"], num_heads, meta, str(path), fmt)
    if heads_note:
        notes.append(heads_note)
    spec.update(input_size=layout.input_size, num_frames=layout.num_frames, input_mean=layout.mean, input_std=layout.std)
    report = ImportReport(source=str(path), format=fmt, dropped=sorted(layout.dropped) + [f"({k})" for k in unused],
                          notes=layout.notes + notes,
                          preprocessing={"input_size": layout.input_size, "num_frames": layout.num_frames,
                                         "mean": layout.mean, "std": layout.std})
    return spec, out, report


def import_checkpoint(path: str | os.PathLike, num_frames: int | None = None, input_size: int | None = None,
                      drop_path: float = 0.0, num_heads: int | None = None) -> tuple[nn.Module, ImportReport]:
    """A new affectube encoder with the checkpoint's weights (its architecture from the weights)."""
    from affectube.models.registry import create_encoder
    from affectube.models.spec import ModelSpec

    spec_keys, state, report = convert(path, num_heads)
    own = {"input_size": report.preprocessing["input_size"], "num_frames": report.preprocessing["num_frames"]}
    if num_frames is not None:
        spec_keys["num_frames"] = int(num_frames)
    if input_size is not None:
        spec_keys["input_size"] = int(input_size)
    spec = ModelSpec.from_cfg({**spec_keys, "drop_path": drop_path})
    encoder = create_encoder(spec.model, spec)
    _load(encoder, state, report, own)
    encoder.info = {"checkpoint": report.to_dict(), "preprocessing": report.preprocessing}
    log.info("%s", report.summary())
    return encoder, report


def init_from_checkpoint(encoder: nn.Module, path: str | os.PathLike, num_heads: int | None = None) -> ImportReport:
    """Load a released checkpoint into ``encoder`` (built from params.yaml), in place."""
    mine = encoder.spec
    # heads are not stored in the weights: the encoder's own (params.yaml) are taken
    spec_keys, state, report = convert(path, num_heads or mine.heads)
    own = {"input_size": report.preprocessing["input_size"], "num_frames": report.preprocessing["num_frames"]}
    for key, ours in (("model", mine.model), ("num_heads", mine.heads), ("mlp_ratio", mine.mlp_ratio)):
        theirs = spec_keys.get(key)
        if theirs is not None and (abs(theirs - ours) > 1e-6 if isinstance(ours, float) else theirs != ours):
            raise DataError(f"{path}: the checkpoint's {key}={theirs} but pretrain gives {ours}")
    from affectube.clips.transforms import IMAGENET_MEAN

    if mine.input_mean is None and list(spec_keys["input_mean"]) != list(IMAGENET_MEAN):
        report.notes.append(f"the checkpoint was trained on inputs normalised with mean {spec_keys['input_mean']}, std "
                            f"{spec_keys['input_std']}; this run normalises with ImageNet's")
    if spec_keys.get("pos_embed") == "learned" and mine.pos_embed != "learned":
        report.notes.append("the checkpoint's learned position table is dropped: pretrain.pos_embed is sinusoidal")
        state.pop("pos_embed.weight", None)
    if abs((spec_keys.get("norm_eps") or 1e-6) - mine.final_eps) > 0 and mine.norm_eps is None:
        report.notes.append(f"LayerNorm eps: the checkpoint's {spec_keys.get('norm_eps')}, this encoder's "
                            f"{mine.block_eps} (blocks) / {mine.final_eps} (final norm)")
    _load(encoder, state, report, own)
    encoder.info = {**getattr(encoder, "info", {}), "checkpoint": report.to_dict()}
    log.info("%s", report.summary())
    return report


def _load(encoder: nn.Module, state: dict[str, torch.Tensor], report: ImportReport, own: dict) -> None:
    from affectube.models.checkpoints import posembed
    from affectube.models.layers import token_grid

    spec = encoder.spec
    target = encoder.state_dict()
    if "pos_embed.weight" in state and "pos_embed.weight" in target:
        table = state["pos_embed.weight"]
        t_src = own["num_frames"] // spec.tubelet
        src = posembed.source_grid(table.shape[1], (t_src, spec.grid[0]))
        if src != spec.grid:
            state["pos_embed.weight"] = posembed.resize(table, src, spec.grid)
            report.notes.append(f"learned position embedding interpolated from grid {src} to {spec.grid}")
    elif spec.pos_embed == "sinusoidal":
        own_grid = token_grid(own["num_frames"], own["input_size"], spec.tubelet, spec.patch)
        if own_grid != spec.grid:
            report.notes.append(f"fixed sine-cosine position table rebuilt for grid {spec.grid} (checkpoint: {own_grid})")
    bad = [f"{k}: checkpoint {tuple(v.shape)} vs affectube {tuple(target[k].shape)}"
           for k, v in state.items() if k in target and tuple(v.shape) != tuple(target[k].shape)]
    if bad:
        raise DataError(f"{report.source}: shape mismatch ({report.format}): " + "; ".join(bad[:5]) +
                        " (patch, tubelet, channels or width differ from the encoder's)")
    unknown = sorted(set(state) - set(target))
    if unknown:
        raise DataError(f"{report.source}: converted keys with no place in the affectube encoder: {unknown[:5]}")
    with torch.no_grad():
        for k, v in state.items():
            target[k].copy_(v.to(target[k].dtype))
    report.loaded = sorted(state)
    report.initialised = sorted(k for k in target if k not in state and _is_persistent(encoder, k))


def _is_persistent(encoder: nn.Module, key: str) -> bool:
    return key in dict(encoder.named_parameters()) or key in dict(encoder.named_buffers())
