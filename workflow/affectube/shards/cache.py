"""The per-video cache inside a shard job.

Each per-video output (tracks ``.npz``, clip store ``.h5``) has a key file beside its folder
(``<stage dir>/keys/<video_id>.json``) holding a hash of what the output was made from: the
video's identity (path, size, modification time: no full read of the video), the params that
matter for the stage, and for clips the key of the tracks it cropped along and its manifest row.
An output is reused when it exists and its key file holds the same key. The key file is written
after the output (both atomically), so a shard job killed mid-video re-does that video only.
"""

from __future__ import annotations

import os
from pathlib import Path

from affectube.io import read_json, stable_hash, write_json


def file_identity(path: str | os.PathLike) -> dict:
    """Path, size and modification time (ns) of a file (symlinks followed); OSError if it is missing."""
    st = os.stat(path)
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def make_key(**parts) -> str:
    return stable_hash(parts)


def key_path(stage_dir: str | os.PathLike, video_id: str) -> Path:
    return Path(stage_dir) / "keys" / f"{video_id}.json"


def stored(stage_dir: str | os.PathLike, video_id: str) -> dict:
    """The record of a video's output (``key`` and what :func:`record` was given; {} if none or unreadable)."""
    try:
        doc = read_json(key_path(stage_dir, video_id))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def stored_key(stage_dir: str | os.PathLike, video_id: str) -> str | None:
    """The key recorded for a video's output (None if none or unreadable)."""
    return stored(stage_dir, video_id).get("key")


def is_fresh(stage_dir: str | os.PathLike, video_id: str, output: str | os.PathLike, key: str) -> bool:
    return Path(output).exists() and stored_key(stage_dir, video_id) == key


def record(stage_dir: str | os.PathLike, video_id: str, key: str, **extra) -> None:
    """Record ``key`` for the video's output (call after the output is written)."""
    write_json(key_path(stage_dir, video_id), {"key": key, **extra})


def forget(stage_dir: str | os.PathLike, video_id: str) -> None:
    key_path(stage_dir, video_id).unlink(missing_ok=True)
