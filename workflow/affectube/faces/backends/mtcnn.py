"""facenet-pytorch MTCNN: a detector with 5 landmarks whose weights ship inside the wheel (offline).

Frames of one batch have the same size, so MTCNN runs them as one batch.
"""

from __future__ import annotations

import numpy as np

from affectube.errors import ConfigError
from affectube.faces.detect import Detections


class MtcnnDetector:
    name = "mtcnn"

    def __init__(self, faces_cfg: dict, threads: int = 1):
        try:
            import torch
            from facenet_pytorch import MTCNN
        except ImportError as exc:
            raise ConfigError(f"faces.backend: mtcnn needs facenet-pytorch ({exc})") from None
        device = faces_cfg["device"]
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("faces.device: cuda asked for, but torch sees no CUDA device")
        if device == "cpu":
            torch.set_num_threads(max(1, int(threads)))
        self.model = MTCNN(keep_all=True, device=device, min_face_size=20, thresholds=[0.6, 0.7, 0.7], post_process=False)
        self.details = {"device": device, "model": "facenet-pytorch MTCNN (weights in the wheel)"}

    def detect(self, frames: np.ndarray) -> list[Detections]:
        import torch

        with torch.inference_mode():
            boxes, probs, points = self.model.detect(list(frames), landmarks=True)
        out = []
        for b, p, lm in zip(boxes, probs, points):
            if b is None or len(b) == 0:
                out.append(Detections.empty())
                continue
            out.append(
                Detections(
                    boxes=np.asarray(b, dtype=np.float32).reshape(-1, 4),
                    scores=np.asarray(p, dtype=np.float32).reshape(-1),
                    landmarks=np.asarray(lm, dtype=np.float32).reshape(-1, 5, 2),
                )
            )
        return out
