"""VideoMAE tube masking, face-guided tube masking (:class:`FaceMaskGenerator`) and batching masks with clips.

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


class FaceMaskGenerator(TubeMaskGenerator):
    """Face-guided tube masks in the spirit of MARLIN's Fasking (Cai et al. 2023): the tubes over the
    eyes, the nose and the mouth are masked first, the rest at random up to the same
    ``int(ratio * H' * W')`` patches per time step as :class:`TubeMaskGenerator`.

    ``landmarks`` float ``[T, 5, 2]`` (left eye, right eye, nose, mouth corners; x, y in pixels of the
    model's ``input_size`` input, NaN where no face) come with each clip
    (``ClipDataset`` maps the store's ``face_landmarks`` through the clip's crop/flip window). The
    regions are squares of half-side ``region x`` the eye distance around each eye and the nose, and
    the box spanning both mouth corners widened by the same margin; a patch is a face-part patch when
    it overlaps a region in any frame of the clip (a tube: the same patches at every time step). When
    the face parts cover more than the budget, a random subset of them is masked. Without landmarks
    (none given, or all NaN) the mask is a plain random tube mask.
    """

    uses_landmarks = True

    def __init__(self, grid: Sequence[int], ratio: float, patch: int, region: float = 0.35):
        super().__init__(grid, ratio)
        self.patch, self.region = int(patch), float(region)

    def face_patches(self, landmarks: np.ndarray) -> np.ndarray:
        """bool ``[H' * W']``: the spatial patches overlapping the eye, nose and mouth regions."""
        _, h, w = self.grid
        out = np.zeros((h, w), bool)
        lms = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
        lms = lms[np.isfinite(lms).all(axis=(1, 2))]
        for f in lms:
            r = self.region * max(float(np.hypot(*(f[1] - f[0]))), 1.0)
            boxes = [(*(f[i] - r), *(f[i] + r)) for i in (0, 1, 2)]
            lo, hi = f[3:].min(0) - r, f[3:].max(0) + r
            boxes.append((*lo, *hi))
            for x0, y0, x1, y1 in boxes:  # patches [j*p, (j+1)*p) overlapping [x0, x1]
                c0, c1 = max(int(np.floor(x0 / self.patch)), 0), min(int(np.floor(x1 / self.patch)), w - 1)
                r0, r1 = max(int(np.floor(y0 / self.patch)), 0), min(int(np.floor(y1 / self.patch)), h - 1)
                if c0 <= c1 and r0 <= r1:
                    out[r0 : r1 + 1, c0 : c1 + 1] = True
        return out.ravel()

    def __call__(self, rng: np.random.Generator | None = None, landmarks: np.ndarray | None = None) -> np.ndarray:
        rng = rng if rng is not None else np.random.default_rng()
        t, h, w = self.grid
        face = self.face_patches(landmarks) if landmarks is not None else np.zeros(h * w, bool)
        parts, rest = np.flatnonzero(face), np.flatnonzero(~face)
        order = np.concatenate([rng.permutation(parts), rng.permutation(rest)])  # face parts first
        spatial = np.zeros(h * w, dtype=bool)
        spatial[order[: self.per_step]] = True
        return np.tile(spatial, t)

    def __repr__(self) -> str:
        return f"FaceMaskGenerator(grid={self.grid}, ratio={self.ratio}, patch={self.patch}, region={self.region})"


def collate(batch: list[dict], generator: TubeMaskGenerator | None = None, rng: np.random.Generator | None = None) -> dict:
    """Stack a list of ClipDataset items; ``mask`` [B, N] from the items or, if they have none, from ``generator``."""
    out = default_collate(batch)
    if "mask" not in out and generator is not None:
        out["mask"] = generator.batch(len(batch), rng)
    if "mask" in out and out["mask"].dtype != torch.bool:
        raise TypeError(f"masks must be bool, got {out['mask'].dtype}")
    return out
