"""Heads, the SS-VAERR ResNet-GRU baseline, frozen mode and seeded determinism (synthetic clips, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectube.models.heads import LinearHead, Outputs, TemporalGRUHead, steps
from affectube.train import losses as L
from affectube.train import supervised as S

TINY = {"model": "videomae", "size": "tiny", "depth": 1, "width": 64, "input_size": 32, "num_frames": 4, "sample_stride": 1,
        "tubelet": 2, "patch": 16, "decoder_width": 32, "decoder_depth": 1}
FT = {"mode": "finetune", "init": "scratch", "backbone": "encoder", "head": "linear", "drop_path": 0.1,
      "gru_hidden": 16, "head_dropout": 0.0, "lr": 1e-3, "weight_decay": 0.05, "layer_decay": 0.75, "epochs": 2,
      "warmup_epochs": 0, "lr_scale": "none", "pool_norm": "fc_norm", "head_init_scale": 0.001}


def test_steps_and_heads_shapes():
    tokens = torch.randn(2, 2 * 3 * 3, 8)
    grid = (2, 3, 3)
    s = steps(tokens, grid)
    assert s.shape == (2, 2, 8)
    torch.testing.assert_close(s[:, 1], tokens[:, 9:].mean(1))
    spec = Outputs(num_classes=4, num_targets=2, num_bins=5, target_range=(-1.0, 1.0))
    lin = LinearHead(8, spec)(tokens, grid)
    assert lin["logits"].shape == (2, 4) and lin["reg"].shape == (2, 1, 2) and lin["bins"].shape == (2, 1, 2, 5)
    gru = TemporalGRUHead(8, spec, hidden=6)(tokens, grid)
    assert gru["logits"].shape == (2, 4) and gru["reg"].shape == (2, 2, 2) and gru["bins"].shape == (2, 2, 2, 5)
    assert gru["reg"].abs().max() < 1  # squashed into target_range
    wide = LinearHead(8, Outputs(num_targets=1, target_range=(0.0, 10.0)))(tokens * 100, grid)["reg"]
    assert (wide > 0).all() and (wide < 10).all()


def test_to_frames_repeats_each_step_over_its_frames():
    reg = torch.arange(6.0).reshape(1, 3, 2)
    out = S.to_frames({"reg": reg}, 6)["reg"]
    assert out.shape == (1, 6, 2)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([0.0, 0, 2, 2, 4, 4]))


def test_resnet_gru_baseline():
    from affectube.models.resnet_gru import ResNetGRU

    torch.manual_seed(0)
    m = ResNetGRU(num_frames=4)
    assert m.frontend[0].in_channels == 1 and m.frontend[0].kernel_size == (5, 7, 7)
    assert m.gru.num_layers == 2 and m.gru.hidden_size == 256 and m.embed_dim == 256
    rgb = torch.randn(2, 3, 4, 32, 32)
    feats = m.forward_features(rgb)
    assert feats.shape == (2, 4, 256)
    gray = (rgb * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1, 1)).sum(1, keepdim=True)
    m.eval()
    torch.testing.assert_close(m.forward_features(rgb), m.forward_features(gray))
    ids = {n: m.layer_id(n) for n, _ in m.named_parameters()}
    assert min(ids.values()) == 0 and max(ids.values()) == m.num_layers - 1
    assert ids["trunk.0.0.conv1.weight"] == 1 and ids["trunk.3.0.conv1.weight"] == 4 and ids["gru.weight_hh_l1"] == 5


class Synthetic(torch.utils.data.Dataset):
    """Clips whose class is the sign of their mean brightness; continuous target = that mean."""

    def __init__(self, n=12, frames=4, size=32, seed=0):
        rng = np.random.default_rng(seed)
        self.level = rng.uniform(-1, 1, n).astype(np.float32)
        self.noise = rng.normal(0, 0.3, (n, 3, frames, size, size)).astype(np.float32)

    def __len__(self):
        return len(self.level)

    def __getitem__(self, i):
        lvl = self.level[i]
        return {"video": torch.from_numpy(self.noise[i] + lvl), "label": torch.tensor(int(lvl > 0)),
                "targets": torch.tensor([lvl]), "frame_targets": torch.full((4, 1), lvl),
                "times": torch.arange(4) / 25.0, "subject": f"s{i % 3}", "video_id": f"v{i}", "dataset": "syn", "clip": 0}


def _run(mode: str, kind: str = "categorical", head: str = "linear", losses=None, seed=0):
    from affectube.train.finetune import make_optimizer

    torch.manual_seed(seed)
    ft = {**FT, "mode": mode, "head": head}
    task = S.Task(kind, classes=["neg", "pos"], targets=["valence"], bins=4)
    encoder = S.build_backbone(ft, TINY, None)
    model = S.build_model(ft, task, encoder)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    loss_fn = L.CompositeLoss(losses or {"ce": 1.0}, kind, L.Bins(4), label_smoothing=0.1)
    g = torch.Generator().manual_seed(seed)
    dl = torch.utils.data.DataLoader(Synthetic(), batch_size=4, shuffle=True, generator=g)
    opt, sched = make_optimizer(model, ft, len(dl), mode == "frozen")
    for _ in range(2):
        S.train_epoch(model, dl, loss_fn, opt, sched, frozen=mode == "frozen")
    clips, frames, loss = S.predict(model, torch.utils.data.DataLoader(Synthetic(seed=1), batch_size=4), task, 0, loss_fn)
    return model, before, clips, frames, loss


def test_frozen_mode_leaves_encoder_bit_identical():
    model, before, clips, _, _ = _run("frozen")
    after = model.encoder.state_dict()
    assert set(before) == set(after)
    for k in before:
        assert torch.equal(before[k], after[k]), f"{k} changed in frozen mode"
    assert not any(p.requires_grad for p in model.encoder.parameters())
    # ... while the head did train, and fine-tune mode does change the encoder
    model_ft, before_ft, _, _, _ = _run("finetune")
    assert any(not torch.equal(before_ft[k], v) for k, v in model_ft.encoder.state_dict().items())


def test_frozen_resnet_gru_keeps_batchnorm_statistics():
    from affectube.train.finetune import make_optimizer

    torch.manual_seed(0)
    ft = {**FT, "mode": "frozen", "backbone": "resnet_gru"}
    task = S.Task("categorical", classes=["neg", "pos"])
    model = S.build_model(ft, task, S.build_backbone(ft, TINY, None))
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    dl = torch.utils.data.DataLoader(Synthetic(n=4), batch_size=2)
    opt, sched = make_optimizer(model, ft, len(dl), True)
    S.train_epoch(model, dl, L.CompositeLoss({"ce": 1.0}, "categorical", L.Bins(2)), opt, sched, frozen=True)
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(before[k], v), k


def test_same_seed_gives_identical_predictions_and_metrics():
    from affectube.eval.metrics import evaluate_table

    _, _, a, _, la = _run("finetune", seed=3)
    _, _, b, _, lb = _run("finetune", seed=3)
    assert la == lb
    assert a.equals(b)
    assert evaluate_table(a) == evaluate_table(b)
    _, _, c, _, _ = _run("finetune", seed=4)
    assert not a.equals(c)


def test_continuous_gru_head_writes_per_frame_predictions():
    _, _, clips, frames, loss = _run("finetune", kind="both", head="gru", losses={"ce": 1.0, "ccc": 0.5, "ncce": 0.25, "mse": 0.25})
    assert {"y_true", "y_pred", "prob_neg", "prob_pos", "true_valence", "pred_valence"} <= set(clips.columns)
    assert len(frames) == 12 * 4 and {"time", "true_valence", "pred_valence"} <= set(frames.columns)
    assert np.isfinite(loss)
    # the clip prediction is the mean of its frames' predictions
    per_video = frames.groupby("video_id")["pred_valence"].mean()
    np.testing.assert_allclose(clips.set_index("video_id")["pred_valence"][per_video.index], per_video, rtol=1e-5)
