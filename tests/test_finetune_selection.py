"""Model selection (:class:`affectube.train.finetune.Selector`): which epoch's weights a fold keeps.

An untrained model must never be kept: no epoch inside the warmup is selected, ties of a coarse
validation metric (a 6-video subject moves UAR in steps of 1/6) go to the lower validation loss,
NaN metrics or losses never crash nor win a comparison, and ``select_on: last`` keeps the last epoch.
"""

from __future__ import annotations

import math

import pytest
import torch

from affectube.train.finetune import Selector

NAN = math.nan


def ft(**kw) -> dict:
    return {"select_on": "main_metric", "warmup_epochs": 2, "epochs": 8, "patience": 100, **kw}


def run(sel: Selector, epochs) -> Selector:
    """``epochs``: (metric, val_loss) per epoch; the model's one weight is the epoch number."""
    model = torch.nn.Linear(1, 1, bias=False)
    for e, (value, loss) in enumerate(epochs, start=1):
        with torch.no_grad():
            model.weight.fill_(e)
        if sel.update(e, value, loss, model):
            break
    return sel


def kept(sel: Selector) -> int:
    return int(sel.state["weight"].item()) if sel.state is not None else -1


def test_ties_go_to_the_lower_validation_loss_and_never_to_a_warmup_epoch():
    # epoch 1 has the best UAR but is inside the warmup; epochs 3-5 tie on UAR, 5 has the lowest loss
    sel = run(Selector(ft(), "uar", True), [(0.9, 1.0), (0.5, 1.5), (0.5, 1.4), (0.5, 1.2), (0.5, 0.9), (0.33, 0.8)])
    assert sel.epoch == kept(sel) == 5 and sel.selected_on == "val_uar"


def test_a_lower_is_better_metric_and_val_loss_mode():
    sel = run(Selector(ft(), "rmse", True), [(NAN, 1.0), (0.1, 1.0), (0.3, 1.0), (0.2, 2.0)])
    assert sel.epoch == kept(sel) == 4  # lowest rmse after the warmup
    sel = run(Selector(ft(select_on="val_loss"), "uar", True), [(0.9, 0.1), (0.9, 0.1), (0.2, 0.5), (0.9, 0.4), (0.9, 0.6)])
    assert sel.epoch == 4 and sel.selected_on == "val_loss"


def test_nan_metric_ranks_below_any_value_and_is_never_compared_with_a_loss():
    # epoch 3: metric NaN with a tiny loss; epoch 4: a metric; the metric wins whatever the losses
    sel = run(Selector(ft(), "ccc", True), [(NAN, 5.0), (NAN, 5.0), (NAN, 0.01), (0.1, 9.0), (NAN, 0.001)])
    assert sel.epoch == kept(sel) == 4 and sel.selected_on == "val_ccc"
    sel = run(Selector(ft(), "ccc", True), [(NAN, 1.0), (NAN, 1.0), (NAN, 0.5), (NAN, 0.7)])
    assert sel.epoch == 3 and sel.selected_on.startswith("val_loss")  # no metric at all: the loss decides


def test_all_nan_keeps_weights_and_does_not_crash():
    sel = run(Selector(ft(), "uar", True), [(NAN, NAN)] * 8)
    assert sel.state is not None and 3 <= sel.epoch <= 8  # some post-warmup epoch's weights, never None


def test_last_and_no_validation_keep_the_last_epoch_without_early_stopping():
    for sel in (Selector(ft(select_on="last", patience=1), "uar", True), Selector(ft(patience=1), "uar", False)):
        run(sel, [(0.9, 0.1)] + [(0.1, 9.0)] * 7)
        assert sel.epoch == 8 and sel.state is None  # the weights in memory at the end are the last epoch's


def test_a_run_shorter_than_its_warmup_keeps_its_last_epoch():
    sel = run(Selector(ft(warmup_epochs=5, epochs=3), "uar", True), [(0.9, 0.1), (0.5, 0.2), (0.1, 0.3)])
    assert sel.epoch == kept(sel) == 3


