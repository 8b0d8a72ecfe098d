"""Shards: faces and clips run per shard of ``data.shard_size`` videos (null: one job per video).

- :mod:`.assign`: which shard a video belongs to (stable: a hash of its id, power-of-two buckets);
- :mod:`.cache`: the per-video cache inside a shard job (a key of the video's identity and the params
  that matter, next to each per-video output);
- :mod:`.faces`, :mod:`.clips`: the shard jobs (CLI ``faces-shard``, ``clips-shard``), loops over the
  per-video stage functions (:func:`affectube.faces.pipeline.track_video`, :func:`affectube.clips.build.build_store`);
- :mod:`.index`: the shard index a shard job writes (its Snakemake output) and its expansion to stores.
- :mod:`.onepass`: one decode per video: the faces shard job keeps the frames the clips stage would decode
  again and packs the store from them (under the clips job's cache key).
"""
