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

Batches: insightface's exports (``det_500m``) fix the input's batch axis at 1. The model is
loaded with that axis made free (:func:`free_batch`, an edit of the .onnx bytes; no onnx
package needed) and the frames of a call go through the network as one batch per size: at
det_size 160 on one core 2.2 instead of 2.8 ms per frame (large inputs gain nothing: at most
:data:`MAX_BATCH_PIXELS` input pixels per run, a 640 input runs alone). Outputs are per-frame identical
(checked on load on a random batch against single-frame runs: bit-equal; if not, or if the
edit does not apply, frames go one per call as before).
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
MAX_BATCH = 16  # frames per network run (batch 4-16 cost the same per frame at det_size 160)
# input pixels per network run: larger batches of large inputs run slower per frame than single frames (their
# activations leave the cache; one core: 640x384 28.9 vs 21.5 ms/frame in 16s, 22.4 vs 22.8 in 4s; 320x320 9.1 vs 9.5)
MAX_BATCH_PIXELS = MAX_BATCH * 160 * 160


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
        prov = providers(faces_cfg["device"])
        self.session = _load_free_batch(ort, self.path, opts, prov)  # None: the edit does not apply
        self.edited = self.session is not None
        if self.session is None:
            self.session = _load(ort, self.path, opts, prov)
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
        # one network run per batch of frames (per size) where the batch axis can be freed (module doc)
        self.max_batch = MAX_BATCH if self._batches_equal() else 1
        if self.max_batch == 1 and self.edited:  # the edited model does not batch as expected: the file as it is
            self.session, self.edited = _load(ort, self.path, opts, prov), False
        self.details = {"model": str(self.path), "det_size": self.sizes, "providers": self.session.get_providers(),
                        "max_batch": self.max_batch}

    def _batches_equal(self) -> bool:
        """True when a batch of 2 random frames gives, split per frame, exactly the single-frame outputs."""
        if not isinstance(self.session.get_inputs()[0].shape[0], str) and self.session.get_inputs()[0].shape[0] == 1:
            return False  # a fixed batch of 1 (the edit did not apply)
        try:
            x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 64, 96)).astype(np.float32)
            together = self.session.run(self.output_names, {self.input_name: x})
            for i in range(2):
                alone = self.session.run(self.output_names, {self.input_name: x[i : i + 1]})
                for a, b in zip(alone, together):
                    if not np.array_equal(a.reshape(-1), _frame_output(b, 2, i, self.anchors).reshape(-1)):
                        return False
            return True
        except Exception as exc:  # noqa: BLE001 - any failure: frames go one per call, as the export allows
            log.debug("%s: frames go one per call (%s: %s)", self.path, type(exc).__name__, exc)
            return False

    def detect(self, frames: np.ndarray, sizes: list[int] | None = None) -> list[Detections]:
        sizes = sizes or self.sizes
        frames = np.asarray(frames)
        if not len(frames):
            return []
        per_size = [self._run_batch(frames, size) for size in sizes]  # [size][frame] -> (boxes, scores, kps)
        return [self._merge([r[j] for r in per_size]) for j in range(len(frames))]

    @staticmethod
    def _merge(found: list) -> Detections:
        """One frame's faces over the sizes it was run at: merged, then non-maximum suppressed."""
        b = np.concatenate([f[0] for f in found])
        s = np.concatenate([f[1] for f in found])
        k = np.concatenate([f[2] for f in found])
        if len(s) == 0:
            return Detections.empty()
        keep = nms(b, s, NMS_IOU)
        return Detections(b[keep].astype(np.float32), s[keep].astype(np.float32), k[keep].astype(np.float32))

    def _run_batch(self, frames: np.ndarray, size: int) -> list:
        """(boxes, scores, kps) of every frame (all of one shape) at detector input ``size``."""
        h, w = frames.shape[1:3]
        (nh, nw), (ch, cw) = self.input_shape(h, w, size)
        scale = nh / h
        out = []
        n = max(1, min(self.max_batch, MAX_BATCH_PIXELS // (ch * cw)))  # 16 at 160, 4 at 320x320, 1 at 640
        for b0 in range(0, len(frames), n):
            part = frames[b0 : b0 + n]
            canvas = np.zeros((len(part), ch, cw, 3), np.uint8)
            for j, rgb in enumerate(part):
                canvas[j, :nh, :nw] = cv2.resize(rgb, (nw, nh))
            # (x - 127.5) / 128 as insightface, in one pass to NCHW (x / 128 = x * 2^-7 exactly)
            blob = np.empty((len(part), 3, ch, cw), np.float32)
            np.subtract(canvas.transpose(0, 3, 1, 2), np.float32(127.5), out=blob)
            blob *= np.float32(1.0 / 128.0)
            outs = self.session.run(self.output_names, {self.input_name: blob})
            for j in range(len(part)):
                one = outs if len(part) == 1 else [_frame_output(o, len(part), j, self.anchors) for o in outs]
                out.append(self._decode(one, ch, cw, scale))
        return out

    def _decode(self, outs: list, ch: int, cw: int, scale: float):
        """Boxes, scores and keypoints (frame pixels) from one frame's network outputs (insightface's decoding)."""
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


def _load(ort, path: Path, opts, prov):
    try:
        return ort.InferenceSession(str(path), opts, providers=prov)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types for bad files
        raise ConfigError(f"faces.model: {path}: onnxruntime cannot load it ({type(exc).__name__}: {exc})") from None


def _load_free_batch(ort, path: Path, opts, prov):
    """A session of the model at ``path`` with its batch axis freed (:func:`free_batch`); None when that fails."""
    try:
        edited = free_batch(path.read_bytes())
        return None if edited is None else ort.InferenceSession(edited, opts, providers=prov)
    except Exception:  # noqa: BLE001 - not an editable model: loaded as it is (errors reported there)
        return None


def _frame_output(out: np.ndarray, n: int, i: int, anchors: int) -> np.ndarray:
    """Frame ``i``'s part of a network output for a batch of ``n``: ``[n, rows, c]`` (batched exports) or, for
    insightface's batch-1 exports with the batch axis freed, ``[rows * n, c]`` with the frames interleaved per grid
    cell (the head transposes (n, c, h, w) to (h, w, n, c) before flattening)."""
    if out.ndim == 3:
        return out[i]
    c = out.shape[-1]
    return out.reshape(-1, n, anchors * c)[:, i].reshape(-1, c)


def free_batch(model: bytes) -> bytes | None:
    """The .onnx ``model`` with its first input's first dimension made symbolic (``N``); None if it has none.

    A minimal protobuf edit (ModelProto.graph 7 > GraphProto.input 11 > ValueInfoProto.type 2 > TypeProto.tensor_type
    1 > shape 2 > dim 1, the first of each), so the onnx package is not needed."""
    return _edit(model, [7, 11, 2, 1, 2, 1], _tag(2, 2) + _varint(1) + b"N")


def _edit(buf: bytes, path: list[int], leaf: bytes) -> bytes | None:
    """``buf`` with the first length-delimited field numbered ``path[0]`` replaced (recursively along ``path``)."""
    i = 0
    while i < len(buf):
        start = i
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _read_varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            n, j = _read_varint(buf, i)
            i = j + n
            if field == path[0]:
                inner = leaf if len(path) == 1 else _edit(buf[j:i], path[1:], leaf)
                if inner is None:
                    return None
                return buf[:start] + _tag(field, 2) + _varint(len(inner)) + inner + buf[i:]
        else:
            return None  # groups (deprecated, never in ONNX)
    return None


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


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
