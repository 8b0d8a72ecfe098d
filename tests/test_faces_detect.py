"""The real detectors on real frames: coverage, no-face clips, face/no-face switches, padding, backends."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from affectube.config import load_params
from affectube.errors import ConfigError
from affectube.faces.detect import build_detector
from affectube.faces.pipeline import track_video
from affectube.video.decode import decode

logging.getLogger("affectube").setLevel(logging.WARNING)
DECODE = {"fps": 25, "max_side": 640}


@pytest.fixture(scope="module")
def faces_cfg(insightface_model):
    """The default faces params, with the insightface backend on the real-material detector."""
    return {**load_params()["faces"], "backend": "insightface", "model": str(insightface_model)}


@pytest.fixture(scope="module")
def detector(faces_cfg):
    return build_detector(faces_cfg)


SAMPLES = [
    "videos/mead/M030_front_angry_level3_001.mp4",
    "videos/mead/W009_front_surprised_level3_001.mp4",
    "videos/mead/W011_front_fear_level3_001.mp4",
    "videos/cremad/1001_DFA_HAP_XX.flv",
    "videos/cremad/1001_DFA_SAD_XX.flv",
    "videos/grid/lwbsza.mpg",
    "videos/grid/lbax4n.mpg",
    "videos/grid/bbaf2n.mpg",
]


@pytest.mark.parametrize("clip", SAMPLES)
def test_coverage_on_real_clips(realdata, faces_cfg, detector, clip):
    tr = track_video(realdata / clip, DECODE, faces_cfg, detector)
    assert tr.meta["counts"]["coverage"] >= 0.95
    assert tr.meta["counts"]["tracks"] >= 1
    # the face is where a face is: landmarks inside the box, eyes above the mouth
    ok = tr.status > 0
    lm, bx = tr.landmarks[ok], tr.boxes[ok]
    assert np.all((lm[..., 0] >= bx[:, None, 0] - 2) & (lm[..., 0] <= bx[:, None, 2] + 2))
    assert np.all(lm[:, :2, 1].mean(1) < lm[:, 3:, 1].mean(1))


def test_no_face_clip_records_zero_faces(realdata, faces_cfg, detector):
    tr = track_video(realdata / "videos/pyfeat/no_face.mp4", DECODE, faces_cfg, detector)
    assert len(tr) > 80 and (tr.status == 0).all() and tr.meta["counts"]["coverage"] == 0.0
    assert set(np.unique(tr.num_faces)) <= {-1, 0} and (tr.num_faces == 0).sum() > 0


@pytest.mark.parametrize("clip, face_first", [("face_noface.mov", True), ("noface_face.mov", False)])
def test_face_switch_in_the_mov_files(realdata, faces_cfg, detector, clip, face_first):
    tr = track_video(realdata / "videos/pyfeat" / clip, DECODE, faces_cfg, detector)
    found = tr.status > 0
    n = len(found)
    switch = int(np.flatnonzero(np.diff(found.astype(int)))[0]) + 1  # first face/no-face switch
    assert 0.2 * n < switch < 0.8 * n
    assert (found[:switch] == face_first).all()
    assert (found[switch : switch + int(0.3 * n)] != face_first).all()
    # the status agrees with the detector run on every frame, except within a keyframe interval of a switch
    every = track_video(realdata / "videos/pyfeat" / clip, DECODE, {**faces_cfg, "every_k": 1}, detector)
    differ = np.flatnonzero(found != (every.status > 0))
    switches = np.flatnonzero(np.diff((every.status > 0).astype(int))) + 1
    assert all(np.min(np.abs(switches - i)) <= faces_cfg["every_k"] for i in differ)


def test_padding_finds_faces_that_fill_the_frame(realdata, insightface_model):
    frames = decode(realdata / "videos/mead/W011_front_angry_level3_001.mp4", fps=5, max_side=640).frames
    plain = build_detector({"backend": "insightface", "model": str(insightface_model), "det_size": 640, "pad": 0.0})
    padded = build_detector({"backend": "insightface", "model": str(insightface_model), "det_size": 640, "pad": 0.25})
    hit_plain = np.mean([len(d) > 0 for d in plain(frames)])
    hit_pad = np.mean([len(d) > 0 for d in padded(frames)])
    assert hit_plain < 0.5 and hit_pad == 1.0


def test_scrfd_matches_insightface_reference(realdata, insightface_model):
    from insightface.model_zoo.scrfd import SCRFD

    ref = SCRFD(model_file=str(insightface_model))
    mine = build_detector({"backend": "insightface", "model": str(insightface_model), "det_size": [160, 320], "pad": 0.0,
                           "det_shape": "square"}).backend  # insightface's own letterbox
    frames = [f for c in (SAMPLES[0], SAMPLES[3], "videos/pyfeat/WolfgangLanger_Pexels.mp4") for f in decode(realdata / c, fps=2, max_side=640).frames[:3]]
    for f in frames:
        got = mine.detect(f[None])[0]
        boxes, kps = ref.detect(np.ascontiguousarray(f[:, :, ::-1]), input_size=[(160, 160), (320, 320)], det_thresh=0.5)
        assert len(got) == len(boxes) >= 1
        np.testing.assert_allclose(got.boxes, boxes[:, :4], atol=1e-2)
        np.testing.assert_allclose(got.landmarks, kps, atol=1e-2)
        np.testing.assert_allclose(got.scores, boxes[:, 4], atol=1e-4)


def test_fitted_detector_input_finds_the_faces_the_square_one_does(realdata, insightface_model):
    """faces.det_shape fit: a 16:9 frame padded by 0.25 runs the detector on 160 x 96 (not 160 x 160) px, ~60% of
    the compute; the faces are the same (real clips of three aspect ratios, at 160 and 640)."""
    cfg = {"backend": "insightface", "model": str(insightface_model), "pad": 0.25}
    clips = (SAMPLES[0], SAMPLES[3], "videos/pyfeat/WolfgangLanger_Pexels.mp4")
    frames = {c: decode(realdata / c, fps=2, max_side=320).frames[:2] for c in clips}
    for size in (160, 640):
        fit = build_detector({**cfg, "det_size": size, "det_shape": "fit"})
        square = build_detector({**cfg, "det_size": size, "det_shape": "square"})
        assert fit.backend.input_shape(540, 960, size)[1] == ((96, 160) if size == 160 else (384, 640))
        assert fit.backend.input_shape(960, 540, size)[1] == ((160, 96) if size == 160 else (640, 384))
        assert square.backend.input_shape(540, 960, size)[1] == (size, size)
        for clip in clips:
            for f in frames[clip]:
                a, b = fit(f)[0], square(f)[0]
                assert len(a) == len(b) >= 1, (clip, size)
                side = float(b.boxes[0, 3] - b.boxes[0, 1])
                assert np.abs(a.boxes[0] - b.boxes[0]).max() < 0.05 * side, (clip, size)
                assert abs(float(a.scores[0]) - float(b.scores[0])) < 0.1


def test_mtcnn_backend_offline(realdata):
    frames = decode(realdata / SAMPLES[0], fps=2, max_side=256).frames[:4]
    det = build_detector({"backend": "mtcnn", "pad": 0.25, "min_score": 0.9})
    out = det(frames)
    assert all(len(d) == 1 for d in out)
    d = out[0]
    assert d.landmarks.shape == (1, 5, 2) and d.landmarks[0, 0, 0] < d.landmarks[0, 1, 0]  # left eye left of right eye


def test_backend_problems_are_errors_not_fallbacks(tmp_path):
    with pytest.raises(ConfigError, match="needs a detector"):
        build_detector({"backend": "insightface", "model": None})
    with pytest.raises(ConfigError, match="no such file"):
        build_detector({"backend": "insightface", "model": str(tmp_path / "nope" / "det.onnx")})
    bad = tmp_path / "det_bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="onnxruntime cannot load it"):
        build_detector({"backend": "insightface", "model": str(bad)})
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "w600k_r50.onnx").write_bytes(b"recognition model, no detector")
    with pytest.raises(ConfigError, match="expected one det_"):
        build_detector({"backend": "insightface", "model": str(pack)})
    with pytest.raises(ConfigError, match="unknown backend"):
        build_detector({"backend": "retinaface"})


def test_model_pack_directory(insightface_model):
    det = build_detector({"backend": "insightface", "model": str(insightface_model.parent)})
    assert det.describe()["model"].endswith("det_500m.onnx")
