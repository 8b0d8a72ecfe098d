"""Live round trip against Hugging Face ``transformers`` (in the lock, envs/requirements.txt), offline.

A random-weight ``VideoMAEModel`` built from a tiny ``VideoMAEConfig`` -> ``save_pretrained`` ->
affectube's checkpoint import -> ``affectube export`` -> ``VideoMAEModel.from_pretrained``: the
features agree at every step (max abs difference < 1e-4 in fp32). And the other direction: an
encoder that affectube built (its own LayerNorm eps) exported and loaded by transformers.
benchmarks/verify_checkpoints.py --transformers does the same at the benchmark's sizes.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers/huggingface_hub read it
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import VideoMAEConfig, VideoMAEImageProcessor, VideoMAEModel  # noqa: E402

from affectube.cli import main  # noqa: E402
from affectube.models import create_encoder, save_encoder  # noqa: E402
from affectube.models.checkpoints import import_checkpoint  # noqa: E402
from affectube.models.checkpoints.features import randomise  # noqa: E402

WIDTH, DEPTH, HEADS, PATCH, SIZE, FRAMES, TUBELET = 32, 2, 2, 8, 32, 4, 2
TOL = 1e-4


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def hf_tokens(model: VideoMAEModel, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():  # transformers takes (B, T, C, H, W), affectube (B, C, T, H, W)
        return model(pixel_values=x.transpose(1, 2)).last_hidden_state


def ours(encoder, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return encoder.eval().forward_features(x)


def from_pretrained(directory) -> VideoMAEModel:
    model, info = VideoMAEModel.from_pretrained(directory, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], (directory, info)
    return model.eval()


@pytest.fixture()
def clip():
    return torch.randn(1, 3, FRAMES, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def test_transformers_import_export_reload_same_features(tmp_path, clip, one_thread):
    assert transformers.__version__.split(".")[0] == "5"
    torch.manual_seed(0)
    cfg = VideoMAEConfig(image_size=SIZE, patch_size=PATCH, num_channels=3, num_frames=FRAMES, tubelet_size=TUBELET,
                         hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                         intermediate_size=4 * WIDTH, qkv_bias=True, use_mean_pooling=False, layer_norm_eps=1e-6)
    hf = VideoMAEModel(cfg).eval()
    randomise(hf, 1)
    ref = hf_tokens(hf, clip)
    assert ref.shape == (1, (FRAMES // TUBELET) * (SIZE // PATCH) ** 2, WIDTH)
    src = tmp_path / "hf_src"
    hf.save_pretrained(src)

    # transformers -> affectube
    encoder, report = import_checkpoint(src)
    assert report.format == "transformers-videomae" and report.initialised == [] and report.dropped == []
    assert (encoder.spec.dim, encoder.spec.heads, encoder.spec.input_size, encoder.spec.num_frames) == (WIDTH, HEADS, SIZE, FRAMES)
    assert float((ours(encoder, clip) - ref).abs().max()) < TOL

    # affectube export (the CLI, reading the transformers directory) -> transformers
    dst = tmp_path / "hf_export"
    assert main(["export", "--model", str(src), "--out-dir", str(dst)]) == 0
    back = from_pretrained(dst)
    assert back.config.hidden_size == WIDTH and back.config.num_frames == FRAMES
    again = hf_tokens(back, clip)
    assert float((again - ref).abs().max()) < TOL
    assert float((again - ours(encoder, clip)).abs().max()) < TOL
    processor = VideoMAEImageProcessor.from_pretrained(dst)
    assert list(processor.image_mean) == list(report.preprocessing["mean"])
    assert list(processor.image_std) == list(report.preprocessing["std"])

    # a wrong mapping would show: one tensor perturbed in the export, the features move
    weights = dst / "model.safetensors"
    from safetensors.torch import load_file, save_file

    state = load_file(str(weights))
    state["encoder.layer.1.attention.attention.v_bias"] += 0.5
    save_file(state, str(weights), metadata={"format": "pt"})
    assert float((hf_tokens(from_pretrained(dst), clip) - ref).abs().max()) > 10 * TOL


def test_affectube_encoder_exported_to_transformers(tmp_path, clip, one_thread):
    """An encoder affectube built and trained (blocks' LayerNorm eps 1e-5, final 1e-6) through
    encoder.safetensors -> `affectube export` -> transformers: transformers has one layer_norm_eps,
    so the final norm's eps moves by 9e-6 (features ~1e-5 apart, inside the tolerance)."""
    encoder = create_encoder("videomae", width=WIDTH, depth=DEPTH, patch=PATCH, tubelet=TUBELET, input_size=SIZE,
                             num_frames=FRAMES)
    randomise(encoder, 2)
    save_encoder(tmp_path / "encoder.safetensors", encoder)
    assert main(["export", "--model", str(tmp_path / "encoder.safetensors"), "--out-dir", str(tmp_path / "hf")]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["layer_norm_eps"] == encoder.spec.block_eps
    theirs = hf_tokens(from_pretrained(tmp_path / "hf"), clip)
    assert float((theirs - ours(encoder, clip)).abs().max()) < TOL
