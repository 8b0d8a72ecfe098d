"""Synthetic clip stores for the clips tests: structured uint8 frames, labels, tracks-like arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from affectube.clips.store import StoreContent, write_store


def frames(n: int, size: int = 32, channels: int = 3, seed: int = 0) -> np.ndarray:
    """uint8 [n,size,size,C]: a random texture drifting one pixel per frame plus a frame-number stripe."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size, size * 2, channels), dtype=np.uint8)
    out = np.zeros((n, size, size, channels), np.uint8)
    for i in range(n):
        out[i] = base[:, (i % size) : (i % size) + size]
    out[:, 0, :4, 0] = (np.arange(n) % 256)[:, None].astype(np.uint8)
    return np.ascontiguousarray(out)


def content(video_id: str = "v0", n: int = 60, size: int = 32, subject: str = "s0", dataset: str = "d",
            emotion: str | None = "happy", valence: float | None = 0.5, per_frame: bool = True, seed: int = 0,
            channels: int = 3) -> StoreContent:
    fps = 25.0
    t = np.arange(n) / fps + 0.1
    labels = {"emotion": emotion, "valence": valence}
    return StoreContent(
        frames=frames(n, size, channels, seed),
        timestamps=t,
        dataset=dataset,
        video_id=video_id,
        subject=subject,
        session=f"{subject}_a",
        labels=labels,
        fps=fps,
        face_status=np.where(np.arange(n) % 7 == 0, 2, 1).astype(np.uint8),
        face_score=np.linspace(0.5, 1.0, n).astype(np.float32),
        face_boxes=np.tile(np.array([1, 2, 30, 31], np.float32), (n, 1)),
        valid=np.arange(n) % 11 != 5,
        frame_labels={"arousal": np.sin(t).astype(np.float32)} if per_frame else {},
        frame_labels_meta={"file": "synthetic"} if per_frame else {},
        decode={"fps": fps, "max_side": 640},
        crop={"strategy": "box", "scale": 1.3, "size": size, "grayscale": channels == 1, "pad_mode": "edge"},
        clips={"compression": "none", "chunk_frames": 8},
        source={"codec": "synthetic"},
        provenance="0" * 64,
    )


def make_stores(root: Path, n_videos: int = 6, n: int = 60, size: int = 32, compression: str = "none",
                chunk_frames: int = 8, **kw) -> list[Path]:
    paths = []
    emotions = ["happy", "sad", "angry"]
    for i in range(n_videos):
        c = content(f"v{i}", n=n + 7 * i, size=size, subject=f"s{i % 3}", emotion=emotions[i % 3],
                    valence=0.1 * i, seed=i, **kw)
        paths.append(write_store(root / f"v{i}.h5", c, compression, chunk_frames))
    return paths
