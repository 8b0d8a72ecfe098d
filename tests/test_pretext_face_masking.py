"""Face-guided masking (``pretrain.masking: face``, MARLIN's Fasking): eyes, nose and mouth tubes are
masked first, the rest at random up to the ratio; landmarks stored in crop pixels by the clips stage
reach the mask through the clip's crop/flip window; the masked-pixel invariance holds for face masks.
The landmarks of the real-clip test come from the real SCRFD detector on a real MEAD video."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pretrain_util import TINY, one_thread, perturb_masked  # noqa: F401  (fixture)

from affectube.clips.masking import FaceMaskGenerator, TubeMaskGenerator
from affectube.clips.transforms import TubeTransform, Window
from affectube.faces.crop import box_matrix, crop_landmarks

pytestmark = pytest.mark.usefixtures("one_thread")
# a frontal face in a 64 px input (8x8 patches of 8 px): eyes, nose, mouth corners
FACE = np.array([[20.0, 22.0], [44.0, 22.0], [32.0, 34.0], [22.0, 50.0], [42.0, 50.0]])


def test_face_parts_are_masked_first_and_the_mask_is_an_exact_tube():
    grid = (4, 8, 8)
    gen = FaceMaskGenerator(grid, ratio=0.75, patch=8)
    parts = gen.face_patches(FACE[None])
    assert 0 < parts.sum() <= gen.per_step  # this face fits into the budget of 48 of 64 patches
    rng = np.random.default_rng(0)
    seen_rest = np.zeros(64, int)
    for _ in range(200):
        m = gen(rng, landmarks=np.repeat(FACE[None], 8, 0))
        steps = m.reshape(4, 64)
        assert (steps == steps[0]).all() and steps[0].sum() == gen.per_step  # a tube, exactly the ratio
        assert steps[0][parts].all()  # every face-part patch masked
        seen_rest += steps[0] & ~parts
    assert (seen_rest[~parts] > 0).all()  # the rest is random: every other patch is masked sometimes
    # a small budget: only face-part patches, a random subset of them
    small = FaceMaskGenerator(grid, ratio=0.25, patch=8)
    for seed in range(20):
        m = small(np.random.default_rng(seed), landmarks=FACE[None])[:64]
        assert m.sum() == small.per_step and not (m & ~parts).any()
    # no landmarks (or all NaN): the plain tube mask's distribution
    m = gen(np.random.default_rng(1), landmarks=np.full((8, 5, 2), np.nan))
    assert m.reshape(4, 64)[0].sum() == gen.per_step


def test_face_regions_follow_the_landmarks():
    gen = FaceMaskGenerator((1, 8, 8), 0.9, patch=8)  # 64 px
    small = FACE / 2 + 16  # a face half the size in the middle
    left = gen.face_patches(small[None] - [16, 0]).reshape(8, 8)  # shifted left by 16 px
    right = gen.face_patches(small[None] + [16, 0]).reshape(8, 8)
    assert left.any() and np.array_equal(right[:, 4:], left[:, :4])  # the same regions, four patches apart
    assert not left[:, 4:].any() and not right[:, :4].any()
    assert not gen.face_patches(small[None])[:8].any()  # nothing above the eye region's top row


def test_landmarks_through_the_crop_window():
    t = TubeTransform(32, augment=True)
    pts = np.array([[16.0, 8.0], [48.0, 40.0]])  # in a 64 px stored crop
    win = Window(y=8, x=16, h=32, w=32, flip=False)
    assert np.allclose(t.points(pts, win), [[0.0, 0.0], [32.0, 32.0]])
    flipped = t.points(pts, Window(8, 16, 32, 32, True))
    assert np.allclose(flipped, [[32.0, 0.0], [0.0, 32.0]])


def test_crop_landmarks_use_the_crop_transform():
    boxes = np.array([[100.0, 50.0, 200.0, 150.0], [0, 0, 0, 0]])
    lms = np.array([[[150.0, 100.0]] * 5, [[0.0, 0.0]] * 5])
    out = crop_landmarks({"boxes": boxes, "landmarks": lms, "status": np.array([1, 0])}, {"strategy": "box", "size": 64, "scale": 1.0})
    assert np.allclose(out[0], 32.0)  # the box centre is the crop centre
    assert np.isnan(out[1]).all()  # no face: NaN
    m = box_matrix(boxes[0], lms[0], 64, 1.0)
    corner = np.array([100.0, 50.0, 1.0]) @ m.T
    assert np.allclose(corner, [0.0, 0.0])


def test_face_masks_keep_the_masked_pixel_invariance():
    from affectube.models import ModelSpec, build_pretrain_model

    spec = ModelSpec.from_cfg({**TINY, "model": "videomae"})
    model = build_pretrain_model({**TINY, "model": "videomae"}).eval()
    gen = FaceMaskGenerator(spec.grid, 0.5, spec.patch)
    mask = torch.from_numpy(np.stack([gen(np.random.default_rng(i), landmarks=FACE[None]) for i in range(2)]))
    x = torch.randn(2, 3, spec.num_frames, spec.input_size, spec.input_size)
    with torch.no_grad():
        a = model(x, mask)
        b = model(perturb_masked(x, mask, spec.tubelet, spec.patch, spec.grid), mask)
    assert torch.allclose(a, b, atol=1e-5)


def test_real_video_landmarks_reach_the_masks(realdata, insightface_model, tmp_path):
    """The real detector's landmarks on a real MEAD video, cropped and stored as the clips stage does;
    the loader's face masks cover the tubes under the eyes, nose and mouth of the augmented clip."""
    from affectube.clips.dataset import ClipDataset
    from affectube.clips.store import StoreContent, write_store
    from affectube.config import load_params
    from affectube.faces.crop import crop_frames
    from affectube.faces.detect import build_detector
    from affectube.faces.pipeline import track_video
    from affectube.video.decode import decode

    video = realdata / "videos/mead/M030_front_angry_level3_001.mp4"
    decode_cfg = {"fps": 8, "max_side": 320}
    faces_cfg = {**load_params()["faces"], "backend": "insightface", "model": str(insightface_model), "det_size": 160, "every_k": 4}
    tracks = track_video(video, decode_cfg, faces_cfg, build_detector(faces_cfg))
    decoded = decode(video, **decode_cfg)
    frames, times = decoded.frames, decoded.timestamps
    crop_cfg = {"strategy": "box", "size": 64, "scale": 1.3, "grayscale": False, "pad_mode": "edge"}
    parts = {"boxes": tracks.boxes, "landmarks": tracks.landmarks, "status": tracks.status, "frame_size": tracks.frame_size}
    crops, ok = crop_frames(frames, parts, crop_cfg)
    lms = crop_landmarks(parts, crop_cfg)
    n = len(crops)
    assert ok.all() and np.isfinite(lms).all()
    med = np.median(lms, axis=0)  # eyes above the nose above the mouth, left eye left of the right eye
    assert med[0, 0] < med[1, 0] and max(med[0, 1], med[1, 1]) < med[2, 1] < min(med[3, 1], med[4, 1])
    store = write_store(tmp_path / "m.h5", StoreContent(
        frames=crops, timestamps=np.asarray(times), dataset="mead", video_id="v", subject="s", fps=8.0,
        face_status=tracks.status, face_score=tracks.scores, face_boxes=tracks.boxes, valid=ok, face_landmarks=lms,
        crop=crop_cfg, provenance="0" * 64))  # fmt: skip
    spec_grid = (4, 8, 8)
    gen = FaceMaskGenerator(spec_grid, 0.75, patch=8)
    ds = ClipDataset([store], num_frames=8, sample_stride=1, input_size=64, augment=True, seed=0, mask_generator=gen)
    flips = set()
    for code in range(8):
        item = ds[code]
        _, _, e, _, _, idx, rng = ds._plan(code)
        win = ds.transform.window(64, 64, rng)  # the item's own window, drawn again from its seeded stream
        flips.add(win.flip)
        parts_mask = torch.from_numpy(gen.face_patches(ds.transform.points(lms[idx], win)))
        assert 8 <= int(parts_mask.sum()) <= gen.per_step  # the face parts fit into the budget of 48 of 64
        assert item["mask"][:64][parts_mask].all()  # all masked (a random tube mask: each with p = 0.75)
    assert flips == {False, True}  # flipped windows were among them
    with pytest.raises(Exception, match="face_landmarks"):
        plain = write_store(tmp_path / "p.h5", StoreContent(frames=crops, timestamps=np.asarray(times), dataset="mead",
                                                           video_id="p", subject="s", fps=8.0, provenance="0" * 64))
        ClipDataset([plain], num_frames=8, sample_stride=1, input_size=64, mask_generator=gen)
    assert TubeMaskGenerator(spec_grid, 0.75).per_step == gen.per_step
