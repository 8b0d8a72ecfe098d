"""Count the FLOPs of an encoder with ``torch.utils.flop_counter`` (no weights needed).

Models are built on the ``meta`` device, so even ViT-L costs no memory or time. The
counter counts matrix multiplies, convolutions and attention (2 FLOPs per
multiply-add); we report multiply-adds (MACs = FLOPs / 2) as the papers do.

    python -m affectube.models.flops --out benchmarks/results/flops.json

compares VideoMAE ViT-B and SVFAP at one 16x160x160 clip (the SVFAP paper's setting).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from affectube.models.layers import MaskIndex, mask_index, num_params
from affectube.models.registry import create_encoder, create_model
from affectube.models.spec import ModelSpec


def count_flops(fn, *args, **kwargs) -> int:
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def encoder_cost(spec: ModelSpec, batch: int = 1, mask_ratio: float | None = None, width: int | None = None) -> dict:
    """MACs and parameters of ``spec``'s encoder on one clip (optionally only its visible tokens,
    and for SVFAP optionally at another width, e.g. the released fine-tuning model's 512)."""
    with torch.device("meta"):
        if width is not None:
            spec = spec.replace(width=width)
        encoder = create_encoder(spec.model, spec)
        x = torch.empty(batch, spec.in_chans, spec.num_frames, spec.input_size, spec.input_size)
        mask = None if mask_ratio is None else _tube_index(spec, batch, mask_ratio)
        with torch.no_grad():
            flops = count_flops(encoder.forward_features, x, mask)
    return {"gmacs": flops / 2 / 1e9 / batch, "params_m": num_params(encoder) / 1e6, "tokens": encoder.num_tokens}


def pretrain_step_flops(spec: ModelSpec, batch: int, mask_ratio: float) -> int:
    """FLOPs of one training step (forward + backward) of the full masked autoencoder."""
    with torch.device("meta"):
        model = create_model(spec.model, spec)
        x = torch.empty(batch, spec.in_chans, spec.num_frames, spec.input_size, spec.input_size)
        mask = _tube_index(spec, batch, mask_ratio)
        with FlopCounterMode(display=False) as counter:
            pred = model(x, mask)
            pred.float().pow(2).mean().backward()
    return int(counter.get_total_flops())


def _tube_index(spec: ModelSpec, batch: int, ratio: float) -> MaskIndex:
    """A tube mask's indices (built on the CPU, moved to the current default device)."""
    t, h, w = spec.grid
    spatial = torch.zeros(h * w, dtype=torch.bool, device="cpu")
    spatial[: int(ratio * h * w)] = True
    mask = spatial.repeat(t).expand(batch, -1).contiguous()
    return mask_index(mask).to(torch.empty(0).device)


def compare(frames: int = 16, size: int = 160) -> dict:
    common = dict(size="base", num_frames=frames, input_size=size, tubelet=2, patch=16)
    vit = ModelSpec(model="videomae", **common)
    svfap = ModelSpec(model="svfap", svfap_stages=(12, 6, 3), svfap_tokens=8, **common)
    out = {
        "input": f"1 clip, {frames}x{size}x{size}, tubelet 2x16x16",
        "counter": "torch.utils.flop_counter.FlopCounterMode (MACs = FLOPs / 2)",
        "videomae_vit_b": encoder_cost(vit),
        "svfap_b_768": encoder_cost(svfap),
        "svfap_b_512": encoder_cost(svfap, width=512),  # the released SVFAP-B (svfap_base_patch16_160)
        "videomae_vit_b_visible_90": encoder_cost(vit, mask_ratio=0.9),
        "svfap_b_768_visible_90": encoder_cost(svfap, mask_ratio=0.9),
    }
    out["svfap_768_vs_vit_b"] = out["svfap_b_768"]["gmacs"] / out["videomae_vit_b"]["gmacs"]
    out["svfap_512_vs_vit_b"] = out["svfap_b_512"]["gmacs"] / out["videomae_vit_b"]["gmacs"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--out", default=None, help="write the JSON here (default: stdout only)")
    args = parser.parse_args(argv)
    result = compare(args.frames, args.size)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from affectube.io import write_text

        write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
