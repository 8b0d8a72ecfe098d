"""ClipDataset: sampling, determinism across workers, tube-consistent augmentation, filters, memory."""

from __future__ import annotations

import os
import pickle
import tracemalloc

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from affectube.clips.dataset import ClipDataset
from affectube.clips.masking import TubeMaskGenerator, collate
from affectube.clips.sampling import clip_span, segment_starts
from affectube.clips.store import write_store
from affectube.clips.transforms import TubeTransform
from affectube.errors import DataError

from clips_util import content, make_stores


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return make_stores(tmp_path_factory.mktemp("stores"), n_videos=6, n=60, size=32)


def test_items_follow_the_contract(stores):
    ds = ClipDataset(stores, num_frames=8, sample_stride=2, input_size=24, mode="train", targets=["valence", "arousal"], seed=1)
    assert len(ds) == 6 and ds.classes == ["angry", "happy", "sad"] and ds.channels == 3
    assert not ds._handles  # nothing is opened before a worker reads
    item = ds[1]
    assert item["video"].shape == (3, 8, 24, 24) and item["video"].dtype == torch.float32
    assert item["label"] == ds.classes.index("sad")
    assert item["targets"].dtype == torch.float32 and item["targets"].shape == (2,)
    assert item["frame_targets"].shape == (8, 2) and item["times"].shape == (8,)
    assert (item["subject"], item["video_id"], item["dataset"], item["clip"]) == ("s1", "v1", "d", 0)
    # valence: clip-level from the manifest; arousal: mean of the per-frame labels at the clip's frames
    idx = item["start"] + 2 * np.arange(8)
    times = 0.1 + idx / 25.0
    np.testing.assert_allclose(item["times"].numpy(), times)
    np.testing.assert_allclose(item["frame_targets"][:, 1].numpy(), np.sin(times), atol=1e-6)
    assert torch.isnan(item["frame_targets"][:, 0]).all()
    np.testing.assert_allclose(item["targets"].numpy(), [0.1, np.sin(times).astype(np.float32).mean()], atol=1e-6)
    # normalisation is invertible with the dataset's mean/std
    mean, std = torch.tensor(ds.mean).view(3, 1, 1, 1), torch.tensor(ds.std).view(3, 1, 1, 1)
    pix = item["video"] * std * 255 + mean * 255
    assert pix.min() > -0.5 and pix.max() < 255.5


