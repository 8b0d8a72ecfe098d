"""crop_frames: geometry of box and aligned crops, output size, grayscale, padding policy, invalid frames."""

from __future__ import annotations

import numpy as np
import pytest

from affectube.errors import DataError
from affectube.faces.crop import ARCFACE_112, crop_frames, umeyama


def gradient_frame(h=200, w=300):
    y, x = np.mgrid[:h, :w]
    return np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)


def tracks_for(boxes, lms=None, status=None, size=(200, 300)):
    n = len(boxes)
    return {
        "boxes": np.asarray(boxes, np.float32),
        "landmarks": np.asarray(lms if lms is not None else np.zeros((n, 5, 2)), np.float32),
        "status": np.asarray(status if status is not None else np.ones(n), np.uint8),
        "frame_size": np.asarray(size),
    }


def test_box_crop_geometry_and_size():
    f = gradient_frame()
    tr = tracks_for([[100, 50, 160, 110]])
    crops, valid = crop_frames(f[None], tr, {"strategy": "box", "scale": 1.0, "size": 60})
    assert crops.shape == (1, 60, 60, 3) and valid.tolist() == [True]
    # scale 1, size = box side: the crop is the box itself, pixel for pixel
    assert np.abs(crops[0].astype(int) - f[50:110, 100:160].astype(int)).max() <= 1
    big, _ = crop_frames(f[None], tr, {"strategy": "box", "scale": 2.0, "size": 60})
    # scale 2: twice the context; the centre pixel stays the box centre
    assert np.abs(big[0, 30, 30].astype(int) - f[80, 130].astype(int)).max() <= 2
    assert np.abs(big[0, 0, 0].astype(int) - f[20, 70].astype(int)).max() <= 3


def test_grayscale_and_padding_policy():
    f = (gradient_frame() // 2 + 100).astype(np.uint8)  # no black pixel anywhere
    tr = tracks_for([[-40, -40, 40, 40]])  # three quarters outside the frame
    edge, _ = crop_frames(f[None], tr, {"size": 40, "scale": 1.0, "pad_mode": "edge", "grayscale": True})
    const, _ = crop_frames(f[None], tr, {"size": 40, "scale": 1.0, "pad_mode": "constant"})
    assert edge.shape == (1, 40, 40, 1) and const.shape == (1, 40, 40, 3)
    assert (const[0, :15, :15] == 0).all() and const[0, 30, 30].min() >= 100  # outside the frame: black
    corner = int(round(f[0, 0] @ [0.299, 0.587, 0.114]))
    assert np.abs(edge[0, :15, :15].astype(int) - corner).max() <= 1  # outside the frame: the border pixel repeated


def test_align_puts_landmarks_on_the_template():
    rng = np.random.default_rng(1)
    f = (rng.random((200, 300, 3)) * 255).astype(np.uint8)
    # landmarks: the template, rotated by 20 degrees, scaled by 1.5 and shifted
    a = np.deg2rad(20)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    lms = (ARCFACE_112 - 56) @ r.T * 1.5 + [150, 100]
    for x, y in lms.round().astype(int):
        f[y - 1 : y + 2, x - 1 : x + 2] = [255, 0, 0]
    tr = tracks_for([[0, 0, 1, 1]], lms[None])
    crops, _ = crop_frames(f[None], tr, {"strategy": "align", "scale": 1.0, "size": 112})
    for x, y in ARCFACE_112.round().astype(int):
        assert crops[0, y, x, 0] > 200 and crops[0, y, x, 1] < 60
    m = umeyama(lms, ARCFACE_112)
    assert np.hypot(m[0, 0], m[1, 0]) == pytest.approx(1 / 1.5, rel=1e-6)


def test_frames_without_a_face_and_consistency_checks():
    f = np.stack([gradient_frame()] * 3)
    tr = tracks_for([[10, 10, 50, 50]] * 3, status=[1, 0, 3])
    crops, valid = crop_frames(f, tr, {"size": 32})
    assert valid.tolist() == [True, False, True] and (crops[1] == 0).all() and crops[0].any()
    with pytest.raises(DataError, match="3 frames but 2 track entries"):
        crop_frames(f, tracks_for([[10, 10, 50, 50]] * 2), {})
    with pytest.raises(DataError, match="made on 100x100 frames"):
        crop_frames(f, tracks_for([[10, 10, 50, 50]] * 3, size=(100, 100)), {})


def test_real_crop_from_real_tracks(realdata, tmp_path):
    from affectube.faces.detect import build_detector
    from affectube.faces.pipeline import track_video
    from affectube.video.decode import decode

    clip = realdata / "videos/cremad/1001_DFA_NEU_XX.flv"
    cfg = {"backend": "insightface", "model": str(realdata / "models/insightface/buffalo_sc/det_500m.onnx"), "det_size": 320, "pad": 0.25, "every_k": 2}
    tr = track_video(clip, {"fps": 25, "max_side": 640}, cfg, build_detector(cfg))
    d = decode(clip, fps=25, max_side=640)
    for strategy in ("box", "align"):
        crops, valid = crop_frames(d.frames, tr, {"strategy": strategy, "scale": 1.3, "size": 96, "grayscale": strategy == "align"})
        assert valid.all() and crops.shape == (len(d), 96, 96, 1 if strategy == "align" else 3)
        # a centred face: the middle of the crop differs from its corners, and crops change smoothly over time
        assert np.abs(np.diff(crops.astype(np.float32), axis=0)).mean() < 25
