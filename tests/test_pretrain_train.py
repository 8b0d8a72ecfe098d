"""The pretraining loop on tiny models and synthetic clips (CPU, in process)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from pretrain_util import TINY_BY_MODEL, pretrain_cfg, synthetic_dataset, one_thread  # noqa: F401  (fixture)

from affectube.clips.masking import TubeMaskGenerator
from affectube.models import build_pretrain_model, load_encoder, read_encoder_metadata
from affectube.train import checkpoint as ckpt
from affectube.train import preempt
from affectube.train.masked_data import MaskedClips
from affectube.train.optim import build_optimizer, param_groups
from affectube.train.pretrain import EXIT_PREEMPTED, Pretrainer, TrainingDiverged

pytestmark = pytest.mark.usefixtures("one_thread")


def _log(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.parametrize("name", sorted(TINY_BY_MODEL))
def test_loss_decreases_on_a_fixed_batch(name):
    torch.manual_seed(0)
    pcfg = pretrain_cfg(name)
    model = build_pretrain_model(pcfg)
    data = synthetic_dataset(pcfg, n=4)
    x = torch.stack([data[i][0] for i in range(4)])
    mask = torch.stack([data[i][1] for i in range(4)])
    opt = build_optimizer(param_groups(model, 3e-3, 0.05), 3e-3)
    losses = []
    for _ in range(100):
        loss, _ = model.loss(x, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert max(losses[-5:]) < 0.75 * losses[0], losses[::10]


def test_masks_are_exact_tubes_and_reproducible():
    pcfg = pretrain_cfg("videomae", mask_ratio=0.9, input_size=64)  # 8x8 spatial -> int(0.9*64) = 57 per step
    data = synthetic_dataset(pcfg)
    for code in (0, 5, 16 + 5):
        mask = data[code][1].reshape(4, 64).numpy()
        assert (mask.sum(1) == 57).all() and (mask == mask[0]).all()
    assert torch.equal(data[5][1], data[5][1])  # same (epoch, index) -> same mask
    assert not torch.equal(data[5][1], data[16 + 5][1])  # another epoch -> another mask


def test_tube_masks_at_the_default_size_are_exact():
    gen = TubeMaskGenerator(grid=(8, 7, 7), ratio=0.9)  # 16x112x112 clips, 2x16x16 tubelets
    data = MaskedClips([torch.zeros(3, 16, 112, 112)] * 3, gen, seed=0)
    for code in range(3):
        mask = data[code][1].reshape(8, 49).numpy()
        assert (mask.sum(1) == int(0.9 * 49)).all() and (mask == mask[0]).all()


def test_resume_equals_uninterrupted(tmp_path):
    pcfg = pretrain_cfg("videomae", steps=6, checkpoint_every=2)
    full = Pretrainer(pcfg, synthetic_dataset(pcfg), tmp_path / "full")
    assert full.fit() == 0
    part = Pretrainer(pcfg, synthetic_dataset(pcfg), tmp_path / "part")
    assert part.fit(stop_after=3) == 0  # "killed" after step 3 (a checkpoint at 2, and one written at 3)
    assert not (tmp_path / "part" / "encoder.safetensors").exists()
    assert ckpt.load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["step"] == 3
    torch.manual_seed(999)  # a fresh process would start from other RNG states
    np.random.seed(999)
    resumed = Pretrainer(pcfg, synthetic_dataset(pcfg), tmp_path / "part")
    assert resumed.fit() == 0
    a, b = _weights(tmp_path / "full" / "encoder.safetensors"), _weights(tmp_path / "part" / "encoder.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    full_state = ckpt.load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    part_state = ckpt.load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert all(torch.equal(full_state["model"][k], part_state["model"][k]) for k in full_state["model"])
    log_full, log_part = _log(tmp_path / "full" / "log.csv"), _log(tmp_path / "part" / "log.csv")
    assert [r["loss"] for r in log_full] == [r["loss"] for r in log_part]
    assert [int(r["step"]) for r in log_part] == [1, 2, 3, 4, 5, 6]
    summary = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert summary["resumed_at_step"] == 3 and summary["steps"] == 6
    for name in ("encoder.safetensors", "log.csv", "summary.json", "reconstruction.png"):
        assert (tmp_path / "full" / name).stat().st_size > 0


def test_preemption_flag_checkpoints_and_exits(tmp_path):
    pcfg = pretrain_cfg("svfap", steps=4, checkpoint_every=10)
    preempt.reset()
    try:
        preempt.request()
        code = Pretrainer(pcfg, synthetic_dataset(pcfg), tmp_path).fit()
    finally:
        preempt.reset()
    assert code == EXIT_PREEMPTED
    assert ckpt.load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 1
    assert not (tmp_path / "encoder.safetensors").exists()
    assert Pretrainer(pcfg, synthetic_dataset(pcfg), tmp_path).fit() == 0
    assert len(_log(tmp_path / "log.csv")) == 4
    spec, info = read_encoder_metadata(tmp_path / "encoder.safetensors")
    assert spec.model == "svfap" and info["resumed_at_step"] == 1
    assert load_encoder(tmp_path / "encoder.safetensors").spec.svfap_stages == (1, 1, 1)


class _PoisonAfter(torch.utils.data.Dataset):
    """Clips that turn to NaN from the ``after``-th read on (a diverging run)."""

    def __init__(self, base, after):
        self.base, self.after, self.reads = base, after, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.reads += 1
        item = self.base[i]
        return {"video": item["video"] * float("nan")} if self.reads > self.after else item


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    pcfg = pretrain_cfg("videomae", steps=6, checkpoint_every=2, batch_size=2)
    good = synthetic_dataset(pcfg)
    data = MaskedClips(_PoisonAfter(good.base, after=1 + 2 * 3), good.mask_fn, seed=0)  # 1 probe read + 3 steps
    trainer = Pretrainer(pcfg, data, tmp_path)
    with pytest.raises(TrainingDiverged, match=r"step 4: loss is nan.*last good checkpoint"):
        trainer.fit()
    state = ckpt.load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (tmp_path / "encoder.safetensors").exists()


def test_changed_params_do_not_resume_an_old_checkpoint(tmp_path, caplog):
    pcfg = pretrain_cfg("videomae", steps=2, checkpoint_every=1)
    assert Pretrainer(pcfg, synthetic_dataset(pcfg), tmp_path).fit(stop_after=1) == 0
    other = pretrain_cfg("videomae", steps=2, checkpoint_every=1, base_lr=1e-4)
    with caplog.at_level("WARNING"):
        assert Pretrainer(other, synthetic_dataset(other), tmp_path).fit() == 0
    assert "starting from step 0" in caplog.text
    assert json.loads((tmp_path / "summary.json").read_text())["resumed_at_step"] is None


def test_init_from_another_run(tmp_path):
    pcfg = pretrain_cfg("videomae", steps=2)
    Pretrainer(pcfg, synthetic_dataset(pcfg), tmp_path / "a").fit()
    src = tmp_path / "a" / "encoder.safetensors"
    child = Pretrainer(pretrain_cfg("videomae", steps=2, init_from=str(src)), synthetic_dataset(pcfg), tmp_path / "b")
    loaded = _weights(src)
    assert all(torch.equal(child.model.encoder.state_dict()[k], v) for k, v in loaded.items())
    from_ckpt = Pretrainer(
        pretrain_cfg("videomae", steps=2, init_from=str(tmp_path / "a" / "checkpoints" / "last.pt")),
        synthetic_dataset(pcfg), tmp_path / "c",
    )  # fmt: skip
    assert all(torch.equal(from_ckpt.model.encoder.state_dict()[k], v) for k, v in loaded.items())


def test_gradient_accumulation_matches_a_large_batch(tmp_path):
    big = pretrain_cfg("videomae", steps=2, batch_size=4, accum_steps=1, clip_grad=None)
    small = pretrain_cfg("videomae", steps=2, batch_size=2, accum_steps=2, clip_grad=None)
    Pretrainer(big, synthetic_dataset(big), tmp_path / "big").fit()
    Pretrainer(small, synthetic_dataset(small), tmp_path / "small").fit()
    la, lb = _log(tmp_path / "big" / "log.csv"), _log(tmp_path / "small" / "log.csv")
    assert [float(r["loss"]) for r in la] == pytest.approx([float(r["loss"]) for r in lb], rel=1e-5)
    a, b = _weights(tmp_path / "big" / "encoder.safetensors"), _weights(tmp_path / "small" / "encoder.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
