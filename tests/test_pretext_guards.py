"""The training loop's guards for the DINO and audio pretexts (BYOL's are in tests/test_pretext_byol.py, the masked
method's in tests/test_pretrain_*.py): a NaN loss stops the run before the optimizer step and keeps the last good
checkpoint; resume from a checkpoint equals an uninterrupted run (audio; DINO's: tests/test_pretext_dino.py)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from pretext_util import synthetic_audio_stores
from pretrain_util import one_thread, pretrain_cfg  # noqa: F401  (fixture)
from test_pretext_dino import dino_cfg, multicrop

from affectube.train import checkpoint as ckpt
from affectube.train.pretext.audio import AudioMethod
from affectube.train.pretrain import Pretrainer, TrainingDiverged

pytestmark = pytest.mark.usefixtures("one_thread")


def audio_data(tmp_path, **over):
    pcfg = pretrain_cfg("videomae", method="audio", augment=True, sample_stride=1, **over)
    stores = sorted(str(p) for p in synthetic_audio_stores(tmp_path / "stores", n=6, frames=12, size=pcfg["input_size"]))
    return pcfg, lambda: AudioMethod().build_dataset(stores, pcfg, None)[0]


def poisoned(dataset, after: int):
    """``dataset`` (its own class, so the method accepts it) whose batches turn to NaN after ``after`` more
    ``to_device`` calls (one per optimizer step): a run that diverges at step ``after + 1``."""
    bad = copy.copy(dataset)
    calls = [0]

    def to_device(batch, device="cpu"):
        out = type(dataset).to_device(bad, batch, device)
        calls[0] += 1
        return tuple(t * float("nan") if calls[0] > after and t.is_floating_point() else t for t in out)

    bad.to_device = to_device
    return bad


@pytest.mark.parametrize("method", ["dino", "audio"])
def test_nan_loss_stops_every_pretext_with_the_last_good_checkpoint(method, tmp_path):
    if method == "dino":
        pcfg = dino_cfg(steps=6, checkpoint_every=2, batch_size=2)
        data = multicrop(pcfg)
    else:
        pcfg, make = audio_data(tmp_path, steps=6, checkpoint_every=2, batch_size=2)
        data = make()
    trainer = Pretrainer(pcfg, data, tmp_path / "run")
    trainer.dataset = poisoned(trainer.dataset, after=3)  # steps 1-3 fine, step 4 NaN
    with pytest.raises(TrainingDiverged, match=r"step 4: loss is nan.*last good checkpoint"):
        trainer.fit()
    assert ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2
    assert not (tmp_path / "run" / "encoder.safetensors").exists()


def test_audio_resume_equals_uninterrupted(tmp_path):
    pcfg, make = audio_data(tmp_path, steps=4, checkpoint_every=2)
    assert Pretrainer(pcfg, make(), tmp_path / "full").fit() == 0
    assert Pretrainer(pcfg, make(), tmp_path / "part").fit(stop_after=3) == 0
    torch.manual_seed(999)
    np.random.seed(999)
    assert Pretrainer(pcfg, make(), tmp_path / "part").fit() == 0
    a = ckpt.load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = ckpt.load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 4 and any(k.startswith("head.") for k in a["model"])
    assert a["model"].keys() == b["model"].keys() and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
