"""Stage ``clips`` on real videos: decode + crop along tracks + pack; bit-exact against the crops."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from affectube.clips.dataset import ClipDataset
from affectube.clips.labels import canonical_row
from affectube.clips.readers import open_store
from affectube.config import sections
from affectube.faces.crop import crop_frames
from affectube.faces.tracks import Tracks, load_tracks, save_tracks
from affectube.io import stable_hash
from affectube.video.decode import decode

REPO = Path(__file__).resolve().parents[1]
CFG = {
    "decode": {"fps": 25, "max_side": 640},
    "crop": {"strategy": "box", "scale": 1.3, "size": 64, "grayscale": False, "pad_mode": "edge"},
    "clips": {"compression": "blosc-lz4", "chunk_frames": 8},
}


def used(cfg: dict = CFG) -> dict:
    """The params the stage records (and hashes into ``provenance``): ``cfg`` with the schema defaults filled in."""
    return sections(cfg, "decode", "crop", "clips")


def fake_tracks(video: Path, decode_cfg: dict, path: Path, lost=()) -> Tracks:
    """Tracks with a centred face box (stage ``clips`` only consumes them; detection is tested elsewhere)."""
    dec = decode(video, **decode_cfg)
    n, (h, w) = len(dec), dec.frames.shape[1:3]
    side = 0.5 * min(h, w)
    box = np.array([w / 2 - side / 2, h / 2 - side / 2, w / 2 + side / 2, h / 2 + side / 2], np.float32)
    boxes = np.tile(box, (n, 1)) + np.linspace(0, 4, n, dtype=np.float32)[:, None]  # a slow drift
    status = np.ones(n, np.uint8)
    status[list(lost)] = 0
    tracks = Tracks(timestamps=dec.timestamps, boxes=boxes, landmarks=np.zeros((n, 5, 2), np.float32),
                    scores=np.where(status > 0, 0.9, 0.0).astype(np.float32), status=status,
                    num_faces=np.ones(n, np.int16), frame_size=np.array([h, w], np.int32), meta={"video_id": video.stem})
    save_tracks(path, tracks)
    return load_tracks(path)


def run_clips(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    return subprocess.run([sys.executable, "-m", "affectube", "clips", *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture
def mead(realdata, tmp_path):
    video = realdata / "videos" / "mead" / "M030_front_happy_level3_001.mp4"
    ann = tmp_path / "ann.csv"
    t = np.arange(0, 3.0, 0.1)
    pd.DataFrame({"time": t, "arousal": np.cos(t)}).to_csv(ann, index=False)
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame([{"dataset": "mead", "video_id": "M030_happy", "path": str(video), "subject": "MEAD_M030", "session": "",
                   "emotion": "happy", "valence": 0.6, "annotation": str(ann)},
                  {"dataset": "mead", "video_id": "other", "path": "x.mp4", "subject": "MEAD_W009", "session": "",
                   "emotion": "sad", "valence": -0.5, "annotation": ""}]).to_csv(manifest, index=False)
    return video, manifest, ann


def test_store_from_real_video_is_bit_exact_with_all_metadata(mead, tmp_path):
    video, manifest, ann = mead
    tracks = fake_tracks(video, CFG["decode"], tmp_path / "tracks.npz", lost=[5, 6])
    out = tmp_path / "clips" / "M030_happy.h5"
    proc = run_clips("--cfg", json.dumps(CFG), "--video", str(video), "--tracks", str(tmp_path / "tracks.npz"),
                     "--manifest", str(manifest), "--video-id", "M030_happy", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    dec = decode(video, **CFG["decode"])
    crops, valid = crop_frames(dec.frames, tracks, CFG["crop"])
    with open_store(out, verify="full") as s:
        assert np.array_equal(s.frames[...], crops)  # bit-exact against the crops
        np.testing.assert_array_equal(s.array("timestamps"), dec.timestamps)
        np.testing.assert_array_equal(s.array("valid"), valid)
        np.testing.assert_array_equal(s.array("face_status"), tracks.status)
        np.testing.assert_array_equal(s.array("face_score"), tracks.scores)
        np.testing.assert_array_equal(s.array("face_boxes"), tracks.boxes)
        assert not s.array("valid")[5] and s.array("valid")[4]
        assert (s.dataset, s.video_id, s.subject, s.session) == ("mead", "M030_happy", "MEAD_M030", "")
        assert s.labels == {"emotion": "happy", "valence": 0.6}
        assert s.attrs["crop"] == used()["crop"] and s.attrs["decode"] == used()["decode"] and s.attrs["clips"] == used()["clips"]
        assert s.attrs["compression"] == "blosc-lz4" and s.frames.chunks == (8, 64, 64, 3)
        assert s.attrs["source"]["codec"] == "h264" and s.attrs["fps"] == 25.0
        row = pd.read_csv(manifest, dtype={"video_id": str, "subject": str, "session": str}).iloc[0].to_dict()
        assert s.attrs["provenance"] == stable_hash({"manifest_row": canonical_row(row), "params": used()})
        arousal = s.array("frame_labels/arousal")
        inside = dec.timestamps <= 2.9
        np.testing.assert_allclose(arousal[inside], np.cos(dec.timestamps[inside]), atol=2e-3)
        assert json.loads(s.file["frame_labels"].attrs["meta"])["annotation"] == str(ann)
    ds = ClipDataset([out], num_frames=16, sample_stride=2, input_size=64, mode="test", test_clips=2, targets=["valence", "arousal"])
    item = ds[1]
    assert item["video"].shape == (3, 16, 64, 64) and item["label"] == 0 and item["targets"][0] == pytest.approx(0.6)


def test_stale_tracks_are_refused(mead, tmp_path):
    video, manifest, _ = mead
    fake_tracks(video, {"fps": 10, "max_side": 640}, tmp_path / "tracks.npz")  # tracked at another rate
    out = tmp_path / "v.h5"
    proc = run_clips("--cfg", json.dumps(CFG), "--video", str(video), "--tracks", str(tmp_path / "tracks.npz"),
                     "--manifest", str(manifest), "--video-id", "M030_happy", "--out", str(out))
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()[-1]
    assert "tracks.npz" in err and "other decode params" in err
    assert not out.exists() and not list(tmp_path.glob(".v.h5*"))


def test_undecodable_video_gets_an_empty_store(mead, tmp_path):
    video, manifest, _ = mead
    save_tracks(tmp_path / "tracks.npz", Tracks.empty({"error": "cannot decode: moov atom not found"}))
    out = tmp_path / "v.h5"
    proc = run_clips("--cfg", json.dumps(CFG), "--video", str(video), "--tracks", str(tmp_path / "tracks.npz"),
                     "--manifest", str(manifest), "--video-id", "M030_happy", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    with open_store(out) as s:
        assert len(s) == 0 and "moov atom" in s.error and s.frames.shape == (0, 64, 64, 3)


def test_unknown_video_id_is_refused(mead, tmp_path):
    video, manifest, _ = mead
    proc = run_clips("--cfg", json.dumps(CFG), "--video", str(video), "--tracks", str(tmp_path / "none.npz"),
                     "--manifest", str(manifest), "--video-id", "nope", "--out", str(tmp_path / "v.h5"))
    assert proc.returncode == 2 and "manifest.csv: no row with video_id 'nope'" in proc.stderr


def test_row_json_with_one_annotation_file_per_target(mead, tmp_path):
    """RECOLA/SEWA-style ``arousal=a.csv;valence=b.csv`` rows, passed as ``--row`` JSON (what the rule does):
    both targets are read back per frame, each aligned by timestamp on its own file's grid."""
    video, manifest, _ = mead
    tracks = fake_tracks(video, CFG["decode"], tmp_path / "tracks.npz")
    ta = np.arange(0.0, 2.5, 0.04)  # arousal: 25 Hz, two raters (averaged)
    pd.DataFrame({"time": ta, "FM1": np.sin(ta) - 0.1, "FF1": np.sin(ta) + 0.1}).to_csv(tmp_path / "arousal.csv", sep=";", index=False)
    tv = np.arange(0.5, 3.5, 0.1)  # valence: 10 Hz, another span
    pd.DataFrame({"time": tv, "GoldStandard": 0.2 * tv - 0.3}).to_csv(tmp_path / "valence.csv", index=False)
    row = {"dataset": "mead", "video_id": "M030_happy", "path": str(video), "subject": "MEAD_M030", "session": None,
           "emotion": "happy", "level": 3.0, "annotation": f"arousal={tmp_path / 'arousal.csv'};valence={tmp_path / 'valence.csv'}"}
    out = tmp_path / "clips" / "M030_happy.h5"
    proc = run_clips("--cfg", json.dumps(CFG), "--video", str(video), "--tracks", str(tmp_path / "tracks.npz"),
                     "--row", json.dumps(row), "--out", str(out))  # --video-id defaults to the row's
    assert proc.returncode == 0, proc.stderr
    t = tracks.timestamps
    with open_store(out, verify="full") as s:
        assert sorted(s.frame_label_names) == ["arousal", "valence"]
        np.testing.assert_array_equal(s.array("timestamps"), t)
        arousal, valence = s.array("frame_labels/arousal"), s.array("frame_labels/valence")
        a_in = t <= ta[-1] + 0.02
        np.testing.assert_allclose(arousal[a_in], np.sin(t[a_in]), atol=2e-4)  # linear interpolation of a smooth curve
        assert np.isnan(arousal[~a_in]).all() and (~a_in).any()  # the video outlasts the arousal file: no extrapolation
        v_in = (t >= tv[0] - 0.05) & (t <= tv[-1] + 0.05)  # up to half an annotation step either side
        np.testing.assert_allclose(valence[v_in], 0.2 * np.clip(t[v_in], tv[0], tv[-1]) - 0.3, atol=1e-5)
        assert np.isnan(valence[~v_in]).all() and (t < tv[0] - 0.05).any()  # before the valence file starts
        meta = json.loads(s.file["frame_labels"].attrs["meta"])
        assert sorted(meta["sha256"]) == sorted([str(tmp_path / "arousal.csv"), str(tmp_path / "valence.csv")])
        assert s.labels == {"emotion": "happy", "level": 3}
        assert s.attrs["provenance"] == stable_hash({"manifest_row": canonical_row(row), "params": used()})
        provenance = s.attrs["provenance"]
    ds = ClipDataset([out], num_frames=8, sample_stride=2, input_size=64, mode="test", test_clips=3, targets=["arousal", "valence"])
    for i in range(3):
        item = ds[i]
        idx = np.searchsorted(t, item["times"].numpy())
        torch_targets = item["frame_targets"].numpy()
        np.testing.assert_array_equal(torch_targets[:, 0], arousal[idx])
        np.testing.assert_array_equal(torch_targets[:, 1], valence[idx])
    # the same row read from a manifest CSV (by hand): the same store identity and provenance
    pd.DataFrame([row]).to_csv(tmp_path / "m.csv", index=False)
    out2 = tmp_path / "by_hand.h5"
    proc = run_clips("--cfg", json.dumps(CFG), "--video", str(video), "--tracks", str(tmp_path / "tracks.npz"),
                     "--manifest", str(tmp_path / "m.csv"), "--video-id", "M030_happy", "--out", str(out2))
    assert proc.returncode == 0, proc.stderr
    with open_store(out2) as s:
        assert s.attrs["provenance"] == provenance and s.labels == {"emotion": "happy", "level": 3}
    bad = run_clips("--cfg", json.dumps(CFG), "--video", str(video), "--tracks", str(tmp_path / "tracks.npz"),
                    "--row", json.dumps(row), "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "x.h5"))
    assert bad.returncode != 0 and "--row or --manifest" in bad.stderr
