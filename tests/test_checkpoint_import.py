"""Released checkpoints -> affectube encoders (and back to the transformers layout).

The golden files in tests/data/checkpoints were written by benchmarks/verify_checkpoints.py
from the publishers' own model code (MCG-NJU/VideoMAE, OpenGVLab/VideoMAEv2, ControlNet/MARLIN,
sunlicai/SVFAP at the commits in benchmarks/results/checkpoints.json): random weights at a tiny
width saved in each publisher's layout, one clip, and the reference model's features.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from affectube.errors import DataError
from affectube.models import create_encoder, save_encoder
from affectube.models.checkpoints import detect, import_checkpoint, init_from_checkpoint, read_state
from affectube.models.checkpoints import posembed
from affectube.models.checkpoints.features import reference_features as features

DATA = Path(__file__).parent / "data" / "checkpoints"
CASES = json.loads((DATA / "cases.json").read_text())
SIZE, FRAMES = 32, 16


@pytest.fixture(scope="module")
def clip():
    return load_file(str(DATA / "input.safetensors"))["input"].float()


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_golden_features_match_the_publishers_code(case, clip, one_thread):
    encoder, report = import_checkpoint(DATA / case["file"], num_heads=case["num_heads"], input_size=SIZE, num_frames=FRAMES)
    expected = load_file(str(DATA / f"{case['case']}.expected.safetensors"))["expected"]
    ours = features(encoder.eval(), clip, case["features"])
    assert ours.shape == expected.shape
    assert float((ours - expected).abs().max()) < 1e-4
    assert report.format == case["case"].replace("videomaev2", "videomae")
    assert report.initialised == []  # every encoder weight came from the file
    assert report.preprocessing["mean"] and report.preprocessing["std"]


def test_report_names_what_was_dropped(one_thread):
    _, pre = import_checkpoint(DATA / "videomae_pretrain.pth", num_heads=2, input_size=SIZE, num_frames=FRAMES)
    assert any(k.startswith("decoder.") for k in pre.dropped) and "encoder_to_decoder.weight" in pre.dropped
    assert "mask_token" in pre.dropped and "blocks.0.attn.qkv.bias" in pre.loaded
    _, ft = import_checkpoint(DATA / "videomae_finetune.pth", num_heads=2, input_size=SIZE, num_frames=FRAMES)
    assert ft.dropped == ["head.bias", "head.weight"]
    _, marlin = import_checkpoint(DATA / "marlin_full.pt", num_heads=2, input_size=SIZE, num_frames=FRAMES)
    assert "enc_dec_proj.weight" in marlin.dropped and "pos_embed.weight" not in marlin.loaded
    assert marlin.preprocessing["mean"] == [0.0, 0.0, 0.0]  # MARLIN reads [0, 1] RGB
    assert any("sine-cosine" in n for n in marlin.notes)
    _, svfap = import_checkpoint(DATA / "svfap_pretrain.pth", num_heads=2, input_size=SIZE, num_frames=FRAMES)
    assert any("masked-token leak" in n for n in svfap.notes)


def test_format_is_detected_never_guessed(tmp_path):
    assert detect(read_state(DATA / "videomae_finetune.pth")[0]) == "videomae-finetune"
    bad = tmp_path / "other.pth"
    torch.save({"model": {"backbone.conv1.weight": torch.zeros(2, 2)}}, bad)
    with pytest.raises(DataError, match="unknown checkpoint layout.*backbone.conv1.weight"):
        import_checkpoint(bad)


def test_shape_mismatch_names_key_and_both_shapes(one_thread):
    # an encoder of params.yaml with 16-px patches cannot take the checkpoint's 8-px patch embedding
    encoder = create_encoder("videomae", width=32, depth=2, patch=16, tubelet=2, input_size=32, num_frames=16, num_heads=2)
    with pytest.raises(DataError, match=r"patch_embed\.proj\.weight: checkpoint \(32, 3, 2, 8, 8\) vs affectube \(32, 3, 2, 16, 16\)"):
        init_from_checkpoint(encoder, DATA / "videomae_pretrain.pth", num_heads=2)


def test_pretrain_init_from_a_released_checkpoint(clip, one_thread):
    from affectube.models import init_encoder_from

    # params.yaml's pretrain section gives the architecture (heads and eps as the reference's)
    encoder = create_encoder("videomae", width=32, depth=2, patch=8, tubelet=2, input_size=32, num_frames=16,
                             num_heads=2, norm_eps=1e-6)
    report = init_encoder_from(encoder, DATA / "videomae_pretrain.pth")
    assert report.format == "videomae-pretrain" and report.initialised == []
    expected = load_file(str(DATA / "videomae-pretrain.expected.safetensors"))["expected"]
    assert float((features(encoder.eval(), clip, "tokens") - expected).abs().max()) < 1e-4


def test_other_frame_count_and_learned_table(tmp_path, clip, one_thread):
    # fixed sine-cosine table: rebuilt for 8 frames
    enc, report = import_checkpoint(DATA / "videomae_finetune.pth", num_heads=2, input_size=SIZE, num_frames=8)
    assert enc.grid == (4, 4, 4) and any("rebuilt for grid (4, 4, 4)" in n for n in report.notes)
    assert enc(clip[:, :, :8]).shape == (1, 64, 32)
    # a learned table over (8, 4, 4), constant in time, interpolated to (4, 4, 4): each frame keeps its values
    state = torch.load(DATA / "videomae_finetune.pth", weights_only=True)["module"]
    frame = torch.randn(1, 1, 16, 32)
    state["pos_embed"] = frame.expand(1, 8, 16, 32).reshape(1, 128, 32).clone()
    path = tmp_path / "learned.pth"
    torch.save({"module": state}, path)
    enc, report = import_checkpoint(path, num_heads=2, input_size=SIZE, num_frames=8)
    assert enc.spec.pos_embed == "learned" and any("interpolated from grid (8, 4, 4) to (4, 4, 4)" in n for n in report.notes)
    assert torch.allclose(enc.pos_embed.weight.reshape(4, 16, 32), frame.reshape(1, 16, 32).expand(4, 16, 32), atol=1e-6)
    same = posembed.resize(state["pos_embed"], (8, 4, 4), (8, 4, 4))
    assert torch.equal(same, state["pos_embed"])


def test_export_then_import_transformers_layout(tmp_path, clip, one_thread):
    from affectube.cli import main
    from affectube.models.checkpoints import convert

    encoder = create_encoder("videomae", width=32, depth=2, patch=8, tubelet=2, input_size=32, num_frames=16).eval()
    with torch.no_grad():  # biases and norms away from their init, so a lost tensor shows
        for p in encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_encoder(tmp_path / "encoder.safetensors", encoder)
    assert main(["export", "--model", str(tmp_path / "encoder.safetensors"), "--out-dir", str(tmp_path / "hf")]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["VideoMAEModel"] and config["hidden_size"] == 32 and config["qkv_bias"]
    keys = set(load_file(str(tmp_path / "hf" / "model.safetensors")))
    assert "encoder.layer.1.attention.attention.q_bias" in keys and "layernorm.weight" in keys
    back, report = import_checkpoint(tmp_path / "hf")
    assert report.format == "transformers-videomae" and report.initialised == []
    with torch.no_grad():
        assert float((back.eval().forward_features(clip) - encoder.forward_features(clip)).abs().max()) < 1e-4
    assert convert(tmp_path / "hf")[0]["num_heads"] == encoder.spec.heads


def test_embed_writes_per_clip_features_with_times(realdata, tmp_path, one_thread):
    """`affectube embed` on a real video: the params' decode/face/crop, the encoder's own clip size."""
    import numpy as np
    import yaml

    from affectube.cli import main
    from affectube.config import load_params
    from affectube.embed import embed

    repo = Path(__file__).resolve().parents[1]
    cfg = load_params(repo / "params.yaml")
    cfg["decode"].update({"fps": 5, "max_side": 256})
    cfg["crop"].update({"size": 48})
    cfg["faces"].update({"backend": "mtcnn", "det_size": 160, "every_k": 4})
    cfg["pretrain"].update({"sample_stride": 1})  # 4 consecutive frames per clip: several clips per video
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(cfg))
    encoder = create_encoder("videomae", width=32, depth=1, patch=8, tubelet=2, input_size=32, num_frames=4)
    save_encoder(tmp_path / "encoder.safetensors", encoder)
    video = realdata / "videos" / "mead" / "M030_front_happy_level3_001.mp4"
    out = tmp_path / "emb"
    assert main(["embed", str(video), "--model", str(tmp_path / "encoder.safetensors"), "--params", str(params),
                 "--out-dir", str(out), "--hop", "4"]) == 0
    arrays = np.load(out / f"{video.stem}.embeddings.npz")
    feats, start, end = arrays["features"], arrays["start_time"], arrays["end_time"]
    assert feats.shape[1] == 32 and len(feats) == len(start) == len(end) > 2 and np.isfinite(feats).all()
    assert (np.diff(start) > 0).all() and (end > start).all()
    assert json.loads((out / "summary.json").read_text())["videos"][str(video)]["problem"] is None
    # the same clips through the Python API, all tokens: their mean is the CLI's feature
    tokens = embed([video], tmp_path / "encoder.safetensors", params=params, hop=4, pool="none")[str(video)]["features"]
    assert tokens.shape[1:] == (32, 32) and np.allclose(tokens.mean(1), feats, atol=1e-5)


def test_checkpoint_normalisation_reaches_the_clips(one_thread):
    """MARLIN reads [0, 1] RGB: its constants travel in the spec to the clip geometry fine-tuning
    and predict use (a fine-tuned model stores the spec)."""
    from affectube.train.supervised import clip_geometry

    encoder, _ = import_checkpoint(DATA / "marlin_full.pt", num_heads=2, input_size=SIZE, num_frames=FRAMES)
    geom = clip_geometry(encoder, {"num_frames": 8, "input_size": 64, "sample_stride": 2})
    assert geom == {"num_frames": FRAMES, "input_size": SIZE, "sample_stride": 2, "mean": [0.0] * 3, "std": [1.0] * 3}
    vm, _ = import_checkpoint(DATA / "videomae_pretrain.pth", num_heads=2, input_size=SIZE, num_frames=FRAMES)
    assert clip_geometry(vm, {"num_frames": 8, "input_size": 64, "sample_stride": 2})["mean"] == [0.485, 0.456, 0.406]


def test_finetune_init_names_a_checkpoint(tmp_path, one_thread):
    from affectube.config import load_params
    from affectube.train.supervised import build_backbone

    # width 32 is no published size: its heads are given (finetune.init_heads; tests/test_checkpoint_heads.py)
    ft = {"init": str(DATA / "videomae_finetune.pth"), "init_heads": 2, "mode": "finetune", "drop_path": 0.1, "backbone": "encoder"}
    encoder = build_backbone(ft, {}, ft["init"])
    assert encoder.spec.drop_path == 0.1 and encoder.spec.input_size == 224  # the checkpoint's own input size
    assert encoder.info["checkpoint"]["format"] == "videomae-finetune"
    cfg = load_params(Path(__file__).resolve().parents[1] / "params.yaml", [f"finetune.init={ft['init']}"])
    assert cfg["finetune"]["init"] == ft["init"]  # the schema takes a path


def test_imported_encoder_saves_and_reloads(tmp_path, clip, one_thread):
    """An imported encoder's spec (heads, eps, MLP ratio, normalisation) survives encoder.safetensors."""
    from affectube.models import load_encoder

    encoder, _ = import_checkpoint(DATA / "marlin_full.pt", num_heads=2, input_size=SIZE, num_frames=FRAMES)
    save_encoder(tmp_path / "encoder.safetensors", encoder)
    back = load_encoder(tmp_path / "encoder.safetensors")
    assert back.spec == encoder.spec and back.spec.norm_eps == 1e-5 and back.spec.input_std == (1.0, 1.0, 1.0)
    with torch.no_grad():
        assert torch.equal(back.eval().forward_features(clip), encoder.eval().forward_features(clip))
    # VideoMAEv2 ViT-g's MLP: 1408 x 48/11 = 6144 hidden units, the ratio read off the weights
    from affectube.models.encoder import vit_block

    assert vit_block(1408, 16, mlp_ratio=6144 / 1408).mlp.fc1.out_features == 6144


