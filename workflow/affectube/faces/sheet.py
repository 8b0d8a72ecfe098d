"""Stage ``faces-sheet``: a contact sheet of sample face crops per video.

One row per video (up to ``faces.qc_videos``, evenly spread over the manifest), showing
``faces.qc_frames`` crops taken at evenly spaced times, cropped exactly as the clips
stage will crop them (``decode`` + ``crop`` params, :func:`affectube.faces.crop.crop_frames`).
Each crop is framed by its face status: blue detected, green tracked, orange
interpolated, grey no face (the whole frame is shown instead, so one sees why). Failed videos show their error.
It depends on the crop params (not the faces stage's), so a crop change redraws it
without re-running detection.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from affectube.config import parse_cfg, sections
from affectube.errors import DataError
from affectube.faces.crop import crop_frames
from affectube.faces.tracks import FaceStatus, load_tracks
from affectube.io import atomic_path
from affectube.video.decode import FrameStream

log = logging.getLogger(__name__)
STATUS_BGR = {FaceStatus.NONE: (190, 190, 190), FaceStatus.DETECTED: (184, 127, 44), FaceStatus.TRACKED: (187, 205, 127),
              FaceStatus.INTERPOLATED: (97, 174, 253)}
TILE = 96
LABEL_W = 260
BORDER = 3


def sample_frames(path: str, decode_cfg: dict, wanted: np.ndarray) -> np.ndarray:
    """Decode only up to the last wanted frame; return those frames."""
    out = {}
    want = set(int(i) for i in wanted)
    last = int(max(wanted))
    stream = FrameStream(path, fps=decode_cfg["fps"], max_side=decode_cfg["max_side"], chunk=32, reader=decode_cfg["reader"])
    start = 0
    it = iter(stream)
    for frames, _ in it:
        for j in range(len(frames)):
            if start + j in want:
                out[start + j] = frames[j]
        start += len(frames)
        if start > last:
            it.close()
            break
    return np.stack([out[int(i)] for i in wanted])


def tile_row(label: str, tiles: list[np.ndarray]) -> np.ndarray:
    row = np.full((TILE + 2 * BORDER, LABEL_W + len(tiles) * (TILE + 2 * BORDER), 3), 255, np.uint8)
    for k, t in enumerate(tiles):
        x = LABEL_W + k * (TILE + 2 * BORDER)
        row[:, x : x + TILE + 2 * BORDER] = t
    y = 16
    for line in [label[i : i + 30] for i in range(0, min(len(label), 150), 30)]:
        cv2.putText(row, line, (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
        y += 15
    return row


def framed(crop: np.ndarray, status: int) -> np.ndarray:
    img = crop if crop.shape[-1] == 3 else np.repeat(crop, 3, axis=-1)
    img = cv2.resize(img[:, :, ::-1], (TILE, TILE), interpolation=cv2.INTER_AREA)
    return cv2.copyMakeBorder(img, BORDER, BORDER, BORDER, BORDER, cv2.BORDER_CONSTANT, value=STATUS_BGR.get(int(status), (0, 0, 0)))


def letterbox(frame: np.ndarray) -> np.ndarray:
    """The whole frame in a square (shown where there is no face, so one sees why)."""
    h, w = frame.shape[:2]
    side = max(h, w)
    out = np.full((side, side, 3), 255, np.uint8)
    out[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = frame
    return out


def blank(n: int) -> list[np.ndarray]:
    return [np.full((TILE + 2 * BORDER, TILE + 2 * BORDER, 3), 235, np.uint8) for _ in range(n)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", required=True, help="JSON with the 'decode', 'faces' and 'crop' sections")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--tracks-dir", required=True)
    parser.add_argument("--out", required=True, help="contact sheet (.png) to write")


def run(args: argparse.Namespace) -> int:
    cfg = sections(parse_cfg(args.cfg), "decode", "faces", "crop")
    decode_cfg, faces_cfg, crop_cfg = cfg["decode"], cfg["faces"], cfg["crop"]
    manifest = pd.read_csv(args.manifest, dtype={"video_id": str, "subject": str})
    n_videos, n_frames = int(faces_cfg["qc_videos"]), int(faces_cfg["qc_frames"])
    if len(manifest) > n_videos:
        manifest = manifest.iloc[np.linspace(0, len(manifest) - 1, n_videos).round().astype(int)]
    rows = []
    for r in manifest.to_dict("records"):
        label = f"{r['video_id']} ({r.get('subject')})"
        tracks_path = Path(args.tracks_dir) / f"{r['video_id']}.npz"
        try:
            tr = load_tracks(tracks_path)
            if tr.error:
                raise DataError(tr.error)
            if len(tr) == 0:
                raise DataError("no frames")
            idx = np.unique(np.linspace(0, len(tr) - 1, n_frames).round().astype(int))
            frames = sample_frames(r["path"], decode_cfg, idx)
            sub = {"boxes": tr.boxes[idx], "landmarks": tr.landmarks[idx], "status": tr.status[idx], "frame_size": tr.frame_size}
            crops, _ = crop_frames(frames, sub, crop_cfg)
            cov = float((tr.status > 0).mean())
            tiles = [framed(c, s) if s > 0 else framed(letterbox(f), 0) for c, f, s in zip(crops, frames, tr.status[idx])]
            rows.append(tile_row(f"{label} coverage {cov:.0%}", tiles))
        except DataError as exc:
            rows.append(tile_row(f"{label} FAILED: {exc}", blank(n_frames)))
    width = max((r.shape[1] for r in rows), default=LABEL_W)
    sheet = np.full((max(1, sum(r.shape[0] for r in rows)), width, 3), 255, np.uint8)
    y = 0
    for r in rows:
        sheet[y : y + r.shape[0], : r.shape[1]] = r
        y += r.shape[0]
    ok, buf = cv2.imencode(".png", sheet)
    with atomic_path(args.out) as tmp:
        tmp.write_bytes(buf.tobytes())
    print(f"faces-sheet: {len(rows)} videos x {n_frames} crops -> {args.out}")
    return 0
