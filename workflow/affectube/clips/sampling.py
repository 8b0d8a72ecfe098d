"""Which frames make a clip (VideoMAE-style): T frames, ``stride`` apart, from a start frame.

Training: one clip per video per epoch at a uniformly random start. Testing: ``k`` clips
at uniformly spaced starts covering the video (one clip: the centred one). A video shorter
than a clip's span repeats its last frame (VideoMAE pads the same way); nothing is resampled.
"""

from __future__ import annotations

import numpy as np


def clip_span(num_frames: int, stride: int) -> int:
    """Frames from a clip's first to its last sampled frame, inclusive."""
    return (num_frames - 1) * stride + 1


def train_start(n: int, span: int, rng: np.random.Generator) -> int:
    """A uniformly random start among the ``max(n - span, 0) + 1`` possible ones."""
    return int(rng.integers(0, max(n - span, 0) + 1))


def uniform_starts(n: int, span: int, k: int) -> list[int]:
    """``k`` uniformly spaced starts from the first to the last possible one (k = 1: centred)."""
    last = max(n - span, 0)
    if k == 1:
        return [last // 2]
    return [int(round(x)) for x in np.linspace(0, last, k)]


def frame_indices(start: int, num_frames: int, stride: int, n: int) -> np.ndarray:
    """Indices of the clip's frames (non-decreasing; clamped to the last frame for short videos)."""
    return np.minimum(start + stride * np.arange(num_frames, dtype=np.int64), n - 1)
