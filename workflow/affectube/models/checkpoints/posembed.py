"""Position embeddings of an imported checkpoint for another clip length or input size.

Fixed sine-cosine tables (VideoMAE, VideoMAEv2, MARLIN, SVFAP, transformers) are not
copied: affectube rebuilds the table for its own grid. A learned table ``[1, N, D]`` over a
``(T', H', W')`` grid is interpolated (trilinear: in time and space) to the new grid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from affectube.errors import DataError
from affectube.models.layers import sinusoid_table


def is_sinusoidal(table: torch.Tensor, atol: float = 1e-4) -> bool:
    """Whether a stored ``[1, N, D]`` table is the fixed sine-cosine one (MARLIN stores it)."""
    n, d = table.shape[-2:]
    return bool(torch.allclose(table.reshape(1, n, d).float(), sinusoid_table(n, d), atol=atol))


def source_grid(num_positions: int, preferred_time: tuple[int, ...]) -> tuple[int, int, int]:
    """The ``(T', H', W')`` of a flattened table of ``num_positions`` (square frames)."""
    for t in list(preferred_time) + list(range(1, num_positions + 1)):
        if t > 0 and num_positions % t == 0:
            side = math.isqrt(num_positions // t)
            if side * side * t == num_positions:
                return t, side, side
    raise DataError(f"a learned position table of {num_positions} positions is not T' x S x S")


def resize(table: torch.Tensor, src: tuple[int, int, int], dst: tuple[int, int, int]) -> torch.Tensor:
    """``[1, T*H*W, D]`` on grid ``src`` -> ``[1, T'*H'*W', D]`` on grid ``dst`` (trilinear)."""
    if tuple(src) == tuple(dst):
        return table
    d = table.shape[-1]
    grid = table.reshape(1, *src, d).permute(0, 4, 1, 2, 3).float()
    out = F.interpolate(grid, size=tuple(dst), mode="trilinear", align_corners=False)
    return out.permute(0, 2, 3, 4, 1).reshape(1, -1, d).to(table.dtype)
