"""From per-frame face candidates to one stable face track per video.

1. **Detect every k-th frame, track in between** (:class:`FrameTracker`): keyframes
   (frame index divisible by ``every_k``) go to the detector in batches. On the
   frames in between (status 2, "tracked"), ``faces.tracker`` decides:
   - ``flow``: every face of the last keyframe is followed with pyramidal
     Lucas-Kanade optical flow (its 5 landmarks plus a 3x3 grid of points inside
     the box, forward-backward checked) and moved by the similarity transform those
     points agree on; a face that cannot be followed is lost until the next keyframe;
   - ``interpolate``: boxes and landmarks are interpolated linearly between the two
     keyframes around the frame (:func:`fill_between`; offline, so both are known).
2. **Identity** (:func:`link`, :func:`select`): candidates are linked over time
   into tracks by box overlap (IoU), or, for a face that moved more than that allows
   between two keyframes (a small face in a crowd, a shaky camera), by centre distance
   below ``LINK_DISTANCE`` face sizes at a similar size. The subject's track is chosen by
   ``faces.policy``:
   - ``largest``: the largest total face area (box area summed over the frames of
     the track: a large face seen briefly does not beat the subject seen throughout);
   - ``central``: the largest total centrality (1 - distance of the box centre to the
     frame centre / half the frame diagonal, summed over the frames of the track);
   - ``longest_track``: the most frames.
   Other tracks that do not overlap it in time and start/end near it (centre
   distance below half the face size; below one face size when they meet on consecutive
   keyframes: a head moving fast between two keyframes) are appended: the same face after a loss.
   Tracked frames at the end of a track that the next keyframe did not confirm
   are dropped (the face left between two keyframes).
3. **Gaps and smoothing** (:func:`finalize`): lost stretches of at most
   ``faces.max_gap`` frames between two found frames are linearly interpolated
   (status 3); boxes and landmarks are smoothed with a zero-phase
   (forward-backward) exponential filter of factor ``faces.smooth`` inside each
   stretch of consecutive found frames.

Per-frame status: 0 no face, 1 detected, 2 tracked, 3 interpolated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from affectube.faces.detect import Detections
from affectube.faces.tracks import FaceStatus

NO_FACE, DETECTED, TRACKED, INTERPOLATED = FaceStatus
TRACKERS = ("flow", "interpolate")
LINK_IOU = 0.3
LINK_DISTANCE = 0.5  # centre distance / face size under which a face continues a track whose box it no longer overlaps enough
LINK_SIZE_RATIO = 1.5  # ... if the two sizes differ by at most this factor
MERGE_DISTANCE = 0.5  # centre distance / face size under which two time-disjoint tracks are one face
ADJACENT_MERGE_DISTANCE = 1.0  # the same, for tracks on consecutive keyframes (a head moving fast between them)
LK_PARAMS = dict(winSize=(15, 15), maxLevel=2, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))
FB_MAX_ERR = 1.5  # px, forward-backward optical-flow error above which a point is dropped


@dataclass
class Face:
    box: np.ndarray  # f4 [4]
    landmarks: np.ndarray  # f4 [5, 2]
    score: float
    status: int  # DETECTED or TRACKED


@dataclass
class Candidates:
    """All faces found or followed in each frame of a video, in frame order."""

    timestamps: list = field(default_factory=list)
    faces: list = field(default_factory=list)  # list[list[Face]]
    num_faces: list = field(default_factory=list)  # detector count on keyframes, -1 elsewhere
    keyframe: list = field(default_factory=list)
    frame_size: tuple = (0, 0)

    def __len__(self) -> int:
        return len(self.timestamps)


class FrameTracker:
    """Streaming: feed chunks of frames with :meth:`update`; read :attr:`candidates`."""

    def __init__(self, detector, every_k: int = 2, batch: int = 16, tracker: str = "flow"):
        if tracker not in TRACKERS:
            raise ValueError(f"unknown tracker {tracker!r} (known: {', '.join(TRACKERS)})")
        self.detector = detector
        self.every_k = max(1, int(every_k))
        self.batch = max(1, int(batch))
        self.flow = tracker == "flow" and self.every_k > 1
        self.candidates = Candidates()
        self._prev_gray = None
        self._current: list[Face] = []
        self._keys: list[list[Face]] = []
        self.detected_frames = 0

    def update_keyframes(self, frames: np.ndarray) -> None:
        """``tracker: interpolate`` fed only the keyframes (frames 0, k, 2k, ...); call :meth:`complete` at the end."""
        if not self._keys:
            self.candidates.frame_size = tuple(int(x) for x in frames.shape[1:3])
        for b in range(0, len(frames), self.batch):
            for d in self.detector(frames[b : b + self.batch]):
                self._keys.append(_faces(d))
            # keyframes of earlier batches the detector detected again (adaptive back-fill)
            for j, d in getattr(self.detector, "revisions", {}).items():
                self._keys[j] = _faces(d)
            getattr(self.detector, "revisions", {}).clear()
        self.detected_frames = len(self._keys)

    def complete(self, timestamps: np.ndarray) -> None:
        """Lay the keyframes fed to :meth:`update_keyframes` out on the full timeline (empty in between)."""
        n, k = len(timestamps), self.every_k
        if len(self._keys) != -(-n // k):
            raise ValueError(f"{len(self._keys)} keyframes for {n} frames at every_k {k}")
        c = self.candidates
        for i, t in enumerate(timestamps):
            key = i % k == 0
            faces = self._keys[i // k] if key else []
            c.timestamps.append(float(t))
            c.faces.append(faces)
            c.num_faces.append(len(faces) if key else -1)
            c.keyframe.append(key)

    def update(self, frames: np.ndarray, timestamps: np.ndarray) -> None:
        start = len(self.candidates)
        if start == 0:
            self.candidates.frame_size = tuple(int(x) for x in frames.shape[1:3])
        idx = [i for i in range(len(frames)) if (start + i) % self.every_k == 0]
        dets: dict[int, Detections] = {}
        for b in range(0, len(idx), self.batch):
            part = idx[b : b + self.batch]
            for i, d in zip(part, self.detector(frames[part])):
                dets[i] = d
        self.detected_frames += len(idx)
        for i, frame in enumerate(frames):
            gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if self.flow else None
            if i in dets:
                d = dets[i]
                self._current = [Face(d.boxes[j].copy(), d.landmarks[j].copy(), float(d.scores[j]), DETECTED) for j in range(len(d))]
                num = len(d)
            elif self.flow:
                self._current = [f for f in (follow(self._prev_gray, gray, face) for face in self._current) if f is not None]
                num = -1
            else:  # "interpolate": filled from the neighbouring keyframes after linking (fill_between)
                self._current = []
                num = -1
            self.candidates.timestamps.append(float(timestamps[i]))
            self.candidates.faces.append(list(self._current))
            self.candidates.num_faces.append(num)
            self.candidates.keyframe.append(i in dets)
            self._prev_gray = gray


def _faces(d: Detections) -> list[Face]:
    return [Face(d.boxes[j].copy(), d.landmarks[j].copy(), float(d.scores[j]), DETECTED) for j in range(len(d))]


def follow(prev_gray: np.ndarray | None, gray: np.ndarray | None, face: Face) -> Face | None:
    """Move ``face`` from ``prev_gray`` to ``gray`` with optical flow; None when it cannot be followed."""
    if prev_gray is None or gray is None:
        return None
    x1, y1, x2, y2 = face.box
    w, h = x2 - x1, y2 - y1
    if w < 4 or h < 4:
        return None
    gx, gy = np.meshgrid(np.linspace(x1 + 0.2 * w, x2 - 0.2 * w, 3), np.linspace(y1 + 0.2 * h, y2 - 0.2 * h, 3))
    pts = np.concatenate([face.landmarks, np.stack([gx.ravel(), gy.ravel()], 1)]).astype(np.float32).reshape(-1, 1, 2)
    nxt, st, _ = cv2.calcOpticalFlowPyrLK(prev_gray, gray, pts, None, **LK_PARAMS)
    if nxt is None:
        return None
    back, st2, _ = cv2.calcOpticalFlowPyrLK(gray, prev_gray, nxt, None, **LK_PARAMS)
    err = np.linalg.norm((back - pts).reshape(-1, 2), axis=1)
    good = (st.ravel() == 1) & (st2.ravel() == 1) & (err < FB_MAX_ERR)
    if good.sum() < 4:
        return None
    m, _ = cv2.estimateAffinePartial2D(pts[good], nxt[good], method=cv2.LMEDS)
    if m is None:
        return None
    scale = float(np.hypot(m[0, 0], m[1, 0]))
    if not 0.7 < scale < 1.4:
        return None
    c = np.array([(x1 + x2) / 2, (y1 + y2) / 2, 1.0])
    cx, cy = m @ c
    box = np.array([cx - scale * w / 2, cy - scale * h / 2, cx + scale * w / 2, cy + scale * h / 2], np.float32)
    lms = (np.c_[face.landmarks, np.ones(5)] @ m.T).astype(np.float32)
    lm_good = good[:5]
    lms[lm_good] = nxt.reshape(-1, 2)[:5][lm_good]
    return Face(box, lms, face.score, TRACKED)


# ---------------------------------------------------------------- identity


@dataclass
class Track:
    frames: list = field(default_factory=list)
    faces: list = field(default_factory=list)

    @property
    def last_box(self) -> np.ndarray:
        return self.faces[-1].box


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def link_score(a: np.ndarray, b: np.ndarray) -> float:
    """How well box ``b`` continues box ``a``: their IoU when >= LINK_IOU; else, when the centres are
    under LINK_DISTANCE face sizes apart at a similar size, a score below LINK_IOU (closer is higher);
    else 0 (no link). Overlap wins over distance in the greedy assignment."""
    v = iou(a, b)
    if v >= LINK_IOU:
        return v
    sa, sb = max(a[2] - a[0], a[3] - a[1]), max(b[2] - b[0], b[3] - b[1])
    if sa <= 0 or sb <= 0 or max(sa, sb) > LINK_SIZE_RATIO * min(sa, sb):
        return 0.0
    d = float(np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)) / max(sa, sb)
    return LINK_IOU * (1.0 - d / LINK_DISTANCE) if d < LINK_DISTANCE else 0.0


def link(cands: Candidates, max_gap: int, every_k: int) -> list[Track]:
    """Link candidates into tracks by :func:`link_score` with each track's last box (greedy, best first)."""
    tracks: list[Track] = []
    active: list[Track] = []
    reach = max_gap + every_k
    for t, faces in enumerate(cands.faces):
        active = [tr for tr in active if t - tr.frames[-1] <= reach]
        pairs = sorted(
            ((link_score(tr.last_box, f.box), a, j) for a, tr in enumerate(active) for j, f in enumerate(faces)),
            reverse=True,
        )
        used_t, used_f = set(), set()
        for v, a, j in pairs:
            if v <= 0:
                break
            if a in used_t or j in used_f:
                continue
            active[a].frames.append(t)
            active[a].faces.append(faces[j])
            used_t.add(a)
            used_f.add(j)
        for j, f in enumerate(faces):
            if j not in used_f:
                tr = Track([t], [f])
                tracks.append(tr)
                active.append(tr)
    n = len(cands)
    for tr in tracks:  # tracked frames at the end that the next keyframe did not confirm
        last_det = max((i for i, f in enumerate(tr.faces) if f.status == DETECTED), default=-1)
        if last_det < 0:
            tr.frames, tr.faces = [], []
            continue
        next_key = tr.frames[last_det] + every_k - tr.frames[last_det] % every_k
        if next_key < n:
            tr.frames, tr.faces = tr.frames[: last_det + 1], tr.faces[: last_det + 1]
    return [tr for tr in tracks if tr.frames]


