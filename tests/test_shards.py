"""data.shard_size: stable shard assignment (unit) and the planning benchmark on a tiny size."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from affectube.errors import ConfigError
from affectube.shards.assign import assign, bucket_count, bucket_of
from affectube.shards.index import expand_stores
from conftest import REPO, venv_env


def _where(shards: dict[str, list[str]]) -> dict[str, str]:
    return {v: s for s, ids in shards.items() for v in ids}


def test_bucket_count_is_a_power_of_two_covering_the_videos():
    assert [bucket_count(n, 8) for n in (0, 1, 8, 9, 16, 17, 33, 64, 65)] == [1, 1, 1, 2, 2, 4, 8, 8, 16]
    for bad in (0, -1, 2.5, True, "8"):
        with pytest.raises(ConfigError, match="data.shard_size"):
            bucket_count(10, bad)


def test_adding_videos_moves_no_existing_video_until_the_bucket_count_doubles():
    ids = [f"vid{i:05d}" for i in range(1000)]
    before = _where(assign(ids[:700], 100))  # 7 -> 8 buckets
    after = _where(assign(ids, 100))  # 10 -> 16 buckets: doubled
    same = _where(assign(ids[:800], 100))  # still 8 buckets
    assert all(same[v] == before[v] for v in before)  # +100 videos, no existing video moved
    moved = [v for v in before if after[v] != before[v]]
    # on doubling a video stays in b or goes to b + 8, never elsewhere; about half move
    assert all(int(after[v]) == int(before[v]) + 8 for v in moved)
    assert 0.35 < len(moved) / len(before) < 0.65
    # a function of the id alone: the order of the listing does not matter
    assert _where(assign(list(reversed(ids)), 100)) == after
    assert bucket_of("vid00001", 16) == int(after["vid00001"])
    sizes = [len(v) for v in assign(ids, 100).values()]
    assert sum(sizes) == 1000 and max(sizes) < 100  # 16 buckets: ~62 each


def test_expand_stores_lists_the_stores_of_a_clips_shard_index(tmp_path):
    index = tmp_path / "shard-3.json"
    index.write_text(json.dumps({"videos": [{"video_id": "a", "output": "x/a.h5"}, {"video_id": "b", "output": None}]}))
    assert expand_stores([str(index), "y/c.h5"]) == ["x/a.h5", "y/c.h5"]


def test_bench_scale_runs_on_a_tiny_size(tmp_path):
    out = tmp_path / "scale.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/bench_scale.py"), "--sizes", "12", "--shard-size", "4", "--per-video-max", "0", "--dvc-max", "0", "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=venv_env(PYTHONPATH=str(REPO / "workflow")),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {r["mode"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"sharded"}  # --per-video-max 0: the per-video plan (slow) is skipped
    # 12 bench + 16 demo videos in shards of 4: 4 + 4 buckets at most, per stage
    sharded = rows["sharded"]["plan"]["jobs_per_rule"]
    assert set(sharded) == {"faces_shard", "clips_shard"} and 2 <= sharded["faces_shard"] == sharded["clips_shard"] <= 8
    assert rows["sharded"]["plan"]["peak_rss_gb"] > 0 and rows["sharded"]["plan"]["wall_s"] > 0


def test_sharded_dag_inputs_are_per_shard_files_holding_each_videos_identity(tmp_path, monkeypatch):
    """Sharded, a folder dataset's videos are no Snakemake inputs (one input file per video made a 100k plan
    take minutes): its shards' faces rows files carry each video's size and mtime, rewritten only when one
    of their videos changes (so Snakemake re-runs that shard only); the demo's generated videos stay inputs."""
    import os

    import yaml

    from affectube.config import validate
    from affectube.dag import Dag

    root = tmp_path / "videos"
    for i in range(6):
        (root / f"s{i % 2}").mkdir(parents=True, exist_ok=True)
        (root / f"s{i % 2}/v{i}.mp4").write_bytes(b"x" * (10 + i))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)  # the rows files go to results/shards/ here
    params["data"]["datasets"]["small"] = {"adapter": "folder", "root": str(root)}
    params["data"]["pretrain"], params["data"]["shard_size"] = ["small"], 2

    def dag() -> Dag:
        return Dag(validate(yaml.safe_load(yaml.safe_dump(params))))

    d = dag()
    shards = d.shards("small")
    assert len(shards) == 4  # 6 videos in shards of 2: 4 buckets

    def w(shard, dataset="small"):
        return type("W", (), {"dataset": dataset, "shard": shard})()

    files = {s: d.shard_rows("faces")(w(s)) for s in shards}
    assert sorted(d.manifest_inputs(w(None))) == sorted(files.values())  # no video among the manifest's inputs
    assert all(d.shard_videos(w(s)) == [] for s in shards)
    rows = {s: json.loads(open(f).read()) for s, f in files.items()}
    some = next(iter(shards))
    first = rows[some][0]
    st = os.stat(first["path"])
    assert (first["size"], first["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
    mtimes = {s: os.stat(f).st_mtime_ns for s, f in files.items()}

    # the next DAG: an unchanged shard's file untouched; a changed video rewrites its own shard's file only
    os.utime(first["path"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    d2 = dag()
    again = {s: d2.shard_rows("faces")(w(s)) for s in shards}
    assert json.loads(open(again[some]).read())[0]["mtime_ns"] == st.st_mtime_ns + 10**9
    assert {s for s, f in again.items() if os.stat(f).st_mtime_ns != mtimes[s]} == {some}
    with pytest.raises(ConfigError, match="no shard '99'"):
        d2.shard_videos(w("99"))
    # SLURM: each shard job asks for the runtime of its own videos (10 min + videos x minutes per video, x attempt);
    # 6 videos in 4 buckets: unequal shards, so a runtime sized by data.shard_size would differ
    sizes = {s: len(r) for s, r in shards.items()}
    runtime = d2.shard_runtime(3.0)
    assert {s: runtime(w(s), 1) for s in shards} == {s: int(10 + 3.0 * n) for s, n in sizes.items()} and len(set(sizes.values())) > 1
    assert runtime(w(some), 2) == 2 * runtime(w(some), 1)
    # the demo's videos are written by a rule: they stay inputs (its shard jobs wait for demo_data)
    demo = d2.shards("demo")
    assert d2.generated("demo") and all(d2.shard_videos(w(s, "demo")) == [str(r["path"]) for r in demo[s]] for s in demo)
