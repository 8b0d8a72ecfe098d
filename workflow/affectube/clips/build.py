"""Build one video's store: decode in blocks, crop along the cached face tracks, attach labels, stream to HDF5.

Inputs are the video, its tracks file (stage ``faces``), the video's manifest row (given as
a dict, e.g. the rule's JSON param, or read from the dataset manifest) and the
``decode``/``crop``/``clips`` params. The frames are decoded with the
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

from affectube.clips.labels import canonical_row, clip_labels, frame_labels
from affectube.clips.store import StoreContent, StoreWriter
from affectube.config import sections
from affectube.errors import DataError
from affectube.io import stable_hash

log = logging.getLogger(__name__)
BLOCK = 256  # frames decoded and cropped at a time (a multiple of every sensible chunk_frames)


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


def audio_features(video, timestamps: np.ndarray, n_mels: int) -> np.ndarray | None:
    """``clips.audio_mels`` > 0: the audio track's log-mel energies at the frames (None without audio: logged)."""
    if n_mels <= 0:
        return None
    from affectube.clips.audio import frame_logmel

    feats = frame_logmel(video, timestamps, n_mels)
    if feats is None:
        log.warning("%s: no audio stream: the store gets no audio_logmel (the audio pretext skips it)", video)
    return feats


def crop_shape(crop_cfg: dict) -> tuple[int, int, int]:
    s = int(crop_cfg["size"])
    return s, s, 1 if crop_cfg["grayscale"] else 3


