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
3. **later keyframes of the same video start at the size that worked** (a wide shot
   stays wide); when a face found at a raised size would be comfortably large at the
   base size (at least twice ``adaptive_min_face``), the next keyframe goes back to the
   base size (the shot changed to a close-up).

A video without any face would pay the whole ladder on every keyframe, so retries that
find nothing back off: after ``f`` failed retries in a row, the next ``4^f - 1``
keyframes (3, 15, then ``MAX_SKIP`` = 31) are not retried; a success resets it.

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

from affectube.faces.detect import Detections, Detector, det_sizes

MAX_SKIP = 31  # keyframes


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

    def __init__(self, detector: Detector, faces_cfg: dict):
        self.detector = detector
        self.base = max(det_sizes(faces_cfg))
        self.cap = adaptive_cap(faces_cfg, detector)
        self.min_face = float(faces_cfg["adaptive_min_face"])
        self.current = self.base
        self._failures = 0
        self._skip = 0
        self.stats = {"enabled": self.cap is not None, "cap": self.cap, "min_face": self.min_face, "keyframes": 0,
                      "retried": 0, "rescued": 0, "retry_calls": 0, "retry_seconds": 0.0, "base_seconds": 0.0,
                      "sizes": {}}

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
        for i, det in enumerate(first):
            if size != self.current:  # an earlier keyframe of this batch moved the scale
                t0 = time.perf_counter()
                det = self._detect(frames[i : i + 1], self.current)[0]
                self.stats["retry_seconds"] += time.perf_counter() - t0
                self.stats["retry_calls"] += 1
            det = self._adapt(frames[i], det)
            out.append(det)
        self.stats["keyframes"] += len(frames)
        return out

    def _detect(self, frames: np.ndarray, size: int) -> list[Detections]:
        if size == self.base:  # the configured faces.det_size (every backend)
            return self.detector(frames)
        return self.detector(frames, sizes=[size])

    def _adapt(self, frame: np.ndarray, det: Detections) -> Detections:
        size = self.current
        key = str(size)
        if self.cap is None or self._small(det, frame, size) is False:
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
            self.current = best_size
            self._failures = 0
        else:
            self._failures += 1
            self._skip = min(MAX_SKIP, 4 ** self._failures - 1)
        key = str(best_size)
        self.stats["sizes"][key] = self.stats["sizes"].get(key, 0) + 1
        return best

    def _small(self, det: Detections, frame: np.ndarray, size: int) -> bool:
        """True when ``det`` has no face at least ``min_face`` px high at the detector's input."""
        return self.input_face_height(det, frame.shape, size) < self.min_face

    def _step_down(self, det: Detections, frame: np.ndarray, size: int) -> None:
        if size != self.base and self.input_face_height(det, frame.shape, self.base) >= 2 * self.min_face:
            self.current = self.base

    def summary(self) -> dict:
        s = dict(self.stats)
        s["retry_seconds"] = round(s["retry_seconds"], 4)
        s["base_seconds"] = round(s["base_seconds"], 4)
        s["final_size"] = self.current
        return s
