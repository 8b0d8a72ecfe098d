"""Denser detection where the subject's face appears or disappears between two keyframes.

Detecting every ``faces.every_k``-th frame places the start and the end of a face to within
``every_k - 1`` frames: a face that walks into the shot on frame 11 is first seen on keyframe 15,
and the frames in between are lost although every-frame detection would find them. After the
subject's track is chosen, the keyframe spacing is refined where it matters: for each edge of
the track (its start, its end, both sides of a lost stretch longer than ``faces.max_gap``) the
frames between that keyframe and the neighbouring keyframe without the face are decoded (one
ffmpeg call per edge, seeking to it) and detected at the size the keyframe used. At most
``MAX_EDGES`` edges per video; a video whose subject is seen throughout (the usual case) pays
nothing. Costs are counted apart (``meta.adaptive.refine``).

A seek decodes from the seek point the container's index gives before the edge (the last sync frame
ffmpeg can start from; 1-10 s back in long-GOP phone/HEVC video), not from the edge: that decode is
most of an edge's cost. ``faces.refine_edges`` as a number is a **decode budget**: the seconds of
video decoded for the edges (from each one's seek point, found with one demuxer seek, to its last
frame) may add up to at most that fraction of the video's duration; an edge that would exceed it
is skipped (``skipped``). ``true`` = no budget, ``false``/0 = off.
"""

from __future__ import annotations

import subprocess
import time

import numpy as np

from affectube.faces import tracking as T
from affectube.video.decode import ffmpeg_exe

MAX_EDGES = 4


def edges(chosen: dict, n: int, every_k: int, max_gap: int) -> list[tuple[list[int], int]]:
    """(frames, detected frame): the frames between a detected frame of the chosen track and the
    neighbouring keyframe without it, to be detected; at most MAX_EDGES, earliest first."""
    det = sorted(t for t, f in chosen.items() if f.status == T.DETECTED)
    if not det or every_k < 2:
        return []
    out = []
    if det[0] > 0:
        out.append((list(range(max(0, det[0] - every_k + 1), det[0])), det[0]))
    for a, b in zip(det, det[1:]):
        if b - a - 1 > max_gap:  # a lost stretch the gap filling leaves lost
            out.append((list(range(a + 1, min(b, a + every_k))), a))
            out.append((list(range(max(a + every_k, b - every_k + 1), b)), b))
    if det[-1] + every_k < n:
        out.append((list(range(det[-1] + 1, min(n, det[-1] + every_k))), det[-1]))
    return [e for e in out if e[0]][:MAX_EDGES]


def decode_frames(path, times: np.ndarray, size: tuple, threads: int = 1) -> np.ndarray | None:
    """The frames at ``times`` (s, source timeline), at ``size`` (h, w), RGB; None when ffmpeg does not deliver them all."""
    h, w = size
    start = max(0.0, float(times[0]) - 0.1)
    sel = "+".join(f"lt(abs(t-{t:.6f}),0.0005)" for t in times)
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", str(threads),
           # read only the window around the frames: when the timestamps do not map (-copyts and an edit list),
           # ffmpeg stops there instead of decoding to the end of the file
           "-ss", f"{start:.6f}", "-t", f"{float(times[-1]) - start + 0.2:.6f}", "-copyts", "-i", str(path), "-map", "0:v:0",
           "-vf", f"select='{sel}',scale={w}:{h}:flags=area,setsar=1", "-fps_mode", "passthrough",
           "-frames:v", str(len(times)), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"]
    proc = subprocess.run(cmd, capture_output=True)
    nbytes = h * w * 3
    if proc.returncode != 0 or len(proc.stdout) != nbytes * len(times):
        return None
    return np.frombuffer(proc.stdout, np.uint8).reshape(len(times), h, w, 3)


def budget_of(refine_edges) -> float | None:
    """``faces.refine_edges`` -> decode budget (fraction of the video's duration); None = no budget, 0 = off."""
    if refine_edges is True:
        return None
    return float(refine_edges or 0.0)


def seek_point(container, t: float) -> float:
    """Time (s) of the packet ffmpeg's ``-ss t`` starts decoding from (the index's sync frame at or before ``t``);
    0.0 when the container cannot seek (the worst case: from the start)."""
    import av

    try:
        stream = container.streams.video[0]
        container.seek(int(max(0.0, t) / stream.time_base), stream=stream, backward=True, any_frame=False)
        for packet in container.demux(stream):
            if packet.pts is not None:
                return min(t, max(0.0, float(packet.pts * stream.time_base)))
    except (av.error.FFmpegError, IndexError, ZeroDivisionError, TypeError):
        pass
    return 0.0


def refine(path, cands: T.Candidates, chosen: dict, adaptive, size: tuple, every_k: int, max_gap: int, threads: int = 1,
           budget: float | None = None) -> dict:
    """Detect the frames of :func:`edges` and add them to ``cands`` (in place); returns the cost counts.
    ``budget``: the edges' decode may add up to this fraction of the video's duration (None: no limit)."""
    t0 = time.perf_counter()
    stats = {"edges": 0, "frames": 0, "found": 0, "failed_decodes": 0, "skipped": 0, "budget": budget, "decode_s": 0.0}
    todo = edges(chosen, len(cands), every_k, max_gap)
    container = None
    if budget is not None and todo:
        import av

        try:
            container = av.open(str(path), metadata_errors="ignore")
        except av.error.FFmpegError:
            container = None
        ts = cands.timestamps
        period = (float(ts[-1]) - float(ts[0])) / max(1, len(ts) - 1) if len(ts) > 1 else 0.04
        allowed = budget * (float(ts[-1]) - float(ts[0]) + period)
    for run, key in todo:
        times = np.asarray([cands.timestamps[t] for t in run])
        if budget is not None:
            start = max(0.0, float(times[0]) - 0.1)
            cost = float(times[-1]) - (seek_point(container, start) if container is not None else 0.0)
            if stats["decode_s"] + cost > allowed:
                stats["skipped"] += 1
                continue
            stats["decode_s"] += cost
        frames = decode_frames(path, times, size, threads)
        stats["edges"] += 1
        if frames is None:
            stats["failed_decodes"] += 1
            continue
        stats["frames"] += len(run)
        for t, d in zip(run, adaptive.detect_like(key // every_k, frames)):
            faces = [T.Face(d.boxes[j].copy(), d.landmarks[j].copy(), float(d.scores[j]), T.DETECTED) for j in range(len(d))]
            cands.faces[t] = faces
            cands.num_faces[t] = len(faces)
            stats["found"] += bool(faces)
    if container is not None:
        container.close()
    stats["decode_s"] = round(stats["decode_s"], 4)
    stats["seconds"] = round(time.perf_counter() - t0, 4)
    return stats
