"""The features each publisher's reference model is compared on, computed by an imported affectube
encoder: one definition for ``benchmarks/verify_checkpoints.py`` (which compares them with the
publishers' code) and the CI golden tests (which compare them with the stored reference outputs).

* ``tokens``: the encoder's tokens after its final norm (VideoMAE/VideoMAEv2 pretraining encoders,
  MARLIN ``extract_features(seq_mean_pool=False)``, transformers ``last_hidden_state``);
* ``fc_norm_pooled``: ``fc_norm(mean of the last block's tokens)`` (VideoMAE fine-tuned ``forward_features``);
* ``svfap_stage_tokens``: the tokens after stage 1 and after the last stage, flattened and concatenated
  (SVFAP's fine-tuning ``TPSBT``, without affectube's multi-scale fusion).

:func:`randomise` moves every trained parameter away from its init, so a tensor lost or mapped to the
wrong place changes these features.
"""

from __future__ import annotations

import torch
import torch.nn as nn

KINDS = ("tokens", "fc_norm_pooled", "svfap_stage_tokens")


def reference_features(encoder: nn.Module, x: torch.Tensor, kind: str) -> torch.Tensor:
    with torch.no_grad():
        if kind == "tokens":
            return encoder.forward_features(x)
        if kind == "fc_norm_pooled":
            return encoder.norm(encoder.forward_features(x, final_norm=False).mean(1))
        if kind == "svfap_stage_tokens":
            seen = {}
            last = len(encoder.blocks) - 1
            hooks = [encoder.blocks[i].register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out)) for i in (0, last)]
            try:
                encoder.forward_features(x)
            finally:
                for h in hooks:
                    h.remove()
            return torch.cat([seen[0].flatten(1), seen[last].flatten(1)], 1)
    raise ValueError(f"features kind {kind!r}: expected one of {', '.join(KINDS)}")


def randomise(model: nn.Module, seed: int) -> None:
    """Every trained parameter random (norm weights around 1, biases non-zero), drawn in parameter
    order from ``seed`` (MARLIN's frozen sine-cosine table, a parameter with requires_grad=False,
    stays as built)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1.0 + 0.1 * noise if name.endswith("weight") and p.dim() == 1 else 0.1 * noise)
