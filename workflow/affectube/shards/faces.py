"""Stage ``faces-shard``: detect and track the faces of one shard's videos (one job, one detector).

    python -m affectube faces-shard --cfg '{"decode": ..., "faces": ...}' \
        --rows results/shards/D/faces-3.json --dataset D --shard 3 --stage-dir results/faces/D \
        --out results/faces/D/shard-3.json

Per video the same work and the same tracks file as stage ``faces``
(``<stage-dir>/tracks/<video_id>.npz``), skipped when its per-video cache key (the video's path,
size and mtime + the ``decode`` and ``faces`` params) is unchanged. A video that cannot be decoded gets
a tracks file with ``meta.error`` (faces-qc lists it as failed), as in stage ``faces``; any other
failure of one video is logged and recorded in the shard index (an error tracks file for QC, no cache
key: retried by the next run); the shard job succeeds. A detector that cannot be built fails the job.

One decode per video (``--clips-rows`` and ``--clips-dir`` given, with the ``crop`` and ``clips`` sections in
``--cfg``): a video it detects is decoded once (:mod:`affectube.shards.onepass`) and its clip store is cropped
and packed from those frames, under the clips shard job's own per-video cache key
(:func:`affectube.shards.clips.build_cached`): that job then does not decode it again. A store that cannot be
built here is left to the clips shard job (logged; no key). A video whose tracks are cached is not decoded:
a crop-only change is the clips shard job's (re-crop along the cached tracks, no detection).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from affectube.config import parse_cfg, sections
from affectube.errors import DataError
from affectube.shards import cache
from affectube.shards.index import add_shard_arguments, read_rows, run_shard

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_shard_arguments(parser, "JSON with the 'decode' and 'faces' sections", "results/faces/<dataset>: tracks/ and keys/ under it")
    parser.add_argument("--threads", type=int, default=1, help="threads for ffmpeg and the detector")
    parser.add_argument("--clips-rows", help="the shard's clips rows (.json): with --clips-dir, build the stores in the same decode")
    parser.add_argument("--clips-dir", help="results/clips/<dataset>: where the clips shard job keeps the stores and keys/")


def faces_key(path: str, decode_cfg: dict, faces_cfg: dict) -> str:
    return cache.make_key(video=cache.file_identity(path), decode=decode_cfg, faces=faces_cfg)


def run(args: argparse.Namespace) -> int:
    from affectube.faces.detect import build_detector
    from affectube.faces.pipeline import track_video
    from affectube.faces.tracks import Tracks, save_tracks

    cfg = sections(parse_cfg(args.cfg), "decode", "faces")
    decode_cfg, faces_cfg = cfg["decode"], cfg["faces"]
    stage_dir = Path(args.stage_dir)
    detector = None
    onepass = bool(args.clips_rows and args.clips_dir)
    if onepass:
        from affectube.shards.clips import build_cached, clips_cfg
        from affectube.shards.onepass import OnePass

        store_cfg = clips_cfg(parse_cfg(args.cfg))
        clips_rows = {str(r["video_id"]): r for r in read_rows(args.clips_rows)}

    def process(row: dict):
        nonlocal detector
        vid, path = str(row["video_id"]), str(row["path"])
        out = stage_dir / "tracks" / f"{vid}.npz"
        meta = {"dataset": args.dataset, "video_id": vid}
        try:
            key = faces_key(path, decode_cfg, faces_cfg)
        except OSError as exc:
            meta.update({"path": path, "decode": decode_cfg, "faces": faces_cfg, "error": f"cannot read the video: {exc}"})
            save_tracks(out, Tracks.empty(meta))
            cache.forget(stage_dir, vid)
            return "failed", str(out), meta["error"]
        if cache.is_fresh(stage_dir, vid, out, key):
            return "cached", str(out), None
        cache.forget(stage_dir, vid)
        if detector is None:
            detector = build_detector(faces_cfg, threads=args.threads)  # ConfigError: the job fails
        tee = OnePass() if onepass and vid in clips_rows else None
        try:
            tracks = track_video(path, decode_cfg, faces_cfg, detector, threads=args.threads, meta=meta, stream_factory=tee)
        except DataError as exc:  # an undecodable video: recorded (as stage faces does), cached like a result
            meta.update({"path": path, "decode": decode_cfg, "faces": faces_cfg, "detector": detector.describe(), "error": str(exc)})
            save_tracks(out, Tracks.empty(meta))
            cache.record(stage_dir, vid, key)
            return "failed", str(out), str(exc)
        except Exception as exc:
            meta.update({"path": path, "error": f"{type(exc).__name__}: {exc}"})
            save_tracks(out, Tracks.empty(meta))  # faces-qc lists it; no key: retried next run
            raise
        tracks = save_tracks(out, tracks)  # as the file holds them
        cache.record(stage_dir, vid, key)
        frames = tee.frames() if tee is not None else None
        if frames is not None:
            try:
                build_cached(clips_rows[vid], stage_dir, Path(args.clips_dir), store_cfg, frames=frames, by="faces-shard", tracks=tracks)
            except Exception as exc:  # noqa: BLE001 - the clips shard job builds it (and records its error)
                log.warning("%s: store not built from the faces decode (the clips job will): %s: %s", vid, type(exc).__name__, exc)
            del frames, tee
        return "ran", str(out), None

    run_shard("faces", args.dataset, args.shard, read_rows(args.rows), process, args.out)
    return 0
