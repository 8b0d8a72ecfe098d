"""Through Snakemake with data.shard_size: one faces and one clips job per shard, a per-video cache inside.

A folder dataset of tiny videos (one of them corrupt) in shards of 3: a job per shard, the corrupt video
recorded in QC without failing its shard; a new video re-runs only its own shard's jobs, and inside them
only its own work; a shard job that stopped part-way resumes from its per-video cache.
"""

from __future__ import annotations

import argparse
import json
import subprocess

import pandas as pd
import pytest
import yaml
from snakemake.utils import validate

from affectube.shards.assign import assign, bucket_count
from conftest import run_snakemake
from test_faces_snakemake import jobs


def _video(path, seconds=0.4):
    from affectube.video.decode import ffmpeg_exe

    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=96x96:rate=25", "-t", str(seconds),
                    "-pix_fmt", "yuv420p", str(path)], check=True)


def _index(wf, stage, shard):
    return json.loads((wf / f"results/{stage}/small/shard-{shard}.json").read_text())


def test_shards_run_cache_per_video_and_record_failures(workflow_copy, tmp_path, monkeypatch):
    root = tmp_path / "videos"
    for name in ("s1/a", "s1/b", "s2/c"):
        _video(root / f"{name}.mp4")
    (root / "s2").mkdir(exist_ok=True)
    (root / "s2/bad.mp4").write_bytes(b"not a video at all\n" * 50)
    wf = workflow_copy({
        "data": {"datasets": {"demo": {"adapter": "demo", "root": "results/demo"}, "small": {"adapter": "folder", "root": str(root)}},
                 "pretrain": ["small"], "finetune": "demo", "shard_size": 3},
        "faces": {"every_k": 5},
    })
    ids = ["s1_a", "s1_b", "s2_bad", "s2_c"]
    assert bucket_count(4, 3) == bucket_count(5, 3) == 2  # adding one video below keeps the buckets
    shards = assign(ids, 3)
    targets = ["results/faces/small/qc.csv", *[f"results/clips/small/shard-{s}.json" for s in shards]]

    first = jobs(run_snakemake(wf, *targets))
    assert first.get("faces_shard") == len(shards) and first.get("clips_shard") == len(shards) and "faces" not in first
    manifest = pd.read_csv(wf / "results/manifests/small.csv", dtype=str)
    assert sorted(manifest["video_id"]) == ids  # the ids the test assigned are the manifest's

    # the corrupt video: failed in QC and in its shard's indexes; its shard succeeded, the others were processed
    qc = pd.read_csv(wf / "results/faces/small/qc.csv", dtype={"video_id": str}).set_index("video_id")
    assert qc.loc["s2_bad", "status"] == "failed" and str(qc.loc["s2_bad", "path"]).endswith("bad.mp4")
    assert (qc.drop(index="s2_bad")["status"] == "ok").all()
    bad_shard = next(s for s, v in shards.items() if "s2_bad" in v)
    faces_entries = {e["video_id"]: e for e in _index(wf, "faces", bad_shard)["videos"]}
    assert faces_entries["s2_bad"]["status"] == "failed" and faces_entries["s2_bad"]["error"]
    for s, members in shards.items():
        for e in _index(wf, "clips", s)["videos"]:  # one decode per video: the faces job built the stores
            assert e["status"] == ("failed" if e["video_id"] == "s2_bad" else "onepass")
        assert {e["video_id"] for e in _index(wf, "faces", s)["videos"]} == set(members)
    # each clips shard wrote its store table: a dataset over the shard indexes opens no store to index them
    from affectube.clips.dataset import ClipDataset
    from affectube.clips.store_table import EntryTable

    monkeypatch.chdir(wf)  # the indexes list the stores relative to the workflow
    monkeypatch.setattr("affectube.clips.dataset.open_store", lambda path, **kw: pytest.fail(f"{path} opened"))
    ds = ClipDataset([f"results/clips/small/shard-{s}.json" for s in shards], num_frames=4, sample_stride=1, input_size=32)
    assert isinstance(ds.entries, EntryTable) and sorted(ds.video_ids) == ["s1_a", "s1_b", "s2_c"], ds.video_ids
    assert ds[0]["video"].shape == (3, 4, 32, 32)
    monkeypatch.undo()
    tracks = {v: wf / f"results/faces/small/tracks/{v}.npz" for v in ids}
    stores = {v: wf / f"results/clips/small/{v}.h5" for v in ids}
    mtimes = {v: (tracks[v].stat().st_mtime_ns, stores[v].stat().st_mtime_ns) for v in ids}

    # a new video: only its shard's faces and clips jobs, and inside them only its own work
    _video(root / "s1/d.mp4")
    new_shard = assign([*ids, "s1_d"], 3)
    assert all(v in new_shard[s] for s, members in shards.items() for v in members)  # no existing video moved
    d_shard = next(s for s, v in new_shard.items() if "s1_d" in v)
    ran = jobs(run_snakemake(wf, *[f"results/clips/small/shard-{s}.json" for s in new_shard]))
    assert ran == {"faces_shard": 1, "clips_shard": 1}, ran  # the new video's shard only (no manifest: not an input)
    for stage, new in (("faces", "ran"), ("clips", "onepass")):
        status = {e["video_id"]: e["status"] for e in _index(wf, stage, d_shard)["videos"]}
        assert status.pop("s1_d") == new and set(status.values()) <= {"cached"}, status
    assert {v: (tracks[v].stat().st_mtime_ns, stores[v].stat().st_mtime_ns) for v in ids} == mtimes  # nothing else redone

    # a shard job stopped part-way (one video's cache key never written): the next run redoes that video only
    victim = new_shard[d_shard][0]
    (wf / f"results/clips/small/keys/{victim}.json").unlink()
    from affectube.shards import clips

    params = yaml.safe_load((wf / "params.yaml").read_text())
    validate(params, str(wf / "workflow/affectube/schemas/params.schema.yaml"))  # as the Snakefile: the defaults filled in
    out = tmp_path / "again.json"
    clips.run(argparse.Namespace(cfg=json.dumps({k: params[k] for k in ("decode", "crop", "clips")}), dataset="small", shard=d_shard,
                                 rows=str(wf / f"results/shards/small/clips-{d_shard}.json"), faces_dir=str(wf / "results/faces/small"),
                                 stage_dir=str(wf / "results/clips/small"), out=str(out)))
    status = {e["video_id"]: e["status"] for e in json.loads(out.read_text())["videos"]}
    assert status.pop(victim) in ("ran", "failed") and set(status.values()) <= {"cached"}, status
    assert (tmp_path / "again.table.npz").exists()  # the store table, beside the index


