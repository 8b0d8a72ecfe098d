"""DINO for video (``pretrain.method: dino``): centering, sharpening and the loss against their definitions,
multi-crop views, resume. The real-clip learning / no-collapse / teacher-entropy test is in
tests/test_pretext_learns.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pretrain_util import one_thread, pretrain_cfg  # noqa: F401  (fixture)

from affectube.models import create_encoder, ModelSpec
from affectube.train import checkpoint as ckpt
from synthetic_clips import SyntheticClips
from affectube.train.pretext.dino import DINO, dino_loss, entropy, teacher_probs
from affectube.train.pretext.multicrop import MultiCropClips
from affectube.train.pretrain import Pretrainer

pytestmark = pytest.mark.usefixtures("one_thread")


def dino_cfg(**over):
    return pretrain_cfg("videomae", method="dino", augment=True, **{"head_hidden": 32, "head_dim": 16, "dino_out": 20, "dino_local": 1, **over})


def multicrop(pcfg, n=16):
    g = SyntheticClips(n, frames=pcfg["num_frames"], size=pcfg["input_size"])
    local = SyntheticClips(n, frames=pcfg["num_frames"] // 2, size=pcfg["input_size"], seed=1)
    return MultiCropClips(g, local, 2, pcfg["dino_local"], seed=pcfg["seed"])


def test_teacher_probs_and_loss_are_their_definitions():
    g = torch.Generator().manual_seed(0)
    t, c, s = torch.randn(6, 5, generator=g), torch.randn(1, 5, generator=g), torch.randn(9, 5, generator=g)
    p = teacher_probs(t, c, 0.04)
    direct = torch.exp((t - c) / 0.04) / torch.exp((t - c) / 0.04).sum(-1, keepdim=True)
    assert torch.allclose(p, direct, atol=1e-6)
    teachers, students = list(p.split(3)), list(s.split(3))  # 2 global (teacher) views, 3 student views of 3 clips
    pairs = [(i, j) for i in range(2) for j in range(3) if i != j]
    expected = sum(-(teachers[i] * torch.log_softmax(students[j] / 0.1, -1)).sum(-1).mean() for i, j in pairs) / len(pairs)
    assert torch.allclose(dino_loss(teachers, students, 0.1), expected)
    assert entropy(torch.full((2, 8), 1 / 8)) == pytest.approx(np.log(8)) and float(entropy(torch.eye(3))) == pytest.approx(0, abs=1e-6)


def test_centering_is_the_ema_of_the_teacher_logits():
    pcfg = dino_cfg()
    torch.manual_seed(0)
    model = DINO(create_encoder("videomae", ModelSpec.from_cfg(pcfg)), 32, 16, 20, center_momentum=0.9)
    with torch.no_grad():
        model.center.normal_()
    views = [torch.randn(3, 3, 8, 32, 32) for _ in range(3)]
    old = model.center.clone()
    with torch.no_grad():
        t = model.teacher(torch.cat(views[:2]))
        model(*views)
    assert torch.allclose(model.center, 0.9 * old + 0.1 * t.mean(0, keepdim=True), atol=1e-6)
    model.eval()  # no update outside training
    before = model.center.clone()
    with torch.no_grad():
        model(*views)
    assert torch.equal(model.center, before)


def test_local_views_cover_half_the_time_at_the_global_shape():
    pcfg = dino_cfg()
    data = multicrop(pcfg)
    views = data.clips([0, 1])
    assert len(views) == 3 and all(v.shape == (2, 3, 8, 32, 32) for v in views)
    local = views[2]
    assert torch.equal(local[:, :, 0::2], local[:, :, 1::2])  # every local frame shown twice


def test_resume_equals_uninterrupted_and_the_center_is_kept(tmp_path):
    pcfg = dino_cfg(steps=4, checkpoint_every=2)
    assert Pretrainer(pcfg, multicrop(pcfg), tmp_path / "full").fit() == 0
    assert Pretrainer(pcfg, multicrop(pcfg), tmp_path / "part").fit(stop_after=3) == 0
    torch.manual_seed(999)
    np.random.seed(999)
    assert Pretrainer(pcfg, multicrop(pcfg), tmp_path / "part").fit() == 0
    a = ckpt.load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    b = ckpt.load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["model"]
    assert a["center"].abs().sum() > 0 and any(k.startswith("teacher_encoder.") for k in a)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "full" / "reconstruction.png").stat().st_size > 0  # the global and local views


def test_an_experiment_with_another_pretext_gets_its_own_pretraining():
    """Pretexts compared as experiments: an experiment overriding pretrain.method is fine-tuned from a
    pretraining of its own (rule pretrain_experiment); operational pretrain keys do not trigger one."""
    from types import SimpleNamespace

    from affectube.config import load_params
    from affectube.dag import Dag

    cfg = load_params()
    cfg["experiments"] = {"videomae": {}, "dino": {"pretrain.method": "dino"}, "workers": {"pretrain.num_workers": 2},
                          "dino_frozen": {"pretrain.method": "dino", "finetune.mode": "frozen"}}
    dag = Dag(cfg)
    enc = {e: dag.pretrained_encoder(SimpleNamespace(exp=e, fold="0")) for e in cfg["experiments"]}
    assert enc["videomae"] == enc["workers"] == [f"{dag.results}/pretrain/encoder.safetensors"]
    assert enc["dino"] == enc["dino_frozen"] == [f"{dag.results}/pretrain_exp/method=dino/encoder.safetensors"]  # shared
    assert dag.pretrain_experiment("method=dino") == "dino"
    import json

    assert json.loads(dag.exp_cfg(dag.pretrain_experiment("method=dino"), "data", "pretrain"))["pretrain"]["method"] == "dino"
