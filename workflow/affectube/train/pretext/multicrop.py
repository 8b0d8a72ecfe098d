"""DINO's multi-crop for video: global views and local views of one video, in space and time.

Global view ``g`` of sample code ``epoch * n + i``: item ``(epoch * G + g) * n + i`` of the global
``ClipDataset`` (``num_frames`` frames, the clip transform's usual random resized crop). Local view
``l``: the same from the local ``ClipDataset``, which samples **half the frames** (half the time span)
and crops **a small area** (``LOCAL_SCALE`` of the face crop); on the device each local frame is
repeated twice in time, so local views have the global views' tensor shape and the encoder's token
grid (a ViT with fixed position embeddings; DINO resizes local crops to 96 px instead). Every view
gets its own colour jitter (:class:`affectube.train.pretext.views.ColourJitter`). All draws are
seeded by ``(seed, epoch, index)``.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, default_collate

from affectube.train.pretext.views import ColourJitter, draw_jitters, pack_view, view_on_device

GLOBAL_SCALE = (0.4, 1.0)  # area fraction of the face crop (DINO: 0.4-1 global, 0.05-0.4 local)
LOCAL_SCALE = (0.15, 0.4)


class MultiCropClips(Dataset):
    def __init__(self, global_base: Dataset, local_base: Dataset, n_global: int = 2, n_local: int = 2, seed: int = 0):
        if len(global_base) != len(local_base):
            raise ValueError("multi-crop: the global and local datasets must index the same videos")
        self.g, self.l, self.n_global, self.n_local, self.seed = global_base, local_base, int(n_global), int(n_local), int(seed)
        self.n = len(global_base)
        self.jitter = ColourJitter()
        self.uint8 = getattr(global_base, "output", "float") == "uint8"
        self.mean, self.std = getattr(global_base, "mean", None), getattr(global_base, "std", None)

    def __len__(self) -> int:
        return self.n

    @property
    def views(self) -> int:
        return self.n_global + self.n_local

    def __getitem__(self, code: int) -> tuple:
        epoch, index = divmod(int(code), self.n)
        out = []
        for base, count in ((self.g, self.n_global), (self.l, self.n_local)):
            for v in range(count):
                out += pack_view(base[(epoch * count + v) * self.n + index], self.uint8)
        out.append(draw_jitters(self.jitter, self.seed, epoch, index, self.views))
        return tuple(out)

    def to_device(self, batch, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """The ``n_global`` global then ``n_local`` local views, float32 ``[B,C,T,H,W]`` on ``device``."""
        jitter = batch[-1].to(device)
        views = []
        for v in range(self.views):
            base = self.g if v < self.n_global else self.l
            video = view_on_device(batch, v, self.uint8, getattr(base, "transform", None), device)
            if v >= self.n_global:
                video = video.repeat_interleave(2, dim=2)  # half the time span at the global frame count
            views.append(ColourJitter.apply(video, jitter[:, v], self.mean, self.std))
        return views

    def clips(self, indices, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        return self.to_device(default_collate([self[int(i)] for i in indices]), device)
