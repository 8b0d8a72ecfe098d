"""Several augmented views of one video per sample (BYOL, DINO), reproducible from ``(seed, epoch, index)``.

View ``v`` of sample code ``epoch * n + i`` is item ``(epoch * V + v) * n + i`` of the base dataset
(``ClipDataset`` reads an index ``>= n`` as (epoch, item)): the same video, with its own random clip
start (a different temporal window) and its own random resized crop and flip, all seeded, so any
rank, worker or resumed run draws the same views. Each view also gets a colour jitter (brightness,
contrast, saturation, grayscale with probability ``gray_p``), drawn on the CPU and applied with
the clip transform on the training device (:meth:`ViewClips.to_device`), in pixel units [0, 1]
when the dataset's normalisation is known.

Items: ``(view_0, ..., view_{V-1}, jitter [V, 4])`` on the float path; on the uint8 path each
view is ``(uint8 crops, window)`` flattened into the tuple.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from affectube.train.masked_data import sample_rng

JITTER_STREAM = 7  # rng stream of the colour jitter (0/1 are the clip's own draws)


class ColourJitter:
    """Per-clip brightness (additive), contrast and saturation (multiplicative) and grayscale."""

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, gray_p: float = 0.2):
        self.brightness, self.contrast, self.saturation, self.gray_p = brightness, contrast, saturation, gray_p

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """``[brightness shift, contrast factor, saturation factor, grayscale 0/1]``."""
        return np.array([
            rng.uniform(-self.brightness, self.brightness) * 0.25,
            rng.uniform(1 - self.contrast, 1 + self.contrast),
            rng.uniform(1 - self.saturation, 1 + self.saturation),
            float(rng.random() < self.gray_p),
        ], np.float32)  # fmt: skip

    @staticmethod
    def apply(video: torch.Tensor, params: torch.Tensor, mean=None, std=None) -> torch.Tensor:
        """``video`` float [B,C,T,H,W] (normalised by ``mean``/``std`` if given), ``params`` [B,4]."""
        b, c = video.shape[:2]
        x = video
        if mean is not None:
            m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, c, 1, 1, 1)
            s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, c, 1, 1, 1)
            x = x * s + m
        p = params.to(x.device, x.dtype)
        shift, contrast, sat, gray = (p[:, i].view(b, 1, 1, 1, 1) for i in range(4))
        x = x + shift
        x = (x - x.mean(dim=(1, 2, 3, 4), keepdim=True)) * contrast + x.mean(dim=(1, 2, 3, 4), keepdim=True)
        if c == 3:
            luma = (x * torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1, 1)).sum(1, keepdim=True)
            x = luma + (x - luma) * sat
            x = torch.where(gray > 0.5, luma.expand_as(x), x)
        if mean is not None:
            x = (x.clamp(0, 1) - m) / s
        return x


def pack_view(item, uint8: bool) -> list:
    """One view of a loader item: (uint8 clip, crop window) for the on-device transform, else the float clip."""
    video = item["video"] if isinstance(item, dict) else item
    return [video, item["window"]] if uint8 else [torch.as_tensor(video, dtype=torch.float32)]


def draw_jitters(jitter: "ColourJitter", seed: int, epoch: int, index: int, views: int) -> torch.Tensor:
    """The colour-jitter parameters of every view of sample ``(epoch, index)``, seeded."""
    rng = sample_rng(seed, epoch, index, JITTER_STREAM)
    return torch.from_numpy(np.stack([jitter.draw(rng) for _ in range(views)]))


def view_on_device(batch, v: int, uint8: bool, transform, device) -> torch.Tensor:
    """View ``v`` of a collated batch (packed by :func:`pack_view`), float32 on ``device``."""
    if uint8:
        return transform.apply(batch[2 * v].to(device, non_blocking=True), batch[2 * v + 1])
    return batch[v].to(device, non_blocking=True)


class ViewClips(Dataset):
    def __init__(self, base: Dataset, views: int = 2, seed: int = 0, jitter: ColourJitter | None = None):
        self.base, self.views, self.seed = base, int(views), int(seed)
        self.n = len(base)
        self.jitter = jitter or ColourJitter()
        self.uint8 = getattr(base, "output", "float") == "uint8"
        self.transform = base.transform if self.uint8 else None
        self.mean = getattr(base, "mean", None)
        self.std = getattr(base, "std", None)

    def __len__(self) -> int:
        return self.n

    def view_item(self, code: int, v: int):
        epoch, index = divmod(int(code), self.n)
        return self.base[(epoch * self.views + v) * self.n + index]

    def __getitem__(self, code: int) -> tuple:
        epoch, index = divmod(int(code), self.n)
        out = []
        for v in range(self.views):
            out += pack_view(self.view_item(code, v), self.uint8)
        out.append(draw_jitters(self.jitter, self.seed, epoch, index, self.views))
        return tuple(out)

    def to_device(self, batch, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """A loader batch -> the ``V`` views, float32 ``[B,C,T,H,W]`` on ``device``, colour-jittered."""
        jitter = batch[-1].to(device)
        views = []
        for v in range(self.views):
            video = view_on_device(batch, v, self.uint8, self.transform, device)
            views.append(ColourJitter.apply(video, jitter[:, v], self.mean, self.std))
        return views

    def clips(self, indices, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """Samples ``indices`` batched and prepared as :meth:`to_device` does (``clips(...)[0]``: the first views)."""
        return self.to_device(default_collate([self[int(i)] for i in indices]), device)
