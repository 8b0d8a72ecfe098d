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


def refine(path, cands: T.Candidates, chosen: dict, adaptive, size: tuple, every_k: int, max_gap: int, threads: int = 1) -> dict:
    """Detect the frames of :func:`edges` and add them to ``cands`` (in place); returns the cost counts."""
    t0 = time.perf_counter()
    stats = {"edges": 0, "frames": 0, "found": 0, "failed_decodes": 0}
    for run, key in edges(chosen, len(cands), every_k, max_gap):
        times = np.asarray([cands.timestamps[t] for t in run])
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
    stats["seconds"] = round(time.perf_counter() - t0, 4)
    return stats
