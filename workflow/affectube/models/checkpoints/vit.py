"""Canonical VideoMAE-style tensors (:mod:`.formats`) -> affectube's ``VideoViT`` state and spec.

``q_bias``/``v_bias`` become timm's fused ``qkv.bias`` = ``[q_bias, 0, v_bias]`` (the key
has no bias in VideoMAE's attention); a checkpoint without them gets a zero ``qkv.bias``.
"""

from __future__ import annotations

import re

import torch

from affectube.errors import DataError
from affectube.models.checkpoints.formats import Layout



def architecture(layout: Layout) -> dict:
    """ModelSpec keys read off the weights (width, depth, patch, tubelet, channels, MLP ratio);
    ``num_heads`` is left to :func:`affectube.models.checkpoints.heads.resolve_heads`."""
    st = layout.state
    if "patch_embed.proj.weight" not in st:
        raise DataError(f"{layout.format}: no patch embedding (patch_embed.proj.weight) in the checkpoint")
    width, chans, tubelet, patch, patch_w = st["patch_embed.proj.weight"].shape
    if patch != patch_w:
        raise DataError(f"{layout.format}: non-square patches {patch}x{patch_w} are not supported")
    depth = 1 + max((int(m.group(1)) for k in st if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    if depth < 1:
        raise DataError(f"{layout.format}: no transformer blocks (blocks.N.*) in the checkpoint")
    hidden = st["blocks.0.mlp.fc1.weight"].shape[0]
    pos = "learned" if ("pos_embed" in st and not layout.sinusoidal_stored) else "sinusoidal"
    return {"model": "videomae", "width": int(width), "depth": int(depth),
            "patch": int(patch), "tubelet": int(tubelet), "in_chans": int(chans),
            "mlp_ratio": hidden / width, "norm_eps": layout.eps, "pos_embed": pos}


def to_affectube(layout: Layout) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """``(state, unused canonical keys, notes)`` in affectube's ``VideoViT`` names."""
    st = dict(layout.state)
    out: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    depth = 1 + max(int(m.group(1)) for k in st if (m := re.match(r"blocks\.(\d+)\.", k)))
    for name in ("patch_embed.proj.weight", "patch_embed.proj.bias"):
        if name in st:
            out[name] = st.pop(name)
    for i in range(depth):
        b = f"blocks.{i}."
        for part in ("norm1", "norm2", "attn.proj", "mlp.fc1", "mlp.fc2"):
            for leaf in ("weight", "bias"):
                if b + f"{part}.{leaf}" in st:
                    out[b + f"{part}.{leaf}"] = st.pop(b + f"{part}.{leaf}")
        w = st.pop(b + "attn.qkv.weight", None)
        if w is None:
            raise DataError(f"{layout.format}: {b}attn.qkv.weight missing")
        out[b + "attn.qkv.weight"] = w
        q, v = st.pop(b + "attn.q_bias", None), st.pop(b + "attn.v_bias", None)
        fused = st.pop(b + "attn.qkv.bias", None)
        dim = w.shape[0] // 3
        if fused is not None:
            out[b + "attn.qkv.bias"] = fused
        elif q is not None and v is not None:
            out[b + "attn.qkv.bias"] = torch.cat([q, torch.zeros_like(v), v])
        else:
            out[b + "attn.qkv.bias"] = torch.zeros(3 * dim, dtype=w.dtype)
            if i == 0:
                notes.append("no q/v biases in the checkpoint (qkv_bias=False): zero qkv.bias")
    norm = "norm" if "norm.weight" in st else ("fc_norm" if "fc_norm.weight" in st else None)
    if norm:
        out["norm.weight"], out["norm.bias"] = st.pop(f"{norm}.weight"), st.pop(f"{norm}.bias")
    if "pos_embed" in st:
        out["pos_embed.weight"] = st.pop("pos_embed")
    return out, sorted(st), notes
