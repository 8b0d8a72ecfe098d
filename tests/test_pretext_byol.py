"""BYOL for video (``pretrain.method: byol``): the EMA update and its momentum schedule against their
direct formulas, the update wired into the training loop, resume, NaN guard, the saved encoder.
The real-clip learning/no-collapse test is in tests/test_pretext_learns.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from pretext_util import synthetic_views
from pretrain_util import one_thread, pretrain_cfg  # noqa: F401  (fixture)

from affectube.models import load_encoder
from affectube.train import checkpoint as ckpt
from affectube.train.pretext.ema import cosine_momentum, ema_update, frozen_copy
from affectube.train.pretrain import Pretrainer, TrainingDiverged

pytestmark = pytest.mark.usefixtures("one_thread")
HEADS = {"head_hidden": 32, "head_dim": 16}


def byol_cfg(**over):
    return pretrain_cfg("videomae", method="byol", augment=True, **{**HEADS, **over})


def test_cosine_momentum_is_the_direct_formula():
    base, total = 0.99, 40
    for k in range(total + 1):
        direct = 1 - (1 - base) * (math.cos(math.pi * k / total) + 1) / 2
        assert cosine_momentum(k, total, base) == pytest.approx(direct, abs=1e-15)
    assert cosine_momentum(0, total, base) == pytest.approx(base)
    assert cosine_momentum(total // 2, total, base) == pytest.approx((1 + base) / 2)
    assert cosine_momentum(total, total, base) == pytest.approx(1.0)
    assert cosine_momentum(total + 5, total, base) == pytest.approx(1.0)  # past the end: stays at 1


def test_ema_update_is_the_direct_formula():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.Linear(7, 3))
    target = frozen_copy(online)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(torch.randn_like(p))
        online(torch.randn(4, 5))  # moves the online BatchNorm's running statistics
    before = {k: v.clone() for k, v in target.state_dict().items()}
    m = 0.9
    ema_update(target, online, m)
    on = online.state_dict()
    for name, _ in online.named_parameters():
        assert torch.allclose(target.state_dict()[name], m * before[name] + (1 - m) * on[name], atol=1e-7), name
    for name, _ in online.named_buffers():
        assert torch.equal(target.state_dict()[name], on[name]), name  # buffers are copied
    assert not any(p.requires_grad for p in target.parameters())


def test_the_training_loop_moves_the_target_by_the_scheduled_momentum(tmp_path):
    pcfg = byol_cfg(steps=5, checkpoint_every=1, ema_momentum=0.9)
    trainer = Pretrainer(pcfg, synthetic_views(pcfg), tmp_path)
    target0 = {k: v.clone() for k, v in trainer.model.target_encoder.state_dict().items()}
    online0 = trainer.model.encoder.state_dict()
    assert all(torch.equal(target0[k], online0[k]) for k in target0)  # the target starts as the online copy
    assert trainer.fit(stop_after=2) == 0
    two = ckpt.load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert two["step"] == 2
    state = two["model"]
    # the same run stopped after step 1: the online and target weights after step 1
    first = Pretrainer(pcfg, synthetic_views(pcfg), tmp_path / "one")
    assert first.fit(stop_after=1) == 0
    s1 = ckpt.load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")["model"]
    m0, m1 = cosine_momentum(0, 5, 0.9), cosine_momentum(1, 5, 0.9)
    for k, v in target0.items():
        if not v.is_floating_point() or k.endswith("running_mean") or k.endswith("running_var"):
            continue
        t1 = m0 * v + (1 - m0) * s1[f"encoder.{k}"]
        assert torch.allclose(s1[f"target_encoder.{k}"], t1, atol=1e-6), k
        t2 = m1 * t1 + (1 - m1) * state[f"encoder.{k}"]
        assert torch.allclose(state[f"target_encoder.{k}"], t2, atol=1e-6), k
    assert not torch.equal(state["encoder.patch_embed.proj.weight"], state["target_encoder.patch_embed.proj.weight"])


def test_resume_equals_uninterrupted_and_the_encoder_loads(tmp_path):
    pcfg = byol_cfg(steps=4, checkpoint_every=2)
    assert Pretrainer(pcfg, synthetic_views(pcfg), tmp_path / "full").fit() == 0
    assert Pretrainer(pcfg, synthetic_views(pcfg), tmp_path / "part").fit(stop_after=3) == 0
    torch.manual_seed(999)
    np.random.seed(999)
    assert Pretrainer(pcfg, synthetic_views(pcfg), tmp_path / "part").fit() == 0
    a = ckpt.load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    b = ckpt.load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["model"]
    assert any(k.startswith("target_encoder.") for k in a)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    enc = load_encoder(tmp_path / "full" / "encoder.safetensors")  # what finetune reads: the online encoder alone
    assert all(torch.equal(v, a[f"encoder.{k}"]) for k, v in enc.state_dict().items())
    assert enc.info["method"] == "byol" and (tmp_path / "full" / "reconstruction.png").stat().st_size > 0  # the views figure


class _PoisonAfter(torch.utils.data.Dataset):
    """Synthetic clips that turn to NaN from the ``after``-th read on (a diverging run)."""

    def __init__(self, after):
        from synthetic_clips import SyntheticClips

        self.clips, self.after, self.reads = SyntheticClips(16, frames=8, size=32), after, 0

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        self.reads += 1
        video = self.clips[i]["video"]
        return video * float("nan") if self.reads > self.after else video


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    from affectube.train.pretext.views import ViewClips

    pcfg = byol_cfg(steps=6, checkpoint_every=2, batch_size=2)
    data = ViewClips(_PoisonAfter(2 * (1 + 2 * 3)), views=2, seed=0)  # 1 probe read + 3 steps of 2 clips, 2 views each
    with pytest.raises(TrainingDiverged, match=r"step 4: loss is nan.*last good checkpoint"):
        Pretrainer(pcfg, data, tmp_path).fit()
    assert ckpt.load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 2
