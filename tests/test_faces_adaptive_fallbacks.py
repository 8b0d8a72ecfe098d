"""Adaptive detection's fallbacks (issue 18): linking a small face that moves between keyframes,
re-detection of a lost face in a region around it, back-fill after a rescue, denser detection where
the face appears/disappears, a restart on larger frames; on ffmpeg-made files from a real clip."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from affectube.faces import tracking as T
from affectube.faces.adaptive_redetect import redetect_lost
from affectube.faces.detect import Detections, build_detector
from affectube.faces.pipeline import track_video
from affectube.video.decode import decode, ffmpeg_exe

MEAD = "videos/mead/W009_front_sad_level3_001.mp4"
DEC = {"fps": 25, "max_side": 640}


def ffmpeg(*args) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def faces_cfg(insightface_model):
    from affectube.config import load_params

    return {**load_params()["faces"], "backend": "insightface", "model": str(insightface_model), "det_size": 160, "every_k": 5}


@pytest.fixture(scope="module")
def detector(faces_cfg):
    return build_detector(faces_cfg, threads=1)


def _face(box) -> T.Face:
    return T.Face(np.asarray(box, np.float32), np.zeros((5, 2), np.float32), 0.8, T.DETECTED)


def test_link_follows_a_small_face_that_moved_more_than_its_overlap_allows():
    # boxes of one face on two keyframes 5 frames apart in the real crowd clip of bench_wild: IoU 0.22
    a, b = [205.9, 142.9, 222.9, 164.3], [215.3, 148.3, 231.2, 168.1]
    assert T.iou(np.array(a), np.array(b)) < T.LINK_IOU
    c = T.Candidates(timestamps=[0.0, 0.2], faces=[[_face(a)], [_face(b)]], num_faces=[1, 1], keyframe=[True, True])
    assert [tr.frames for tr in T.link(c, max_gap=8, every_k=1)] == [[0, 1]]
    # a face a whole face size away, or of twice the size, is another face
    for other in ([227.0, 142.9, 244.0, 164.3], [200.0, 135.0, 240.0, 178.0]):
        c.faces = [[_face(a)], [_face(other)]]
        assert len(T.link(c, max_gap=8, every_k=1)) == 2, other


@pytest.fixture(scope="module")
def mead_frame(realdata):
    return decode(realdata / MEAD, fps=25, max_side=256).frames[0]


def test_region_redetection_finds_a_lost_face(mead_frame, detector):
    """A 64-px face on a 640x360 frame: at det_size 160 the whole frame shows it ~11 px high (missed); the
    region of 4x its size around where the previous keyframe had it shows it ~40 px high (found)."""
    import cv2

    canvas = np.full((360, 640, 3), 64, np.uint8)
    canvas[200:264, 400:464] = cv2.resize(mead_frame, (64, 64), interpolation=cv2.INTER_AREA)
    whole = detector(canvas)[0]
    assert len(whole) == 0
    prev = detector(canvas, sizes=[640])[0]  # the face as a larger detection saw it
    assert len(prev) == 1
    det, calls, found = redetect_lost(detector, canvas, prev, whole, context=4.0)
    assert calls == 1 and found == 1 and len(det) == 1
    assert np.abs(det.boxes[0] - prev.boxes[0]).max() < 8
    # the face is gone (blank frame): one call, nothing added; a face still there costs no call
    det, calls, found = redetect_lost(detector, np.full_like(canvas, 64), prev, Detections.empty(), context=4.0)
    assert (calls, found, len(det)) == (1, 0, 0)
    assert redetect_lost(detector, canvas, prev, prev, context=4.0)[1:] == (0, 0)


@pytest.fixture(scope="module")
def files(tmp_path_factory, realdata):
    d = tmp_path_factory.mktemp("fallbacks")
    mead = realdata / MEAD
    gray = "color=c=0x404040:s=256x256:r=25"
    # 11 blank frames, 12 frames of the face, 7 blank frames (30 in all)
    ffmpeg("-f", "lavfi", "-i", f"{gray}:d=0.44", "-i", mead, "-f", "lavfi", "-i", f"{gray}:d=0.28", "-filter_complex",
           "[1:v]trim=end_frame=12,setpts=PTS-STARTPTS,fps=25,format=yuv420p[f];[0:v]format=yuv420p[a];[2:v]format=yuv420p[b];"
           "[a][f][b]concat=n=3:v=1[v]", "-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", d / "appears.mp4")
    # the same with a sync frame every 5 frames: a seek decodes from at most 5 frames before the edge
    ffmpeg("-i", d / "appears.mp4", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-g", "5", "-keyint_min", "5",
           "-sc_threshold", "0", d / "appears_g5.mp4")
    # a wide shot: a 112-px face on a 1920x1080 canvas, 2 s (at the 213-px analysis frames the face is ~12 px)
    ffmpeg("-i", mead, "-t", "2", "-vf", "scale=112:112,pad=1920:1080:900:500:color=0x404040", "-c:v", "libx264",
           "-preset", "ultrafast", "-crf", "18", d / "wide1080.mp4")
    # a wide shot whose face comes after 5 blank frames: a 128-px face on 1280x720, 2 s
    ffmpeg("-f", "lavfi", "-i", "color=c=0x404040:s=1280x720:r=25:d=0.2", "-i", mead, "-filter_complex",
           "[1:v]trim=duration=1.8,setpts=PTS-STARTPTS,scale=128:128,pad=1280:720:300:400:color=0x404040,fps=25,format=yuv420p[f];"
           "[0:v]format=yuv420p[a];[a][f]concat=n=2:v=1[v]", "-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast",
           "-crf", "18", d / "wide_late.mp4")
    return d


def test_refine_edges_finds_where_the_face_appears_and_leaves(files, faces_cfg, detector):
    on = track_video(files / "appears.mp4", DEC, {**faces_cfg, "refine_edges": True}, detector, threads=1)
    # the params default, refine_edges 0.1: a decode budget of 10% of this 1.2-s video; its one GOP makes each edge's
    # seek decode from frame 0 (0.56 and 0.88 s): both edges are over the budget and skipped
    off = track_video(files / "appears.mp4", DEC, faces_cfg, detector, threads=1)
    assert len(on) == len(off) == 30
    # keyframes 0, 5, ..., 25: only 15 and 20 see the face, which is on frames 11-22
    assert np.flatnonzero(off.status > 0).tolist() == list(range(15, 21))
    assert np.flatnonzero(on.status > 0).tolist() == list(range(11, 23))
    r = on.meta["adaptive"]["refine"]
    assert r["edges"] == 2 and r["frames"] == 4 + 4 and r["found"] == 4 + 2 and r["failed_decodes"] == 0
    r = off.meta["adaptive"]["refine"]
    assert r["budget"] == 0.1 and r["skipped"] == 2 and r["edges"] == r["frames"] == 0 and r["decode_s"] == 0.0


def test_refine_edges_budget_counts_the_decode_from_the_seek_point(files, faces_cfg, detector):
    """Sync frames every 5 frames: the start edge (frames 11-14) decodes from frame 5 (0.36 s), the end edge (21-22)
    from frame 15 (0.28 s); a budget of half the 1.2-s video admits the first and not both."""
    tr = track_video(files / "appears_g5.mp4", DEC, {**faces_cfg, "refine_edges": 0.5}, detector, threads=1)
    r = tr.meta["adaptive"]["refine"]
    assert r["edges"] == 1 and r["skipped"] == 1 and r["frames"] == 4 and 0.3 < r["decode_s"] <= 0.6
    assert np.flatnonzero(tr.status > 0).tolist() == list(range(11, 21))


def test_restart_on_larger_frames_when_faces_need_the_cap(files, faces_cfg, detector):
    default = track_video(files / "wide1080.mp4", DEC, faces_cfg, detector, threads=1)
    assert default.meta["adaptive"]["restart"] is None  # faces.adaptive_restart: false
    tr = track_video(files / "wide1080.mp4", DEC, {**faces_cfg, "adaptive_restart": True}, detector, threads=1)
    a = tr.meta["adaptive"]
    assert tr.meta["counts"]["coverage"] == 1.0
    # the first pass found the face at 640 on 213-px frames (upsampled 3x): it restarted on 427-px ones,
    # after its first chunk of 4 keyframes, the detector starting at 640
    assert a["restart"]["analysis_side_before"] == 213 and a["restart"]["analysis_side"] == 427
    assert a["restart"]["at_frame"] == 20 and a["restart"]["size"] == 640 and a["restart"]["seconds"] > 0
    assert a["sizes"] == {"640": a["keyframes"]} and a["retried"] == 0
    # a fixed analysis_side: no restart
    fixed = track_video(files / "wide1080.mp4", DEC, {**faces_cfg, "adaptive_restart": True, "analysis_side": 213}, detector, threads=1)
    assert fixed.meta["adaptive"]["restart"] is None


def test_backfill_after_a_rescue_recovers_the_keyframes_the_back_off_skipped(files, faces_cfg, detector):
    """Keyframe 0 is blank: its retries fail and back off (keyframes 1-3 are not retried, at 160 the face is
    too small); keyframe 4 is retried and rescued: keyframes 3, 2, 1 are detected again at its size,
    across the first chunk's boundary."""
    tr = track_video(files / "wide_late.mp4", DEC, {**faces_cfg, "refine_edges": False}, detector, threads=1)
    a = tr.meta["adaptive"]
    assert a["rescued"] == 1 and a["backfilled"] == 3
    assert np.flatnonzero(tr.status > 0).tolist() == list(range(5, len(tr)))
