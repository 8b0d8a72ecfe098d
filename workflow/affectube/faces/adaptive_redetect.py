"""Re-detection of a face that the last keyframe had and this one lost, in a region around it.

Between two keyframes (``faces.every_k`` frames apart) a small face in a crowd or a dim shot
flickers under the detector's threshold on one keyframe: the keyframes around it then lie
``2 x every_k`` frames apart, more than ``faces.max_gap`` bridges, and a walking face has moved
too far for the next keyframe's box to overlap it. Detecting every frame would absorb such a
miss (a one-frame gap); at every k-th frame it costs ``2k - 1`` frames of the face.

So for every face of the previous keyframe that no face of this keyframe continues (centre
within one face size), the detector runs once more on a region of this keyframe around the
lost face's box: ``faces.redetect_context`` x its size, centred on it, at the configured
``det_size``. The face then fills about ``1 / (context x (1 + 2 pad))`` of the detector input
instead of a sliver of the whole frame: in the region it is found reliably, and the call is
cheap (one detector call at the base size, on a small crop). A face found there, near the lost
one (centre within one face size, size within 0.5-2x) and not overlapping a face already
found, is added to the keyframe's detections. Faces that do not come back (they left the
frame) cost one call, on the first keyframe without them only. Backends of any kind.
"""

from __future__ import annotations

import numpy as np

from affectube.faces.detect import Detections, Detector

MAX_LOST = 4  # lost faces re-detected per keyframe (the largest)
NEAR = 1.0  # centre distance / face size under which a face continues another
OVERLAP_IOU = 0.3


def _size(boxes: np.ndarray) -> np.ndarray:
    return np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def _centres(boxes: np.ndarray) -> np.ndarray:
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)


def lost_faces(prev: Detections, cur: Detections) -> list[int]:
    """Indices of faces of ``prev`` that no face of ``cur`` continues (largest first, at most MAX_LOST)."""
    if not len(prev):
        return []
    size = _size(prev.boxes)
    order = np.argsort(-size, kind="stable")
    if not len(cur):
        return [int(i) for i in order[:MAX_LOST]]
    d = np.linalg.norm(_centres(prev.boxes)[:, None] - _centres(cur.boxes)[None], axis=2)
    continued = (d < NEAR * size[:, None]).any(axis=1)
    return [int(i) for i in order if not continued[i]][:MAX_LOST]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` [4] with each of ``b`` [M, 4]."""
    ix = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def region(box: np.ndarray, context: float, frame_shape: tuple) -> tuple[int, int, int, int] | None:
    """(x1, y1, x2, y2) of the square region ``context`` x the box's size around its centre, clipped to the frame."""
    h, w = frame_shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = context * max(box[2] - box[0], box[3] - box[1]) / 2
    x1, y1 = max(0, int(np.floor(cx - half))), max(0, int(np.floor(cy - half)))
    x2, y2 = min(w, int(np.ceil(cx + half))), min(h, int(np.ceil(cy + half)))
    if x2 - x1 < 8 or y2 - y1 < 8:
        return None
    return x1, y1, x2, y2


def redetect_lost(detector: Detector, frame: np.ndarray, prev: Detections, cur: Detections, context: float) -> tuple[Detections, int, int]:
    """``cur`` plus the lost faces of ``prev`` found again in regions of ``frame``; (detections, calls, found)."""
    calls = found = 0
    extra = []
    for i in lost_faces(prev, cur):
        box = prev.boxes[i]
        roi = region(box, context, frame.shape)
        if roi is None:
            continue
        x1, y1, x2, y2 = roi
        d = detector(np.ascontiguousarray(frame[y1:y2, x1:x2])[None])[0]
        calls += 1
        if not len(d):
            continue
        off = np.array([x1, y1, x1, y1], np.float32)
        boxes = d.boxes + off
        size = float(_size(box[None])[0])
        sizes = _size(boxes)
        dist = np.linalg.norm(_centres(boxes) - _centres(box[None]), axis=1)
        ok = (dist < NEAR * size) & (sizes > 0.5 * size) & (sizes < 2.0 * size)
        have = np.concatenate([cur.boxes] + [e.boxes for e in extra]) if (len(cur) or extra) else np.zeros((0, 4), np.float32)
        for j in np.flatnonzero(ok):  # best score first (Detections are sorted)
            if len(have) and _iou(boxes[j], have).max() >= OVERLAP_IOU:
                continue
            extra.append(Detections(boxes[j : j + 1].astype(np.float32), d.scores[j : j + 1],
                                    (d.landmarks[j : j + 1] + np.array([x1, y1], np.float32)).astype(np.float32)))
            found += 1
            break
    if not extra:
        return cur, calls, found
    merged = Detections(
        np.concatenate([cur.boxes] + [e.boxes for e in extra]).astype(np.float32),
        np.concatenate([cur.scores] + [e.scores for e in extra]).astype(np.float32),
        np.concatenate([cur.landmarks] + [e.landmarks for e in extra]).astype(np.float32),
    )
    return merged.sorted(), calls, found
