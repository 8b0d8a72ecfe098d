"""Checkpoints whose width is not a published ViT size: the number of attention heads is not in
the weights, so it comes from the caller or the file's own config, never from width / 64."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from affectube.errors import DataError
from affectube.models import create_encoder
from affectube.models.checkpoints import import_checkpoint
from affectube.models.checkpoints.features import randomise

WIDTH, HEADS = 48, 3  # 48 / 64 < 1: no convention gives 3


@pytest.fixture(scope="module")
def source():
    """A random 3-head ViT of width 48, its weights in the VideoMAE fine-tuned layout (blocks.*, norm.*)."""
    torch.manual_seed(0)
    encoder = create_encoder("videomae", width=WIDTH, depth=1, num_heads=HEADS, patch=8, tubelet=2, input_size=16,
                             num_frames=4, norm_eps=1e-6).eval()
    randomise(encoder, 3)
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    x = torch.randn(1, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return state, x, encoder.forward_features(x)


def _import(path, **kw):
    encoder, report = import_checkpoint(path, input_size=16, num_frames=4, **kw)
    return encoder.eval(), report


def _features(encoder, x):
    with torch.no_grad():
        return encoder.forward_features(x)


def test_unnamed_heads_of_an_unpublished_width_are_an_error(source, tmp_path, one_thread):
    state, _, _ = source
    path = tmp_path / "plain.pth"
    torch.save({"model": state}, path)
    with pytest.raises(DataError, match=r"plain\.pth: the number of attention heads is ambiguous: the videomae-finetune "
                                        r"encoder is 48 wide.*finetune\.init_heads"):
        _import(path)


def test_heads_from_the_checkpoint_config_or_the_caller(source, tmp_path, one_thread):
    state, x, expected = source
    # the training scripts' saved args (VideoMAE/SVFAP: an argparse.Namespace), MARLIN's Lightning hyper_parameters
    for name, obj in (("args.pth", {"model": state, "args": argparse.Namespace(num_heads=HEADS, lr=1e-3)}),
                      ("marlin_like.pth", {"state_dict": state, "hyper_parameters": {"encoder_num_heads": HEADS}})):
        torch.save(obj, tmp_path / name)
        encoder, report = _import(tmp_path / name)
        assert encoder.spec.heads == HEADS and any("heads: 3 from the checkpoint's" in n for n in report.notes)
        assert float((_features(encoder, x) - expected).abs().max()) < 1e-5
    # given by the caller (finetune.init_heads): wins over the file; the heads matter for the features
    torch.save({"model": state}, tmp_path / "plain.pth")
    encoder, report = _import(tmp_path / "plain.pth", num_heads=HEADS)
    assert float((_features(encoder, x) - expected).abs().max()) < 1e-5
    wrong, report = _import(tmp_path / "args.pth", num_heads=6)
    assert wrong.spec.heads == 6 and any("although the checkpoint's the saved training config num_heads says 3" in n
                                         for n in report.notes)
    assert float((_features(wrong, x) - expected).abs().max()) > 1e-2
    # `affectube export --num-heads`: the transformers config.json then names them for the next import
    from affectube.cli import main

    assert main(["export", "--model", str(tmp_path / "plain.pth"), "--num-heads", str(HEADS), "--out-dir", str(tmp_path / "hf")]) == 0
    back, report = _import(tmp_path / "hf")
    assert back.spec.heads == HEADS and any("config.json num_attention_heads" in n for n in report.notes)
    assert float((_features(back, x) - expected).abs().max()) < 1e-4


def test_finetune_init_heads_reaches_the_fold_encoder(source, tmp_path, one_thread):
    from affectube.config import load_params
    from affectube.train.supervised import build_backbone

    state, x, expected = source
    torch.save({"model": state}, tmp_path / "plain.pth")
    cfg = load_params(Path(__file__).resolve().parents[1] / "params.yaml",
                      [f"finetune.init={tmp_path / 'plain.pth'}", f"finetune.init_heads={HEADS}"])
    ft = {**cfg["finetune"], "mode": "frozen"}
    encoder = build_backbone(ft, cfg["pretrain"], None)
    assert encoder.spec.heads == HEADS and encoder.spec.input_size == 224  # the checkpoint's own input size
    with pytest.raises(DataError, match="ambiguous"):
        build_backbone({**ft, "init_heads": None}, cfg["pretrain"], None)