def track_score(tr: Track, policy: str, frame_size: tuple) -> float:
    boxes = np.array([f.box for f in tr.faces])
    if policy == "largest":
        return float(np.sum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
    if policy == "central":
        h, w = frame_size
        c = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2 - w / 2, (boxes[:, 1] + boxes[:, 3]) / 2 - h / 2], 1)
        d = np.linalg.norm(c, axis=1) / (0.5 * np.hypot(w, h))
        return float(np.sum(np.clip(1.0 - d, 0.0, 1.0)))
    if policy == "longest_track":
        return float(len(tr.frames))
    raise ValueError(f"unknown identity policy {policy!r}")


def select(tracks: list[Track], policy: str, frame_size: tuple, adjacent: int = 0) -> dict[int, Face]:
    """The subject's face per frame: the best track by ``policy`` plus time-disjoint continuations of it.

    ``adjacent`` (every_k): a track that starts or ends within this many frames of a chosen frame
    continues it up to ``ADJACENT_MERGE_DISTANCE`` face sizes away (``MERGE_DISTANCE`` otherwise)."""
    if not tracks:
        return {}
    ranked = sorted(tracks, key=lambda tr: track_score(tr, policy, frame_size), reverse=True)
    chosen = {t: f for t, f in zip(ranked[0].frames, ranked[0].faces)}
    for tr in ranked[1:]:
        if any(t in chosen for t in tr.frames):
            continue
        if _continues(chosen, tr, adjacent):
            chosen.update(zip(tr.frames, tr.faces))
    return chosen


