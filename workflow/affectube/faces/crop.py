"""Face crops from decoded frames and their cached face tracks (the ``crop`` params).

Strategies (``crop.strategy``):

- ``box``: a square centred on the (smoothed) face box, side = ``crop.scale`` x the
  box's longer side, resized to ``crop.size``. The seeds found a larger crop
  (more context: hair, jaw, shoulders) 7-9% better than a tight one.
- ``align``: a similarity transform (rotation, uniform scale, shift; least squares
  over the 5 landmarks, Umeyama) onto the standard 5-point ArcFace template of a
  112 px face, scaled to ``crop.size``; ``crop.scale`` zooms out around the
  template centre (1.0 = the ArcFace crop, 1.3 = 30% more context per side length).
  The eyes land on the same pixels in every frame (in-plane rotation removed).

``crop.grayscale`` gives 1-channel crops (SS-VAERR uses grayscale).
``crop.pad_mode`` fills the parts of a crop that fall outside the frame:
``edge`` repeats the border pixels, ``constant`` fills black.
Frames without a face (track status 0) give an all-zero crop and ``valid=False``.
Strong downscales are done in two steps (warp, then area resize) to avoid aliasing.
"""

from __future__ import annotations

import cv2
import numpy as np

from affectube.errors import DataError

# ArcFace / insightface 5-point template for a 112x112 crop (left eye, right eye, nose, mouth corners)
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64
)
BORDERS = {"edge": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}
MAX_OVERSAMPLE = 4


def _get(tracks, key, required: bool = True):
    try:
        return tracks[key] if hasattr(tracks, "keys") else getattr(tracks, key)
    except (KeyError, AttributeError):
        if required:
            raise DataError(f"crop_frames: the tracks have no {key!r}") from None
        return None


def crop_frames(frames: np.ndarray, tracks, crop_cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """Crop every frame with its track entry.

    ``frames`` uint8 [N,H,W,3] RGB decoded with the same ``decode`` params as the
    tracks; ``tracks``: a :class:`~affectube.faces.tracks.Tracks` (or a mapping with
    ``boxes``, ``landmarks``, ``status``, ``frame_size``). Returns ``crops`` uint8
    [N,S,S,C] (C = 1 if grayscale else 3) and ``valid`` bool [N].
    """
    frames = np.asarray(frames)
    boxes = np.asarray(_get(tracks, "boxes"), np.float64)
    lms = np.asarray(_get(tracks, "landmarks"), np.float64)
    status = np.asarray(_get(tracks, "status"))
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise DataError(f"crop_frames: frames must be [N,H,W,3] RGB, got shape {list(frames.shape)}")
    if len(frames) != len(status):
        raise DataError(f"crop_frames: {len(frames)} frames but {len(status)} track entries (decoded with other decode params?)")
    size = _get(tracks, "frame_size", required=False)
    if size is not None and len(frames) and tuple(int(x) for x in size) != tuple(frames.shape[1:3]):
        raise DataError(f"crop_frames: frames are {frames.shape[1]}x{frames.shape[2]} but the tracks were made on {int(size[0])}x{int(size[1])} frames")
    strategy = crop_cfg.get("strategy", "box")
    if strategy not in STRATEGIES:
        raise DataError(f"crop.strategy: unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
    out_size = int(crop_cfg.get("size", 112))
    scale = float(crop_cfg.get("scale", 1.3))
    gray = bool(crop_cfg.get("grayscale", False))
    border = BORDERS[crop_cfg.get("pad_mode", "edge")]
    channels = 1 if gray else 3
    crops = np.zeros((len(frames), out_size, out_size, channels), np.uint8)
    valid = status > 0
    for i in np.flatnonzero(valid):
        m = STRATEGIES[strategy](boxes[i], lms[i], out_size, scale)
        img = warp(frames[i], m, out_size, border)
        if gray:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[:, :, None]
        crops[i] = img
    return crops, valid


def crop_landmarks(tracks, crop_cfg: dict) -> np.ndarray:
    """The 5 landmarks of every frame in crop pixels (x, y), float32 [N,5,2]: the tracks' landmarks
    through the same transform as :func:`crop_frames` (NaN where there is no face)."""
    boxes = np.asarray(_get(tracks, "boxes"), np.float64)
    lms = np.asarray(_get(tracks, "landmarks"), np.float64)
    status = np.asarray(_get(tracks, "status"))
    matrix = STRATEGIES[crop_cfg.get("strategy", "box")]
    size, scale = int(crop_cfg.get("size", 112)), float(crop_cfg.get("scale", 1.3))
    out = np.full((len(status), 5, 2), np.nan, np.float32)
    for i in np.flatnonzero(status > 0):
        m = matrix(boxes[i], lms[i], size, scale)
        out[i] = lms[i] @ m[:, :2].T + m[:, 2]
    return out


def box_matrix(box: np.ndarray, lms: np.ndarray, size: int, scale: float) -> np.ndarray:
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * scale
    if side <= 0:
        raise DataError(f"crop_frames: empty face box {box.tolist()}")
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    z = size / side
    return np.array([[z, 0, size / 2 - z * cx], [0, z, size / 2 - z * cy]], np.float64)


def align_matrix(box: np.ndarray, lms: np.ndarray, size: int, scale: float) -> np.ndarray:
    c = np.array([56.0, 56.0])
    template = (c + (ARCFACE_112 - c) / scale) * (size / 112.0)
    return umeyama(lms, template)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (2x3) mapping ``src`` points onto ``dst`` (Umeyama 1991)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var = (s**2).sum() / len(src)
    if var <= 0:
        raise DataError("crop_frames: degenerate landmarks (all at one point)")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    r = u @ e @ vt
    k = np.trace(np.diag(sig) @ e) / var
    t = mu_d - k * r @ mu_s
    return np.c_[k * r, t]


def warp(frame: np.ndarray, m: np.ndarray, size: int, border: int) -> np.ndarray:
    zoom = float(np.hypot(m[0, 0], m[1, 0]))
    if zoom < 0.75:  # strong downscale: warp at a higher resolution, then area-resize
        f = min(MAX_OVERSAMPLE, int(np.ceil(1.0 / zoom)))
        big = cv2.warpAffine(frame, m * np.array([[f], [f]]), (size * f, size * f), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0)
        return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0)


STRATEGIES = {"box": box_matrix, "align": align_matrix}
