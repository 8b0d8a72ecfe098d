"""sunlicai/SVFAP pretraining checkpoints -> affectube's SVFAP (:class:`affectube.models.svfap.TPSBT`).

The released *pretraining* encoder's reverse blocks attended to the patch embeddings of all
tokens, masked ones included (the masked-token leak), and its multi-scale fusion reshapes the
downsampled tokens with the pre-downsampling frame count. SVFAP's own fine-tuning model
(``modeling_finetune.TPSBT``, which the released checkpoint is loaded into for every
downstream result) has neither: its reverse blocks attend to the bottleneck tokens, as
affectube's TPSBT does, so the weights map one to one.
"""

from __future__ import annotations

import re

import torch

from affectube.errors import DataError
from affectube.models.checkpoints.formats import Layout, split

RENAMES = [
    (r"^spatial_downsamples\.(\d+)\.norm\.", r"spatial_pools.\1.norm."),
    (r"^spatial_downsamples\.(\d+)\.mlp\.fc1\.", r"spatial_pools.\1.score.0."),
    (r"^spatial_downsamples\.(\d+)\.mlp\.fc2\.", r"spatial_pools.\1.score.2."),
]
CS_RENAMES = [  # CSBlock -> CrossSelfBlock
    (r"\.cross_norm1\.", ".cross_norm."),
    (r"\.cross_norm2\.", ".context_norm."),
    (r"\.cross_attn\.q\.weight$", ".cross_attn.q.weight"),
    (r"\.cross_attn\.kv\.weight$", ".cross_attn.kv.weight"),
    (r"\.cross_attn\.proj\.", ".cross_attn.proj."),
    (r"\.(norm1|norm2)\.", r".block.\1."),
    (r"\.attn\.qkv\.weight$", ".block.attn.qkv.weight"),
    (r"\.attn\.proj\.", ".block.attn.proj."),
    (r"\.mlp\.(fc1|fc2)\.", r".block.mlp.\1."),
]


def svfap_pretrain(state: dict) -> tuple[Layout, dict, dict[str, torch.Tensor], list[str]]:
    """``(layout, spec keys, affectube state, notes)``."""
    kept, dropped = split(state, "encoder.", ("encoder.head.",))
    if any(re.search(r"gamma_\d$", k) for k in kept):
        raise DataError("SVFAP with layer scale (gamma_*) is not supported")
    st = dict(kept)
    n_blocks = 1 + max(int(m.group(1)) for k in st if (m := re.match(r"blocks\.(\d+)\.", k)))
    cross = [i for i in range(n_blocks) if f"blocks.{i}.cross_attn.q.weight" in st]
    stage1 = min(cross) if cross else n_blocks
    n_down = 1 + max((int(m.group(1)) for k in st if (m := re.match(r"temporal_downsamples\.(\d+)\.", k))), default=-1)
    out, notes = {}, []
    width, chans, tubelet, patch, _ = st["patch_embed.proj.weight"].shape
    out["patch_embed.proj.weight"], out["patch_embed.proj.bias"] = st.pop("patch_embed.proj.weight"), st.pop("patch_embed.proj.bias")
    for i in range(n_blocks):
        b = f"blocks.{i}"
        keys = [k for k in list(st) if k.startswith(b + ".")]
        q, v = st.pop(f"{b}.attn.q_bias", None), st.pop(f"{b}.attn.v_bias", None)
        inner = f"{b}.block" if i >= stage1 else b
        if q is not None:
            out[f"{inner}.attn.qkv.bias"] = torch.cat([q, torch.zeros_like(v), v])
        cq, cv = st.pop(f"{b}.cross_attn.q_bias", None), st.pop(f"{b}.cross_attn.v_bias", None)
        if cq is not None:
            out[f"{b}.cross_attn.q.bias"] = cq
            out[f"{b}.cross_attn.kv.bias"] = torch.cat([torch.zeros_like(cv), cv])
        for k in keys:
            if k not in st:
                continue
            new = k
            if i >= stage1:
                for pat, rep in CS_RENAMES:
                    new = re.sub(pat, rep, new)
            out[new] = st.pop(k)
    for k in list(st):
        new = k
        for pat, rep in RENAMES:
            new = re.sub(pat, rep, new)
        if new != k or k.startswith(("temporal_downsamples.", "norm.")):
            out[new] = st.pop(k)
    # stage sizes: stage 1 plain blocks, then the cross-self blocks split evenly over the downsamples
    rest = n_blocks - stage1
    if n_down < 1 or rest % n_down:
        raise DataError(f"SVFAP: {rest} cross-self blocks do not split over {n_down} stages")
    stages = [stage1] + [rest // n_down] * n_down
    if n_down > 1:
        notes.append(f"stage sizes {stages} inferred (cross-self blocks split evenly over the {n_down} temporal stages)")
    tokens = out["spatial_pools.0.score.2.weight"].shape[0]
    hidden = out["blocks.0.mlp.fc1.weight"].shape[0]
    spec = {"model": "svfap", "width": int(width),  # num_heads: models/checkpoints/heads.py
            "patch": int(patch), "tubelet": int(tubelet), "in_chans": int(chans), "svfap_stages": stages,
            "svfap_tokens": int(tokens), "mlp_ratio": hidden / width, "norm_eps": 1e-6, "pos_embed": "sinusoidal"}
    notes.append("the released SVFAP encoder was pretrained with the masked-token leak (its reverse blocks attended to "
                 "the embeddings of masked tokens too); affectube runs it as SVFAP's fine-tuning model does (bottleneck "
                 "context), plus affectube's multi-scale fusion of the stages")
    layout = Layout("svfap-pretrain", kept, dropped + [f"encoder.{k}" for k in st], input_size=160)
    return layout, spec, out, notes
