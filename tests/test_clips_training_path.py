"""The loader's uint8 path (``ClipDataset(output="uint8")`` + ``transform.apply`` where the model runs),
used for training on CUDA, gives the same pixels as the float path (transform in the loader), for
pretraining (clips and masks, and a whole training run) and fine-tuning (train and test batches)."""

from __future__ import annotations

import csv
import itertools

import cv2
import numpy as np
import pytest
import torch

from affectube.clips.dataset import ClipDataset, loader_output
from affectube.clips.transforms import TubeTransform, Window, apply_windows, resize

from clips_util import make_stores
from pretrain_util import one_thread, pretrain_cfg  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    # random textures at 40 px: the clip windows (scale 0.6-1) are both enlarged (bilinear) and shrunk (area) to 32
    return make_stores(tmp_path_factory.mktemp("stores"), n_videos=6, n=40, size=40)


def test_loader_output_follows_the_training_device():
    assert loader_output("cpu") == "float" and loader_output(torch.device("cpu")) == "float"
    assert loader_output("cuda") == "uint8" and loader_output(torch.device("cuda", 1)) == "uint8"


@pytest.mark.parametrize("channels", [3, 1])
def test_apply_windows_resamples_exactly_as_opencv(channels):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 70, 90, channels), dtype=np.uint8)  # noise: the hardest case for rounding
    video = torch.from_numpy(frames)[None]
    wrong, total = 0, 0
    for size in (24, 32, 64, 112):
        for _ in range(12):
            h, w = int(rng.integers(8, 71)), int(rng.integers(8, 91))
            win = Window(int(rng.integers(0, 71 - h)), int(rng.integers(0, 91 - w)), h, w, bool(rng.integers(2)))
            ref = resize(frames[:, win.y : win.y + win.h, win.x : win.x + win.w], size)  # the CPU path's OpenCV calls
            if win.flip:
                ref = ref[:, :, ::-1]
            got = apply_windows(video, win.as_tensor()[None], size, [0.0] * channels, [1 / 255] * channels)[0]
            got = got.permute(1, 2, 3, 0).numpy()  # [T,S,S,C] grey levels
            if h >= size and w >= size:  # area averaging: float sums, a rare tie rounds the other way
                assert np.abs(got - ref).max() <= 1
                wrong, total = wrong + int((got != ref).sum()), total + got.size
            else:  # bilinear: OpenCV's fixed-point arithmetic, reproduced with integer ops
                np.testing.assert_array_equal(got, ref)
    assert total > 0 and wrong / total < 1e-3
    assert cv2.INTER_LINEAR == 1  # what transforms.resize calls (the emulated arithmetic is that one's)


def _items_equal(a: dict, b: dict) -> None:
    for key in ("label", "subject", "video_id", "dataset", "clip", "start"):
        assert a[key] == b[key], key
    for key in ("targets", "frame_targets", "times"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, equal_nan=True)


def test_pretraining_batches_and_masks_are_the_same_on_both_paths(stores):
    from affectube.models import ModelSpec
    from affectube.train.distributed import ResumableSampler
    from affectube.train.pretrain import build_dataset

    pcfg = pretrain_cfg("videomae", augment=True, seed=3)
    grid = ModelSpec.from_cfg(pcfg).grid
    flt, fbase = build_dataset([str(p) for p in stores], pcfg, grid, output="float")
    u8, ubase = build_dataset([str(p) for p in stores], pcfg, grid, output="uint8")
    assert fbase.output == "float" and ubase.output == "uint8" and u8.transform is not None
    sample = u8[len(u8) + 2]  # an epoch-encoded code, as the sampler gives
    assert sample[0].dtype == torch.uint8 and sample[0].shape == (8, 40, 40, 3) and sample[2].shape == (5,)
    codes = list(range(0, 7 * len(u8), 2))  # epoch-encoded codes, as the sampler gives
    fv, fm = flt.clips(codes)
    uv, um = u8.clips(codes)
    assert fv.shape == (len(codes), 3, 8, 32, 32) and fv.dtype == torch.float32
    assert torch.equal(uv, fv) and torch.equal(um, fm)
    windows = [fbase.transform.window(40, 40, fbase._plan(c)[-1]) for c in codes]
    assert any(w.h < 32 or w.w < 32 for w in windows) and any(w.h >= 32 and w.w >= 32 for w in windows)  # both resamplers
    assert any(w.flip for w in windows) and not all(w.flip for w in windows)
    # as the trainer reads them: sampler -> DataLoader -> to_device
    loaders = [torch.utils.data.DataLoader(d, batch_size=3, sampler=ResumableSampler(len(d), 0, 1, 3, start=2)) for d in (flt, u8)]
    for fb, ub in itertools.islice(zip(*loaders), 4):  # the sampler is endless: 4 batches, across an epoch boundary
        (fv, fm), (uv, um) = flt.to_device(fb, "cpu"), u8.to_device(ub, "cpu")
        assert torch.equal(uv, fv) and torch.equal(um, fm) and fm.dtype == torch.bool and fv.shape[0] == 3


