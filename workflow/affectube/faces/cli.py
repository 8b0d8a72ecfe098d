"""Stage ``faces``: decode one video, detect and track its face, write the tracks ``.npz``.

A video that cannot be decoded (corrupt, truncated, empty, not a video) still gets a
tracks file, with N = 0 frames and ``meta.error`` naming the problem, and the job
succeeds: the dataset goes on and ``faces-qc`` lists the failure. A detector that
cannot be built (bad ``faces`` params, missing model) is a configuration error: the
job fails.
"""

from __future__ import annotations

import argparse
import logging

from affectube.config import parse_cfg, sections
from affectube.errors import DataError
from affectube.faces.detect import build_detector
from affectube.faces.pipeline import track_video
from affectube.faces.tracks import Tracks, save_tracks

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", required=True, help="JSON with the 'decode' and 'faces' sections")
    parser.add_argument("--video", required=True, help="video file")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--video-id", required=True)
    parser.add_argument("--out", required=True, help="tracks .npz to write")
    parser.add_argument("--threads", type=int, default=1, help="threads for ffmpeg and the detector")


def run(args: argparse.Namespace) -> int:
    cfg = sections(parse_cfg(args.cfg), "decode", "faces")
    decode_cfg, faces_cfg = cfg["decode"], cfg["faces"]
    detector = build_detector(faces_cfg, threads=args.threads)
    meta = {"dataset": args.dataset, "video_id": args.video_id}
    try:
        tracks = track_video(args.video, decode_cfg, faces_cfg, detector, threads=args.threads, meta=meta)
    except DataError as exc:
        log.error("%s", exc)
        meta.update({"path": args.video, "decode": decode_cfg, "faces": faces_cfg, "detector": detector.describe(), "error": str(exc)})
        save_tracks(args.out, Tracks.empty(meta))
        print(f"faces: {args.video_id}: FAILED, recorded in {args.out}: {exc}")
        return 0
    save_tracks(args.out, tracks)
    c = tracks.meta["counts"]
    print(
        f"faces: {args.video_id}: {c['frames']} frames, coverage {c['coverage']:.1%} (detected {c['detected']}, tracked {c['tracked']},"
        f" interpolated {c['interpolated']}, lost {c['lost']} in {c['gaps']} gaps), {tracks.meta['frames_per_second']} frames/s -> {args.out}"
    )
    return 0
