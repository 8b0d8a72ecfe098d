"""Stage ``clips-shard``: crop and pack the clip stores of one shard's videos (one job).

    python -m affectube clips-shard --cfg '{"decode": ..., "crop": ..., "clips": ...}' \
        --rows results/shards/D/clips-3.json --dataset D --shard 3 --faces-dir results/faces/D \
        --stage-dir results/clips/D --out results/clips/D/shard-3.json

Per video the same store as stage ``clips`` (``<stage-dir>/<video_id>.h5``, built by
:func:`affectube.clips.build.build_store`), skipped when its cache key is unchanged: the video's
identity, the key of the tracks it crops along (so new tracks re-crop, and a crop-only change re-crops
without re-detecting), its canonical manifest row, its annotation files' identities and the
``decode``/``crop``/``clips`` params. A video whose store cannot be built is recorded in the shard
index as failed (no store, no key: retried by the next run); the shard job succeeds.

One decode per video: the faces shard job, which decodes each video it (re-)detects, builds the store from
those frames under this same key (:mod:`affectube.shards.onepass`, :func:`build_cached` with ``frames``);
this job then finds it fresh and reports it ``onepass`` (the first time; ``cached`` after), without
decoding the video. A crop-only change leaves the tracks (and the faces job's cache) as they are: the key
differs, so this job decodes and crops the video itself, along the cached tracks.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from affectube.config import parse_cfg
from affectube.shards import cache
from affectube.shards.index import add_shard_arguments, read_rows, run_shard

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_shard_arguments(parser, "JSON with the 'decode', 'crop' and 'clips' sections",
                        "results/clips/<dataset>: the stores and keys/")
    parser.add_argument("--faces-dir", required=True, help="results/faces/<dataset> (tracks/ and keys/ under it)")


def clips_key(row: dict, tracks: Path, tracks_key: str | None, cfg: dict) -> str:
    from affectube.data.annotation import row_files

    annotations = [cache.file_identity(p) for p in row_files(row)]
    return cache.make_key(video=cache.file_identity(row["path"]), tracks=tracks_key or cache.file_identity(tracks),
                          row=row, annotations=annotations, params=cfg)


def clips_cfg(raw: dict) -> dict:
    """The ``decode``, ``crop`` and ``clips`` sections of a ``--cfg``, as stage clips gets them (its provenance hash)."""
    return {k: raw[k] for k in ("decode", "crop", "clips") if k in raw}


def build_cached(row: dict, faces_dir: Path, stage_dir: Path, cfg: dict, frames=None, by: str | None = None, tracks=None):
    """The video's store, built unless fresh: ``(status, store, error)``. ``frames``: the decoded frames (the
    faces job's one decode) instead of decoding here, with ``tracks`` (as saved) instead of reading them back;
    ``by``: recorded with the key (``faces-shard``)."""
    from affectube.clips.build import build_store
    from affectube.clips.labels import canonical_row

    row = canonical_row(row)
    vid = str(row["video_id"])
    tracks_file, out = faces_dir / "tracks" / f"{vid}.npz", stage_dir / f"{vid}.h5"
    key = clips_key(row, tracks_file, cache.stored_key(faces_dir, vid), cfg)
    if frames is None and cache.is_fresh(stage_dir, vid, out, key):
        rec = cache.stored(stage_dir, vid)
        if rec.get("by"):  # built by the faces job's decode: claimed once
            cache.record(stage_dir, vid, key, **({"table": rec["table"]} if "table" in rec else {}))
            return "onepass", str(out), None
        return "cached", str(out), None
    cache.forget(stage_dir, vid)
    out.unlink(missing_ok=True)  # a video that fails now has no (stale) store
    content = build_store(row["path"], tracks_file, row, vid, cfg, out, frames=frames, tracks=tracks)
    # with the store's row of the shard's store table, from the writer's read-back (the table then need not reopen it)
    cache.record(stage_dir, vid, key, **({"by": by} if by else {}), **({"table": content.table} if content.table else {}))
    return ("failed" if content.error else "ran"), str(out), content.error


def run(args: argparse.Namespace) -> int:
    cfg = clips_cfg(parse_cfg(args.cfg))
    faces_dir, stage_dir = Path(args.faces_dir), Path(args.stage_dir)
    # the shard's store table (what the loader reads instead of opening every store), then its index
    run_shard("clips", args.dataset, args.shard, read_rows(args.rows),
              lambda row: build_cached(row, faces_dir, stage_dir, cfg), args.out,
              finish=lambda stores: table(stores, args.out, stage_dir))
    return 0


def table(stores: list[str], index: str, stage_dir: Path | None = None) -> None:
    """Write the shard's store table; a store that cannot be read leaves the shard without one (the loader then
    opens its stores, and names the bad one), not a failed shard. The rows the stores' writers recorded in
    ``stage_dir``'s key files are used for stores unchanged since (size and mtime)."""
    from affectube.clips.store_table import table_path, write_table

    path = table_path(index)
    known = {}
    if stage_dir is not None:
        for store in stores:
            rec = cache.stored(stage_dir, Path(store).stem).get("table")
            if isinstance(rec, dict) and isinstance(rec.get("row"), dict):
                known[str(store)] = rec
    try:
        write_table(stores, path, known)
    except Exception as exc:  # noqa: BLE001 - the stores were built (and recorded) already
        path.unlink(missing_ok=True)
        log.warning("%s: no store table written (%s: %s): the loader will open the shard's stores", path, type(exc).__name__, exc)
