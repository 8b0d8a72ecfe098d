"""A real (tiny) pretraining run on synthetic clips, to be interrupted by a signal.

``python -m slurm_preempt_probe OUT_DIR [STEPS]`` builds engineer C's
:class:`affectube.train.pretrain.Pretrainer` (VideoMAE, one block of width 32, 4x32x32
clips) on :class:`~affectube.train.masked_data.SyntheticClips` and calls ``fit()``, which
polls :func:`affectube.train.preempt.requested` every step (handlers installed as
the ``pretrain`` CLI installs them); the exit status is what
``fit()`` returns (0 done, 75 preempted after a checkpoint). Run it again in the same
OUT_DIR to resume from ``OUT_DIR/checkpoints/last.pt``.
"""

from __future__ import annotations

import logging
import sys
from functools import partial

import torch

from affectube.config import sections
from affectube.train import preempt
from affectube.train.masked_data import MaskedClips, tube_mask
from synthetic_clips import SyntheticClips
from affectube.train.pretrain import Pretrainer

TINY = {
    "model": "videomae",
    "size": "tiny",
    "depth": 1,
    "width": 32,
    "input_size": 32,
    "num_frames": 4,
    "tubelet": 2,
    "patch": 8,
    "mask_ratio": 0.75,
    "decoder_width": 16,
    "decoder_depth": 1,
    "batch_size": 2,
    "warmup_steps": 2,
    "base_lr": 0.5,  # scaled by batch/256: large enough that every step moves the weights
    "checkpoint_every": 1000,  # only the preemption checkpoint is written before the end
    "augment": False,
    "recon_clips": 1,
    "seed": 0,
}


def main(out_dir: str, steps: int = 300) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    pcfg = sections({"pretrain": {**TINY, "steps": steps}}, "pretrain")["pretrain"]
    grid = (pcfg["num_frames"] // pcfg["tubelet"], pcfg["input_size"] // pcfg["patch"], pcfg["input_size"] // pcfg["patch"])
    data = MaskedClips(
        SyntheticClips(16, frames=pcfg["num_frames"], size=pcfg["input_size"], seed=0),
        partial(tube_mask, grid, pcfg["mask_ratio"]),
        seed=pcfg["seed"],
    )
    preempt.install()  # as the pretrain CLI does (affectube.train.pretrain.run)
    try:
        return Pretrainer(pcfg, data, out_dir).fit()
    finally:
        preempt.uninstall()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], *(int(a) for a in sys.argv[2:3])))
