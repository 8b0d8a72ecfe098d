"""Snakemake builds the clip stores of real clips: manifest -> faces -> clips, read back bit-exact."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from affectube.clips.dataset import ClipDataset
from affectube.clips.store import open_store
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
            assert s.attrs["decode"] == decode_cfg and s.attrs["crop"] == crop_cfg and len(s.attrs["provenance"]) == 64
            assert s.attrs["source"]["codec"] in {"h264", "vp6f", "mpeg1video"}
            assert valid.mean() > 0.5, f"{vid}: the detector found a face in only {valid.mean():.0%} of the frames"
    ds = ClipDataset(wf / "results/clips/real", num_frames=16, sample_stride=2, input_size=48, mode="test", test_clips=2)
    assert len(ds) == 6 and ds.classes == ["happy", "sad"]
    assert ds[0]["video"].shape == (3, 16, 48, 48)
