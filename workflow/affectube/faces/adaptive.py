"""Adaptive detection scale: look again, larger, when a keyframe shows no face or only tiny ones.

Wide shots, crowds and dim stages hold faces a few pixels high at the detector's input
(``faces.det_size`` 160 px for a whole frame): SCRFD finds nothing. For each batch of
keyframes, :class:`AdaptiveDetector`

1. detects at the current size (``faces.det_size`` at the start of every video);
2. for each keyframe with **no face**, or whose largest face is below
   ``faces.adaptive_min_face`` pixels high *at the detector's input*, detects again at
   twice the size, then twice that, ... up to ``faces.adaptive_max_size`` (the cap);
   the first size that finds a face at least that large wins; if none does, the
   keyframe keeps the larger-size result that found the most faces (or the original);
   the earlier keyframes of the same batch that had given up (no reliable face, back-off
   below) are detected again at the size that worked, latest first, until one still
   finds nothing (**back-fill**: faces that appear on a dim or wide first shot are not lost
   to the back-off);
3. **later keyframes of the same video start at the size that worked** (a wide shot
   stays wide); when a face found at a raised size would be comfortably large at a
   smaller size of the ladder (at least twice ``adaptive_min_face``), the next keyframe goes
   down to the smallest such size (the shot changed to a close-up);
4. a face of the previous keyframe that this keyframe lost is looked for again in a region
   around it, and a face new on this keyframe is looked for on the previous one (same batch)
   (``faces.redetect_context``; :mod:`affectube.faces.adaptive_redetect`).

A video without any face would pay the whole ladder on every keyframe, so retries that
find nothing back off: after ``f`` failed retries in a row, the next ``4^f - 1``
keyframes without a reliable face (3, 15, then ``MAX_SKIP`` = 31) are not retried; a success, or a
keyframe whose face is found at the current size, resets it (a back-off earned while the faces were
away must not outlast their return).

The frames the detector sees (``faces.analysis_side``, auto) are sized for the first retry
step (2 x ``det_size``), so a retry really sees more pixels (larger steps see them upsampled;
set ``analysis_side`` to give them full resolution, at a cost); the base-size detection
shrinks them to ``det_size`` first and costs what it did. Costs are counted apart (:attr:`stats`: keyframes retried and rescued, detector
calls and seconds spent on retries, keyframes per size) and land in the tracks' meta and
the QC table. Backends without a size (``mtcnn``: its own image pyramid) are not adapted.
"""

from __future__ import annotations

import time

import numpy as np

from affectube.faces.adaptive_redetect import redetect_lost
from affectube.faces.detect import Detections, Detector, det_sizes

MAX_SKIP = 31  # keyframes
MAX_BACKFILL = 8  # keyframes back-filled at most after a rescue
STEP_DOWN = 2.0  # a face this many times adaptive_min_face at a smaller size sends the next keyframe down to it


def adaptive_cap(faces_cfg: dict, detector: Detector | None = None) -> int | None:
    """The largest detector size retries may use; None when adaptive detection is off."""
    cap = faces_cfg["adaptive_max_size"]
    if not cap or int(cap) <= max(det_sizes(faces_cfg)):
        return None
    if detector is not None and not getattr(detector.backend, "sizes", None):
        return None  # backend without a det size (mtcnn)
    return int(cap)


def ladder(base: int, cap: int) -> list[int]:
    """Sizes tried above ``base``: doubling (rounded to 32 px), the cap last."""
    out, s = [], base
    while s < cap:
        s = min(cap, int(round(s * 2 / 32.0)) * 32)
        out.append(s)
    return out


