"""SCRFD keyframes in one network run per batch: the same faces as one frame per run, and a safe fallback."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

import affectube.faces.backends.scrfd as scrfd
from affectube.config import load_params
from affectube.faces.detect import build_detector
from affectube.video.decode import decode


def _cfg(model, **over):
    return {**load_params()["faces"], "backend": "insightface", "model": str(model), **over}


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.boxes, y.boxes)
        np.testing.assert_array_equal(x.scores, y.scores)
        np.testing.assert_array_equal(x.landmarks, y.landmarks)


def test_batched_detection_equals_one_frame_per_run(realdata, insightface_model):
    det = build_detector(_cfg(insightface_model, det_size=[160, 320]))  # two sizes: one batch each
    assert det.backend.max_batch > 1  # insightface's batch-1 export, its batch axis freed
    frames = decode(realdata / "videos/cremad/1001_DFA_HAP_XX.flv", fps=5, max_side=213).frames[:6]
    together = det(frames)
    assert all(len(d) >= 1 for d in together)  # the actor's face in every frame
    _same(together, [det(f[None])[0] for f in frames])
    assert [len(d) for d in det(np.zeros((3, 96, 128, 3), np.uint8))] == [0, 0, 0]  # no face in a batch as alone


def test_free_batch_edit_and_fallback(realdata, insightface_model, tmp_path, monkeypatch):
    raw = insightface_model.read_bytes()
    shape = ort.InferenceSession(scrfd.free_batch(raw), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    assert isinstance(shape[0], str) and shape[1] == 3  # batch free, channels kept
    assert scrfd.free_batch(b"") is None and scrfd.free_batch(b"\x08\x07") is None  # no graph: nothing to edit
    frames = decode(realdata / "videos/mead/M030_front_angry_level3_001.mp4", fps=5, max_side=107).frames[:4]
    batched = build_detector(_cfg(insightface_model))
    # a model whose batch axis cannot be freed still loads and runs one frame per call, with the same faces
    monkeypatch.setattr(scrfd, "free_batch", lambda model: None)
    single = build_detector(_cfg(insightface_model))
    assert single.backend.max_batch == 1 and single.backend.session.get_inputs()[0].shape[0] == 1
    _same(single(frames), batched(frames))