def _continues(chosen: dict[int, Face], tr: Track, adjacent: int = 0) -> bool:
    times = np.array(sorted(chosen))
    # nearest chosen frame before the track's start or after its end
    before = times[times < tr.frames[0]]
    after = times[times > tr.frames[-1]]
    pairs = []
    if before.size:
        pairs.append((chosen[int(before[-1])].box, tr.faces[0].box, tr.frames[0] - int(before[-1])))
    if after.size:
        pairs.append((chosen[int(after[0])].box, tr.faces[-1].box, int(after[0]) - tr.frames[-1]))
    for a, b, gap in pairs:
        size = max(a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1])
        dist = np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)
        limit = ADJACENT_MERGE_DISTANCE if gap <= adjacent else MERGE_DISTANCE
        if size > 0 and dist / size < limit:
            return True
    return False


def fill_between(chosen: dict[int, Face], every_k: int, n: int) -> dict[int, Face]:
    """``tracker: interpolate``: faces between two consecutive detected keyframes, interpolated (status TRACKED).

    The frames after the video's last keyframe (fewer than ``every_k``) hold the last detection.
    """
    out = dict(chosen)
    times = sorted(t for t, f in chosen.items() if f.status == DETECTED)
    if times and times[-1] + every_k >= n:
        last = chosen[times[-1]]
        for t in range(times[-1] + 1, n):
            out[t] = Face(last.box.copy(), last.landmarks.copy(), last.score, TRACKED)
    for t1, t2 in zip(times, times[1:]):
        if t2 - t1 > every_k or t2 - t1 < 2:
            continue
        a, b = chosen[t1], chosen[t2]
        for t in range(t1 + 1, t2):
            w = (t - t1) / (t2 - t1)
            out[t] = Face(
                ((1 - w) * a.box + w * b.box).astype(np.float32),
                ((1 - w) * a.landmarks + w * b.landmarks).astype(np.float32),
                min(a.score, b.score),
                TRACKED,
            )
    return out