def test_chained_finetuning_plans_fold_to_fold(tmp_path, one_thread):
    """finetune.init: experiment:NAME -> fold k starts from NAME's fold k model (the DAG orders them),
    the report's lineage follows the chain, loops and unknown names are refused; the stage loads the
    encoder of a fine-tuned model.safetensors."""
    from safetensors.torch import save_file

    from affectube.config import load_params
    from affectube.dag import Dag
    from affectube.errors import ConfigError
    from affectube.lineage import lineage
    from affectube.train.supervised import build_backbone

    cfg = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    cfg["experiments"] = {"supervised": {}, "chained": {"finetune.init": "experiment:supervised", "finetune.mode": "frozen"},
                          "kfold": {"finetune.init": "experiment:supervised", "finetune.protocol": "group_kfold", "finetune.k": 2}}
    dag = Dag(cfg)
    wc = type("W", (), {"exp": "chained", "fold": "1"})()
    assert dag.pretrained_encoder(wc) == ["results/finetune/supervised/fold1/model.safetensors"]
    assert lineage(cfg, "chained") == ["pretraining", "experiment supervised", "experiment chained"]
    with pytest.raises(ConfigError, match="whose folds differ"):
        dag.pretrained_encoder(type("W", (), {"exp": "kfold", "fold": "0"})())
    loop = {"a": {"finetune.init": "experiment:b"}, "b": {"finetune.init": "experiment:a"}}
    with pytest.raises(ConfigError, match="loops: a <- b <- a"):
        lineage({**cfg, "experiments": loop}, "a")
    with pytest.raises(ConfigError, match="not in experiments"):
        lineage({**cfg, "experiments": {"x": {"finetune.init": "experiment:nope"}}}, "x")
    # the chained fold reads the encoder of the other experiment's fine-tuned model file
    encoder = create_encoder("videomae", width=32, depth=1, patch=8, tubelet=2, input_size=32, num_frames=4)
    state = {f"encoder.{k}": v.contiguous() for k, v in encoder.state_dict().items()}
    state["head.fc.weight"] = torch.zeros(3, 32)
    model = tmp_path / "model.safetensors"
    save_file(state, str(model), metadata={"format": "affectube-finetuned/1",
                                          "affectube.encoder_spec": json.dumps(encoder.spec.to_dict())})
    ft = {"init": "experiment:supervised", "mode": "frozen", "drop_path": 0.0, "backbone": "encoder"}
    loaded = build_backbone(ft, {}, str(model))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in encoder.state_dict().items())
    with pytest.raises(ConfigError, match="no --encoder"):
        build_backbone(ft, {}, None)


