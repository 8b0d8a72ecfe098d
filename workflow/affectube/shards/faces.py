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
        try:
            tracks = track_video(path, decode_cfg, faces_cfg, detector, threads=args.threads, meta=meta)
        except DataError as exc:  # an undecodable video: recorded (as stage faces does), cached like a result
            meta.update({"path": path, "decode": decode_cfg, "faces": faces_cfg, "detector": detector.describe(), "error": str(exc)})
            save_tracks(out, Tracks.empty(meta))
            cache.record(stage_dir, vid, key)
            return "failed", str(out), str(exc)
        except Exception as exc:
            meta.update({"path": path, "error": f"{type(exc).__name__}: {exc}"})
            save_tracks(out, Tracks.empty(meta))  # faces-qc lists it; no key: retried next run
            raise
        save_tracks(out, tracks)
        cache.record(stage_dir, vid, key)
        return "ran", str(out), None

    run_shard("faces", args.dataset, args.shard, read_rows(args.rows), process, args.out)
    return 0
