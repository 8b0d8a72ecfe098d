"""The encoder API fine-tuning relies on, named sizes, safetensors round trip, FLOPs."""

from __future__ import annotations

import pytest
import torch
import yaml
from pretrain_util import TINY_BY_MODEL, pretrain_cfg, one_thread  # noqa: F401  (fixture)

from affectube.errors import DataError, UserError
from affectube.models import (
    SIZES,
    ModelSpec,
    build_encoder,
    build_pretrain_model,
    create_encoder,
    init_encoder_from,
    load_encoder,
    read_encoder_metadata,
    save_encoder,
)
from affectube.models.flops import encoder_cost
from conftest import REPO

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", sorted(TINY_BY_MODEL))
def test_encoder_api(name):
    encoder = create_encoder(name, **TINY_BY_MODEL[name])
    spec = encoder.spec
    assert encoder.embed_dim == 64 and encoder.grid == (4, 4, 4)
    x = torch.randn(2, 3, spec.num_frames, spec.input_size, spec.input_size)
    assert encoder.forward_features(x).shape == (2, 64, 64)
    ids = {n: encoder.layer_id(n) for n, _ in encoder.named_parameters()}
    assert all(0 <= i < encoder.num_layers for i in ids.values())
    assert ids["patch_embed.proj.weight"] == 0 and ids["norm.weight"] == encoder.num_layers - 1
    assert encoder.layer_id("encoder.blocks.0.mlp.fc1.weight") == 1  # a model-level prefix is accepted
    assert encoder.num_layers == len(encoder.blocks) + 2
    if name == "svfap":  # stage s's downsampling belongs to the stage's first block
        assert ids["temporal_downsamples.1.weight"] == encoder.stage_starts[2] + 1


def test_named_sizes_and_overrides():
    assert (SIZES["tiny"].width, SIZES["tiny"].depth) == (192, 12)
    assert [SIZES[s].width for s in ("small", "base", "large")] == [384, 768, 1024]
    spec = ModelSpec(size="base")
    assert (spec.dim, spec.heads, spec.encoder_depth) == (768, 12, 12)
    spec = ModelSpec(size="base", width=512, depth=3)
    assert (spec.dim, spec.heads, spec.encoder_depth) == (512, 8, 3)
    with pytest.raises(UserError, match="svfap"):
        ModelSpec.from_cfg({"model": "svfap", "num_frames": 4, "tubelet": 2, "svfap_stages": [1, 1, 1]})
    with pytest.raises(UserError, match="size"):
        ModelSpec.from_cfg({"size": "huge"})


def test_build_from_params_yaml():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    pcfg = {**params["pretrain"], "depth": 1, "decoder_depth": 1}
    model = build_pretrain_model(pcfg)
    assert model.spec.model == params["pretrain"]["model"]
    assert model.encoder.embed_dim == (params["pretrain"]["width"] or SIZES[params["pretrain"]["size"]].width)
    enc = build_encoder(pcfg, drop_path=0.1, in_chans=1)
    assert enc.patch_embed.proj.in_channels == 1 and enc.spec.drop_path == 0.1


@pytest.mark.parametrize("name", sorted(TINY_BY_MODEL))
def test_save_and_load_encoder(tmp_path, name):
    torch.manual_seed(0)
    model = build_pretrain_model(pretrain_cfg(name, pos_embed="learned"))
    path = tmp_path / "encoder.safetensors"
    save_encoder(path, model.encoder, info={"steps": 3})
    spec, info = read_encoder_metadata(path)
    assert spec == model.spec and info == {"steps": 3}
    loaded = load_encoder(path, drop_path=0.2)
    assert loaded.spec.drop_path == 0.2
    x = torch.randn(1, 3, 8, 32, 32)
    model.encoder.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(model.encoder.forward_features(x), loaded.forward_features(x))
    fresh = build_pretrain_model(pretrain_cfg(name, pos_embed="learned")).encoder
    init_encoder_from(fresh, path)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.encoder.state_dict().values()))
    # a wrong architecture is refused with the file name
    other = build_pretrain_model(pretrain_cfg(name, width=32, pos_embed="learned")).encoder
    with pytest.raises(DataError, match="encoder.safetensors"):
        init_encoder_from(other, path)


def test_load_encoder_rejects_other_files(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="x.safetensors"):
        load_encoder(bad)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(DataError, match="not an affectube encoder"):
        load_encoder(foreign)


def test_flops_match_published_figures():
    """VideoMAE ViT-B 80.7 GMACs / 86.2M and SVFAP-B (width 512) 43.5 GMACs / 77.6M at 16x160x160."""
    common = dict(size="base", num_frames=16, input_size=160)
    vit = encoder_cost(ModelSpec(model="videomae", **common))
    svfap = encoder_cost(ModelSpec(model="svfap", width=512, **common))
    assert vit["gmacs"] == pytest.approx(80.7, rel=0.01) and vit["params_m"] == pytest.approx(86.2, rel=0.01)
    assert svfap["gmacs"] == pytest.approx(43.5, rel=0.01) and svfap["params_m"] == pytest.approx(77.6, rel=0.01)
