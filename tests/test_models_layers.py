"""Tubelet patches, position tables and reconstruction targets against explicit formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from affectube.errors import UserError
from affectube.models.layers import (
    PatchEmbed3d,
    mask_index,
    patch_targets,
    patchify,
    sinusoid_table,
    take,
    token_grid,
    unpatchify,
)


@pytest.mark.parametrize("tubelet", [1, 2, 4])
def test_patchify_roundtrip_and_layout(tubelet):
    x = torch.randn(2, 3, 8, 16, 24)
    p = patchify(x, tubelet, 8)
    grid = (8 // tubelet, 2, 3)
    assert p.shape == (2, math.prod(grid), tubelet * 8 * 8 * 3)
    assert torch.equal(unpatchify(p, grid, tubelet, 8, 3), x)
    # token (t=1, h=1, w=2), channel-last layout (t p p c): the first value is pixel (c0, frame t*tubelet, row 8, col 16)
    token = (1 * 2 + 1) * 3 + 2
    if grid[0] > 1:
        assert p[0, token, 0] == x[0, 0, tubelet, 8, 16]
        assert p[0, token, 1] == x[0, 1, tubelet, 8, 16]


@pytest.mark.parametrize("tubelet", [1, 2, 4])
def test_visible_embedding_equals_conv3d_then_gather(tubelet):
    torch.manual_seed(0)
    embed = PatchEmbed3d(3, 32, tubelet, 8)
    x = torch.randn(2, 3, 8, 16, 16)
    mask = torch.zeros(2, (8 // tubelet) * 4, dtype=torch.bool)
    mask[0, ::2] = True
    mask[1, 1::2] = True
    index = mask_index(mask)
    full = embed(x)
    assert torch.allclose(embed.forward_visible(x, index.visible), full[~mask].reshape(2, -1, 32), atol=1e-5)


def test_mask_index_keeps_grid_order_and_rejects_ragged_masks():
    mask = torch.tensor([[True, False, True, False], [False, False, True, True]])
    index = mask_index(mask)
    assert index.visible.tolist() == [[1, 3], [0, 1]]
    assert index.masked.tolist() == [[0, 2], [2, 3]]
    tokens = torch.arange(8.0).reshape(2, 4, 1)
    assert take(tokens, index.masked)[..., 0].tolist() == [[0, 2], [6, 7]]
    with pytest.raises(UserError, match="same number"):
        mask_index(torch.tensor([[True, False], [True, True]]))


def test_sinusoid_table_matches_reference_formula():
    n, d = 7, 10
    ref = np.array([[pos / np.power(10000, 2 * (j // 2) / d) for j in range(d)] for pos in range(n)])
    ref[:, 0::2] = np.sin(ref[:, 0::2])
    ref[:, 1::2] = np.cos(ref[:, 1::2])
    assert torch.allclose(sinusoid_table(n, d)[0], torch.tensor(ref, dtype=torch.float32), atol=1e-6)


def test_targets_are_per_patch_per_channel_standardised_with_unbiased_std():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 4, 16, 16)
    t = patch_targets(x, 2, 8)  # [1, 2*2*2, 2*8*8*3]
    # token 5 = (t=1, h=0, w=1): frames 2-3, rows 0-7, cols 8-15
    block = x[0, :, 2:4, 0:8, 8:16]  # [C, 2, 8, 8]
    for c in range(3):
        v = block[c]
        expected = (v - v.mean()) / (v.std(unbiased=True) + 1e-6)  # [2, 8, 8]
        got = t[0, 5].reshape(2, 8, 8, 3)[..., c]
        assert torch.allclose(got, expected, atol=1e-5)
    # undoing the loader's normalisation first (VideoMAE): same as standardising the raw pixels
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.25, 0.3])
    normalised = (x - mean.view(1, 3, 1, 1, 1)) / std.view(1, 3, 1, 1, 1)
    assert torch.allclose(patch_targets(normalised, 2, 8, mean=mean, std=std), t, atol=1e-4)
    raw = patch_targets(x, 2, 8, normalize=False)
    assert torch.equal(raw, patchify(x, 2, 8))


def test_grid_errors_name_the_params():
    with pytest.raises(UserError, match="num_frames"):
        token_grid(15, 112, 2, 16)
    with pytest.raises(UserError, match="input_size"):
        token_grid(16, 100, 2, 16)
