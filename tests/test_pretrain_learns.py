"""Pretraining learns: the masked-reconstruction loss on a fixed small set of real clips falls.

12 real MEAD clips (3 subjects x 4 emotions; :mod:`realclips_util`) at 64 px, 8 frames, through
the stage's own trainer (:class:`affectube.train.pretrain.Pretrainer`: the loader with random
clip starts and tube masks, config/realdata.yaml's pretraining recipe), one thread, a tiny model. Asserted:
the mean loss of the last ``WINDOW`` steps is at most ``1 - DROP[model]`` times that of the first
``WINDOW`` steps, within ``STEPS`` steps, for VideoMAE and for SVFAP. Measured values are next to
``DROP``; the assertions leave a margin, and a trainer that does not learn (lr 0, a broken mask or
target) fails them. About 25 s per model on one thread.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from realclips_util import mead_stores, pretrain

REPO = Path(__file__).resolve().parents[1]
STEPS, WINDOW = 200, 10
# the stated fractions: the loss falls by at least this much. Measured at this commit (1 thread):
# VideoMAE 1.052 -> 0.887 (-15.7%), SVFAP 1.055 -> 0.879 (-16.7%); the loss of a model that learns
# nothing stays at ~1.05 (per-patch normalised targets: predicting their mean gives 1).
DROP = {"videomae": 0.10, "svfap": 0.10}


@pytest.fixture(scope="module")
def mead12(realdata, tmp_path_factory):
    return mead_stores(realdata, tmp_path_factory.mktemp("mead12"), ["M030", "W009", "W011"], ["angry", "happy", "sad", "surprise"])


@pytest.mark.parametrize("model", sorted(DROP))
def test_masked_reconstruction_loss_falls_on_real_clips(model, mead12, tmp_path, one_thread):
    log = pretrain(mead12, tmp_path, model, STEPS)
    assert len(log) == STEPS and log["loss"].notna().all()
    first, last = log["loss"].head(WINDOW).mean(), log["loss"].tail(WINDOW).mean()
    assert last <= (1 - DROP[model]) * first, f"{model}: loss {first:.4f} -> {last:.4f} ({1 - last / first:.1%} drop)"
    assert (tmp_path / "encoder.safetensors").exists()
