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
from affectube.clips.store import open_store
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
        assert s.attrs["crop"] == CFG["crop"] and s.attrs["decode"] == CFG["decode"] and s.attrs["clips"] == CFG["clips"]
        assert s.attrs["compression"] == "blosc-lz4" and s.frames.chunks == (8, 64, 64, 3)
        assert s.attrs["source"]["codec"] == "h264" and s.attrs["fps"] == 25.0
        row = pd.read_csv(manifest, dtype={"video_id": str, "subject": str, "session": str}).iloc[0].to_dict()
        row = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        assert s.attrs["provenance"] == stable_hash({"manifest_row": row, "params": CFG})
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
