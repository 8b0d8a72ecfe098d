"""One video -> its face track: stream-decode, detect every k-th frame, track, choose, smooth.

Frames are decoded in chunks and dropped once processed, so memory does not grow
with the video's length.
"""

from __future__ import annotations

import logging
import os
import time

from affectube.faces import track as T
from affectube.faces.detect import Detector
from affectube.faces.tracks import Tracks
from affectube.video.decode import FrameStream

log = logging.getLogger(__name__)


def track_video(path: str | os.PathLike, decode_cfg: dict, faces_cfg: dict, detector: Detector, threads: int = 1, meta: dict | None = None) -> Tracks:
    """Face track of one video. Decode problems raise DataError (the caller records them)."""
    t0 = time.perf_counter()
    stream = FrameStream(path, fps=decode_cfg.get("fps", 25), max_side=decode_cfg.get("max_side", 640), chunk=max(32, int(faces_cfg.get("batch", 16)) * int(faces_cfg.get("every_k", 2))), threads=threads)
    tracker = T.FrameTracker(detector, every_k=faces_cfg.get("every_k", 2), batch=faces_cfg.get("batch", 16))
    last_log = t0
    for frames, times in stream:
        tracker.update(frames, times)
        now = time.perf_counter()
        if now - last_log > 10:
            log.info("%s: %d frames processed (%.1f frames/s)", path, len(tracker.candidates), len(tracker.candidates) / (now - t0))
            last_log = now
    cands = tracker.candidates
    tracks = T.link(cands, max_gap=faces_cfg.get("max_gap", 8), every_k=tracker.every_k)
    chosen = T.select(tracks, faces_cfg.get("policy", "largest"), cands.frame_size)
    arrays = T.finalize(cands, chosen, max_gap=faces_cfg.get("max_gap", 8), smooth=faces_cfg.get("smooth", 0.6))
    seconds = time.perf_counter() - t0
    counts = T.summary(arrays)
    counts["tracks"] = len(tracks)
    info = dict(meta or {})
    info.update(
        {
            "path": str(path),
            "decode": decode_cfg,
            "faces": faces_cfg,
            "detector": detector.describe(),
            "info": stream.info,
            "counts": counts,
            "seconds": round(seconds, 3),
            "frames_per_second": round(len(cands) / seconds, 2) if seconds > 0 else None,
            "error": None,
        }
    )
    return Tracks.from_arrays(arrays, info)
