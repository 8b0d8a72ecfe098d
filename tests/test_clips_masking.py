"""Tube masks: exact ratio per time step, constant across time, batched with the clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectube.clips.masking import TubeMaskGenerator, collate


@pytest.mark.parametrize("grid, ratio", [((8, 7, 7), 0.9), ((8, 14, 14), 0.75), ((4, 10, 10), 0.5), ((2, 3, 5), 0.33), ((1, 4, 4), 0.0)])
def test_exact_ratio_and_constant_over_time(grid, ratio):
    gen = TubeMaskGenerator(grid, ratio)
    t, h, w = grid
    masks = [gen(np.random.default_rng(s)) for s in range(20)]
    for m in masks:
        assert m.dtype == bool and m.shape == (t * h * w,)
        per_step = m.reshape(t, h * w)
        assert (per_step.sum(axis=1) == int(ratio * h * w)).all()
        assert (per_step == per_step[0]).all()  # the same spatial mask at every time step
    assert gen.num_masked == t * int(ratio * h * w)
    if 0 < int(ratio * h * w) < h * w:
        assert len({m.tobytes() for m in masks}) > 15  # random positions


def test_masks_are_uniform_over_positions():
    gen = TubeMaskGenerator((2, 6, 6), 0.5)
    rng = np.random.default_rng(0)
    freq = np.mean([gen(rng)[:36] for _ in range(4000)], axis=0)
    assert np.abs(freq - 0.5).max() < 0.05


def test_collate_batches_masks_with_clips():
    gen = TubeMaskGenerator((4, 2, 2), 0.5)
    items = [{"video": torch.zeros(3, 8, 4, 4), "label": i, "video_id": f"v{i}"} for i in range(3)]
    batch = collate(items, generator=gen, rng=np.random.default_rng(0))
    assert batch["video"].shape == (3, 3, 8, 4, 4) and batch["mask"].shape == (3, 16) and batch["mask"].dtype == torch.bool
    assert batch["video_id"] == ["v0", "v1", "v2"]
    assert (batch["mask"].view(3, 4, 4).sum(-1) == 2).all()
    with_masks = [{**it, "mask": torch.from_numpy(gen(np.random.default_rng(i)))} for i, it in enumerate(items)]
    again = collate(with_masks, generator=gen)
    assert torch.equal(again["mask"][1], torch.from_numpy(gen(np.random.default_rng(1))))


def test_bad_arguments():
    with pytest.raises(ValueError):
        TubeMaskGenerator((0, 2, 2), 0.5)
    with pytest.raises(ValueError):
        TubeMaskGenerator((2, 2, 2), 1.0)