def test_pixels_are_the_stored_frames(stores):
    ds = ClipDataset(stores, num_frames=4, sample_stride=3, input_size=32, mode="test", test_clips=3)
    item = ds[4]  # video 1, clip 1
    n = 60 + 7
    assert item["clip"] == 1 and item["start"] == segment_starts(n, clip_span(4, 3), 3)[1]
    mean, std = torch.tensor(ds.mean).view(3, 1, 1, 1), torch.tensor(ds.std).view(3, 1, 1, 1)
    pix = torch.round(item["video"] * std * 255 + mean * 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()
    src = content("v1", n=n, size=32, seed=1).frames[item["start"] + 3 * np.arange(4)]
    np.testing.assert_array_equal(pix, src)


def test_test_mode_gives_clips_spread_over_the_video(stores):
    ds = ClipDataset(stores, num_frames=8, sample_stride=2, input_size=32, mode="test", test_clips=4)
    assert len(ds) == 24
    starts = [ds[i]["start"] for i in range(4)]
    assert [ds[i]["clip"] for i in range(4)] == [0, 1, 2, 3]
    span = clip_span(8, 2)  # 15 of 60 frames: each clip centred in its quarter of the video
    assert [s + span / 2 for s in starts] == pytest.approx([7.5, 22.5, 37.5, 52.5], abs=1)
    two = ClipDataset(stores[:1], num_frames=8, sample_stride=2, input_size=32, mode="test", test_clips=2)
    assert [two[i]["start"] + span / 2 for i in range(2)] == pytest.approx([15, 45], abs=1)  # not the first/last second
    assert [ds[i]["start"] for i in range(4)] == starts  # deterministic


def test_short_video_repeats_its_last_frame(tmp_path):
    path = write_store(tmp_path / "short.h5", content("short", n=5, size=16))
    ds = ClipDataset([path], num_frames=8, sample_stride=2, input_size=16, mode="train")
    item = ds[0]
    assert item["start"] == 0
    np.testing.assert_allclose(item["times"].numpy(), 0.1 + np.minimum(2 * np.arange(8), 4) / 25.0)


def test_same_seed_same_samples_new_epoch_new_samples(stores):
    def starts(ds):
        return [ds[i]["start"] for i in range(len(ds))]

    a = ClipDataset(stores, num_frames=8, sample_stride=2, input_size=24, augment=True, seed=3)
    b = ClipDataset(stores, num_frames=8, sample_stride=2, input_size=24, augment=True, seed=3)
    assert starts(a) == starts(b)
    assert torch.equal(a[2]["video"], b[2]["video"])
    b.set_epoch(1)
    assert starts(a) != starts(b)
    # an index past the end encodes the epoch
    assert a[len(a) + 2]["start"] == b[2]["start"]


def _batches(ds, workers):
    g = torch.Generator().manual_seed(0)
    dl = DataLoader(ds, batch_size=4, shuffle=True, num_workers=workers, generator=g, collate_fn=collate)
    return list(dl)


def test_two_workers_yield_the_same_samples_as_none(stores):
    ds = ClipDataset(stores, num_frames=8, sample_stride=2, input_size=24, augment=True, seed=5, targets=["arousal"],
                     mask_generator=TubeMaskGenerator((4, 3, 3), 0.5))
    ds.set_epoch(2)
    one, two = _batches(ds, 0), _batches(ds, 2)
    assert len(one) == len(two) == 2
    for x, y in zip(one, two):
        assert x["video_id"] == y["video_id"] and torch.equal(x["start"], y["start"])
        assert torch.equal(x["video"], y["video"]) and torch.equal(x["mask"], y["mask"])
        assert torch.equal(x["frame_targets"], y["frame_targets"]) and torch.equal(x["label"], y["label"])
    assert x["mask"].shape == (len(x["video_id"]), 36) and x["mask"].dtype == torch.bool


def test_handles_stay_in_the_process_that_opened_them(stores):
    ds = ClipDataset(stores, num_frames=4, sample_stride=1, input_size=32, max_open=2)
    for i in range(len(ds)):
        ds[i]
    assert len(ds._handles) == 2  # LRU bound
    clone = pickle.loads(pickle.dumps(ds))
    assert not clone._handles and torch.equal(clone[0]["video"], ds[0]["video"])
    ds.close()


def test_augmentation_is_the_same_on_every_frame_of_a_clip(tmp_path):
    # frame t = image + t: after a tube-consistent crop/flip/resize, frame t - frame 0 is the constant t
    rng = np.random.default_rng(0)
    image = rng.integers(0, 200, (48, 48, 3), dtype=np.uint8)
    frames = np.stack([image + t for t in range(8)]).astype(np.uint8)
    tf = TubeTransform(32, augment=True, scale=(0.3, 0.6), mean=(0, 0, 0), std=(1 / 255,) * 3)
    windows = set()
    for seed in range(10):
        out = tf(frames, np.random.default_rng(seed)).numpy()  # [C,T,S,S] in pixel units
        diff = out - out[:, :1]
        for t in range(8):
            assert np.abs(diff[:, t] - t).max() <= 1.0  # uint8 resize rounding only
        windows.add(tf.window(48, 48, np.random.default_rng(seed)))
    assert len(windows) == 10 and any(w.flip for w in windows) and not all(w.flip for w in windows)


def test_filters_and_classes(stores):
    full = ClipDataset(stores, num_frames=4, sample_stride=1, input_size=32)
    by_subject = ClipDataset(stores, num_frames=4, sample_stride=1, input_size=32, subjects=["s0"])
    assert by_subject.video_ids == ["v0", "v3"] and by_subject.subjects == ["s0"]
    assert by_subject.classes == full.classes  # classes come from all given stores, before filtering
    assert ClipDataset(stores, num_frames=4, sample_stride=1, input_size=32, video_ids=["v2", "v5"]).video_ids == ["v2", "v5"]
    assert len(ClipDataset(stores, num_frames=4, sample_stride=1, input_size=32, datasets=["other"])) == 0
    only = ClipDataset(stores, num_frames=4, sample_stride=1, input_size=32, classes=["happy"], require_label=True)
    assert only.video_ids == ["v0", "v3"] and list(only.labels()) == [0, 0]
    kept = ClipDataset(stores, num_frames=4, sample_stride=1, input_size=32, classes=["happy"])
    assert list(kept.labels()) == [0, -1, -1, 0, -1, -1]
    assert ClipDataset(stores[0].parent, num_frames=4, sample_stride=1, input_size=32).video_ids == full.video_ids


def test_empty_stores_are_skipped_and_listed(tmp_path, stores):
    c = content("broken", n=0, size=32)
    c.error = "cannot decode"
    bad = write_store(tmp_path / "broken.h5", c)
    ds = ClipDataset([*stores, bad], num_frames=4, sample_stride=1, input_size=32)
    assert len(ds) == 6 and ds.skipped == [(str(bad), "cannot decode")]


def test_memory_per_item_is_one_clip_not_one_video(tmp_path):
    path = write_store(tmp_path / "long.h5", content("long", n=3000, size=48, per_frame=False), chunk_frames=8)
    ds = ClipDataset([path], num_frames=8, sample_stride=2, input_size=48, mode="test", test_clips=5)
    ds[0]  # open the handle (reads the small per-frame arrays once)
    video_bytes = 3000 * 48 * 48 * 3
    tracemalloc.start()
    for i in range(1, 5):
        ds[i]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    clip_span_bytes = (clip_span(8, 2) + 2 * 8) * 48 * 48 * 3  # the span plus partial chunks at both ends
    assert peak < 4 * clip_span_bytes < video_bytes / 20


@pytest.mark.parametrize("input_size", [40, 24])
def test_uint8_output_with_batched_transform_matches_the_float_items(tmp_path, input_size):
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    paths = []
    for v in range(4):  # smooth images (like faces): resampling methods agree on them
        c = content(f"v{v}", n=30, size=32, seed=v)
        c.frames = np.stack([np.stack([127 + 100 * np.sin((xx + 2 * t + v) / 5 + k) * np.cos(yy / 7 - k) for k in range(3)], -1)
                             for t in range(30)]).astype(np.uint8)
        paths.append(write_store(tmp_path / f"v{v}.h5", c))
    kw = dict(num_frames=8, sample_stride=2, input_size=input_size, augment=True, seed=4, scale=(0.5, 1.0))
    f = ClipDataset(paths, **kw)
    u = ClipDataset(paths, output="uint8", **kw)
    batch = collate([u[i] for i in range(len(u))])
    assert batch["video"].dtype == torch.uint8 and batch["video"].shape == (4, 8, 32, 32, 3) and batch["window"].shape == (4, 5)
    out = u.transform.apply(batch["video"], batch["window"])
    ref = torch.stack([f[i]["video"] for i in range(len(f))])
    assert out.shape == ref.shape == (4, 3, 8, input_size, input_size)
    assert torch.equal(out, ref)  # the same pixels (apply_windows reproduces OpenCV's resampling)
    assert [u[i]["start"] for i in range(4)] == [f[i]["start"] for i in range(4)]


def test_direct_reads_and_hdf5_reads_give_identical_items(tmp_path):
    kw = dict(num_frames=8, sample_stride=3, input_size=24, augment=True, seed=1, targets=["arousal", "valence"])
    layouts = {"chunked": ("none", 8), "contiguous": ("none", 0), "blosc": ("blosc-lz4", 8)}
    sets = {k: make_stores(tmp_path / k, n_videos=3, n=40, compression=c, chunk_frames=cf) for k, (c, cf) in layouts.items()}
    direct = ClipDataset(sets["chunked"], **kw)
    assert all(e.layout is not None for e in direct.entries)
    assert all(e.layout is not None for e in ClipDataset(sets["contiguous"], **kw).entries)
    others = [ClipDataset(sets["chunked"], direct=False, **kw), ClipDataset(sets["contiguous"], **kw), ClipDataset(sets["blosc"], **kw)]
    assert all(e.layout is None for e in others[0].entries + others[2].entries)  # through h5py
    for other in others:
        for i in range(3):
            a, b = direct[i], other[i]
            assert torch.equal(a["video"], b["video"]) and torch.equal(a["times"], b["times"])
            torch.testing.assert_close(a["frame_targets"], b["frame_targets"], rtol=0, atol=0, equal_nan=True)
            torch.testing.assert_close(a["targets"], b["targets"], rtol=0, atol=0, equal_nan=True)
            assert type(other._handles[other.entries[i].path]).__name__ == ("DirectReader" if other.entries[i].layout else "StoreReader")


def test_loader_refuses_corrupt_or_replaced_stores(tmp_path):
    paths = make_stores(tmp_path, n_videos=2, n=40)
    ds = ClipDataset(paths, num_frames=8, sample_stride=2, input_size=32, mode="test", test_clips=1)
    layout = ds.entries[0].layout
    st = os.stat(paths[0])
    with open(paths[0], "r+b") as fh:  # flip one byte of frame 20 (silent bit rot: the mtime stays)
        fh.seek(layout.frames + 20 * layout.frame_bytes + 100)
        b = fh.read(1)
        fh.seek(layout.frames + 20 * layout.frame_bytes + 100)
        fh.write(bytes([b[0] ^ 1]))
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DataError, match=r"v0\.h5: frame 20 does not match its checksum"):
        ds[0]
    write_store(paths[1], content("v1", n=40, size=32, seed=9))  # rebuilt under the loader's feet
    with pytest.raises(DataError, match=r"v1\.h5: clip store changed since the dataset was indexed"):
        ds[1]


