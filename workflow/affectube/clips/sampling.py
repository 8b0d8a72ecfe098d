"""Which frames make a clip (VideoMAE-style): T frames, ``stride`` apart, from a start frame.

Training: one clip per video per epoch at a uniformly random start. Testing: ``k`` clips
centred in ``k`` equal segments of the video (:func:`segment_starts`; one clip: the centred one);
:func:`uniform_starts` (first to last possible start) is what ``predict`` tiles a video with.

Very short videos (fewer frames than a clip's span, ``(T - 1) x stride + 1``; in the wild, 8-15-frame
clips): the rule is the same for training and test: the clip starts at frame 0 and every index past the
last frame is clamped to it, i.e. the clip is **padded by repeating the last frame** (VideoMAE pads the
same way); nothing is resampled, looped or dropped. Such videos are counted: ``ClipDataset.short``, the
faces QC table's ``short_clip`` column and a report warning.

Event-centred clips (``finetune.event: true``): a video may carry the time span of one event
(manifest columns ``event_start``/``event_end``, seconds of the source video, recorded in its
clip store's labels): a spoken word (GRID: the adapter reads it from the official alignments),
an expression's onset to offset, or an apex frame (start = end). Its frames are those whose
timestamps fall inside the span (at least the one nearest its middle, :func:`event_frames`).
Training clips are centred on the event's middle frame, shifted by a uniformly random offset of
at most ``finetune.event_jitter`` seconds (:func:`event_train_start`); test clips are centred on
it (:func:`event_test_starts`; with several test clips, they are spread over +-jitter). Clips are
clamped into the video. When the event is short beside the video (a GRID word lasts ~6 of 75
frames), a clip at a uniformly random start mostly sees other words: on GRID colour words (issue 20,
outside the pipeline, a small 3D CNN) 16 frames spread over the clip gave 0.29 test accuracy (chance
0.25), 16 frames centred on the word 0.74.
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


def segment_starts(n: int, span: int, k: int) -> list[int]:
    """``k`` test clips spread over the whole video: clip ``i`` is centred in the ``i``-th of ``k``
    equal segments (k = 1: the centred clip; k = 2: centred at 1/4 and 3/4, not on the first and
    last second), clamped to the possible starts. The fine-tuning test/validation clips."""
    last = max(n - span, 0)
    return [int(min(max(round((i + 0.5) * n / k - span / 2), 0), last)) for i in range(k)]


def frame_indices(start: int, num_frames: int, stride: int, n: int) -> np.ndarray:
    """Indices of the clip's frames (non-decreasing; clamped to the last frame for short videos)."""
    return np.minimum(start + stride * np.arange(num_frames, dtype=np.int64), n - 1)


def event_frames(timestamps: np.ndarray, start: float, end: float) -> tuple[int, int]:
    """(first, last) frame index whose timestamp lies in ``[start, end]`` seconds; an event between two
    frames (an apex) gets the frame nearest its middle. Raises ValueError on an empty timeline or a
    span outside it."""
    t = np.asarray(timestamps, np.float64)
    if t.size == 0:
        raise ValueError("no frames")
    if end < start:
        raise ValueError(f"event span {start}..{end} s ends before it starts")
    step = float(np.median(np.diff(t))) if t.size > 1 else 0.0
    if end < t[0] - step or start > t[-1] + step:
        raise ValueError(f"event span {start:.3f}..{end:.3f} s is outside the video ({t[0]:.3f}..{t[-1]:.3f} s)")
    inside = np.flatnonzero((t >= start) & (t <= end))
    if inside.size:
        return int(inside[0]), int(inside[-1])
    i = int(np.argmin(np.abs(t - (start + end) / 2)))
    return i, i


def _centred(n: int, span: int, centre: float, offset: int) -> int:
    return int(min(max(int(np.floor(centre - (span - 1) / 2 + 0.5)) + offset, 0), max(n - span, 0)))


def event_train_start(n: int, span: int, event: tuple[int, int], jitter: int, rng: np.random.Generator) -> int:
    """Start of a training clip centred on the event's frames, shifted by a uniform integer offset in
    ``[-jitter, jitter]`` frames, clamped into the video."""
    offset = int(rng.integers(-jitter, jitter + 1)) if jitter > 0 else 0
    return _centred(n, span, (event[0] + event[1]) / 2, offset)


def event_test_starts(n: int, span: int, event: tuple[int, int], k: int, jitter: int = 0) -> list[int]:
    """``k`` test starts: one clip centred on the event (k = 1), else spread evenly over +-jitter frames."""
    centre = (event[0] + event[1]) / 2
    if k == 1 or jitter <= 0:
        return [_centred(n, span, centre, 0)] * k
    return [_centred(n, span, centre, int(round(x))) for x in np.linspace(-jitter, jitter, k)]
