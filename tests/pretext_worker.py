"""Worker of tests/test_pretext_processes.py: pretrains a tiny ViT with BYOL, DINO, then the audio pretext, on
synthetic clips (audio: synthetic clip stores written by the test, ``--stores``) through the real training loop with
the real distributed set-up (run under ``torchrun`` with gloo, or in process).

``python tests/pretext_worker.py OUT --batch B [--methods byol,dino,audio] [--stores DIR]`` writes ``OUT/<method>/``
(log.csv, encoder.safetensors, checkpoints) for each method; exits with the first non-zero exit code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

# a tiny ViT at 32 px, augmented views (crop/flip/colour jitter, seeded per clip), 3 steps
TINY = {"model": "videomae", "size": "tiny", "depth": 1, "width": 64, "input_size": 32, "num_frames": 8, "tubelet": 2,
        "patch": 8, "head_hidden": 32, "head_dim": 16, "dino_out": 20, "dino_local": 1, "steps": 3, "warmup_steps": 1,
        "checkpoint_every": 3, "base_lr": 5e-3, "augment": True, "num_workers": 0}


def dataset(method: str, pcfg: dict, n: int = 16, stores: str | None = None):
    if method == "audio":  # the method's own dataset over clip stores (AudioClips: targets from audio_logmel)
        from affectube.train.pretext.audio import AudioMethod

        return AudioMethod().build_dataset(sorted(str(p) for p in Path(stores).glob("*.h5")), pcfg, None)[0]
    from synthetic_clips import SyntheticClips

    from affectube.train.pretext.multicrop import MultiCropClips
    from affectube.train.pretext.views import ViewClips

    g = SyntheticClips(n, frames=pcfg["num_frames"], size=pcfg["input_size"])
    if method == "byol":
        return ViewClips(g, views=2, seed=pcfg["seed"])
    local = SyntheticClips(n, frames=pcfg["num_frames"] // 2, size=pcfg["input_size"], seed=1)
    return MultiCropClips(g, local, 2, pcfg["dino_local"], seed=pcfg["seed"])


def main(argv: list[str] | None = None) -> int:
    from affectube.config import sections
    from affectube.train import distributed
    from affectube.train.pretrain import Pretrainer

    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--batch", type=int, required=True, help="per process")
    parser.add_argument("--methods", default="byol,dino,audio")
    parser.add_argument("--stores", help="audio: a directory of clip stores with audio_logmel")
    args = parser.parse_args(argv)
    env, device = distributed.init()
    torch.set_num_threads(1)
    try:
        for method in args.methods.split(","):
            pcfg = sections({"pretrain": {**TINY, "method": method, "batch_size": args.batch}}, "pretrain")["pretrain"]
            code = Pretrainer(pcfg, dataset(method, pcfg, stores=args.stores), Path(args.out) / method, env=env, device=device).fit()
            if code:
                return code
        return 0
    finally:
        distributed.cleanup()


if __name__ == "__main__":
    sys.exit(main())
