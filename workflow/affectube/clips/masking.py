"""VideoMAE tube masking and batching masks with clips.

:class:`TubeMaskGenerator` draws ONE random spatial mask of exactly ``int(ratio * H' * W')``
patches and repeats it at every tubelet time step, so a masked patch stays masked through
the whole clip (no copying from the neighbouring frame). Masks are flat bool
``[T' * H' * W']`` in (t, h, w) order, True = masked (the token order of a Conv3d patch
embedding flattened from ``[B, D, T', H', W']``).

Masks are batched with the clips in either of two ways:

* ``ClipDataset(..., mask_generator=TubeMaskGenerator(...))``: every item carries ``mask``,
  drawn from the item's own seeded stream (same masks with 0 or N workers); torch's default
  collate (or :func:`collate`) stacks them to ``[B, N]``;
* :func:`collate` with ``generator=`` draws masks for items that have none.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import default_collate


class TubeMaskGenerator:
    def __init__(self, grid: Sequence[int], ratio: float):
        t, h, w = (int(x) for x in grid)
        if min(t, h, w) < 1:
            raise ValueError(f"tube mask grid must be positive, got {tuple(grid)}")
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
        self.grid = (t, h, w)
        self.ratio = float(ratio)
        self.per_step = int(ratio * h * w)  # masked patches at every time step

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w

    @property
    def num_masked(self) -> int:
        return self.per_step * self.grid[0]

    def __call__(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """One tube mask: bool [T'*H'*W'], True = masked."""
        rng = rng if rng is not None else np.random.default_rng()
        t, h, w = self.grid
        spatial = np.zeros(h * w, dtype=bool)
        spatial[rng.permutation(h * w)[: self.per_step]] = True
        return np.tile(spatial, t)

    def batch(self, n: int, rng: np.random.Generator | None = None) -> torch.Tensor:
        """``n`` independent masks: bool [n, T'*H'*W']."""
        rng = rng if rng is not None else np.random.default_rng()
        return torch.from_numpy(np.stack([self(rng) for _ in range(n)]))

    def __repr__(self) -> str:
        return f"TubeMaskGenerator(grid={self.grid}, ratio={self.ratio}, masked per step={self.per_step})"


def collate(batch: list[dict], generator: TubeMaskGenerator | None = None, rng: np.random.Generator | None = None) -> dict:
    """Stack a list of ClipDataset items; ``mask`` [B, N] from the items or, if they have none, from ``generator``."""
    out = default_collate(batch)
    if "mask" not in out and generator is not None:
        out["mask"] = generator.batch(len(batch), rng)
    if "mask" in out and out["mask"].dtype != torch.bool:
        raise TypeError(f"masks must be bool, got {out['mask'].dtype}")
    return out
