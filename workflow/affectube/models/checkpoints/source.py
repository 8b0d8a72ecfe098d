"""Read a released checkpoint's tensors: safetensors, or a PyTorch pickle loaded with
``weights_only=True`` (plain tensors and containers; the ``argparse.Namespace`` of the
VideoMAE/SVFAP training scripts is allowed, nothing else executes).

The state dict is unwrapped from the publishers' containers (``model``, ``module``,
``state_dict``; MARLIN's Lightning ``.ckpt``) and a DDP ``module.`` prefix is removed. The
training configuration saved beside it (VideoMAE/SVFAP's ``args`` Namespace, Lightning's
``hyper_parameters``, a ``config`` mapping) is returned as ``meta["train_config"]``: the number
of attention heads, which the weights do not determine, is read from it (:func:`config_heads`).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from affectube.errors import DataError

WRAPPERS = ("model", "module", "state_dict", "model_state")
CONFIG_KEYS = ("args", "hyper_parameters", "config")  # VideoMAE/VideoMAEv2/SVFAP scripts, Lightning (MARLIN), others
# names the publishers' configs give the encoder's heads (MARLIN: encoder_num_heads; transformers: num_attention_heads)
HEAD_KEYS = ("num_heads", "encoder_num_heads", "num_attention_heads")


def read_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state, meta)``: the tensors of ``path`` and its metadata (safetensors) or ``{}``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such checkpoint file")
    if path.is_dir():
        return _read_hf_dir(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                state = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception as exc:  # noqa: BLE001  (safetensors has its own error types)
            raise DataError(f"{path}: not a readable safetensors file ({exc})") from None
        config = path.parent / "config.json"
        if config.exists() and not str(meta.get("format", "")).startswith("affectube-"):
            meta = {**meta, "hf_config": config.read_text()}
        return _unwrap(state, path), meta
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: cannot be read as a PyTorch checkpoint with weights_only=True ({exc})") from None
    config = _train_config(obj)
    return _unwrap(obj, path), ({"train_config": config} if config else {})


def _read_hf_dir(path: Path) -> tuple[dict, dict]:
    weights = path / "model.safetensors"
    if not weights.exists():
        raise DataError(f"{path}: a directory checkpoint needs model.safetensors (transformers layout)")
    state, meta = read_state(weights)
    if (path / "config.json").exists():
        meta = {**meta, "hf_config": (path / "config.json").read_text()}
    return state, meta


def _train_config(obj) -> dict:
    """The training configuration saved in a pickle (``args``, ``hyper_parameters``, ``config``), as a dict."""
    if not isinstance(obj, dict):
        return {}
    for key in CONFIG_KEYS:
        value = obj.get(key)
        if isinstance(value, argparse.Namespace):
            value = vars(value)
        if isinstance(value, dict) and not _is_state(value):
            return dict(value)
    return {}


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, dict) and not _is_state(obj):
            inner = next((obj[k] for k in WRAPPERS if k in obj and isinstance(obj[k], dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not _is_state(obj):
        raise DataError(f"{path}: no state dict of tensors found (top-level keys: {list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__})")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _is_state(obj: dict) -> bool:
    tensors = sum(isinstance(v, torch.Tensor) for v in obj.values())
    return tensors > 0 and tensors >= len(obj) // 2


def hf_config(meta: dict) -> dict | None:
    return json.loads(meta["hf_config"]) if "hf_config" in meta else None


def config_heads(meta: dict) -> tuple[int | None, str]:
    """``(heads, where)`` named by the checkpoint's own config (transformers ``config.json`` or the
    saved training configuration), or ``(None, "")``."""
    for where, cfg in (("config.json", hf_config(meta)), ("the saved training config", meta.get("train_config"))):
        for key in HEAD_KEYS:
            value = (cfg or {}).get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value, f"{where} {key}"
    return None, ""
