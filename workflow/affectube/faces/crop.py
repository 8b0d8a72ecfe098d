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
- ``mouth``: a square centred on the midpoint of the two mouth-corner landmarks,
  side = ``crop.scale`` x the face box's longer side (0.5: nose tip to chin,
  the mouth about half the width), resized to ``crop.size``: lip reading
  (visual speech) at a small size. Centre and side are running medians over
  ``crop.mouth_window`` frames of the track (centred; frames with a face only),
  so the crop follows the head but not the lips' own motion or landmark noise.
  Needs the tracks' 5 landmarks (a clear error when they are missing).

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


def crop_matrices(tracks, crop_cfg: dict) -> np.ndarray:
    """The 2x3 crop transform (frame pixels -> crop pixels) of every frame of ``tracks``, float64
    [N,2,3], NaN where there is no face. ``mouth`` smooths over the track, so give it the whole
    track and slice the result (:func:`crop_frames`' ``matrices``) when cropping it block by block."""
    boxes = np.asarray(_get(tracks, "boxes"), np.float64)
    lms = np.asarray(_get(tracks, "landmarks"), np.float64)
    status = np.asarray(_get(tracks, "status"))
    strategy = crop_cfg.get("strategy", "box")
    if strategy not in STRATEGIES:
        raise DataError(f"crop.strategy: unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
    size, scale = int(crop_cfg.get("size", 112)), float(crop_cfg.get("scale", 1.3))
    if strategy == "mouth":
        return mouth_matrices(boxes, lms, status, size, scale, int(crop_cfg.get("mouth_window", 25)))
    out = np.full((len(status), 2, 3), np.nan, np.float64)
    for i in np.flatnonzero(status > 0):
        out[i] = STRATEGIES[strategy](boxes[i], lms[i], size, scale)
    return out


def crop_frames(frames: np.ndarray, tracks, crop_cfg: dict, matrices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Crop every frame with its track entry.

    ``frames`` uint8 [N,H,W,3] RGB decoded with the same ``decode`` params as the
    tracks; ``tracks``: a :class:`~affectube.faces.tracks.Tracks` (or a mapping with
    ``boxes``, ``landmarks``, ``status``, ``frame_size``); ``matrices``: these frames'
    rows of :func:`crop_matrices` of the whole track (computed from ``tracks`` if None).
    Returns ``crops`` uint8 [N,S,S,C] (C = 1 if grayscale else 3) and ``valid`` bool [N].
    """
    frames = np.asarray(frames)
    status = np.asarray(_get(tracks, "status"))
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise DataError(f"crop_frames: frames must be [N,H,W,3] RGB, got shape {list(frames.shape)}")
    if len(frames) != len(status):
        raise DataError(f"crop_frames: {len(frames)} frames but {len(status)} track entries (decoded with other decode params?)")
    size = _get(tracks, "frame_size", required=False)
    if size is not None and len(frames) and tuple(int(x) for x in size) != tuple(frames.shape[1:3]):
        raise DataError(f"crop_frames: frames are {frames.shape[1]}x{frames.shape[2]} but the tracks were made on {int(size[0])}x{int(size[1])} frames")
    if matrices is None:
        matrices = crop_matrices(tracks, crop_cfg)
    if len(matrices) != len(status):
        raise DataError(f"crop_frames: {len(matrices)} crop transforms for {len(status)} track entries")
    out_size = int(crop_cfg.get("size", 112))
    gray = bool(crop_cfg.get("grayscale", False))
    border = BORDERS[crop_cfg.get("pad_mode", "edge")]
    channels = 1 if gray else 3
    crops = np.zeros((len(frames), out_size, out_size, channels), np.uint8)
    valid = status > 0
    for i in np.flatnonzero(valid):
        img = warp(frames[i], matrices[i], out_size, border)
        if gray:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[:, :, None]
        crops[i] = img
    return crops, valid


def crop_landmarks(tracks, crop_cfg: dict, matrices: np.ndarray | None = None) -> np.ndarray:
    """The 5 landmarks of every frame in crop pixels (x, y), float32 [N,5,2]: the tracks' landmarks
    through the same transform as :func:`crop_frames` (NaN where there is no face)."""
    lms = np.asarray(_get(tracks, "landmarks"), np.float64)
    status = np.asarray(_get(tracks, "status"))
    if matrices is None:
        matrices = crop_matrices(tracks, crop_cfg)
    out = np.full((len(status), 5, 2), np.nan, np.float32)
    for i in np.flatnonzero(status > 0):
        m = matrices[i]
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


def mouth_matrices(boxes: np.ndarray, lms: np.ndarray, status: np.ndarray, size: int, scale: float, window: int) -> np.ndarray:
    """``mouth``: per frame, a square around the running-median mouth centre (midpoint of the mouth
    corners, landmarks 3 and 4) with side ``scale`` x the running-median longer side of the face box."""
    out = np.full((len(status), 2, 3), np.nan, np.float64)
    face = np.flatnonzero(status > 0)
    if not len(face):
        return out
    if lms.shape[1:] != (5, 2) or not np.isfinite(lms[face]).all():
        bad = face[~np.isfinite(lms[face].reshape(len(face), -1)).all(1)] if lms.shape[1:] == (5, 2) else face
        raise DataError(f"crop.strategy mouth needs the 5 face landmarks of every frame with a face; "
                        f"{len(bad)} of {len(face)} such frames have none (first: frame {int(bad[0])}): "
                        "use a faces.backend with landmarks or crop.strategy box")
    centre = (lms[face, 3] + lms[face, 4]) / 2
    side = np.maximum(boxes[face, 2] - boxes[face, 0], boxes[face, 3] - boxes[face, 1]) * scale
    half = max(0, int(window) // 2)
    lo = np.searchsorted(face, face - half)  # the window's frames with a face: face[lo[j]:hi[j]]
    hi = np.searchsorted(face, face + half, side="right")
    for j, i in enumerate(face):
        cx, cy = np.median(centre[lo[j] : hi[j]], axis=0)
        s = float(np.median(side[lo[j] : hi[j]]))
        if not s > 0:
            raise DataError(f"crop_frames: empty face box {boxes[i].tolist()} at frame {int(i)}")
        z = size / s
        out[i] = [[z, 0, size / 2 - z * cx], [0, z, size / 2 - z * cy]]
    return out


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


STRATEGIES = {"box": box_matrix, "align": align_matrix, "mouth": None}  # mouth: mouth_matrices (over the track)
