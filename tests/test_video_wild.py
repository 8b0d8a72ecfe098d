"""In-the-wild video (issue 18): truncated files keep their frames, rotation / SAR / odd sizes / portrait,
adaptive detection on a wide shot, very short clips counted; on ffmpeg-made files from the real clips."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pytest

from affectube.cli import main
from affectube.errors import DataError
from affectube.faces.detect import build_detector
from affectube.faces.pipeline import track_video
from affectube.video.decode import decode, ffmpeg_exe
from affectube.video.probe import probe

MEAD = "videos/mead/W009_front_sad_level3_001.mp4"
CREMAD = "videos/cremad/1001_DFA_HAP_XX.flv"


def ffmpeg(*args) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory, realdata):
    """Broken and odd files made with ffmpeg from the real clips."""
    d = tmp_path_factory.mktemp("wild")
    mead, cremad = realdata / MEAD, realdata / CREMAD
    ffmpeg("-i", mead, "-c", "copy", "-movflags", "+faststart", d / "fs.mp4")  # moov first: frames cut, header kept
    data = (d / "fs.mp4").read_bytes()
    (d / "cut.mp4").write_bytes(data[: int(len(data) * 0.6)])
    ffmpeg("-i", cremad, "-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", d / "base.mp4")
    # portrait phone video: the sensor stores the picture sideways, the display matrix turns it upright
    ffmpeg("-i", d / "base.mp4", "-vf", "crop=270:360", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", d / "upright.mp4")
    ffmpeg("-i", d / "upright.mp4", "-vf", "transpose=clock", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", d / "sideways.mp4")
    ffmpeg("-display_rotation", "90", "-i", d / "sideways.mp4", "-c", "copy", d / "portrait.mp4")  # display matrix only
    ffmpeg("-i", d / "base.mp4", "-vf", "scale=240:360,setsar=2", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", d / "sar.mp4")
    ffmpeg("-i", d / "base.mp4", "-vf", "scale=161:121", "-c:v", "libx264", "-pix_fmt", "yuv444p", "-preset", "ultrafast", d / "odd.mp4")
    ffmpeg("-i", mead, "-frames:v", "8", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", d / "eight.mp4")
    # a wide shot: the 256-px face crop shrunk to 128 px on a 1280x720 canvas (a face of ~10 px at det_size 160)
    ffmpeg("-i", mead, "-t", "1.2", "-vf", "scale=128:128,pad=1280:720:300:400:color=0x404040", "-c:v", "libx264",
           "-preset", "ultrafast", "-crf", "18", d / "wide.mp4")
    return d


@pytest.fixture(scope="module")
def faces_cfg(insightface_model):
    from affectube.config import load_params

    return {**load_params()["faces"], "backend": "insightface", "model": str(insightface_model), "det_size": 160, "every_k": 4}


@pytest.fixture(scope="module")
def detector(faces_cfg):
    return build_detector(faces_cfg, threads=1)


def test_truncated_file_keeps_the_frames_that_decode(files):
    full = decode(files / "fs.mp4", fps=25, max_side=128)
    cut = decode(files / "cut.mp4", fps=25, max_side=128)  # decode.on_truncated: keep (the default)
    n = len(cut)
    assert 0.3 * len(full) < n < 0.8 * len(full)
    assert cut.info["truncated"] is True and full.info["truncated"] is False
    assert cut.info["duration_announced"] == pytest.approx(full.info["duration_announced"], abs=0.05)
    assert cut.info["duration_decoded"] == pytest.approx(n / 25.0, abs=0.05) and cut.info["duration_decoded"] < 0.8 * cut.info["duration_announced"]
    np.testing.assert_array_equal(cut.timestamps, full.timestamps[:n])
    np.testing.assert_array_equal(cut.frames[: n - 2], full.frames[: n - 2])  # the good frames, bit for bit
    with pytest.raises(DataError, match=r"cut\.mp4: truncated or corrupt: frames stop at \d\.\d\d s of the \d\.\d\d s"):
        decode(files / "cut.mp4", fps=25, max_side=128, on_truncated="fail")


def test_rotation_sar_odd_size_and_portrait(files, faces_cfg, detector):
    base = decode(files / "base.mp4", fps=25, max_side=None)
    side = decode(files / "sideways.mp4", fps=25, max_side=None)
    rot = decode(files / "portrait.mp4", fps=25, max_side=None)
    assert rot.info["rotation"] == 90 and side.frames.shape[1:3] == (270, 360) and rot.frames.shape[1:3] == (360, 270)
    np.testing.assert_array_equal(rot.frames[0], np.rot90(side.frames[0], 1))  # turned as the display matrix says
    upright = decode(files / "upright.mp4", fps=25, max_side=None)
    assert np.abs(rot.frames.astype(int) - upright.frames.astype(int)).mean() < 6  # the portrait picture, upright
    sar = decode(files / "sar.mp4", fps=25, max_side=None)
    assert probe(files / "sar.mp4")["sar"] == 2.0 and sar.info["sar"] == 2.0
    assert sar.frames.shape[1:3] == (360, 480)  # 240 coded pixels, each twice as wide: 480 square ones
    assert np.abs(sar.frames.astype(int) - base.frames.astype(int)).mean() < 12  # the picture, not stretched
    assert decode(files / "odd.mp4", fps=25, max_side=None).frames.shape[1:3] == (121, 161)
    for name in ("portrait", "sar", "odd"):
        tr = track_video(files / f"{name}.mp4", {"fps": 25, "max_side": 640}, faces_cfg, detector, threads=1)
        assert tr.meta["counts"]["coverage"] >= 0.9, name
        found = tr.status > 0
        lm = tr.landmarks[found]
        eyes_y, mouth_y = lm[:, :2, 1].mean(1), lm[:, 3:, 1].mean(1)
        assert (eyes_y < mouth_y).all(), name  # an upright face: eyes above the mouth
        box = tr.boxes[found]
        h, w = tr.frame_size
        assert (box[:, 0] > -0.1 * w).all() and (box[:, 2] < 1.1 * w).all() and (box[:, 3] < 1.1 * h).all(), name
        ratio = np.median((box[:, 2] - box[:, 0]) / (box[:, 3] - box[:, 1]))
        assert 0.55 < ratio < 1.1, (name, ratio)  # a face's proportions, not a 2:1 stretched one


def test_adaptive_detection_finds_the_face_of_a_wide_shot(files, faces_cfg, detector):
    dec = {"fps": 25, "max_side": 640}
    off = track_video(files / "wide.mp4", dec, {**faces_cfg, "adaptive_max_size": None}, detector, threads=1)
    on = track_video(files / "wide.mp4", dec, faces_cfg, detector, threads=1)  # params default: up to 640
    assert off.meta["counts"]["coverage"] == 0.0  # det_size 160 alone: the face is too small
    assert on.meta["counts"]["coverage"] == 1.0
    a = on.meta["adaptive"]
    # the first keyframe climbs the ladder once; every later keyframe starts at the size that worked
    assert a["retried"] == 1 and a["rescued"] == 1 and a["final_size"] in (320, 640)
    assert a["sizes"] == {str(a["final_size"]): a["keyframes"]}
    assert a["retry_seconds"] > 0 and a["retry_calls"] >= 2
    # the face sits where it was pasted: 300..428 x 400..528 of 1280x720 -> halved in the 640-px decoded frame
    box = np.median(on.boxes[on.status > 0], axis=0)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    assert 150 < cx < 214 and 200 < cy < 264 and 20 < box[3] - box[1] < 64
    # a clip without faces: retries back off instead of running the whole ladder on every keyframe
    none = track_video(_noface(files), dec, faces_cfg, detector, threads=1)
    b = none.meta["adaptive"]
    assert none.meta["counts"]["coverage"] == 0.0 and b["rescued"] == 0 and 1 <= b["retried"] < b["keyframes"] / 2


def _noface(files):
    out = files / "noface.mp4"
    if not out.exists():
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=3", "-c:v", "libx264", "-preset", "ultrafast", out)
    return out


def test_qc_and_report_list_truncated_and_short_videos(files, faces_cfg, tmp_path):
    from affectube.report.checks import Run, run_checks

    res = tmp_path / "results"
    tracks = res / "faces" / "t" / "tracks"
    cfg = {"decode": {"fps": 25, "max_side": 256, "on_truncated": "keep"}, "faces": faces_cfg}
    rows = [("cut", files / "cut.mp4"), ("eight", files / "eight.mp4")]
    for vid, path in rows:
        assert main(["faces", "--cfg", json.dumps(cfg), "--video", str(path), "--dataset", "t", "--video-id", vid,
                     "--out", str(tracks / f"{vid}.npz")]) == 0
    manifest = tmp_path / "t.csv"
    pd.DataFrame({"dataset": "t", "video_id": [r[0] for r in rows], "path": [str(r[1]) for r in rows], "subject": ["a", "b"]}).to_csv(manifest, index=False)
    from affectube.config import load_params

    qc_cfg = {"figures": load_params()["figures"], "pretrain": {"num_frames": 16, "sample_stride": 2}}
    assert main(["faces-qc", "--cfg", json.dumps(qc_cfg), "--manifest", str(manifest), "--tracks-dir", str(tracks),
                 "--table", str(res / "faces" / "t" / "qc.csv"), "--figure", str(tmp_path / "qc.png")]) == 0
    qc = pd.read_csv(res / "faces" / "t" / "qc.csv").set_index("video_id")
    assert (qc["status"] == "ok").all() and (qc["coverage"] >= 0.95).all()
    assert bool(qc.loc["cut", "truncated"]) and not bool(qc.loc["eight", "truncated"])
    assert qc.loc["cut", "duration_decoded"] < 0.8 * qc.loc["cut", "duration_announced"]
    assert qc.loc["eight", "frames"] == 8 and bool(qc.loc["eight", "short_clip"]) and not bool(qc.loc["cut", "short_clip"])
    assert (qc["clip_span"] == 31).all()
    found = run_checks(Run(cfg={"data": {"finetune": "t"}}, results=res, experiments=[], main_metric="uar"))
    assert "cut (" in found["truncated videos kept"][0] and "t: 1 video(s) are truncated" in found["truncated videos kept"][0]
    assert "eight (8 frames)" in found["videos shorter than a clip"][0]


def test_a_head_moving_fast_between_two_keyframes_stays_the_subject():
    """Two time-disjoint tracks meeting on consecutive keyframes, 0.55 face sizes apart (a quick head
    movement, as in a real portrait clip of bench_wild): one face when they meet within every_k frames."""
    from affectube.faces import tracking as T

    def face(x, y):
        return T.Face(np.array([x, y, x + 20, y + 20], np.float32), np.zeros((5, 2), np.float32), 0.9, T.DETECTED)

    a = T.Track(frames=[0, 5, 10], faces=[face(50, 50)] * 3)
    b = T.Track(frames=[15, 20, 25, 30], faces=[face(50, 61)] * 4)  # 11 px of a 20-px face later
    assert sorted(T.select([a, b], "largest", (200, 200), adjacent=5)) == [0, 5, 10, 15, 20, 25, 30]
    assert sorted(T.select([a, b], "largest", (200, 200))) == [15, 20, 25, 30]  # 0.55 > MERGE_DISTANCE
    far = T.Track(frames=[0, 5, 10], faces=[face(50, 90)] * 3)  # 1.45 face sizes away: another face
    assert sorted(T.select([far, b], "largest", (200, 200), adjacent=5)) == [15, 20, 25, 30]


def test_short_videos_are_kept_padded_and_counted(tmp_path):
    """A video shorter than one clip: kept in training and test, its clip repeats the last frame, listed in .short."""
    from clips_util import content

    from affectube.clips.dataset import ClipDataset
    from affectube.clips.store import write_store

    stores = [write_store(tmp_path / "eight.h5", content("eight", n=8, size=16)), write_store(tmp_path / "long.h5", content("long", n=40, size=16))]
    for mode in ("train", "test"):
        ds = ClipDataset(stores, num_frames=8, sample_stride=2, input_size=16, mode=mode)  # span 15
        assert ds.short == [("eight", 8)] and len(ds.entries) == 2
        item = next(ds[i] for i in range(len(ds)) if ds[i]["video_id"] == "eight")
        assert item["start"] == 0
        np.testing.assert_allclose(item["times"].numpy(), 0.1 + np.minimum(2 * np.arange(8), 7) / 25.0)
