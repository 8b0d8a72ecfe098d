"""Stage ``clips``: crop one video's face along its tracks and pack a tube-ready HDF5 store.

    python -m affectube clips --cfg '{"decode": ..., "crop": ..., "clips": ...}' --video V \
        --tracks results/faces/D/tracks/V.npz --row '{"dataset": "D", "video_id": "V", ...}' \
        --out results/clips/D/V.h5

The video's manifest row comes as JSON (``--row``: what the rule passes, so a job depends on its
own row only) or from the dataset manifest (``--manifest results/manifests/D.csv --video-id V``,
handy by hand).

``--verify STORE...`` instead checks existing stores in full (every frame against its crc32).
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from affectube.config import parse_cfg

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", help="JSON with the decode, crop and clips sections (or @file)")
    parser.add_argument("--video", help="source video")
    parser.add_argument("--tracks", help="face tracks (.npz) of the video")
    parser.add_argument("--row", help="the video's manifest row as a JSON object (or @file)")
    parser.add_argument("--manifest", help="instead of --row: the dataset manifest (.csv) holding the video's row")
    parser.add_argument("--video-id", help="the video's id (default with --row: the row's video_id)")
    parser.add_argument("--out", help="store to write (.h5)")
    parser.add_argument("--verify", nargs="+", metavar="STORE", help="only verify these stores in full and exit")


def run(args: argparse.Namespace) -> int:
    from affectube.clips.readers import open_store
    from affectube.errors import UserError

    if args.verify:
        for path in args.verify:
            with open_store(path, verify="full") as s:
                print(f"{path}: OK ({len(s)} frames, {s.attrs['compression']}, chunks {s.frames.chunks})")
        return 0
    missing = [f"--{k.replace('_', '-')}" for k in ("cfg", "video", "tracks", "out") if not getattr(args, k)]
    if bool(args.row) == bool(args.manifest):
        missing.append("--row or --manifest (one of them)")
    elif args.manifest and not args.video_id:
        missing.append("--video-id (with --manifest)")
    if missing:
        raise UserError(f"clips: missing argument(s) {', '.join(missing)}")

    from affectube.clips.build import build_store

    cfg = parse_cfg(args.cfg)  # build_store validates its sections and fills the schema defaults
    t0 = time.perf_counter()
    if args.row:
        try:
            row = parse_cfg(args.row) if args.row.startswith("@") else json.loads(args.row)
        except json.JSONDecodeError as exc:
            raise UserError(f"clips: --row is not JSON ({exc})") from None
        if not isinstance(row, dict):
            raise UserError("clips: --row must be a JSON object (the video's manifest row)")
        source, video_id = row, args.video_id or str(row.get("video_id"))
    else:
        source, video_id = args.manifest, args.video_id
    content = build_store(args.video, args.tracks, source, video_id, cfg, args.out)
    cf = int(content.clips["chunk_frames"])
    log.info("%s: written (compression %s, %s) in %.1f s%s", args.out, content.clips["compression"],
             f"chunks of {cf} frames" if cf else "contiguous", time.perf_counter() - t0, f"; error: {content.error}" if content.error else "")
    return 0
