"""Assemble one video's store content: decode, crop along the cached face tracks, attach labels.

Inputs are the video, its tracks file (stage ``faces``), the dataset manifest (for the
video's row) and the ``decode``/``crop``/``clips`` params. The frames are decoded with the
same ``decode`` params as the tracks; the tracks' timestamps must match the decoded ones
frame for frame (else the tracks are stale: DataError). A video whose tracks record a decode
error (N = 0) gets an empty store carrying that error, so the dataset goes on without it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from affectube.clips.labels import clip_labels, frame_labels
from affectube.clips.store import StoreContent
from affectube.errors import DataError
from affectube.io import stable_hash

log = logging.getLogger(__name__)


def manifest_row(manifest: str | Path, video_id: str) -> dict:
    """The manifest row of ``video_id`` as a dict (NaN for empty optional cells)."""
    try:
        table = pd.read_csv(manifest, dtype={"video_id": str, "subject": str, "session": str})
    except FileNotFoundError:
        raise DataError(f"{manifest}: manifest not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{manifest}: not a readable manifest ({exc})") from None
    for col in ("dataset", "video_id", "path", "subject"):
        if col not in table.columns:
            raise DataError(f"{manifest}: manifest has no {col!r} column")
    rows = table.loc[table["video_id"] == video_id]
    if rows.empty:
        raise DataError(f"{manifest}: no row with video_id {video_id!r}")
    if len(rows) > 1:
        raise DataError(f"{manifest}: {len(rows)} rows with video_id {video_id!r}")
    return {k: v for k, v in rows.iloc[0].to_dict().items()}


def crop_shape(crop_cfg: dict) -> tuple[int, int, int]:
    s = int(crop_cfg.get("size", 112))
    return s, s, 1 if crop_cfg.get("grayscale", False) else 3


def build_content(video: str | Path, tracks_path: str | Path, manifest: str | Path, video_id: str, cfg: dict) -> StoreContent:
    from affectube.faces.tracks import load_tracks

    decode_cfg, crop_cfg, clips_cfg = cfg.get("decode", {}), cfg.get("crop", {}), cfg.get("clips", {})
    row = manifest_row(manifest, video_id)
    tracks = load_tracks(tracks_path)
    session = row.get("session")
    common = dict(
        dataset=str(row["dataset"]),
        video_id=str(video_id),
        subject=str(row["subject"]),
        session="" if session is None or (isinstance(session, float) and np.isnan(session)) else str(session),
        labels=clip_labels(row),
        fps=float(decode_cfg.get("fps") or 0.0),
        decode=decode_cfg,
        crop=crop_cfg,
        clips=clips_cfg,
        provenance=stable_hash({"manifest_row": {k: _plain(v) for k, v in row.items()}, "params": cfg}),
    )
    if tracks.error or len(tracks) == 0:
        reason = tracks.error or "the tracks file has no frames"
        log.warning("%s: %s: writing an empty store", video, reason)
        return StoreContent(frames=np.zeros((0, *crop_shape(crop_cfg)), np.uint8), timestamps=np.zeros(0),
                            source=tracks.meta.get("info", {}), error=str(reason), **common)

    from affectube.faces.crop import crop_frames
    from affectube.video.decode import decode

    t0 = time.perf_counter()
    decoded = decode(video, fps=decode_cfg.get("fps", 25), max_side=decode_cfg.get("max_side", 640))
    log.info("%s: decoded %d frames in %.1f s", video, len(decoded), time.perf_counter() - t0)
    check_alignment(decoded.timestamps, tracks.timestamps, video, tracks_path)
    t0 = time.perf_counter()
    crops, valid = crop_frames(decoded.frames, tracks, crop_cfg)
    crops = np.asarray(crops)
    log.info("%s: cropped %d frames to %s in %.1f s (%d with a face)", video, len(crops), list(crops.shape[1:]),
             time.perf_counter() - t0, int(np.sum(valid)))
    if crops.shape[0] != len(decoded):
        raise DataError(f"{tracks_path}: crop_frames returned {crops.shape[0]} crops for {len(decoded)} frames")
    per_frame, per_frame_meta = {}, {}
    ann = row.get("annotation")
    if isinstance(ann, str) and ann.strip():
        per_frame, per_frame_meta = frame_labels(ann, decoded.timestamps)
        log.info("%s: per-frame labels %s aligned from %s", video, sorted(per_frame), ann)
    return StoreContent(
        frames=crops,
        timestamps=decoded.timestamps,
        face_status=tracks.status,
        face_score=tracks.scores,
        face_boxes=tracks.boxes,
        valid=np.asarray(valid, bool),
        frame_labels=per_frame,
        frame_labels_meta=per_frame_meta,
        source=decoded.info,
        **common,
    )


def check_alignment(decoded: np.ndarray, tracked: np.ndarray, video, tracks_path, tol: float = 1e-3) -> None:
    if len(decoded) != len(tracked):
        raise DataError(f"{tracks_path}: {len(tracked)} tracked frames but {video} decodes to {len(decoded)} "
                        "(tracks made with other decode params? re-run the faces stage)")
    if len(decoded) and float(np.max(np.abs(decoded - tracked))) > tol:
        i = int(np.argmax(np.abs(decoded - tracked)))
        raise DataError(f"{tracks_path}: frame {i} is at {tracked[i]:.4f} s in the tracks but {decoded[i]:.4f} s in {video} "
                        "(tracks made with other decode params? re-run the faces stage)")


def _plain(value):
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value
