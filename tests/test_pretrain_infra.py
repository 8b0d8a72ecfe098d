"""Training infrastructure: optimizer groups and schedule, checkpoints, ranks, sampler."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from pretrain_util import pretrain_cfg, one_thread  # noqa: F401  (fixture)

from affectube.errors import DataError
from affectube.models import build_pretrain_model
from affectube.train import checkpoint as ckpt
from affectube.train.distributed import ResumableSampler, detect, first_host
from affectube.train.optim import build_optimizer, build_scheduler, param_groups, scaled_lr, warmup_cosine

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- optim
def test_weight_decay_groups():
    model = build_pretrain_model(pretrain_cfg("videomae", pos_embed="learned"))
    groups = param_groups(model, lr=1e-3, weight_decay=0.05)
    decayed = {n for g in groups if g["weight_decay"] > 0 for n in g["names"]}
    plain = {n for g in groups if g["weight_decay"] == 0 for n in g["names"]}
    assert "encoder.blocks.0.attn.qkv.weight" in decayed and "decoder.head.weight" in decayed
    for name in ("encoder.blocks.0.attn.qkv.bias", "encoder.norm.weight", "encoder.pos_embed.weight", "decoder.mask_token"):
        assert name in plain, name
    assert decayed | plain == {n for n, _ in model.named_parameters()}


def test_layer_decay_scales():
    model = build_pretrain_model(pretrain_cfg("videomae"))
    enc = model.encoder
    groups = param_groups(model, lr=1.0, weight_decay=0.05, layer_decay=0.5)
    scale = {n: g["lr_scale"] for g in groups for n in g["names"]}
    top = enc.num_layers - 1
    assert scale["encoder.patch_embed.proj.weight"] == pytest.approx(0.5**top)
    assert scale["encoder.blocks.1.mlp.fc1.weight"] == pytest.approx(0.5 ** (top - 2))
    assert scale["encoder.norm.weight"] == 1.0 and scale["decoder.head.weight"] == 1.0
    opt = build_optimizer(groups, lr=1.0)
    assert all(g["lr"] == pytest.approx(g["lr_scale"]) for g in opt.param_groups)
    assert opt.defaults["betas"] == (0.9, 0.95)


def test_schedule_warmup_then_cosine():
    assert scaled_lr(1.5e-4, 512) == pytest.approx(3e-4)
    assert [warmup_cosine(s, 10, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_cosine(4, 10, 4) == 1.0
    assert warmup_cosine(7, 10, 4) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(10, 10, 4, min_ratio=0.1) == pytest.approx(0.1)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p], "lr": 2.0, "lr_scale": 1.0}], lr=2.0)
    sched = build_scheduler(opt, total_steps=10, warmup_steps=4, lr=2.0, min_lr=0.2)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(0.5) and seen[3] == pytest.approx(2.0) and seen[-1] > 0.2


# ---------------------------------------------------------------- checkpoints
def test_rng_states_round_trip():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in NumPy's state
    state = ckpt.rng_state()
    before = (random.random(), np.random.standard_normal(), torch.rand(3))
    ckpt.set_rng_state(state)
    after = (random.random(), np.random.standard_normal(), torch.rand(3))
    assert before[0] == after[0] and before[1] == after[1] and torch.equal(before[2], after[2])


def test_checkpoint_is_weights_only_and_restores_everything(tmp_path):
    torch.manual_seed(0)
    model = build_pretrain_model(pretrain_cfg("videomae"))
    opt = build_optimizer(param_groups(model, 1e-3, 0.05), 1e-3)
    sched = build_scheduler(opt, 10, 2, 1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    x, mask = torch.randn(2, 3, 8, 32, 32), torch.zeros(2, 64, dtype=torch.bool)
    mask[:, :48] = True
    model.loss(x, mask)[0].backward()
    opt.step()
    sched.step()
    path = tmp_path / "ck" / "last.pt"
    ckpt.save_checkpoint(path, model=model, optimizer=opt, scheduler=sched, scaler=scaler, step=1, meta={"params_hash": "abc"})
    raw = torch.load(path, weights_only=True)  # nothing but tensors and plain values
    assert raw["step"] == 1 and raw["meta"]["params_hash"] == "abc"
    assert not list(tmp_path.joinpath("ck").glob(".*partial*"))
    model2 = build_pretrain_model(pretrain_cfg("videomae"))
    opt2 = build_optimizer(param_groups(model2, 1e-3, 0.05), 1e-3)
    sched2 = build_scheduler(opt2, 10, 2, 1e-3)
    assert ckpt.restore(ckpt.load_checkpoint(path), model=model2, optimizer=opt2, scheduler=sched2, scaler=scaler) == 1
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    assert sched2.last_epoch == 1 and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert all(torch.equal(s1[k]["exp_avg"], s2[k]["exp_avg"]) for k in s1)


def test_corrupt_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="last.pt"):
        ckpt.load_checkpoint(bad)


# ---------------------------------------------------------------- ranks and sampling
def test_rank_detection():
    assert detect({}).world_size == 1
    env = detect({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1234"})
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.source) == (1, 4, 1, "h", "torchrun")
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODELIST": "gpu[03-06,9]",
             "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0"}  # fmt: skip
    env = detect(slurm)
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.source) == (5, 8, 1, "gpu03", "slurm")
    assert env.master_port == 15000 + 4242
    batch_script = {k: v for k, v in slurm.items() if k != "SLURM_STEP_ID"}
    assert detect(batch_script).world_size == 1  # a batch script alone must not wait for 7 peers
    assert first_host("node7") == "node7" and first_host("a[1,3],b2") == "a1"


def test_sampler_shards_and_resumes():
    one = ResumableSampler(12, seed=5)
    it = iter(one)
    first_epoch = [next(it) for _ in range(12)]
    assert sorted(first_epoch) == list(range(12))  # epoch 0 codes are the indices
    assert all(12 <= next(it) < 24 for _ in range(12))  # epoch 1 codes carry the epoch
    ranks = [iter(ResumableSampler(12, rank=r, world_size=2, seed=5)) for r in range(2)]
    shards = [[next(r) for _ in range(6)] for r in ranks]
    assert sorted(shards[0] + shards[1]) == list(range(12))
    # global batch b of the 1-process run = the union of the ranks' batch b
    assert set(first_epoch[:4]) == set(shards[0][:2] + shards[1][:2])
    resumed = iter(ResumableSampler(12, seed=5, start=7))
    full = iter(ResumableSampler(12, seed=5))
    expected = [next(full) for _ in range(30)][7:]
    assert [next(resumed) for _ in range(23)] == expected
