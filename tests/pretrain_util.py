"""Helpers for the models/pretrain tests: tiny configs, synthetic clips, a CLI worker.

Run as a script (``python tests/pretrain_util.py OUT [--steps N ...]``, optionally under
``torchrun``) it pretrains a tiny model on synthetic clips through the real training
loop, with the real distributed set-up and preemption handling, and exits with the
trainer's exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch

from affectube.clips.masking import TubeMaskGenerator
from affectube.models import ModelSpec
from affectube.models.layers import patchify, unpatchify
from affectube.train.masked_data import MaskedClips
from synthetic_clips import SyntheticClips

REPO = Path(__file__).resolve().parents[1]

TINY = dict(size="tiny", width=64, depth=2, input_size=32, num_frames=8, tubelet=2, patch=8, decoder_width=32, decoder_depth=1)
TINY_BY_MODEL = {
    "videomae": TINY,
    "svfap": {**TINY, "svfap_stages": [1, 1, 1], "svfap_tokens": 2},
}


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine, two OpenMP threads spin-wait and run
    tiny models 10-100x slower. Restored afterwards (other areas' tests share the process)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pretrain_cfg(model: str = "videomae", **over) -> dict:
    from affectube.config import sections

    base = {
        **TINY_BY_MODEL[model],
        "model": model,
        "mask_ratio": 0.75,
        "batch_size": 4,
        "steps": 6,
        "warmup_steps": 2,
        "checkpoint_every": 3,
        "base_lr": 5e-3,
        "augment": False,
    }
    base.update(over)
    return sections({"pretrain": base}, "pretrain")["pretrain"]


def synthetic_dataset(pcfg: dict, n: int = 16, seed: int = 0) -> MaskedClips:
    spec = ModelSpec.from_cfg(pcfg)
    base = SyntheticClips(n, frames=spec.num_frames, size=spec.input_size, seed=seed)
    return MaskedClips(base, TubeMaskGenerator(spec.grid, pcfg["mask_ratio"]), seed=pcfg["seed"])


def perturb_masked(x: torch.Tensor, mask: torch.Tensor, tubelet: int, patch: int, grid, scale: float = 3.0) -> torch.Tensor:
    """``x`` with random changes to the pixels of masked tubelets only."""
    patches = patchify(x, tubelet, patch)
    g = torch.Generator().manual_seed(123)
    noise = torch.randn(patches.shape, generator=g) * scale
    changed = torch.where(mask[..., None], patches + noise, patches)
    return unpatchify(changed, grid, tubelet, patch, x.shape[1])


def main(argv: list[str] | None = None) -> int:
    from affectube.train import distributed, preempt
    from affectube.train.pretrain import Pretrainer

    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--model", default="videomae")
    parser.add_argument("--set", default="{}", help="JSON overrides of the pretrain section")
    parser.add_argument("--clips", type=int, default=16)
    args = parser.parse_args(argv)
    pcfg = pretrain_cfg(args.model, **json.loads(args.set))
    env, device = distributed.init()
    preempt.install()
    torch.set_num_threads(1)
    try:
        trainer = Pretrainer(pcfg, synthetic_dataset(pcfg, args.clips), args.out, env=env, device=device)
        return trainer.fit()
    finally:
        preempt.uninstall()
        distributed.cleanup()


if __name__ == "__main__":
    sys.exit(main())