def test_batched_fetch_gives_the_items_of_single_fetches(stores):
    ds = ClipDataset(stores, num_frames=8, sample_stride=2, input_size=24, augment=True, seed=2, output="uint8")
    batch = ds.__getitems__([4, 1, 1, 5])
    for i, item in zip([4, 1, 1, 5], batch):
        single = ds[i]
        assert torch.equal(item["video"], single["video"]) and torch.equal(item["window"], single["window"])
        assert item["start"] == single["start"] and item["video_id"] == single["video_id"]


def test_direct_reader_reads_strided_and_repeated_frames_and_names_a_truncated_file(tmp_path):
    from affectube.clips.dataset import store_index
    from affectube.clips.readers import DirectReader, FrameLayout, StoreReader

    for cf in (0, 8):
        path = write_store(tmp_path / f"v{cf}.h5", content("v", n=30, size=16), "none", cf)
        layout = store_index(path)["layout"]
        direct, h5 = DirectReader(path, layout), StoreReader(path)
        cases = [np.arange(0, 16, 3), np.arange(5, 21), np.minimum(2 * np.arange(20), 29), np.array([29, 29, 29]), np.array([0])]
        for idx in cases:  # stride 3 (runs of one frame), stride 1 (one run), a short video's repeated last frame
            got = direct.read(idx)
            assert got.shape == (len(idx), 16, 16, 3)
            np.testing.assert_array_equal(got, h5.read(idx))
            np.testing.assert_array_equal(direct.array("timestamps", idx), h5.array("timestamps", idx))
        h5.close()
        direct.close()
    data = path.read_bytes()
    path.write_bytes(data[: layout.frames + 10 * layout.frame_bytes])  # frames 10.. lost
    st = os.stat(path)
    cut = FrameLayout(layout.frames, layout.frame_bytes, layout.frame_shape, layout.arrays, (st.st_ino, st.st_size, st.st_mtime_ns))
    reader = DirectReader(path, cut)
    np.testing.assert_array_equal(reader.read(np.arange(0, 10, 2), check=False)[:, 0, 4:], content("v", n=30, size=16).frames[0:10:2, 0, 4:])
    with pytest.raises(DataError, match=r"v8\.h5: clip store is truncated \(frames 8-11: 1536 of 3072 bytes"):
        reader.read(np.arange(8, 12), check=False)
    with pytest.raises(DataError, match=r"v8\.h5: clip store is truncated \(frames 12-12: 0 of 768"):
        reader.read(np.array([4, 8, 12]), check=False)
    reader.close()