def test_patience_counts_only_epochs_after_the_warmup():
    sel = run(Selector(ft(patience=2), "uar", True), [(0.1, 1.0)] * 2 + [(0.5, 1.0), (0.4, 1.0), (0.4, 1.0), (0.9, 0.1)])
    assert sel.epoch == 3 and sel.stale == 2  # stopped after epoch 5, before the (later) better epoch 6


@pytest.mark.parametrize("mode", ["main_metric", "val_loss"])
def test_exact_ties_go_to_the_later_epoch(mode):
    sel = run(Selector(ft(select_on=mode), "uar", True), [(0.5, 1.0)] * 6)
    assert sel.epoch == kept(sel) == 6


# ---------------------------------------------------------------- the recipe params reach the code


def test_augment_params_reach_the_transform():
    import numpy as np

    from affectube.clips.transforms import TubeTransform
    from affectube.train.finetune import augment_args

    aug = {"crop": False, "scale": [0.5, 1.0], "ratio": [0.75, 1.33], "flip": 1.0}
    args = augment_args({"augment": aug}, train=True)
    assert args == {"augment": True, "crop": False, "scale": (0.5, 1.0), "ratio": (0.75, 1.33), "flip": 1.0}
    assert augment_args({"augment": aug}, train=False) == {"augment": False}
    assert augment_args({"augment": {**aug, "flip": 0.0}}, train=True)["augment"] is False  # nothing left to do
    rng = np.random.default_rng(0)
    t = TubeTransform(64, True, (0.5, 1.0), (0.75, 1.33), 1.0, crop=False)
    assert all((w.y, w.x, w.h, w.w, w.flip) == (0, 0, 80, 80, True) for w in (t.window(80, 80, rng) for _ in range(20)))
    t = TubeTransform(64, True, (0.5, 0.6), (1.0, 1.0), 0.0, crop=True)
    assert all(0.5 * 6400 * 0.95 <= w.h * w.w <= 0.6 * 6400 * 1.05 for w in (t.window(80, 80, rng) for _ in range(20)))


def test_peak_lr_is_scaled_by_batch_over_256():
    from affectube.train.finetune import peak_lr

    assert peak_lr({"lr": 1e-3, "batch_size": 96, "lr_scale": "batch"}) == pytest.approx(1e-3 * 96 / 256)
    assert peak_lr({"lr": 1e-3, "batch_size": 96, "lr_scale": "none"}) == 1e-3


def test_fc_norm_head_reads_tokens_without_the_encoders_final_norm():
    from affectube.models.heads import LinearHead, Outputs, VideoModel

    from pretrain_util import TINY

    from affectube.models import build_encoder

    enc = build_encoder({**TINY, "model": "videomae", "pos_embed": "sinusoidal", "mask_ratio": 0.9, "svfap_stages": [1],
                         "svfap_tokens": 2, "drop_path": 0.0})
    x = torch.randn(2, 3, TINY["num_frames"], TINY["input_size"], TINY["input_size"])
    for pooled, expect in ((True, enc.forward_features(x, final_norm=False)), (False, enc.forward_features(x))):
        head = LinearHead(enc.embed_dim, Outputs(num_classes=3), init_scale=0.001, pooled_norm=pooled)
        model = VideoModel(enc, head).eval()
        with torch.no_grad():
            want = head.fc(head.norm(expect.mean(1)))
            torch.testing.assert_close(model(x)["logits"], want)
    assert 0 < head.fc.weight.std() < 0.001 * 0.04  # normal std 0.02, x 0.001


def test_test_clips_are_centred_in_equal_segments():
    from affectube.clips.sampling import segment_starts

    assert segment_starts(100, 20, 1) == [40]
    assert segment_starts(100, 20, 2) == [15, 65]  # centred at 25 and 75, not at the ends
    assert segment_starts(100, 20, 3) == [7, 40, 73]
    assert segment_starts(10, 20, 3) == [0, 0, 0]  # shorter than a clip: the only start
