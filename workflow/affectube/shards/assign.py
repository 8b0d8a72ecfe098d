"""Stable assignment of videos to shards.

A video's shard is ``hash(video_id) mod B`` with ``B`` the number of buckets: ``ceil(n / shard_size)``
rounded up to a power of two (so a shard holds between ``shard_size / 2`` and ``shard_size`` videos on
average). The hash is of the video's own id (sha1, not Python's salted ``hash``), so:

- adding videos without crossing a power of two (``B`` unchanged) moves no existing video: only the
  shards of the new videos change;
- crossing one doubles ``B``; a video then stays in bucket ``b`` or moves to ``b + B_old`` (never elsewhere),
  about half of them move. Every shard job then runs once more, but the per-video cache
  (:mod:`affectube.shards.cache`) is keyed by the video, not by its shard: a moved video is a cache hit,
  not re-processed.

Empty buckets are not shards (no job). Shard names are the bucket numbers (``"0"``, ``"1"``, ...).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

from affectube.errors import ConfigError


def bucket_count(n_videos: int, shard_size: int) -> int:
    """Number of buckets for ``n_videos``: ceil(n / shard_size) rounded up to a power of two (>= 1)."""
    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise ConfigError(f"params.yaml: data.shard_size: expected null or an integer >= 1, got {shard_size!r}")
    need = max(1, math.ceil(n_videos / shard_size))
    return 1 << (need - 1).bit_length()


def bucket_of(video_id: str, buckets: int) -> int:
    """The bucket of ``video_id`` among ``buckets`` (a function of the id alone)."""
    digest = hashlib.sha1(str(video_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % buckets


def assign(video_ids: Iterable[str], shard_size: int) -> dict[str, list[str]]:
    """Shard name -> its video ids (in the given order), for the non-empty buckets, by bucket number."""
    ids = [str(v) for v in video_ids]
    buckets = bucket_count(len(ids), shard_size)
    out: dict[int, list[str]] = {}
    for v in ids:
        out.setdefault(bucket_of(v, buckets), []).append(v)
    return {str(b): out[b] for b in sorted(out)}


def members(video_ids: Iterable[str], shard_size: int, shard: str) -> list[str]:
    """The video ids of shard ``shard`` (empty if the shard does not exist)."""
    return assign(video_ids, shard_size).get(str(shard), [])
