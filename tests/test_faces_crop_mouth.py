"""crop.strategy mouth (issue 20, lip reading): a square on the mouth corners' midpoint, side = scale x
the face box, both as running medians over the track; through the clips stage block by block; a
clear error without landmarks. The real test runs the real SCRFD detector on a real GRID clip and
finds the mouth in the crop from the pixels alone (the lip line, and the motion of speech)."""

from __future__ import annotations

import numpy as np
import pytest

from affectube.errors import DataError
from affectube.faces.crop import crop_frames, crop_landmarks, crop_matrices

MOUTH = {"strategy": "mouth", "scale": 0.5, "size": 64, "grayscale": True, "mouth_window": 25}


def face_track(n=60, seed=0, jitter=2.0):
    """A face box of side 100 at (100..200, 50..150) whose mouth corners are at (130, 125) and
    (170, 125), the landmarks with +-jitter px of detection noise."""
    rng = np.random.default_rng(seed)
    lms = np.array([[125, 85], [175, 85], [150, 105], [130, 125], [170, 125]], np.float64)
    boxes = np.tile([100.0, 50.0, 200.0, 150.0], (n, 1)) + rng.uniform(-jitter, jitter, (n, 4))
    return {"boxes": boxes.astype(np.float32), "landmarks": (lms + rng.uniform(-jitter, jitter, (n, 5, 2))).astype(np.float32),
            "status": np.ones(n, np.uint8), "frame_size": np.array([240, 320])}


def test_mouth_crop_is_centred_on_the_mouth_and_does_not_jitter():
    tr = face_track()
    m = crop_matrices(tr, MOUTH)
    zoom, centre = m[:, 0, 0], (32 - m[:, :, 2]) / m[:, 0, 0][:, None]  # frame point at the crop's centre
    assert np.allclose(zoom, 64 / 50, rtol=0.03)  # side 0.5 x the 100-px box
    assert np.abs(centre - [150, 125]).max() < 1.5  # the mouth corners' midpoint (noise +-2 px)
    raw = crop_matrices(tr, {**MOUTH, "mouth_window": 1})  # per frame: the noise passes through
    assert np.abs(np.diff(m[:, :, 2], axis=0)).mean() < 0.5 * np.abs(np.diff(raw[:, :, 2], axis=0)).mean()
    lm = crop_landmarks(tr, MOUTH, m)
    assert np.abs(lm[:, 3:].mean(1) - 32).max() < 3  # mouth in the middle, eyes outside (above) the crop
    assert (lm[:, :2, 1] < 0).all() and np.abs(lm[:, 4, 0] - lm[:, 3, 0] - 40 * 64 / 50).max() < 8


def test_mouth_crop_follows_the_head_and_skips_frames_without_a_face():
    tr = face_track(n=100, jitter=0.0)
    tr["boxes"][50:] += [60, 0, 60, 0]  # the head moves 60 px right half way
    tr["landmarks"][50:, :, 0] += 60
    tr["status"][45:55] = 0  # lost for 10 frames
    m = crop_matrices(tr, MOUTH)
    assert np.isnan(m[45:55]).all() and np.isfinite(m[:45]).all() and np.isfinite(m[55:]).all()
    cx = (32 - m[:, 0, 2]) / m[:, 0, 0]
    assert np.allclose(cx[:30], 150) and np.allclose(cx[70:], 210)  # one window away from the move: exact
    frames = np.zeros((100, 240, 320, 3), np.uint8)
    crops, valid = crop_frames(frames, tr, MOUTH)
    assert crops.shape == (100, 64, 64, 1) and valid.tolist() == [True] * 45 + [False] * 10 + [True] * 45


def test_block_by_block_equals_the_whole_track():
    """The clips stage crops in blocks with the whole track's transforms (the medians span blocks)."""
    tr = face_track(n=40)
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (40, 240, 320, 3), np.uint8)
    whole, _ = crop_frames(frames, tr, MOUTH)
    m = crop_matrices(tr, MOUTH)
    part = {k: v[10:20] for k, v in tr.items() if k != "frame_size"}
    block, _ = crop_frames(frames[10:20], {**part, "frame_size": tr["frame_size"]}, MOUTH, m[10:20])
    assert np.array_equal(block, whole[10:20])
    alone, _ = crop_frames(frames[10:20], {**part, "frame_size": tr["frame_size"]}, MOUTH)  # the block's own medians
    assert not np.array_equal(alone, whole[10:20])


def test_mouth_crop_needs_landmarks():
    tr = face_track(n=10)
    tr["landmarks"][3] = np.nan
    with pytest.raises(DataError, match="mouth needs the 5 face landmarks.*1 of 10 .*frame 3"):
        crop_matrices(tr, MOUTH)
    tr["status"][3] = 0  # a frame without a face needs none
    assert np.isfinite(crop_matrices(tr, MOUTH)[[0, 1, 2, 4]]).all()
    del tr["landmarks"]
    with pytest.raises(DataError, match="no 'landmarks'"):
        crop_matrices(tr, MOUTH)


def test_real_detector_mouth_crop_holds_the_mouth(realdata, insightface_model, tmp_path):
    """SCRFD on a real GRID clip, tracked and stored through the clips stage (build_store) with the
    mouth crop; the crop's own pixels put the mouth in its middle: the darkest row (the lip line) and
    the row and column of most motion (the speaking lips and jaw) lie near the centre, the eyes above it."""
    import h5py

    from affectube.clips.build import build_store
    from affectube.config import load_params
    from affectube.faces.detect import build_detector
    from affectube.faces.pipeline import track_video
    from affectube.faces.tracks import save_tracks

    video = realdata / "videos/grid_s1_words/bbaf3s.mpg"
    decode_cfg = {"fps": 25, "max_side": 320}
    params = load_params()
    faces_cfg = {**params["faces"], "backend": "insightface", "model": str(insightface_model), "det_size": 160, "every_k": 4}
    tracks = track_video(video, decode_cfg, faces_cfg, build_detector(faces_cfg))
    save_tracks(tmp_path / "t.npz", tracks)
    cfg = {"decode": decode_cfg, "crop": {**params["crop"], **MOUTH}, "clips": params["clips"]}
    row = {"dataset": "grid", "video_id": "bbaf3s", "path": str(video), "subject": "s1"}
    build_store(video, tmp_path / "t.npz", row, "bbaf3s", cfg, tmp_path / "m.h5")
    with h5py.File(tmp_path / "m.h5") as f:
        x, valid, lm = f["frames"][:].astype(np.float32)[..., 0], f["valid"][:], f["face_landmarks"][:]
    assert x.shape == (75, 64, 64) and valid.all()
    darkest = int(np.median(x, 0)[:, 16:48].mean(1).argmin())  # the lip line, across the middle columns
    motion = np.abs(np.diff(x, axis=0)).mean(0)  # speech moves the lips and the jaw
    assert 28 <= darkest <= 44 and 28 <= int(motion.mean(1).argmax()) <= 44 and 20 <= int(motion.mean(0).argmax()) <= 44
    assert np.abs(np.median(lm[:, 3:], axis=(0, 1)) - 32).max() < 3 and (np.median(lm[:, :2, 1], 0) < 0).all()
    # against the whole-face box crop of config/grid_words.yaml before issue 20 (scale 0.7): 1.4x the zoom
    zoom_box = crop_matrices(tracks, {"strategy": "box", "scale": 0.7, "size": 64})[:, 0, 0]
    zoom_mouth = crop_matrices(tracks, MOUTH)[:, 0, 0]
    assert np.median(zoom_mouth / zoom_box) == pytest.approx(0.7 / 0.5, rel=0.05)