class AdaptiveDetector:
    """Wraps a :class:`Detector` for ONE video (it keeps the scale that worked between calls)."""

    def __init__(self, detector: Detector, faces_cfg: dict, start: int | None = None):
        self.detector = detector
        self.base = max(det_sizes(faces_cfg))
        self.cap = adaptive_cap(faces_cfg, detector)
        self.min_face = float(faces_cfg["adaptive_min_face"])
        self.context = float(faces_cfg["redetect_context"] or 0.0)
        # `start`: the size a previous pass of this video moved to (pipeline restart on larger frames)
        self.current = int(start) if start and self.cap else self.base
        self._failures = 0
        self._skip = 0
        self._prev = Detections.empty()
        self.used: list[int] = []  # detector size per keyframe
        self._gave_up: list[tuple[int, np.ndarray]] = []  # (keyframe number, frame): no reliable face, since the last one with
        self.revisions: dict[int, Detections] = {}  # back-filled keyframes of earlier batches (FrameTracker applies them)
        self._rescued = False
        self.stats = {"enabled": self.cap is not None, "cap": self.cap, "min_face": self.min_face, "keyframes": 0,
                      "retried": 0, "rescued": 0, "retry_calls": 0, "retry_seconds": 0.0, "base_seconds": 0.0,
                      "backfilled": 0, "redetect_context": self.context, "redetect_calls": 0, "redetected": 0,
                      "redetect_seconds": 0.0, "sizes": {}}

    @property
    def pad(self) -> float:
        return self.detector.pad

    def input_face_height(self, det: Detections, frame_shape: tuple, size: int) -> float:
        """Height (px) of the largest face of ``det`` at a detector input of ``size`` px."""
        if not len(det):
            return 0.0
        h, w = frame_shape[:2]
        side = max(h, w) * (1.0 + 2.0 * self.pad)  # the padded frame is letterboxed into size x size
        return float(np.max(det.boxes[:, 3] - det.boxes[:, 1])) * size / side

    def __call__(self, frames: np.ndarray) -> list[Detections]:
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        out: list[Detections] = []
        # one batch at the current size; keyframes are then handled in order, since a size that
        # worked on one applies to the next
        t0 = time.perf_counter()
        first = self._detect(frames, self.current)
        self.stats["base_seconds"] += time.perf_counter() - t0
        size = self.current
        base = self.stats["keyframes"]  # keyframe number of frames[0] in the video
        for i, det in enumerate(first):
            if size != self.current:  # an earlier keyframe of this batch moved the scale
                t0 = time.perf_counter()
                det = self._detect(frames[i : i + 1], self.current)[0]
                self.stats["retry_seconds"] += time.perf_counter() - t0
                self.stats["retry_calls"] += 1
            self._rescued = False
            self._size_now = self.current
            det = self._adapt(frames[i], det)
            self.used.append(self._size_now)
            if self._rescued:
                self._backfill(out, base)
                self._gave_up = []
            elif self.cap is not None and self._small(det, frames[i], self.current):
                self._gave_up = [*self._gave_up, (base + i, frames[i].copy())][-MAX_BACKFILL:]
            else:
                self._gave_up = []
            if self.context > 0:
                det = self._redetect(frames[i], self._prev, det)
                if i > 0:  # a face new on this keyframe, looked for on the previous one (it may have flickered there)
                    out[i - 1] = self._redetect(frames[i - 1], det, out[i - 1])
            out.append(det)
            self._prev = det
        self.stats["keyframes"] += len(frames)
        return out

    def _backfill(self, out: list[Detections], base: int) -> None:
        """Detect the keyframes that gave up just before a rescue again at the size that rescued it (latest first);
        those of an earlier batch land in :attr:`revisions` (keyframe number -> Detections) for the caller."""
        t0 = time.perf_counter()
        for g, frame in reversed(self._gave_up):
            d = self.detector(frame[None], sizes=[self.current])[0]
            self.stats["retry_calls"] += 1
            if self._small(d, frame, self.current):
                break
            if g >= base:
                out[g - base] = d
            else:
                self.revisions[g] = d
            self.used[g] = self.current
            self.stats["backfilled"] += 1
        self.stats["retry_seconds"] += time.perf_counter() - t0

    def _redetect(self, frame: np.ndarray, ref: Detections, det: Detections) -> Detections:
        """``det`` (of ``frame``) plus the faces of ``ref`` (a neighbouring keyframe) it lacks, found again in regions."""
        t0 = time.perf_counter()
        det, calls, found = redetect_lost(self.detector, frame, ref, det, self.context)
        self.stats["redetect_calls"] += calls
        self.stats["redetected"] += found
        self.stats["redetect_seconds"] += time.perf_counter() - t0
        return det

    def detect_like(self, keyframe: int, frames: np.ndarray) -> list[Detections]:
        """Frames detected at the size keyframe number ``keyframe`` used, no adaptation (:mod:`affectube.faces.adaptive_refine`)."""
        size = self.used[keyframe] if 0 <= keyframe < len(self.used) else self.current
        return self._detect(np.asarray(frames), size)

    def _detect(self, frames: np.ndarray, size: int) -> list[Detections]:
        if size == self.base:  # the configured faces.det_size (every backend)
            return self.detector(frames)
        return self.detector(frames, sizes=[size])

    def _adapt(self, frame: np.ndarray, det: Detections) -> Detections:
        size = self.current
        key = str(size)
        if self.cap is None or self._small(det, frame, size) is False:
            self._failures = self._skip = 0  # a face found at the current size ends a back-off (faces are back)
            self._step_down(det, frame, size)
            self.stats["sizes"][key] = self.stats["sizes"].get(key, 0) + 1
            return det
        if self._skip > 0:
            self._skip -= 1
            self.stats["sizes"][key] = self.stats["sizes"].get(key, 0) + 1
            return det
        self.stats["retried"] += 1
        best, best_size = det, size
        t0 = time.perf_counter()
        for s in ladder(size, self.cap):
            d = self.detector(frame[None], sizes=[s])[0]
            self.stats["retry_calls"] += 1
            if self._small(d, frame, s) is False:
                best, best_size = d, s
                break
            if len(d) > len(best):
                best, best_size = d, s
        self.stats["retry_seconds"] += time.perf_counter() - t0
        if not self._small(best, frame, best_size):
            self.stats["rescued"] += 1
            self._rescued = best_size != size
            self.current = best_size
            self._failures = 0
        else:
            self._failures += 1
            self._skip = min(MAX_SKIP, 4 ** self._failures - 1)
        key = str(best_size)
        self._size_now = best_size
        self.stats["sizes"][key] = self.stats["sizes"].get(key, 0) + 1
        return best

    def _small(self, det: Detections, frame: np.ndarray, size: int) -> bool:
        """True when ``det`` has no face at least ``min_face`` px high at the detector's input."""
        return self.input_face_height(det, frame.shape, size) < self.min_face

    def _step_down(self, det: Detections, frame: np.ndarray, size: int) -> None:
        """Go down to the smallest size (base or a ladder step below ``size``) where the face is comfortably large."""
        if size == self.base:
            return
        for s in [self.base, *ladder(self.base, self.cap)]:
            if s >= size:
                return
            if self.input_face_height(det, frame.shape, s) >= STEP_DOWN * self.min_face:
                self.current = s
                return

    def summary(self) -> dict:
        s = dict(self.stats)
        s["retry_seconds"] = round(s["retry_seconds"], 4)
        s["base_seconds"] = round(s["base_seconds"], 4)
        s["redetect_seconds"] = round(s["redetect_seconds"], 4)
        s["final_size"] = self.current
        return s
