"""Face detection: a registry of backends behind one interface, plus frame padding.

A backend turns a batch of RGB frames into, per frame, boxes (x1, y1, x2, y2),
scores and 5 landmarks (left eye, right eye, nose, left and right mouth corner, as
seen in the image). Backends are chosen by ``faces.backend``; a backend that cannot
load (missing model, missing package) is an error, never a silent switch to another.

- ``insightface``: SCRFD with 5 keypoints from a local ``.onnx`` file, a model-pack
  directory, or an insightface pack name (downloaded by insightface when online).
- ``mtcnn``: facenet-pytorch's MTCNN, whose weights ship inside its wheel (offline).

Faces that fill the whole frame (tight face crops such as MEAD) are missed by
detectors trained on faces in context, so every frame is padded by ``faces.pad``
(fraction of its width/height per side, black) before detection and the boxes are
shifted back. ``faces.det_size`` may be a list of sizes: SCRFD then runs at each
size and merges the boxes (multi-scale). ``faces.adaptive_max_size`` lets SCRFD look
again at larger sizes where a keyframe shows no face or only tiny ones
(:mod:`affectube.faces.adaptive`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from affectube.errors import ConfigError

# backend name -> "module:Class"
BACKENDS: dict[str, str] = {
    "insightface": "affectube.faces.backends.scrfd:ScrfdDetector",
    "mtcnn": "affectube.faces.backends.mtcnn:MtcnnDetector",
}


@dataclass
class Detections:
    """Faces found in one frame, best score first."""

    boxes: np.ndarray  # f4 [M, 4] x1, y1, x2, y2 (frame pixels)
    scores: np.ndarray  # f4 [M]
    landmarks: np.ndarray  # f4 [M, 5, 2]

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))

    def keep(self, mask: np.ndarray) -> "Detections":
        return Detections(self.boxes[mask], self.scores[mask], self.landmarks[mask])

    def sorted(self) -> "Detections":
        order = np.argsort(-self.scores, kind="stable")
        return Detections(self.boxes[order], self.scores[order], self.landmarks[order])


class Backend(Protocol):
    name: str

    def detect(self, frames: np.ndarray, sizes: list[int] | None = None) -> list[Detections]:
        """frames: uint8 [B, H, W, 3] RGB (already padded) -> one Detections per frame.

        ``sizes``: detector input sizes for this call (backends with a ``sizes`` attribute only;
        :mod:`affectube.faces.adaptive`); None = the configured ``faces.det_size``."""


class Detector:
    """A backend plus the frame padding and the score threshold from the ``faces`` params."""

    def __init__(self, backend: Backend, pad: float = 0.25, min_score: float = 0.5):
        self.backend = backend
        self.pad = float(pad)
        self.min_score = float(min_score)

    @property
    def name(self) -> str:
        return self.backend.name

    def describe(self) -> dict:
        return {"backend": self.backend.name, "pad": self.pad, "min_score": self.min_score, **getattr(self.backend, "details", {})}

    def __call__(self, frames: np.ndarray, sizes: list[int] | None = None) -> list[Detections]:
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if len(frames) == 0:
            return []
        # frames larger than this call's largest detector input needs (adaptive detection sizes the
        # analysis frames for its cap) are shrunk first: padding and letterboxing then cost what
        # they cost at the base size, and the boxes are scaled back
        factor = self._shrink_factor(frames.shape[1:3], sizes)
        if factor < 1.0:
            frames = self._shrink(frames, factor)
        h, w = frames.shape[1:3]
        py, px = int(round(self.pad * h)), int(round(self.pad * w))
        if py or px:
            padded = np.zeros((len(frames), h + 2 * py, w + 2 * px, 3), dtype=np.uint8)
            padded[:, py : py + h, px : px + w] = frames
        else:
            padded = frames
        out = []
        for det in (self.backend.detect(padded) if sizes is None else self.backend.detect(padded, sizes=sizes)):
            det = det.keep(det.scores >= self.min_score)
            det.boxes = (det.boxes - np.array([px, py, px, py], np.float32)).astype(np.float32)
            det.landmarks = (det.landmarks - np.array([px, py], np.float32)).astype(np.float32)
            # drop boxes whose centre lies in the padding (cannot be a face of this frame)
            cx = (det.boxes[:, 0] + det.boxes[:, 2]) / 2
            cy = (det.boxes[:, 1] + det.boxes[:, 3]) / 2
            inside = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
            det = det.keep(inside).sorted()
            if factor < 1.0:
                det.boxes = (det.boxes / factor).astype(np.float32)
                det.landmarks = (det.landmarks / factor).astype(np.float32)
            out.append(det)
        return out

    def _shrink_factor(self, hw: tuple, sizes: list[int] | None) -> float:
        sizes = sizes or getattr(self.backend, "sizes", None)
        if not sizes:
            return 1.0  # a backend without an input size (mtcnn) sees the frames as they are
        need = max(sizes) / (1.0 + 2.0 * self.pad)
        side = max(hw)
        return need / side if side > 1.25 * need else 1.0

    @staticmethod
    def _shrink(frames: np.ndarray, factor: float) -> np.ndarray:
        import cv2

        h, w = frames.shape[1:3]
        nw, nh = max(1, int(round(w * factor))), max(1, int(round(h * factor)))
        return np.stack([cv2.resize(f, (nw, nh), interpolation=cv2.INTER_AREA) for f in frames])


def build_detector(faces_cfg: dict, threads: int = 1) -> Detector:
    """The detector the ``faces`` params describe (raises ConfigError when it cannot be built).

    ``faces_cfg`` may be partial (tests, benchmarks): it is validated and filled with the schema's
    defaults (:func:`affectube.config.sections`), the backends index the filled section."""
    from affectube.config import sections

    if "backend" in faces_cfg and faces_cfg["backend"] not in BACKENDS:
        raise ConfigError(f"faces.backend: unknown backend {faces_cfg['backend']!r} (known: {', '.join(sorted(BACKENDS))})")
    faces_cfg = sections({"faces": faces_cfg}, "faces", source="build_detector")["faces"]
    module, cls = BACKENDS[faces_cfg["backend"]].split(":")
    backend = getattr(importlib.import_module(module), cls)(faces_cfg, threads=threads)
    return Detector(backend, pad=faces_cfg["pad"], min_score=faces_cfg["min_score"])


def det_sizes(faces_cfg: dict) -> list[int]:
    """``faces.det_size`` (one size or a list) as a list, of a filled ``faces`` section."""
    size = faces_cfg["det_size"]
    sizes = size if isinstance(size, (list, tuple)) else [size]
    return [int(s) for s in sizes]