def build_store(video: str | Path, tracks_path: str | Path, manifest: str | Path | dict, video_id: str, cfg: dict,
                out: str | Path, frames=None, tracks=None) -> StoreContent:
    """Decode ``video`` in blocks, crop each block along its tracks and stream the crops into store ``out``.

    ``manifest``: the video's manifest row (a dict) or the dataset manifest (.csv) holding it; either
    way the row is canonicalised (:func:`~affectube.clips.labels.canonical_row`) and its hash with ``cfg`` is the store's
    ``provenance``.

    ``cfg``: the ``decode``, ``crop`` and ``clips`` sections (validated here, schema defaults filled in:
    the store records them complete).

    Memory holds one decoded block (256 frames) and one chunk of crops, whatever the video's length.
    ``frames``: the video's frames already decoded with these ``decode`` params (``info`` and blocks of
    (frames, times): :class:`affectube.shards.onepass.FullFrames`, the faces shard job's one decode) instead of
    decoding it here; ``tracks``: the tracks of ``tracks_path`` as :func:`~affectube.faces.tracks.save_tracks`
    returned them (the same job just wrote them) instead of reading the file.
    Returns the store's content (metadata; ``frames`` None).
    """
    from affectube.faces.tracks import load_tracks

    cfg = sections(cfg, "decode", "crop", "clips")
    decode_cfg, crop_cfg, clips_cfg = cfg["decode"], cfg["crop"], cfg["clips"]
    compression, chunk_frames = clips_cfg["compression"], int(clips_cfg["chunk_frames"])
    row = canonical_row(manifest if isinstance(manifest, dict) else manifest_row(manifest, video_id))
    if str(row.get("video_id")) != str(video_id):
        raise DataError(f"manifest row of video {row.get('video_id')!r} given for video {video_id!r}")
    for col in ("dataset", "video_id", "path", "subject"):
        if col not in row:
            raise DataError(f"manifest row of video {video_id!r} has no {col!r}")
    tracks = load_tracks(tracks_path) if tracks is None else tracks
    session = row.get("session")
    common = dict(
        dataset=str(row["dataset"]),
        video_id=str(video_id),
        subject=str(row["subject"]),
        session="" if session is None or (isinstance(session, float) and np.isnan(session)) else str(session),
        labels=clip_labels(row),
        fps=float(decode_cfg["fps"] or 0.0),
        decode=decode_cfg,
        crop=crop_cfg,
        clips=clips_cfg,
        provenance=stable_hash({"manifest_row": row, "params": cfg}),
    )
    shape = crop_shape(crop_cfg)
    n = len(tracks)
    if tracks.error or n == 0:
        reason = tracks.error or "the tracks file has no frames"
        log.warning("%s: %s: writing an empty store", video, reason)
        content = StoreContent(frames=None, timestamps=np.zeros(0), source={**(tracks.meta.get("info") or {}), "faces": tracks.meta.get("faces")}, error=str(reason), **common)
        with StoreWriter(out, 0, shape, compression, chunk_frames) as w:
            w.finish(content)
        return content

    from affectube.faces.crop import crop_frames, crop_landmarks, crop_matrices
    from affectube.video.decode import FrameStream

    stream = frames if frames is not None else FrameStream(video, fps=decode_cfg["fps"], max_side=decode_cfg["max_side"], chunk=BLOCK, reader=decode_cfg["reader"])
    valid = np.zeros(n, bool)
    landmarks = np.full((n, 5, 2), np.nan, np.float32)  # in crop pixels: face-guided masking
    matrices = crop_matrices(tracks, crop_cfg)  # of the whole track (crop.strategy mouth smooths over it)
    t0 = time.perf_counter()
    with StoreWriter(out, n, shape, compression, chunk_frames) as w:
        pos = 0
        for frames, times in stream:
            k = len(frames)
            if pos + k > n:
                raise DataError(f"{tracks_path}: {n} tracked frames but {video} decodes to more "
                                "(tracks made with other decode params? re-run the faces stage)")
            check_alignment(times, tracks.timestamps[pos : pos + k], video, tracks_path, offset=pos)
            part = {key: getattr(tracks, key)[pos : pos + k] for key in ("boxes", "landmarks", "status")}
            crops, ok = crop_frames(frames, {**part, "frame_size": tracks.frame_size}, crop_cfg, matrices[pos : pos + k])
            landmarks[pos : pos + k] = crop_landmarks(part, crop_cfg, matrices[pos : pos + k])
            w.append(np.asarray(crops))
            valid[pos : pos + k] = ok
            pos += k
            log.info("%s: %d/%d frames cropped (%.1f s)", video, pos, n, time.perf_counter() - t0)
        if pos != n:
            raise DataError(f"{tracks_path}: {n} tracked frames but {video} decodes to {pos} "
                            "(tracks made with other decode params? re-run the faces stage)")
        per_frame, per_frame_meta = {}, {}
        ann = row.get("annotation")
        if isinstance(ann, str) and ann.strip():
            per_frame, per_frame_meta = frame_labels(ann, tracks.timestamps)
            log.info("%s: per-frame labels %s aligned from %s", video, sorted(per_frame), ann)
        content = StoreContent(
            frames=None,
            timestamps=tracks.timestamps,
            face_status=tracks.status,
            face_score=tracks.scores,
            face_boxes=tracks.boxes,
            valid=valid,
            face_landmarks=landmarks,
            audio_logmel=audio_features(video, tracks.timestamps, int(clips_cfg["audio_mels"])),
            frame_labels=per_frame,
            frame_labels_meta=per_frame_meta,
            source={**stream.info, "faces": tracks.meta.get("faces")},  # the face params too: predict reuses them
            **common,
        )
        w.finish(content)
    log.info("%s: %d frames (%d with a face) -> %s in %.1f s", video, n, int(valid.sum()), out, time.perf_counter() - t0)
    return content


def check_alignment(decoded: np.ndarray, tracked: np.ndarray, video, tracks_path, offset: int = 0, tol: float = 1e-3) -> None:
    """The decoded frames' timestamps must be the tracked ones (same decode params)."""
    if len(decoded) != len(tracked):
        raise DataError(f"{tracks_path}: {offset + len(tracked)} tracked frames but {video} decodes to more "
                        "(tracks made with other decode params? re-run the faces stage)")
    if len(decoded) and float(np.max(np.abs(decoded - tracked))) > tol:
        i = int(np.argmax(np.abs(decoded - tracked)))
        raise DataError(f"{tracks_path}: frame {offset + i} is at {tracked[i]:.4f} s in the tracks but {decoded[i]:.4f} s in {video} "
                        "(tracks made with other decode params? re-run the faces stage)")
