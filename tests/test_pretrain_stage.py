"""The ``pretrain`` stage: CLI on clip stores, and Snakemake on the real GRID videos."""

from __future__ import annotations

import json

import pytest
import torch
from clips_util import make_stores
from pretrain_util import TINY, one_thread  # noqa: F401  (fixture)

from affectube.cli import main as cli_main
from affectube.models import load_encoder
from conftest import run_snakemake

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(data: dict, **pretrain) -> str:
    p = {**TINY, "num_frames": 4, "sample_stride": 2, "mask_ratio": 0.75, "batch_size": 2, "steps": 2,
         "warmup_steps": 1, "checkpoint_every": 1, "recon_clips": 1, **pretrain}  # fmt: skip
    # the data section whole, as the rule passes it (datasets: required; this stage reads pretrain/finetune/transductive)
    datasets = {d: {"adapter": "folder", "root": f"videos/{d}"} for d in (*data["pretrain"], data["finetune"])}
    return json.dumps({"data": {"datasets": datasets, **data}, "pretrain": p})


def test_cli_trains_on_clip_stores(tmp_path):
    stores = [str(p) for p in make_stores(tmp_path / "clips" / "d", n_videos=4, n=20, size=32)]
    out = tmp_path / "pretrain"
    data = {"pretrain": ["d"], "finetune": "other", "transductive": False}
    assert cli_main(["pretrain", "--cfg", _cfg(data), "--stores", *stores, "--out-dir", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["data"]["datasets"] == ["d"] and summary["data"]["clips"] == 4
    assert summary["data"]["transductive"] is False and summary["data"]["excluded_stores"] == 0
    prints = summary["data"]["fingerprints"]  # the report checks pretraining/test overlap on these
    assert sorted(p["video_id"] for p in prints) == ["v0", "v1", "v2", "v3"] and all(len(p["content"]) == 16 for p in prints)
    assert summary["model"]["num_frames"] == 4 and summary["visible_tokens_per_clip"] == 2 * 4  # 2 time steps x 4 of 16
    encoder = load_encoder(out / "encoder.safetensors")
    assert encoder.forward_features(torch.zeros(1, 3, 4, 32, 32)).shape == (1, 2 * 4 * 4, 64)
    assert (out / "reconstruction.png").stat().st_size > 1000
    assert len((out / "log.csv").read_text().splitlines()) == 3


def test_cli_refuses_tested_subjects_unless_transductive(tmp_path, capsys):
    stores = [str(p) for p in make_stores(tmp_path / "clips" / "d", n_videos=2, n=20, size=32)]
    data = {"pretrain": ["d"], "finetune": "d", "transductive": False}
    assert cli_main(["pretrain", "--cfg", _cfg(data), "--stores", *stores, "--out-dir", str(tmp_path / "o")]) == 2
    assert "data.transductive is false" in capsys.readouterr().err
    data = {"pretrain": ["d", "e"], "finetune": "d", "transductive": False}  # only d's stores given
    assert cli_main(["pretrain", "--cfg", _cfg(data), "--stores", *stores, "--out-dir", str(tmp_path / "o")]) == 2
    assert "no clips to pretrain on" in capsys.readouterr().err
    data["transductive"] = True
    assert cli_main(["pretrain", "--cfg", _cfg(data), "--stores", *stores, "--out-dir", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["data"]["transductive"] is True


@pytest.mark.slow
def test_snakemake_pretrains_on_real_grid_videos(realdata, workflow_copy, tmp_path):
    grid = tmp_path / "grid"  # 4 of the 11 GRID clips (symlinks: nothing is copied), to keep the test short
    grid.mkdir()
    for name in ("bbaf2n.mpg", "brbk7n.mpg", "lbax4n.mpg", "sbia1a.mpg"):
        (grid / name).symlink_to(realdata / "videos" / "grid" / name)
    overrides = {
        "data": {
            "datasets": {"grid": {"adapter": "grid", "root": str(grid),
                                  "subject_regex": r"grid/(\w+)\.mpg"}},
            "pretrain": ["grid"], "finetune": "grid", "transductive": True,
        },  # fmt: skip
        "decode": {"fps": 6, "max_side": 256},
        "faces": {"det_size": 160, "every_k": 3},
        "crop": {"size": 32},
        "pretrain": {**TINY, "num_frames": 4, "sample_stride": 1, "batch_size": 4, "steps": 3, "warmup_steps": 1,
                     "checkpoint_every": 2, "model": "svfap", "svfap_stages": [1, 1], "svfap_tokens": 2},
    }  # fmt: skip
    wf = workflow_copy(overrides)
    run_snakemake(wf, "results/pretrain/summary.json", timeout=1200)
    out = wf / "results" / "pretrain"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["data"]["datasets"] == ["grid"] and summary["data"]["clips"] == 4
    assert summary["data"]["transductive"] is True and summary["model"]["model"] == "svfap"
    assert all(k in summary for k in ("clips_per_s", "tokens_per_s", "data_wait", "final_loss"))
    header = (out / "log.csv").read_text().splitlines()[0]
    assert header.split(",")[:7] == ["step", "loss", "lr", "grad_norm", "clips_per_s", "tokens_per_s", "data_wait"]
    assert load_encoder(out / "encoder.safetensors").spec.svfap_stages == (1, 1)
    assert (out / "reconstruction.png").stat().st_size > 1000
    assert (out / "checkpoints" / "last.pt").exists()
