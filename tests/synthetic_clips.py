"""A deterministic stand-in clip dataset for the tests: Gaussian blobs drifting across frames."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class SyntheticClips(Dataset):
    """``n`` clips ``[C,T,S,S]`` of Gaussian blobs drifting across frames (fixed by ``seed``)."""

    def __init__(self, n: int, chans: int = 3, frames: int = 8, size: int = 32, seed: int = 0, noise: float = 0.0):
        self.n, self.chans, self.frames, self.size, self.seed, self.noise = n, chans, frames, size, seed, noise

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        index = int(index) % self.n  # epoch-encoded indices: the same clips every epoch
        rng = np.random.default_rng([self.seed, index])
        t = np.arange(self.frames, dtype=np.float32)[:, None, None]
        yy, xx = np.mgrid[0 : self.size, 0 : self.size].astype(np.float32)
        video = np.zeros((self.chans, self.frames, self.size, self.size), np.float32)
        for _ in range(3):
            cy, cx = rng.uniform(0.2, 0.8, 2) * self.size
            vy, vx = rng.uniform(-1.5, 1.5, 2)
            sigma = rng.uniform(0.08, 0.2) * self.size
            colour = rng.normal(0, 1, self.chans).astype(np.float32)
            blob = np.exp(-(((yy - cy - vy * t) ** 2 + (xx - cx - vx * t) ** 2) / (2 * sigma**2)))
            video += colour[:, None, None, None] * blob[None]
        if self.noise:
            video += rng.normal(0, self.noise, video.shape).astype(np.float32)
        return {"video": torch.from_numpy(video), "label": -1, "subject": f"s{index % 4}", "video_id": f"v{index}"}
