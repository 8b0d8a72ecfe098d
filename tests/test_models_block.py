"""affectube's transformer Block and DropPath match timm's (layout and numerics), and the
encoders build them exactly as before (timm's ``vision_transformer.Block``, same options)."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn as nn
from pretrain_util import one_thread  # noqa: F401  (fixture)

from affectube.models.block import Block, DropPath
from affectube.models.encoder import vit_block

pytestmark = pytest.mark.usefixtures("one_thread")


def _timm_block(dim, heads, **kwargs):
    from timm.models.vision_transformer import Block as TimmBlock

    return TimmBlock(dim, heads, **kwargs)


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


# every option the encoders pass: vit_block -> Block(dim, heads, mlp_ratio, qkv_bias=True, drop_path, norm_layer)
CASES = [
    dict(dim=48, heads=3, mlp_ratio=4.0, eps=1e-5),
    dict(dim=32, heads=2, mlp_ratio=6144 / 1408, eps=1e-6),  # a ratio read off ViT-g's weights (int() of it)
    dict(dim=64, heads=4, mlp_ratio=2.0, eps=1e-6),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"d{c['dim']}-h{c['heads']}")
def test_block_matches_timm(case):
    dim, heads, ratio, eps = case["dim"], case["heads"], case["mlp_ratio"], case["eps"]
    norm = partial(nn.LayerNorm, eps=eps)
    kw = dict(mlp_ratio=ratio, qkv_bias=True, norm_layer=norm)
    for drop_path in (0.0, 0.2):
        torch.manual_seed(0)
        theirs = _timm_block(dim, heads, drop_path=drop_path, **kw)
        torch.manual_seed(0)
        ours = Block(dim, heads, drop_path=drop_path, **kw)
        assert _shapes(ours) == _shapes(theirs)  # same names and shapes (saved encoders, importers)
        assert list(ours.state_dict()) == list(theirs.state_dict())  # same order
        # the same module creation order: the same default init from the same seed
        for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
            assert torch.equal(a, b), name
        assert type(ours.drop_path1).__name__ == type(theirs.drop_path1).__name__  # DropPath only when > 0
        with torch.no_grad():  # random weights (LayerNorm affine and biases too), then load into ours
            for p in theirs.parameters():
                p.normal_(0, 0.2)
        ours.load_state_dict(theirs.state_dict(), strict=True)
        x = torch.randn(3, 10, dim)
        for train in ((True,) if drop_path == 0 else ()) + (False,):
            ours.train(train), theirs.train(train)
            a, b = ours(x), theirs(x)
            assert (a - b).abs().max().item() < 1e-6, (drop_path, train)
        if drop_path == 0:  # gradients agree too
            ours.train(), theirs.train()
            ga = torch.autograd.grad(ours(x).square().sum(), list(ours.parameters()))
            gb = torch.autograd.grad(theirs(x).square().sum(), list(theirs.parameters()))
            for (name, _), u, v in zip(ours.named_parameters(), ga, gb):
                assert torch.allclose(u, v, atol=1e-5, rtol=1e-5), name


def test_vit_block_builds_what_timm_built():
    """``vit_block``'s options, as the encoders used them with timm's Block: eps, qkv bias, hidden width."""
    block = vit_block(48, 3, drop_path=0.1, mlp_ratio=4.0, eps=1e-6)
    ref = _timm_block(48, 3, mlp_ratio=4.0, qkv_bias=True, drop_path=0.1, norm_layer=partial(nn.LayerNorm, eps=1e-6))
    assert _shapes(block) == _shapes(ref)
    assert block.norm1.eps == block.norm2.eps == 1e-6 and vit_block(48, 3).norm1.eps == 1e-5
    assert block.attn.qkv.bias is not None and block.drop_path1.drop_prob == 0.1
    assert isinstance(vit_block(48, 3).drop_path1, nn.Identity)


def test_drop_path_matches_timm():
    from timm.layers import DropPath as TimmDropPath

    x = torch.randn(64, 5, 8)
    for p in (0.0, 0.3):
        ours, theirs = DropPath(p), TimmDropPath(p)
        torch.manual_seed(1)
        a = ours(x)
        torch.manual_seed(1)
        b = theirs(x)
        assert torch.equal(a, b), p
        ours.eval(), theirs.eval()
        assert torch.equal(ours(x), x) and torch.equal(theirs(x), x)
    # in training it drops whole samples and rescales the kept ones by 1 / keep
    out = DropPath(0.5)(torch.ones(400, 3))
    kept = out[:, 0] != 0
    assert torch.all(out[kept] == 2.0) and torch.all(out[~kept] == 0.0) and 100 < kept.sum() < 300