# ---------------------------------------------------------------- arrays


@dataclass
class TrackArrays:
    timestamps: np.ndarray  # f8 [N]
    boxes: np.ndarray  # f4 [N, 4]
    landmarks: np.ndarray  # f4 [N, 5, 2]
    scores: np.ndarray  # f4 [N]
    status: np.ndarray  # u1 [N]
    num_faces: np.ndarray  # i2 [N]
    frame_size: np.ndarray  # i4 [2] (H, W)


def finalize(cands: Candidates, chosen: dict[int, Face], max_gap: int, smooth: float, scale=(1.0, 1.0), frame_size=None) -> TrackArrays:
    """Per-frame arrays of the chosen face; ``scale`` (sx, sy) maps analysis pixels to decoded-frame pixels."""
    n = len(cands)
    boxes = np.zeros((n, 4), np.float32)
    lms = np.zeros((n, 5, 2), np.float32)
    scores = np.zeros(n, np.float32)
    status = np.zeros(n, np.uint8)
    for t, f in chosen.items():
        boxes[t], lms[t], scores[t], status[t] = f.box, f.landmarks, f.score, f.status
    interpolate_gaps(boxes, lms, scores, status, max_gap)
    if smooth > 0:
        smooth_runs(boxes, lms, status, smooth)
    sx, sy = scale
    boxes /= np.array([sx, sy, sx, sy], np.float32)
    lms /= np.array([sx, sy], np.float32)
    return TrackArrays(
        timestamps=np.asarray(cands.timestamps, np.float64),
        boxes=boxes,
        landmarks=lms,
        scores=scores,
        status=status,
        num_faces=np.asarray(cands.num_faces, np.int16),
        frame_size=np.asarray(frame_size if frame_size is not None else cands.frame_size, np.int32),
    )


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True in ``mask``."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.diff(m.astype(np.int8))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def interpolate_gaps(boxes, lms, scores, status, max_gap: int) -> None:
    n = len(status)
    for a, b in runs(status == NO_FACE):
        if a == 0 or b == n or b - a > max_gap:
            continue
        w = (np.arange(a, b) - (a - 1)) / float(b - (a - 1))
        boxes[a:b] = (1 - w)[:, None] * boxes[a - 1] + w[:, None] * boxes[b]
        lms[a:b] = (1 - w)[:, None, None] * lms[a - 1] + w[:, None, None] * lms[b]
        scores[a:b] = min(scores[a - 1], scores[b])
        status[a:b] = INTERPOLATED


