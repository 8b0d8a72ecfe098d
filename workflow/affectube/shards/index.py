"""The shard index: what a shard job writes as its (Snakemake) output, and its expansion to stores.

``{"stage", "dataset", "shard", "videos": [{"video_id", "status", "output", "seconds", "error"}], "counts"}``
with ``status`` one of ``ran`` (processed now), ``cached`` (the per-video cache was up to date),
``failed`` (recorded: the shard job still succeeds); clips only: ``onepass`` (the faces shard job built the
store from its own decode of the video: :mod:`affectube.shards.onepass`; up to date, not decoded again). Per-video outputs stay one file per video
(tracks ``.npz``, clip store ``.h5``) beside the index.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections import Counter
from pathlib import Path

from affectube.errors import ConfigError, DataError
from affectube.io import read_json, write_json

log = logging.getLogger(__name__)


def add_shard_arguments(parser, cfg_help: str, stage_dir_help: str) -> None:
    """The arguments every shard stage takes: its params, its rows, where it writes, its index."""
    parser.add_argument("--cfg", required=True, help=cfg_help)
    parser.add_argument("--rows", required=True, help="the shard's manifest rows (.json, written by the DAG)")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--shard", required=True, help="shard name (affectube.shards.assign)")
    parser.add_argument("--stage-dir", required=True, help=stage_dir_help)
    parser.add_argument("--out", required=True, help="shard index (.json) to write")


def read_rows(path: str | os.PathLike) -> list[dict]:
    """The manifest rows of one shard, as the DAG wrote them (:meth:`affectube.dag.Dag.shard_rows`)."""
    try:
        rows = read_json(path)
    except FileNotFoundError:
        raise DataError(f"{path}: shard rows not found") from None
    except ValueError as exc:
        raise DataError(f"{path}: not a JSON list of manifest rows ({exc})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "video_id" in r and "path" in r for r in rows):
        raise DataError(f"{path}: not a JSON list of manifest rows (objects with video_id and path)")
    return rows


def run_shard(stage: str, dataset: str, shard: str, rows: list[dict], process, out: str | os.PathLike, finish=None) -> dict:
    """Call ``process(row) -> (status, output, error)`` for each row; a video whose processing raises is
    recorded as failed (its shard goes on), except a configuration error, which fails the job. Writes the index,
    after ``finish(outputs)`` (the videos' outputs, in order: e.g. the clips shard's store table) when given."""
    entries = []
    for row in rows:
        vid = str(row["video_id"])
        t0 = time.perf_counter()
        try:
            status, output, error = process(row)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - one video's failure is recorded, not fatal to its shard
            log.error("%s: %s: FAILED: %s\n%s", stage, vid, exc, traceback.format_exc())
            status, output, error = "failed", None, f"{type(exc).__name__}: {exc}"
        seconds = round(time.perf_counter() - t0, 3)
        entries.append({"video_id": vid, "status": status, "output": output, "seconds": seconds, "error": error})
        print(f"{stage}: shard {shard}: {vid}: {status} in {seconds:.2f} s" + (f" ({error})" if error else ""), flush=True)
    counts = dict(Counter(e["status"] for e in entries))
    if finish is not None:
        finish([e["output"] for e in entries if e["output"]])
    doc = {"stage": stage, "dataset": dataset, "shard": str(shard), "videos": entries, "counts": counts}
    write_json(out, doc)
    print(f"{stage}: shard {shard} of {dataset}: {len(entries)} videos, {json.dumps(counts, sort_keys=True)} -> {out}")
    return doc


def is_shard_index(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a shard index (``shard-<k>.json``)."""
    return str(path).endswith(".json") and Path(path).name.startswith("shard-")


def expand_stores(paths: list[str]) -> list[str]:
    """Clip store paths: a clips shard index (``shard-*.json``) stands for the stores it lists
    (failed videos have none); other paths are kept as given."""
    out: list[str] = []
    for p in paths:
        if is_shard_index(p):
            doc = read_json(p)
            out.extend(e["output"] for e in doc["videos"] if e.get("output"))
        else:
            out.append(str(p))
    return out
