"""One video -> its face track: stream-decode, detect every k-th frame, track, choose, smooth.

Frames are decoded in chunks and dropped once processed, so memory does not grow
with the video's length.
"""

from __future__ import annotations

import logging
import os
import time

from affectube.config import sections
from affectube.faces import tracking as T
from affectube.faces.adaptive import AdaptiveDetector, adaptive_cap
from affectube.faces.detect import Detector, det_sizes
from affectube.faces.tracks import Tracks
from affectube.video.decode import FrameStream

log = logging.getLogger(__name__)


def analysis_side(faces_cfg: dict, adaptive: bool = False) -> int | None:
    """Longest side of the frames the detector and tracker see (``faces.analysis_side``).

    ``null`` (auto): just large enough that the padded frame fills the largest
    detector input: the detector would shrink a larger frame to that anyway. With
    adaptive detection on: large enough for the first retry size, 2 x ``det_size`` (at most
    ``faces.adaptive_max_size``); frames sized for the cap itself measured +10% CPU on the real
    clips (set ``analysis_side`` for that), these +4%. ``faces_cfg``: a filled ``faces`` section.
    """
    side = faces_cfg["analysis_side"]
    if side:
        return int(side)
    size = max(det_sizes(faces_cfg))
    if adaptive:  # sized for the first retry step (2x det_size): larger retries see upsampled pixels
        size = max(size, min(adaptive_cap(faces_cfg) or 0, 2 * size))
    return max(64, int(round(size / (1.0 + 2.0 * float(faces_cfg["pad"])))))


def track_video(path: str | os.PathLike, decode_cfg: dict, faces_cfg: dict, detector: Detector, threads: int = 1, meta: dict | None = None) -> Tracks:
    """Face track of one video. Decode problems raise DataError (the caller records them).

    ``decode_cfg`` and ``faces_cfg`` may be partial (tests, benchmarks): they are validated and
    filled with the schema's defaults here, and the filled sections are recorded in the tracks."""
    t0 = time.perf_counter()
    filled = sections({"decode": decode_cfg, "faces": faces_cfg}, "decode", "faces", source="track_video")
    decode_cfg, faces_cfg = filled["decode"], filled["faces"]
    if threads > 0:
        import cv2

        cv2.setNumThreads(int(threads))  # the job's thread budget (Snakemake threads), not every core
    every_k = int(faces_cfg["every_k"])
    adaptive = AdaptiveDetector(detector, faces_cfg)  # per video: it keeps the scale that worked
    tracker = T.FrameTracker(adaptive, every_k=every_k, batch=faces_cfg["batch"], tracker=faces_cfg["tracker"])
    # interpolation needs only the keyframes: ffmpeg drops the frames in between before
    # converting/piping them (their timestamps are still recorded)
    keyframes_only = not tracker.flow and every_k > 1
    stream = FrameStream(
        path,
        fps=decode_cfg["fps"],
        max_side=decode_cfg["max_side"],
        chunk=max(16, int(faces_cfg["batch"])) if keyframes_only else max(32, int(faces_cfg["batch"]) * every_k),
        threads=threads,
        work_side=analysis_side(faces_cfg, adaptive=adaptive.cap is not None),
        stride=every_k if keyframes_only else 1,
        on_truncated=decode_cfg["on_truncated"],
    )
    last_log = t0
    done = 0
    for frames, times in stream:
        if keyframes_only:
            tracker.update_keyframes(frames)
        else:
            tracker.update(frames, times)
        done += len(frames) * (every_k if keyframes_only else 1)
        now = time.perf_counter()
        if now - last_log > 10:
            log.info("%s: %d frames processed (%.1f frames/s)", path, done, done / (now - t0))
            last_log = now
    if keyframes_only:
        tracker.complete(stream.timestamps)
    cands = tracker.candidates
    tracks = T.link(cands, max_gap=faces_cfg["max_gap"], every_k=tracker.every_k)
    chosen = T.select(tracks, faces_cfg["policy"], cands.frame_size, adjacent=tracker.every_k)
    if not tracker.flow:
        chosen = T.fill_between(chosen, every_k, len(cands))
    arrays = T.finalize(
        cands, chosen, max_gap=faces_cfg["max_gap"], smooth=faces_cfg["smooth"],
        scale=stream.scale, frame_size=stream.decoded_size,
    )
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
            "adaptive": adaptive.summary(),
            "seconds": round(seconds, 3),
            "frames_per_second": round(len(cands) / seconds, 2) if seconds > 0 else None,
            "error": None,
        }
    )
    return Tracks.from_arrays(arrays, info)
