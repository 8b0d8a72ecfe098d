"""Stage `finetune` on clip stores written with the real store writer (small synthetic faces, CPU).

Stores are built in the test with ``affectube.clips.store.write_store`` from synthetic
arrays (4 subjects x 4 videos; the class shows as brightness, valence as a per-frame
trend), so the stage is exercised through the real ClipDataset, folds file and outputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from affectube.config import load_params
from affectube.errors import DataError
from affectube.eval import folds as F

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["happy", "sad"]
TINY_PRETRAIN = {"model": "videomae", "size": "tiny", "depth": 1, "width": 64, "input_size": 32, "num_frames": 4,
                 "sample_stride": 1, "tubelet": 2, "patch": 16, "decoder_width": 32, "decoder_depth": 1}


def write_stores(root: Path, subjects=4, per=4, frames=12, size=40, channels=3) -> pd.DataFrame:
    from affectube.clips.store import StoreContent, write_store

    rng = np.random.default_rng(0)
    rows = []
    for s in range(subjects):
        for v in range(per):
            emotion = CLASSES[v % 2]
            vid = f"S{s}_v{v}"
            base = 170 if emotion == "happy" else 80
            img = np.clip(rng.normal(base, 25, (frames, size, size, channels)), 0, 255).astype(np.uint8)
            ts = np.arange(frames) / 25.0
            valence = np.linspace(-0.5, 0.5, frames) * (1 if emotion == "happy" else -1)
            content = StoreContent(frames=img, timestamps=ts, dataset="syn", video_id=vid, subject=f"S{s}",
                                   labels={"emotion": emotion, "valence": float(valence.mean())}, fps=25.0,
                                   frame_labels={"valence": valence.astype(np.float32)})
            write_store(root / f"{vid}.h5", content)
            rows.append({"dataset": "syn", "video_id": vid, "path": f"{vid}.mp4", "subject": f"S{s}", "emotion": emotion})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    table = write_stores(root)
    return root, table


def make_cfg(**finetune) -> dict:
    cfg = load_params(REPO / "params.yaml")
    cfg["pretrain"].update(TINY_PRETRAIN)
    cfg["finetune"].update({"init": "scratch", "epochs": 2, "batch_size": 4, "test_clips": 1, "patience": 2,
                            "threads": 1, "task": "categorical", "lr": 3.2e-2, "warmup_epochs": 1, "inner_val": 0.25,
                            "select_on": "main_metric", **finetune})  # not the demo's task/recipe
    return cfg


def run_fold(cfg, table, root, out, fold=0, encoder=None):
    from affectube.train.finetune import finetune_fold

    folds = F.plan_folds(table, cfg["finetune"])
    return finetune_fold(cfg, folds[fold], root, encoder, out, threads=1)


def test_fold_outputs_and_same_seed_same_metrics(stores, tmp_path):
    root, table = stores
    cfg = make_cfg()
    a = run_fold(cfg, table, root, tmp_path / "a")
    b = run_fold(cfg, table, root, tmp_path / "b")
    for name in ("predictions.csv", "predictions_frames.csv", "metrics.json", "log.csv", "model.safetensors"):
        assert (tmp_path / "a" / name).exists(), name
    ma, mb = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ab")
    assert ma["test"] == mb["test"] and ma["val"] == mb["val"]
    pa, pb = (pd.read_csv(tmp_path / d / "predictions.csv") for d in "ab")
    pd.testing.assert_frame_equal(pa, pb)
    assert set(pa["subject"]) == {"S0"} and set(pa["video_id"]) == {f"S0_v{v}" for v in range(4)}
    assert list(pa.columns[:7]) == ["fold", "subject", "video_id", "dataset", "clip", "y_true", "y_pred"]
    assert {"prob_happy", "prob_sad"} <= set(pa.columns)
    np.testing.assert_allclose(pa[["prob_happy", "prob_sad"]].sum(1), 1, rtol=1e-5)
    log = pd.read_csv(tmp_path / "a" / "log.csv")
    assert list(log.columns[:5]) == ["epoch", "train_loss", "lr", "val_loss", "val_uar"]
    assert a["training"]["selected_on"] == "val_uar" and 1 <= a["training"]["best_epoch"] <= 2
    assert not set(a["subjects"]["val"]) & {"S0"} and a["subjects"]["test"] == ["S0"]
    # the metrics written are the ones recomputed from predictions.csv
    from affectube.eval.metrics import evaluate_table

    assert evaluate_table(pa)["uar"] == pytest.approx(ma["test"]["uar"])


def test_frozen_pretrained_encoder_is_bit_identical(stores, tmp_path):
    from safetensors.torch import load_file

    from affectube.models import build_encoder, save_encoder

    root, table = stores
    torch.manual_seed(5)
    enc = build_encoder(TINY_PRETRAIN)
    save_encoder(tmp_path / "encoder.safetensors", enc, {"test": True})
    cfg = make_cfg(init="pretrained", mode="frozen", epochs=2, lr=0.05)
    run_fold(cfg, table, root, tmp_path / "out", encoder=str(tmp_path / "encoder.safetensors"))
    saved = load_file(str(tmp_path / "encoder.safetensors"))
    model = load_file(str(tmp_path / "out" / "model.safetensors"))
    for k, v in saved.items():
        assert torch.equal(model[f"encoder.{k}"], v), k
    heads = [k for k in model if k.startswith("head.")]
    assert heads and any(not torch.equal(model[k], torch.zeros_like(model[k])) for k in heads)


def test_continuous_per_frame_task(stores, tmp_path):
    root, table = stores
    cfg = make_cfg(task="both", head="gru", targets=["valence"], losses={"ce": 1.0, "ccc": 0.5, "bin_ce": 0.25, "mse": 0.25},
                   gru_hidden=8, epochs=1)
    out = run_fold(cfg, table, root, tmp_path / "out")
    frames = pd.read_csv(tmp_path / "out" / "predictions_frames.csv")
    assert len(frames) and {"time", "true_valence", "pred_valence"} <= set(frames.columns)
    assert set(frames["subject"]) == {"S0"}
    assert "frame_ccc_valence" in out["test"] and "ccc_valence" in out["test"]
    preds = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert preds["pred_valence"].between(-1, 1).all()


def test_a_leaky_fold_is_refused_when_its_stores_are_loaded(stores, tmp_path):
    """The folds file lists S0_v1 as training data of a fold that tests S0: its store says subject S0."""
    from affectube.train.finetune import finetune_fold

    root, table = stores
    cfg = make_cfg()
    fold = F.plan_folds(table, cfg["finetune"])[0]
    obj = fold.to_json()
    obj["test"]["video_ids"].remove("S0_v1")
    obj["train"]["video_ids"].append("S0_v1")  # lists disjoint, data not
    leaky = F.Fold.from_json(obj)
    F.check_fold(leaky)  # the lists alone look fine ...
    with pytest.raises(DataError, match="S0.*loaded on both train and test"):  # ... the loaded stores do not
        finetune_fold(cfg, leaky, root, None, tmp_path / "out")
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.slow
def test_finetune_cli(stores, tmp_path):
    root, table = stores
    cfg = make_cfg(epochs=1)
    table.to_csv(tmp_path / "manifest.csv", index=False)
    F.save_folds(tmp_path / "folds.json", F.plan_folds(table, cfg["finetune"]))
    sections = json.dumps({k: cfg[k] for k in ("pretrain", "finetune", "evaluate")})
    env = {"PYTHONPATH": str(REPO / "workflow"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "affectube", "finetune", "--cfg", sections, "--folds", str(tmp_path / "folds.json"),
           "--fold", "1", "--stores-dir", str(root), "--encoder", "", "--out-dir", str(tmp_path / "fold1")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(pd.read_csv(tmp_path / "fold1" / "predictions.csv")["subject"]) == {"S1"}
    bad_cmd = [*cmd[: cmd.index("--fold") + 1], "7", *cmd[cmd.index("--fold") + 2 :]]
    bad = subprocess.run(bad_cmd, capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "no fold 7" in bad.stderr


def test_explicit_classes_leave_out_videos_of_other_emotions():
    """finetune.classes [happy, sad] on a dataset that also has `contempt`: those videos are neither
    trained nor tested (they carry no label), and the fold reports them."""
    from affectube.train.finetune import drop_other_classes

    ident = lambda v, e: {"subject": "s", "video_id": v, "labels": {"emotion": e}}  # noqa: E731
    stores = {"train": [Path("a.h5"), Path("b.h5")], "val": [Path("c.h5")], "test": [Path("d.h5"), Path("e.h5")]}
    identity = {"train": [ident("a", "happy"), ident("b", "contempt")], "val": [ident("c", "contempt")],
                "test": [ident("d", "sad"), ident("e", "contempt")]}
    ft = {"task": "categorical", "classes": ["happy", "sad"], "label": "emotion"}
    kept, ids, dropped = drop_other_classes(ft, stores, identity, ft["classes"])
    assert kept == {"train": [Path("a.h5")], "val": [], "test": [Path("d.h5")]}
    assert [i["video_id"] for s in ("train", "test") for i in ids[s]] == ["a", "d"]
    assert [(d["side"], d["video_id"]) for d in dropped] == [("train", "b"), ("val", "c"), ("test", "e")]
    # classes discovered from the stores, or a continuous task: nothing is left out
    assert drop_other_classes({**ft, "classes": None}, stores, identity, ["contempt", "happy", "sad"])[2] == []
    assert drop_other_classes({**ft, "task": "both"}, stores, identity, ft["classes"])[2] == []
    with pytest.raises(DataError, match="no test video"):
        drop_other_classes(ft, {**stores, "test": [Path("e.h5")]}, {**identity, "test": [ident("e", "contempt")]}, ft["classes"])


def test_scratch_encoder_takes_the_channels_of_grayscale_stores(tmp_path):
    """crop.grayscale stores (1 channel): a scratch ViT is built for 1 channel and trains (it used to be
    built for 3 and refused by the channel check)."""
    root = tmp_path / "gray"
    table = write_stores(root, subjects=3, per=2, channels=1)
    cfg = make_cfg(epochs=1, inner_val=0)
    result = run_fold(cfg, table, root, tmp_path / "out")
    assert result["training"]["clip"]["num_frames"] == TINY_PRETRAIN["num_frames"]
    assert (tmp_path / "out" / "metrics.json").exists()
