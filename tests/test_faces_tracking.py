"""Identity policy, gap interpolation, smoothing and keyframe tracking (on real frames where it matters)."""

from __future__ import annotations

import numpy as np
import pytest

from affectube.faces import tracking as T
from affectube.faces.detect import Detections


def face(x, y, s, score=0.9, status=T.DETECTED):
    lm = np.array([[x + 0.3 * s, y + 0.4 * s], [x + 0.7 * s, y + 0.4 * s], [x + 0.5 * s, y + 0.6 * s], [x + 0.35 * s, y + 0.8 * s], [x + 0.65 * s, y + 0.8 * s]], np.float32)
    return T.Face(np.array([x, y, x + s, y + s], np.float32), lm, score, status)


def candidates(per_frame, size=(200, 300)):
    c = T.Candidates(frame_size=size)
    for i, faces in enumerate(per_frame):
        c.timestamps.append(i / 25)
        c.faces.append(faces)
        c.num_faces.append(len(faces))
        c.keyframe.append(True)
    return c


def test_identity_policies():
    # A: big, off-centre, frames 0-9;  B: small, central, frames 0-19
    frames = [([face(10, 10, 80)] if i < 10 else []) + [face(130, 80, 40)] for i in range(20)]
    c = candidates(frames)
    tracks = T.link(c, max_gap=2, every_k=1)
    assert len(tracks) == 2
    largest = T.select(tracks, "largest", c.frame_size)
    assert largest[0].box[2] == 90  # A (area 6400 x 10 > 1600 x 20)
    assert 15 not in largest  # B's later frames are not glued onto A (different place)
    central = T.select(tracks, "central", c.frame_size)
    longest = T.select(tracks, "longest_track", c.frame_size)
    assert central[0].box[0] == 130 and longest[0].box[0] == 130 and len(longest) == 20


def test_a_face_found_again_after_a_loss_is_the_same_subject():
    frames = [[face(50 + i, 50, 60)] if not 8 <= i < 20 else [] for i in range(30)]
    tracks = T.link(candidates(frames), max_gap=2, every_k=1)
    assert len(tracks) == 2  # the gap is longer than max_gap: two tracks ...
    chosen = T.select(tracks, "largest", (200, 300))
    assert len(chosen) == 18  # ... appended because the face reappears where it was


def test_gap_interpolation_and_counts():
    frames = [[face(50 + 2 * i, 50, 60)] if i not in (4, 5, 6, 12, 13, 14, 15, 16) else [] for i in range(20)]
    c = candidates(frames)
    chosen = T.select(T.link(c, max_gap=3, every_k=1), "largest", c.frame_size)
    arr = T.finalize(c, chosen, max_gap=3, smooth=0.0)
    assert list(arr.status[3:8]) == [1, 3, 3, 3, 1]
    assert arr.boxes[5, 0] == pytest.approx(60)  # linear between frames 3 and 7
    assert (arr.status[12:17] == 0).all()  # 5-frame gap > max_gap: left lost
    s = T.summary(arr)
    assert (s["interpolated"], s["lost"], s["gaps"], s["longest_gap"]) == (3, 5, 1, 5)


def test_smoothing_reduces_jitter_without_lag():
    rng = np.random.default_rng(0)
    xs = 50 + np.arange(60) * 1.0 + rng.normal(0, 3, 60)
    c = candidates([[face(x, 50, 60)] for x in xs])
    chosen = T.select(T.link(c, max_gap=3, every_k=1), "largest", c.frame_size)
    raw = T.finalize(c, chosen, max_gap=3, smooth=0.0).boxes[:, 0]
    sm = T.finalize(c, chosen, max_gap=3, smooth=0.7).boxes[:, 0]
    truth = 50 + np.arange(60) * 1.0
    assert np.abs(sm - truth)[5:-5].mean() < 0.6 * np.abs(raw - truth)[5:-5].mean()
    assert abs(np.mean(sm[5:-5] - truth[5:-5])) < 0.5  # zero-phase: no lag


def test_analysis_scale_maps_back_to_decoded_pixels():
    c = candidates([[face(10, 20, 30)]])
    chosen = T.select(T.link(c, 2, 1), "largest", c.frame_size)
    arr = T.finalize(c, chosen, max_gap=2, smooth=0.0, scale=(0.5, 0.5), frame_size=(400, 600))
    assert arr.boxes[0].tolist() == [20, 40, 80, 100] and arr.frame_size.tolist() == [400, 600]


class FixedDetector:
    """Runs on real frames: returns a fixed detection list per call (records which frames it saw)."""

    def __init__(self, det):
        self.det, self.calls = det, 0

    def __call__(self, frames):
        self.calls += len(frames)
        return [self.det for _ in frames]


def test_flow_tracking_follows_a_moving_real_face(realdata):
    from affectube.faces.detect import build_detector
    from affectube.video.decode import decode

    frames = decode(realdata / "videos/grid/bbaf2n.mpg", fps=25, max_side=360).frames[:9]
    # shift the real frames a few pixels per frame: the tracked box must follow the shift
    moved = np.stack([np.roll(f, 3 * i, axis=1) for i, f in enumerate(frames)])
    det = build_detector({"backend": "insightface", "model": str(realdata / "models/insightface/buffalo_sc/det_500m.onnx"), "det_size": 320, "pad": 0.25})
    first = det(moved[:1])[0]
    tracker = T.FrameTracker(FixedDetector(first), every_k=9, tracker="flow")
    tracker.update(moved, np.arange(9) / 25)
    faces = tracker.candidates.faces
    assert all(len(f) == 1 for f in faces) and [f[0].status for f in faces] == [1] + [2] * 8
    dx = faces[8][0].box[0] - faces[0][0].box[0]
    assert dx == pytest.approx(24, abs=2.5)
    assert tracker.detector.calls == 1  # only the keyframe went to the detector


def test_interpolate_tracker_fills_between_keyframes():
    frames = [[face(10 + i, 10, 50)] for i in range(7)]
    c = T.Candidates(frame_size=(100, 100))
    for i, f in enumerate(frames):
        c.timestamps.append(i)
        c.faces.append(f if i % 3 == 0 else [])
        c.num_faces.append(1 if i % 3 == 0 else -1)
        c.keyframe.append(i % 3 == 0)
    chosen = T.fill_between(T.select(T.link(c, 2, 3), "largest", c.frame_size), every_k=3, n=7)
    assert sorted(chosen) == list(range(7)) and chosen[1].status == T.TRACKED and chosen[1].box[0] == pytest.approx(11)


def test_unconfirmed_tracked_frames_are_dropped():
    # keyframes 0 and 3 (every_k 3); the face is tracked on 1, 2 but keyframe 3 finds nothing
    c = T.Candidates(frame_size=(100, 100))
    for i in range(6):
        c.timestamps.append(i)
        c.faces.append([face(10, 10, 50, status=T.DETECTED if i == 0 else T.TRACKED)] if i < 3 else [])
        c.num_faces.append(1 if i == 0 else (0 if i == 3 else -1))
        c.keyframe.append(i in (0, 3))
    tracks = T.link(c, max_gap=2, every_k=3)
    assert [tr.frames for tr in tracks] == [[0]]


def test_detections_type():
    d = Detections.empty()
    assert len(d) == 0 and d.landmarks.shape == (0, 5, 2)
