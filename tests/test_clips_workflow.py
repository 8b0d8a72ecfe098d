"""Snakemake builds the clip stores of real clips: manifest -> faces -> clips, read back bit-exact."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from affectube.clips.dataset import ClipDataset
from affectube.clips.readers import open_store
from affectube.config import sections
from affectube.faces.crop import crop_frames
from affectube.faces.tracks import load_tracks
from affectube.video.decode import decode
from conftest import run_snakemake

pytestmark = pytest.mark.slow

VIDEOS = [("videos/mead/W011_front_sad_level3_001.mp4", "MEAD_W011", "sad"),
          ("videos/cremad/1001_DFA_HAP_XX.flv", "CREMAD_1001", "happy"),
          ("videos/grid/lbax4n.mpg", "GRID_s4", None)]



def test_snakemake_builds_stores_for_real_clips(realdata, workflow_copy, tmp_path):
    csv = tmp_path / "clips.csv"
    pd.DataFrame([{"path": p, "subject": s, "emotion": e} for p, s, e in VIDEOS]).to_csv(csv, index=False)
    decode_cfg = {"fps": 25, "max_side": 256}
    crop_cfg = {"strategy": "box", "scale": 1.3, "size": 48, "grayscale": False, "pad_mode": "edge"}
    wf = workflow_copy({
        "data": {"datasets": {"real": {"adapter": "csv", "root": str(realdata), "file": str(csv)}}, "pretrain": ["real"], "finetune": "real"},
        "decode": decode_cfg,
        "faces": {"det_size": 160, "every_k": 3},
        "crop": crop_cfg,
        "clips": {"compression": "blosc-lz4", "chunk_frames": 8},
    })
    ids = [realdata.joinpath(p).stem for p, _, _ in VIDEOS]
    run_snakemake(wf, *[f"results/clips/real/{v}.h5" for v in ids], timeout=1200)

    for (rel, subject, emotion), vid in zip(VIDEOS, ids):
        store, tracks_path = wf / f"results/clips/real/{vid}.h5", wf / f"results/faces/real/tracks/{vid}.npz"
        tracks = load_tracks(tracks_path)
        dec = decode(realdata / rel, **decode_cfg)
        crops, valid = crop_frames(dec.frames, tracks, crop_cfg)
        with open_store(store, verify="full") as s:
            assert np.array_equal(s.frames[...], crops), vid  # bit-exact against the crops
            assert s.frames.chunks == (8, 48, 48, 3) and s.attrs["compression"] == "blosc-lz4"
            np.testing.assert_array_equal(s.array("timestamps"), dec.timestamps)
            np.testing.assert_array_equal(s.array("face_status"), tracks.status)
            np.testing.assert_array_equal(s.array("face_score"), tracks.scores)
            np.testing.assert_array_equal(s.array("valid"), valid)
            assert (s.dataset, s.video_id, s.subject) == ("real", vid, subject)
            assert s.labels.get("emotion") == emotion
            used = sections({"decode": decode_cfg}, "decode")["decode"]  # the stage records them with defaults filled
            used_crop = sections({"crop": crop_cfg}, "crop")["crop"]  # e.g. crop.mouth_window, unused by strategy box
            assert s.attrs["decode"] == used and s.attrs["crop"] == used_crop and len(s.attrs["provenance"]) == 64
            assert s.attrs["source"]["codec"] in {"h264", "vp6f", "mpeg1video"}
            assert valid.mean() > 0.5, f"{vid}: the detector found a face in only {valid.mean():.0%} of the frames"
    ds = ClipDataset(wf / "results/clips/real", num_frames=16, sample_stride=2, input_size=48, mode="test", test_clips=2)
    assert len(ds) == 6 and ds.classes == ["happy", "sad"]
    assert ds[0]["video"].shape == (3, 16, 48, 48)


def _planned(out: str) -> dict[str, set[str]]:
    """rule -> the `video` wildcards (else the outputs) of the jobs a `snakemake -n` plans."""
    jobs: dict[str, set[str]] = {}
    for rule, body in re.findall(r"^(?:local)?rule (\w+):\n((?:    .*\n)*)", out, flags=re.M):
        video = re.search(r"wildcards:.*\bvideo=([^,\s]+)", body)
        output = re.search(r"output: (.*)", body)
        jobs.setdefault(rule, set()).add(video.group(1) if video else (output.group(1) if output else ""))
    return jobs


def test_adding_a_video_runs_only_its_own_faces_and_clips_jobs(realdata, workflow_copy, tmp_path):
    """A clips job depends on its own video, tracks, annotation files and manifest row, not on the
    dataset's whole manifest: after a run, adding a video to a dataset plans faces + clips for that
    video only (and a changed label re-runs that video's clips job only)."""
    videos = sorted((realdata / "videos" / "grid").glob("*.mpg"))[:3]
    csv = tmp_path / "extra.csv"
    rows = [{"path": str(v), "subject": f"GRID_{i}", "emotion": "neutral"} for i, v in enumerate(videos)]
    pd.DataFrame(rows[:2]).to_csv(csv, index=False)
    wf = workflow_copy({
        "data": {"datasets": {"demo": {"adapter": "demo", "root": "results/demo"},
                              "extra": {"adapter": "csv", "root": str(realdata), "file": str(csv)}},
                 "pretrain": ["demo", "extra"], "finetune": "demo"},
        "demo": {"subjects": 4, "classes": ["happy", "sad"], "videos_per_class": 1, "seconds": 0.5, "fps": 10, "size": 128},
        "decode": {"fps": 10},
    })
    # the data part of the default target's DAG: demo videos, manifests, every video's faces + clips jobs
    run_snakemake(wf, "--until", "clips", "manifest", timeout=1200)
    ids = [v.stem for v in videos]
    assert all((wf / f"results/clips/extra/{v}.h5").exists() for v in ids[:2])
    assert _planned(run_snakemake(wf, "-n", "--until", "clips", "manifest").stdout) == {}  # nothing left to do

    rows[0]["emotion"] = "happy"  # one label changed, one video added
    pd.DataFrame(rows).to_csv(csv, index=False)
    planned = _planned(run_snakemake(wf, "-n").stdout)  # the default target: everything downstream too
    assert planned["faces"] == {ids[2]}
    assert planned["clips"] == {ids[2], ids[0]}  # the new video; the relabelled one (its row param changed)
    assert planned["manifest"] == {"results/manifests/extra.csv, results/manifests/extra.missing.csv"}
    assert "demo_data" not in planned
