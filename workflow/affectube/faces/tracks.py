"""The per-video face-tracks artifact: ``results/faces/{dataset}/tracks/{video}.npz``.

Keys (N = decoded frames): ``timestamps`` f8[N] (s, source timeline), ``boxes`` f4[N,4]
(x1, y1, x2, y2 in decoded-frame pixels), ``landmarks`` f4[N,5,2], ``scores`` f4[N],
``status`` u1[N] (0 no face, 1 detected, 2 tracked, 3 interpolated), ``num_faces``
i2[N] (faces the detector found; -1 where it did not run), ``frame_size`` i4[2] (H, W),
``meta`` (JSON string: dataset, video_id, path, decode + faces params, backend,
decode info, counts, timing, and ``error`` — set, with N = 0, when the video could
not be decoded).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from affectube.errors import DataError
from affectube.io import atomic_path, to_jsonable

ARRAYS = {
    "timestamps": (np.float64, (None,)),
    "boxes": (np.float32, (None, 4)),
    "landmarks": (np.float32, (None, 5, 2)),
    "scores": (np.float32, (None,)),
    "status": (np.uint8, (None,)),
    "num_faces": (np.int16, (None,)),
}


class FaceStatus(IntEnum):
    """A frame's face in ``status`` (uint8): shared by the tracker, the QC table/figures and the sheet."""

    NONE = 0  # no face
    DETECTED = 1  # found by the detector on this frame
    TRACKED = 2  # carried from a detection (optical flow, or interpolated between keyframe detections)
    INTERPOLATED = 3  # a short gap of the chosen track, filled by interpolation afterwards


STATUS_NAMES = {s.value: s.name.lower() for s in FaceStatus}


@dataclass
class Tracks:
    timestamps: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray
    status: np.ndarray
    num_faces: np.ndarray
    frame_size: np.ndarray
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def valid(self) -> np.ndarray:
        return self.status > 0

    @property
    def error(self) -> str | None:
        return self.meta.get("error")

    @classmethod
    def empty(cls, meta: dict, frame_size=(0, 0)) -> "Tracks":
        return cls(
            **{k: np.zeros((0, *shape[1:]), dtype) for k, (dtype, shape) in ARRAYS.items()},
            frame_size=np.asarray(frame_size, np.int32),
            meta=meta,
        )

    @classmethod
    def from_arrays(cls, arrays, meta: dict) -> "Tracks":
        return cls(**{k: getattr(arrays, k) for k in [*ARRAYS, "frame_size"]}, meta=meta)


def save_tracks(path: str | os.PathLike, tracks: Tracks) -> Tracks:
    """Write ``tracks`` (atomic); returns them as :func:`load_tracks` will read them back (the file's dtypes, the
    meta through JSON), for a caller that goes on with them in the same process."""
    data = {k: np.asarray(getattr(tracks, k), dtype) for k, (dtype, _) in ARRAYS.items()}
    data["frame_size"] = np.asarray(tracks.frame_size, np.int32)
    meta = json.dumps(to_jsonable(tracks.meta, fallback=str), sort_keys=True)
    data["meta"] = np.asarray(meta)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **data)
    return Tracks(**{k: data[k] for k in ARRAYS}, frame_size=data["frame_size"], meta=json.loads(meta))


def load_tracks(path: str | os.PathLike) -> Tracks:
    """Read and check a tracks file (DataError naming the file and the key at fault)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"{path}: no such tracks file") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable tracks file ({exc})") from None
    for key in [*ARRAYS, "frame_size", "meta"]:
        if key not in data:
            raise DataError(f"{path}: tracks file has no {key!r} array")
    n = len(data["timestamps"])
    for key, (dtype, shape) in ARRAYS.items():
        arr = data[key]
        if arr.dtype != dtype or arr.shape[0] != n or arr.shape[1:] != shape[1:]:
            raise DataError(f"{path}: {key!r} is {arr.dtype}{list(arr.shape)}, expected {np.dtype(dtype)}[{n}{''.join(f',{s}' for s in shape[1:])}]")
    try:
        meta = json.loads(str(data["meta"]))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: 'meta' is not JSON ({exc})") from None
    return Tracks(**{k: data[k] for k in ARRAYS}, frame_size=data["frame_size"], meta=meta)