def test_pretraining_run_is_the_same_on_both_paths(stores, tmp_path, one_thread):
    from affectube.models import ModelSpec
    from affectube.train.pretrain import Pretrainer, build_dataset

    pcfg = pretrain_cfg("videomae", augment=True, steps=2, warmup_steps=1, checkpoint_every=10, batch_size=3, recon_clips=2)
    grid = ModelSpec.from_cfg(pcfg).grid
    logs = []
    for output in ("float", "uint8"):
        data, base = build_dataset([str(p) for p in stores], pcfg, grid, output=output)
        trainer = Pretrainer(pcfg, data, tmp_path / output, target_norm=(base.mean, base.std))
        assert trainer.fit() == 0
        with open(tmp_path / output / "log.csv", newline="") as fh:
            logs.append([(r["loss"], r["grad_norm"]) for r in csv.DictReader(fh)])
    assert len(logs[0]) == 2 and logs[0] == logs[1]


def test_finetuning_batches_are_the_same_on_both_paths(stores):
    from affectube.train import fold_parallel as P
    from affectube.train import supervised as S
    from affectube.train.distributed import DistEnv
    from affectube.train.finetune import open_datasets

    geom = {"num_frames": 8, "sample_stride": 2, "input_size": 32}
    ft = {"targets": ["valence", "arousal"], "test_clips": 2, "label": "emotion", "event": False, "event_jitter": 0.0,
          "augment": {"crop": True, "scale": [0.6, 1.0], "ratio": [0.75, 1.3333], "flip": 0.5}}  # crop windows on both paths
    split = {"train": stores[:4], "val": [], "test": stores[4:]}
    data = {out: open_datasets(split, geom, ft, None, seed=7, output=out) for out in ("float", "uint8")}
    assert data["float"]["val"] is None and data["uint8"]["train"].output == "uint8"
    for side in ("train", "test"):
        for epoch in (1, 2):
            batches = []
            for out in ("float", "uint8"):
                ds = data[out][side]
                ds.set_epoch(epoch)
                sampler = P.EpochSampler(len(ds), epoch, DistEnv(), seed=7, shuffle=side == "train")  # the trainer's
                dl = P.make_loader(ds, batch_size=3, sampler=sampler, seed=7, workers=0)
                batches.append([(b, S.clip_input(b, dl)) for b in dl])
            assert len(batches[0]) == len(batches[1]) == 2
            for (fb, fv), (ub, uv) in zip(*batches):
                assert "window" in ub and "window" not in fb and ub["video"].dtype == torch.uint8
                assert fv.shape == (fb["label"].shape[0], 3, 8, 32, 32) and torch.equal(uv, fv)
                for i in range(len(fb["label"])):
                    _items_equal({k: (v[i] if torch.is_tensor(v) else v[i]) for k, v in fb.items() if k != "video"},
                                 {k: (v[i] if torch.is_tensor(v) else v[i]) for k, v in ub.items() if k not in ("video", "window")})


def test_transform_apply_without_augmentation_is_the_float_item(stores):
    kw = dict(num_frames=8, sample_stride=2, input_size=40, mode="test", test_clips=2)
    f, u = ClipDataset(stores, **kw), ClipDataset(stores, output="uint8", **kw)
    assert isinstance(u.transform, TubeTransform)
    batch = torch.utils.data.default_collate([u[i] for i in range(4)])
    assert torch.equal(u.transform.apply(batch["video"], batch["window"]), torch.stack([f[i]["video"] for i in range(4)]))