def test_finetune_stage_from_a_transformers_checkpoint(tmp_path, one_thread):
    """The stage end to end with finetune.init = a transformers directory (frozen: the encoder in the
    fold's model.safetensors is the checkpoint's, bit for bit), then exported back."""
    from test_finetune_stage import make_cfg, run_fold, write_stores

    from affectube.export import export_encoder, load_any_encoder

    source = create_encoder("videomae", width=32, depth=1, patch=16, tubelet=2, input_size=32, num_frames=4)
    export_encoder(source, tmp_path / "hf")
    table = write_stores(tmp_path / "stores", subjects=3, per=2, frames=8)
    cfg = make_cfg(init=str(tmp_path / "hf"), mode="frozen", epochs=1)
    from affectube.dag import Dag

    weights = Dag(cfg).pretrained_encoder(type("W", (), {"exp": "videomae", "fold": "0"})())
    assert weights == [str(tmp_path / "hf" / "model.safetensors")]  # what the rule passes as --encoder
    run_fold(cfg, table, tmp_path / "stores", tmp_path / "run" / "fold0", encoder=weights[0])
    saved = load_file(str(tmp_path / "run" / "fold0" / "model.safetensors"))
    imported, _ = import_checkpoint(tmp_path / "hf")
    assert all(torch.equal(saved[f"encoder.{k}"], v) for k, v in imported.state_dict().items())
    for model in (tmp_path / "run", tmp_path / "run" / "fold0"):  # as `affectube export --model RUN|FOLD_DIR` reads it
        assert load_any_encoder(model).spec == imported.spec
