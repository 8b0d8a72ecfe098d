"""InsightFace SCRFD detector (5 keypoints), loaded from a local model and run with onnxruntime.

``faces.model`` is one of
- a path to a detector ``.onnx`` file (e.g. ``buffalo_sc/det_500m.onnx``);
- a model-pack directory (``~/.insightface/models/buffalo_l``): its ``det_*.onnx``;
- an insightface pack name (``buffalo_l``, ``buffalo_sc``, ...): insightface downloads it
  into ``~/.insightface/models/<name>`` when online, then it is used like a directory.

Pre- and post-processing follow insightface's ``model_zoo.scrfd.SCRFD`` exactly
(letterbox into a det_size square, (x - 127.5) / 128 on RGB, anchor-centre distance
decoding per stride, NMS at IoU 0.4, boxes from several det sizes merged before NMS);
``tests/test_faces_detect.py`` checks the output against insightface's own class. It is
re-implemented here because importing the insightface package costs about a second
of CPU per process (it pulls in scipy, its GUI and liveness add-ons), which for
per-video jobs on 3-second clips is more than decoding the clip.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from affectube.errors import ConfigError
from affectube.faces.detect import Detections, det_sizes

log = logging.getLogger(__name__)
NMS_IOU = 0.4


def resolve_model(model: str | None) -> Path:
    """The detector .onnx file ``faces.model`` points to (ConfigError when there is none)."""
    if not model:
        raise ConfigError("faces.model: the insightface backend needs a detector: an .onnx file, a model-pack directory or a pack name")
    p = Path(model).expanduser()
    if p.is_file():
        if p.suffix.lower() != ".onnx":
            raise ConfigError(f"faces.model: {p} is not an .onnx file")
        return p
    if p.is_dir():
        return _detector_in_pack(p)
    if "/" in str(model) or str(model).endswith(".onnx"):
        raise ConfigError(f"faces.model: {p}: no such file or directory")
    return _detector_in_pack(_download_pack(str(model)))


def _detector_in_pack(directory: Path) -> Path:
    onnx = sorted(directory.rglob("*.onnx"))
    det = [f for f in onnx if f.name.lower().startswith("det")]
    if len(det) != 1:
        found = ", ".join(f.name for f in onnx) or "no .onnx files"
        raise ConfigError(f"faces.model: {directory}: expected one det_*.onnx detector in the pack, found: {found}")
    return det[0]


def _download_pack(name: str) -> Path:
    local = Path("~/.insightface/models").expanduser() / name
    if local.is_dir():
        return local
    from insightface.utils.storage import ensure_available

    try:
        return Path(ensure_available("models", name, root="~/.insightface"))
    except Exception as exc:  # noqa: BLE001 - any download failure is reported as a config problem
        raise ConfigError(
            f"faces.model: insightface pack {name!r} is not in ~/.insightface/models and could not be downloaded"
            f" ({type(exc).__name__}: {exc}); set faces.model to a local .onnx detector"
        ) from None


def providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ConfigError("faces.device: cuda asked for, but onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]


class ScrfdDetector:
    name = "insightface"

    def __init__(self, faces_cfg: dict, threads: int = 1):
        import onnxruntime as ort

        self.path = resolve_model(faces_cfg["model"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # dynamic-shape output warnings
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers(faces_cfg["device"]))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types for bad files
            raise ConfigError(f"faces.model: {self.path}: onnxruntime cannot load it ({type(exc).__name__}: {exc})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        n = len(self.output_names)
        layouts = {6: (3, [8, 16, 32], 2, False), 9: (3, [8, 16, 32], 2, True), 10: (5, [8, 16, 32, 64, 128], 1, False), 15: (5, [8, 16, 32, 64, 128], 1, True)}
        if n not in layouts:
            raise ConfigError(f"faces.model: {self.path}: not an SCRFD detector ({n} outputs; SCRFD has 6, 9, 10 or 15)")
        self.fmc, self.strides, self.anchors, kps = layouts[n]
        if not kps:
            raise ConfigError(f"faces.model: {self.path}: this SCRFD model has no keypoint outputs (5 landmarks are needed)")
        self.sizes = det_sizes(faces_cfg)
        # faces.det_shape: fit = the detector input is size x (the frame's short side rounded up to the
        # largest stride), not a size x size square: a 16:9 frame costs ~60% of the square's compute
        self.fit = faces_cfg["det_shape"] == "fit"
        self.threshold = float(faces_cfg["min_score"])
        self._centers: dict = {}
        self.details = {"model": str(self.path), "det_size": self.sizes, "providers": self.session.get_providers()}

    def detect(self, frames: np.ndarray, sizes: list[int] | None = None) -> list[Detections]:
        return [self._detect_one(f, sizes or self.sizes) for f in frames]

    def _detect_one(self, rgb: np.ndarray, sizes: list[int]) -> Detections:
        boxes, scores, kps = [], [], []
        for size in sizes:
            b, s, k = self._run(rgb, size)
            boxes.append(b)
            scores.append(s)
            kps.append(k)
        b, s, k = np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps)
        if len(s) == 0:
            return Detections.empty()
        keep = nms(b, s, NMS_IOU)
        return Detections(b[keep].astype(np.float32), s[keep].astype(np.float32), k[keep].astype(np.float32))

    def _run(self, rgb: np.ndarray, size: int):
        h, w = rgb.shape[:2]
        (nh, nw), (ch, cw) = self.input_shape(h, w, size)
        scale = nh / h
        canvas = np.zeros((ch, cw, 3), np.uint8)
        canvas[:nh, :nw] = cv2.resize(rgb, (nw, nh))
        blob = ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outs = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(blob)})
        boxes, scores, kps = [], [], []
        for i, stride in enumerate(self.strides):
            sc = outs[i].reshape(-1)
            keep = np.flatnonzero(sc >= self.threshold)
            if keep.size == 0:
                continue
            centers = self._anchor_centers(ch // stride, cw // stride, stride)[keep]
            d = outs[i + self.fmc].reshape(-1, 4)[keep] * stride
            k = outs[i + 2 * self.fmc].reshape(-1, 10)[keep] * stride
            boxes.append(np.c_[centers - d[:, :2], centers + d[:, 2:]])
            kps.append((np.repeat(centers, 5, axis=0).reshape(-1, 5, 2) + k.reshape(-1, 5, 2)))
            scores.append(sc[keep])
        if not scores:
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        return np.concatenate(boxes) / scale, np.concatenate(scores), np.concatenate(kps) / scale

    def input_shape(self, h: int, w: int, size: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """((h, w) of the resized frame, (h, w) of the detector input) for an ``h`` x ``w`` frame at ``size``:
        the frame is letterboxed (top left) into size x size (``square``) or into size x its short side rounded
        up to the largest stride (``fit``)."""
        if h / w > 1.0:
            nh, nw = size, int(size * w / h)
        else:
            nw, nh = size, int(size * h / w)
        if not self.fit:
            return (nh, nw), (size, size)
        return (nh, nw), (_round_up(nh, self.strides[-1]), _round_up(nw, self.strides[-1]))

    def _anchor_centers(self, fh: int, fw: int, stride: int) -> np.ndarray:
        key = (fh, fw, stride)
        if key not in self._centers:
            c = (np.stack(np.mgrid[:fh, :fw][::-1], axis=-1).astype(np.float32) * stride).reshape(-1, 2)
            if self.anchors > 1:
                c = np.repeat(c, self.anchors, axis=0)
            self._centers[key] = c
        return self._centers[key]


def _round_up(n: int, m: int) -> int:
    return max(m, -(-int(n) // m) * m)


def nms(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> np.ndarray:
    """Greedy non-maximum suppression (insightface's, +1 pixel area convention)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.flatnonzero(ovr <= thresh) + 1]
    return np.asarray(keep, dtype=np.int64)
