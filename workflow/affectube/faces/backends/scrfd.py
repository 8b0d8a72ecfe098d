"""InsightFace SCRFD detector (5 keypoints), loaded from a local model.

``faces.model`` is one of
- a path to a detector ``.onnx`` file (e.g. ``buffalo_sc/det_500m.onnx``);
- a model-pack directory (``~/.insightface/models/buffalo_l``): its ``det_*.onnx``;
- an insightface pack name (``buffalo_l``, ``buffalo_sc``, ...): insightface downloads it
  into ``~/.insightface/models/<name>`` when online, then it is used like a directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from affectube.errors import ConfigError
from affectube.faces.detect import Detections, det_sizes

log = logging.getLogger(__name__)


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
        from insightface.model_zoo.scrfd import SCRFD

        self.path = resolve_model(faces_cfg.get("model"))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(self.path), opts, providers=providers(faces_cfg.get("device", "auto")))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types for bad files
            raise ConfigError(f"faces.model: {self.path}: onnxruntime cannot load it ({type(exc).__name__}: {exc})") from None
        self.model = SCRFD(model_file=str(self.path), session=session)
        if not self.model.use_kps:
            raise ConfigError(f"faces.model: {self.path}: this SCRFD model has no keypoint outputs (5 landmarks are needed)")
        self.model.nms_thresh = 0.4
        self.sizes = [(s, s) for s in det_sizes(faces_cfg)]
        self.threshold = float(faces_cfg.get("min_score", 0.5))
        self.details = {"model": str(self.path), "det_size": det_sizes(faces_cfg), "providers": session.get_providers()}

    def detect(self, frames: np.ndarray) -> list[Detections]:
        out = []
        for rgb in frames:
            bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # insightface expects OpenCV's BGR order
            det, kps = self.model.detect(bgr, input_size=self.sizes, det_thresh=self.threshold)
            if det is None or len(det) == 0:
                out.append(Detections.empty())
                continue
            out.append(
                Detections(
                    boxes=det[:, :4].astype(np.float32),
                    scores=det[:, 4].astype(np.float32),
                    landmarks=np.asarray(kps, dtype=np.float32).reshape(-1, 5, 2),
                )
            )
        return out