def smooth_runs(boxes, lms, status, smooth: float) -> None:
    alpha = 1.0 - float(smooth)
    for a, b in runs(status != NO_FACE):
        if b - a < 2:
            continue
        x = np.concatenate([boxes[a:b], lms[a:b].reshape(b - a, -1)], axis=1).astype(np.float64)
        y = _ema(_ema(x, alpha)[::-1], alpha)[::-1]
        boxes[a:b] = y[:, :4]
        lms[a:b] = y[:, 4:].reshape(b - a, 5, 2)


def _ema(x: np.ndarray, alpha: float) -> np.ndarray:
    """Causal exponential moving average along axis 0, started at the first value (no scipy import: it costs ~1 s per job)."""
    y = np.empty_like(x)
    y[0] = x[0]
    for t in range(1, len(x)):
        y[t] = alpha * x[t] + (1 - alpha) * y[t - 1]
    return y


def summary(arr: TrackArrays) -> dict:
    """Counts for QC: frames, found (by kind), lost, gaps, faces per keyframe."""
    st = arr.status
    n = len(st)
    lost_runs = runs(st == NO_FACE)
    det = arr.num_faces[arr.num_faces >= 0]
    return {
        "frames": int(n),
        "detected": int((st == DETECTED).sum()),
        "tracked": int((st == TRACKED).sum()),
        "interpolated": int((st == INTERPOLATED).sum()),
        "lost": int((st == NO_FACE).sum()),
        "coverage": float((st != NO_FACE).mean()) if n else 0.0,
        "gaps": len(lost_runs),
        "longest_gap": int(max((b - a for a, b in lost_runs), default=0)),
        "keyframes": int(det.size),
        "keyframes_multi_face": int((det > 1).sum()),
        "mean_faces": float(det.mean()) if det.size else 0.0,
        "mean_score": float(arr.scores[st == DETECTED].mean()) if (st == DETECTED).any() else 0.0,
    }
