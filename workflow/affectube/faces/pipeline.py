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
from affectube.faces.adaptive_refine import budget_of, refine
from affectube.faces.detect import Detector, det_sizes
from affectube.faces.tracks import Tracks
from affectube.video.decode import FrameStream

log = logging.getLogger(__name__)
RESTART_CHUNK = 4  # keyframes in the first chunk of a pass that may restart
RESTART_MAX_FRACTION = 0.5  # restart only in the first half of the video (its cost stays below one pass)


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


def track_video(path: str | os.PathLike, decode_cfg: dict, faces_cfg: dict, detector: Detector, threads: int = 1, meta: dict | None = None,
                stream_factory=None) -> Tracks:
    """Face track of one video. Decode problems raise DataError (the caller records them).

    ``decode_cfg`` and ``faces_cfg`` may be partial (tests, benchmarks): they are validated and
    filled with the schema's defaults here, and the filled sections are recorded in the tracks.
    ``stream_factory``: makes the pass's stream, called as :class:`FrameStream` (default); the faces shard
    job's :class:`affectube.shards.onepass.OnePass` keeps the frames the clips stage would decode again."""
    t0 = time.perf_counter()
    filled = sections({"decode": decode_cfg, "faces": faces_cfg}, "decode", "faces", source="track_video")
    decode_cfg, faces_cfg = filled["decode"], filled["faces"]
    if threads > 0:
        import cv2

        cv2.setNumThreads(int(threads))  # the job's thread budget (Snakemake threads), not every core
    every_k = int(faces_cfg["every_k"])
    side = analysis_side(faces_cfg, adaptive=adaptive_cap(faces_cfg, detector) is not None)
    restart = None
    for _ in range(2):  # a second pass at most: adaptive detection needs larger frames (restart_side)
        t_pass = time.perf_counter()
        adaptive, tracker, stream, keyframes_only, larger = _detect_pass(
            path, decode_cfg, faces_cfg, detector, threads, side, t0, start=restart["size"] if restart else None,
            may_restart=restart is None and faces_cfg["adaptive_restart"] and not faces_cfg["analysis_side"],
            stream_factory=stream_factory or FrameStream)
        if larger is None:
            break
        restart = {"at_frame": larger[1], "seconds": round(time.perf_counter() - t_pass, 4), "size": adaptive.current,
                   "analysis_side_before": side, "analysis_side": larger[0]}
        log.info("%s: faces need det_size %d: restarting on %d-px frames (was %d) after %d frames",
                 path, adaptive.current, larger[0], side, larger[1])
        side = larger[0]
    if keyframes_only:
        tracker.complete(stream.timestamps)
    cands = tracker.candidates
    tracks = T.link(cands, max_gap=faces_cfg["max_gap"], every_k=tracker.every_k)
    chosen = T.select(tracks, faces_cfg["policy"], cands.frame_size, adjacent=tracker.every_k)
    refined = None
    if keyframes_only and faces_cfg["refine_edges"]:  # denser detection where the subject's face starts or ends
        refined = refine(path, cands, chosen, adaptive, stream.size, every_k, faces_cfg["max_gap"], threads=max(1, threads),
                         budget=budget_of(faces_cfg["refine_edges"]))
        if refined["found"]:
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
            "adaptive": {**adaptive.summary(), "restart": restart, "refine": refined},
            "seconds": round(seconds, 3),
            "frames_per_second": round(len(cands) / seconds, 2) if seconds > 0 else None,
            "error": None,
        }
    )
    return Tracks.from_arrays(arrays, info)


def restart_side(adaptive: AdaptiveDetector, stream: FrameStream, pad: float) -> int | None:
    """A larger analysis side when the adaptive detector's current size would upsample the frames
    more than 1.25x and the decoded frames have more pixels than the analysis frames; else None."""
    if adaptive.cap is None or adaptive.current == adaptive.base:
        return None
    work = max(stream.size)
    need = int(round(adaptive.current / (1.0 + 2.0 * pad)))
    decoded = max(stream.decoded_size)
    if need <= 1.25 * work or decoded <= 1.25 * work:
        return None
    return min(need, decoded)


def _detect_pass(path, decode_cfg, faces_cfg, detector, threads, side, t0, start=None, may_restart=False, stream_factory=FrameStream):
    """Stream the video once at analysis side ``side``: (adaptive, tracker, stream, keyframes_only, larger).

    ``larger`` = (side, frames done) when the pass stopped early because adaptive detection, in the
    first half of the video, moved to a size the frames are too small for (:func:`restart_side`); the
    caller runs the video again on frames of that side, the detector starting at that size."""
    every_k = int(faces_cfg["every_k"])
    adaptive = AdaptiveDetector(detector, faces_cfg, start=start)  # per video: it keeps the scale that worked
    tracker = T.FrameTracker(adaptive, every_k=every_k, batch=faces_cfg["batch"], tracker=faces_cfg["tracker"])
    # interpolation needs only the keyframes: ffmpeg drops the frames in between before
    # converting/piping them (their timestamps are still recorded)
    keyframes_only = not tracker.flow and every_k > 1
    stream = stream_factory(
        path,
        fps=decode_cfg["fps"],
        max_side=decode_cfg["max_side"],
        chunk=max(16, int(faces_cfg["batch"])) if keyframes_only else max(32, int(faces_cfg["batch"]) * every_k),
        threads=threads,
        work_side=side,
        stride=every_k if keyframes_only else 1,
        on_truncated=decode_cfg["on_truncated"],
        reader=decode_cfg["reader"],
        # a small first chunk: a video that needs larger frames is restarted after a few keyframes
        first_chunk=RESTART_CHUNK * (1 if keyframes_only else every_k) if may_restart else None,
    )
    total = int(stream.info.get("source_frames") or 0)
    last_log = t0
    done = 0
    it = iter(stream)
    for frames, times in it:
        if keyframes_only:
            tracker.update_keyframes(frames)
        else:
            tracker.update(frames, times)
        done += len(frames) * (every_k if keyframes_only else 1)
        if may_restart and done <= RESTART_MAX_FRACTION * total:
            larger = restart_side(adaptive, stream, float(faces_cfg["pad"]))
            if larger:
                it.close()  # stops ffmpeg
                return adaptive, tracker, stream, keyframes_only, (larger, done)
        now = time.perf_counter()
        if now - last_log > 10:
            log.info("%s: %d frames processed (%.1f frames/s)", path, done, done / (now - t0))
            last_log = now
    return adaptive, tracker, stream, keyframes_only, None
