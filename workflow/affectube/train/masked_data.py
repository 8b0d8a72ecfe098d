"""Pretraining samples: a clip and its tube mask, reproducible from ``(seed, epoch, index)``.

:class:`MaskedClips` wraps any clip dataset (items are dicts with ``video`` [C,T,H,W] or
bare tensors) and is indexed by the codes of
:class:`affectube.train.distributed.ResumableSampler` (``epoch * n + index``). Each
sample's clip, augmentation and mask come from generators seeded by ``(seed, epoch, index)``, so the same
clip gets the same mask whichever rank, worker or resumed run reads it; that is what
makes a 2-process run equal a 1-process run and a resumed run equal an uninterrupted one.

Over a ``ClipDataset(output="uint8")`` (what pretraining uses on a GPU) the samples are
``(uint8 crops [T,S,S,C], mask, window)``: :meth:`MaskedClips.to_device` moves a loader batch to
the device and crops/resizes/normalises it there (``transform.apply``), giving the float clips
``[B,C,T,S,S]`` of the CPU path.

The tests' stand-in dataset (smooth moving blobs) is ``tests/synthetic_clips.py``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

MaskFn = Callable[[np.random.Generator], np.ndarray]


def sample_rng(seed: int, epoch: int, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index, stream])


class MaskedClips(Dataset):
    """``code -> (video [C,T,H,W] float32, mask bool [N])``, or ``(video uint8 [T,H,W,C], mask,
    window int64 [5])`` when ``base`` is a ``ClipDataset(output="uint8")`` (see :meth:`to_device`).

    ``base`` must accept epoch-encoded indices (``ClipDataset`` and the tests' ``SyntheticClips``
    do: its clip sampling and augmentation are then seeded by ``(seed, epoch, index)``).
    The mask is the item's own ``mask`` (``ClipDataset(mask_generator=...)``) or else
    ``mask_fn(rng)`` with ``rng`` seeded by ``(seed, epoch, index)``.
    """

    def __init__(self, base: Dataset, mask_fn: MaskFn | None = None, seed: int = 0):
        self.base, self.mask_fn, self.seed = base, mask_fn, seed
        self.n = len(base)
        # the uint8 path: the crop/resize/normalise of each clip is left to to_device
        self.transform = base.transform if getattr(base, "output", "float") == "uint8" else None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, code: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.base[int(code)]
        video = item["video"] if isinstance(item, dict) else item
        if isinstance(item, dict) and "mask" in item:
            mask = item["mask"]
        elif self.mask_fn is not None:
            epoch, index = divmod(int(code), self.n)
            mask = self.mask_fn(sample_rng(self.seed, epoch, index))
        else:
            raise TypeError("MaskedClips: the items carry no 'mask' and no mask_fn was given")
        mask = torch.as_tensor(np.asarray(mask, dtype=bool))
        if self.transform is not None:
            return video, mask, item["window"]
        return torch.as_tensor(video, dtype=torch.float32), mask

    def to_device(self, batch, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """A loader batch -> ``(video float32 [B,C,T,H,W] on device, mask bool [B,N] where it was)``.
        On the uint8 path the crops travel as uint8 and are transformed on ``device``."""
        video = batch[0].to(device, non_blocking=True)
        if self.transform is not None:
            video = self.transform.apply(video, batch[2])
        return video, batch[1]

    def clips(self, indices, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Samples ``indices`` batched and prepared as :meth:`to_device` does (figures, shape checks)."""
        return self.to_device(default_collate([self[int(i)] for i in indices]), device)


def tube_mask(grid: tuple[int, int, int], ratio: float, rng: np.random.Generator) -> np.ndarray:
    """One tube mask from :class:`affectube.clips.masking.TubeMaskGenerator` (a function form)."""
    from affectube.clips.masking import TubeMaskGenerator

    return TubeMaskGenerator(grid, ratio)(rng)


__all__ = ["MaskedClips", "sample_rng", "tube_mask"]