@pytest.mark.slow
def test_demo_faces_and_clips_run_on_shards(workflow_copy, insightface_model):
    """The demo's faces + clips through Snakemake with data.shard_size (a reduced demo: 8 rendered videos of 1 s,
    the real SCRFD detector): one faces and one clips shard job, one decode per video (the clips job decodes
    none), every video ok in QC; nothing left to do after; a crop change re-runs both shard jobs, re-crops every
    store and re-detects none."""
    wf = workflow_copy({
        "data": {"shard_size": 8},
        "demo": {"subjects": 4, "videos_per_class": 1, "seconds": 1.0},
        "faces": {"backend": "insightface", "model": str(insightface_model)},
    })
    targets = ["results/faces/demo/qc.csv", "results/clips/demo/shard-0.json"]  # 8 videos in shards of 8: one shard
    ran = jobs(run_snakemake(wf, *targets))
    assert ran.get("faces_shard") == 1 and ran.get("clips_shard") == 1 and "faces" not in ran and "clips" not in ran, ran
    qc = pd.read_csv(wf / "results/faces/demo/qc.csv", dtype={"video_id": str})
    assert len(qc) == 8 and (qc["status"] == "ok").all(), qc
    assert {e["status"] for e in _demo_index(wf, "faces")} == {"ran"}
    assert {e["status"] for e in _demo_index(wf, "clips")} == {"onepass"}  # stores packed from the faces job's decode
    assert "Nothing to be done" in (p := run_snakemake(wf, "-n", *targets)).stdout + p.stderr

    params = yaml.safe_load((wf / "params.yaml").read_text())
    params["crop"]["size"] = 48
    (wf / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = jobs(run_snakemake(wf, *targets))
    assert ran.get("faces_shard") == 1 and ran.get("clips_shard") == 1 and set(ran) <= {"faces_shard", "clips_shard", "faces_qc"}, ran
    assert {e["status"] for e in _demo_index(wf, "faces")} == {"cached"}  # no detection, no decode
    assert {e["status"] for e in _demo_index(wf, "clips")} == {"ran"}
    import h5py

    for e in _demo_index(wf, "clips"):
        with h5py.File(wf / e["output"] if not e["output"].startswith("/") else e["output"]) as f:
            assert f["frames"].shape[1:3] == (48, 48) and f["valid"][()].mean() > 0.5


def _demo_index(wf, stage):
    return json.loads((wf / f"results/{stage}/demo/shard-0.json").read_text())["videos"]
