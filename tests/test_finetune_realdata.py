"""Snakemake-driven LOSO fine-tuning on the real labelled clips (MEAD + CREMA-D: 4 subjects, 30 clips).

The whole chain runs for real: manifest (csv adapter on shared/realdata/labels.csv) ->
faces (MTCNN) -> HDF5 clip stores -> folds -> 4 fine-tuning jobs -> evaluate, on CPU with
a tiny model (low decode rate and crop size keep it to a few minutes on 2 cores).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import run_snakemake

pytestmark = pytest.mark.slow


def test_snakemake_loso_finetune_on_real_clips(realdata, workflow_copy):
    overrides = {
        "data": {"datasets": {"real": {"adapter": "csv", "root": str(realdata), "file": str(realdata / "labels.csv")}},
                 "pretrain": ["real"], "finetune": "real"},
        "decode": {"fps": 6, "max_side": 256},
        "faces": {"det_size": 160, "every_k": 3},
        "crop": {"size": 32},
        "pretrain": {"size": "tiny", "depth": 1, "width": 64, "input_size": 32, "num_frames": 4, "sample_stride": 1,
                     "patch": 16, "tubelet": 2},
        "finetune": {"protocol": "loso", "init": "scratch", "epochs": 2, "batch_size": 8, "test_clips": 1,
                     "patience": 2, "threads": 1},
        "experiments": {"scratch": {"finetune.init": "scratch"}},
    }
    wf = workflow_copy(overrides)
    run_snakemake(wf, "results/evaluate/scratch/metrics.json", timeout=1200)

    folds = json.loads((wf / "results/folds/scratch.json").read_text())
    assert [f["test"]["subjects"] for f in folds] == [["CREMAD_1001"], ["MEAD_M030"], ["MEAD_W009"], ["MEAD_W011"]]
    for f in folds:
        assert f["val"]["subjects"] and not set(f["val"]["subjects"]) & set(f["test"]["subjects"])
        assert not set(f["train"]["subjects"]) & set(f["test"]["subjects"])
    tested = []
    for k in range(4):
        d = wf / f"results/finetune/scratch/fold{k}"
        pred = pd.read_csv(d / "predictions.csv")
        assert set(pred["subject"]) == set(folds[k]["test"]["subjects"])
        assert set(pred["video_id"]) == set(folds[k]["test"]["video_ids"])
        tested += list(pred["video_id"])
        m = json.loads((d / "metrics.json").read_text())
        assert m["training"]["classes"] == ["angry", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
        assert 0 <= m["test"]["uar"] <= 1
        assert (d / "model.safetensors").stat().st_size > 0
        assert len(pd.read_csv(d / "log.csv")) >= 1
    assert len(tested) == 30  # every labelled clip is tested exactly once
    ev = json.loads((wf / "results/evaluate/scratch/metrics.json").read_text())
    assert ev["folds"] == 4 and ev["videos"] == 30 and ev["main_metric"] == "uar"
    assert len(pd.read_csv(wf / "results/evaluate/scratch/per_subject.csv")) == 4
