"""Scientific validity of every self-supervised model we ship: masked pixels must not leak.

With a fixed tube mask, changing only the pixels of masked tubelets must leave the
encoder's output and the decoder's predictions unchanged (bit for bit). The released
SVFAP pretraining code fails this (its visible tokens cross-attend to the embeddings of
all patches); the last test rebuilds that defect and checks the test catches it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pretrain_util import TINY_BY_MODEL, perturb_masked, one_thread  # noqa: F401  (fixture)

from affectube.models import available, create_model
from affectube.models.layers import mask_index
from affectube.clips.masking import TubeMaskGenerator

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(model, batch=2, ratio=0.75, seed=0):
    spec = model.spec
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, spec.in_chans, spec.num_frames, spec.input_size, spec.input_size, generator=g)
    rng = np.random.default_rng(seed)
    mask = TubeMaskGenerator(spec.grid, ratio).batch(batch, rng)
    return x, mask


def _outputs(model, x, mask):
    with torch.no_grad():
        return model.encoder.forward_features(x, mask), model(x, mask)


def test_every_registered_model_is_covered():
    assert set(available()) == set(TINY_BY_MODEL), "add the new model to pretrain_util.TINY_BY_MODEL so it is tested"


@pytest.mark.parametrize("pos_embed", ["sinusoidal", "learned"])
@pytest.mark.parametrize("tubelet", [1, 2])
@pytest.mark.parametrize("name", sorted(TINY_BY_MODEL))
def test_masked_pixels_do_not_change_outputs(name, tubelet, pos_embed):
    torch.manual_seed(0)
    model = create_model(name, **{**TINY_BY_MODEL[name], "tubelet": tubelet, "pos_embed": pos_embed}).eval()
    x, mask = _batch(model)
    spec = model.spec
    x2 = perturb_masked(x, mask, spec.tubelet, spec.patch, spec.grid)
    assert (x2 - x).abs().max() > 1.0  # the masked pixels really changed
    enc1, pred1 = _outputs(model, x, mask)
    enc2, pred2 = _outputs(model, x2, mask)
    assert torch.equal(enc1, enc2), f"{name}: encoder output depends on masked pixels"
    assert torch.equal(pred1, pred2), f"{name}: decoder predictions depend on masked pixels"
    # ... while the same change is visible to the unmasked encoder and to the targets
    with torch.no_grad():
        assert not torch.allclose(model.encoder.forward_features(x), model.encoder.forward_features(x2))
    assert not torch.allclose(model.targets(x, mask), model.targets(x2, mask))
    # the bool mask and its precomputed index give the same predictions
    with torch.no_grad():
        assert torch.equal(model(x, mask_index(mask)), pred1)


def test_visible_pixels_do_change_outputs():
    model = create_model("svfap", **TINY_BY_MODEL["svfap"]).eval()
    x, mask = _batch(model)
    spec = model.spec
    x2 = perturb_masked(x, ~mask, spec.tubelet, spec.patch, spec.grid)  # change the VISIBLE pixels
    enc1, pred1 = _outputs(model, x, mask)
    enc2, pred2 = _outputs(model, x2, mask)
    assert not torch.allclose(enc1, enc2) and not torch.allclose(pred1, pred2)


class _LeakyContext(torch.nn.Module):
    """The released SVFAP pretraining defect: the reverse block attends to ALL patch embeddings."""

    def __init__(self, block, owner):
        super().__init__()
        self.block, self.owner = block, owner

    def forward(self, x, context):
        return self.block(x, context=self.owner._all_tokens)


def test_invariance_check_catches_the_released_svfap_leak():
    torch.manual_seed(0)
    model = create_model("svfap", **TINY_BY_MODEL["svfap"]).eval()
    enc = model.encoder
    stages = enc.spec.svfap_stages
    for s in range(1, len(stages)):
        last = enc.stage_starts[s] + stages[s] - 1
        enc.blocks[last] = _LeakyContext(enc.blocks[last], enc)
    original_embed = enc.embed

    def embed(x, index):
        enc._all_tokens = enc.patch_embed(x) + enc.pos_embed(x.shape[0])
        return original_embed(x, index)

    enc.embed = embed
    x, mask = _batch(model)
    spec = model.spec
    x2 = perturb_masked(x, mask, spec.tubelet, spec.patch, spec.grid)
    enc1, pred1 = _outputs(model, x, mask)
    enc2, pred2 = _outputs(model, x2, mask)
    assert (enc1 - enc2).abs().max() > 1e-4
    assert (pred1 - pred2).abs().max() > 1e-4
