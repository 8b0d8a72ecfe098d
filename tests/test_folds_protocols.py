"""Fold protocols: subject/session disjointness, inner validation from training subjects only."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from affectube.errors import DataError, UserError
from affectube.eval import folds as F

REPO_WORKFLOW = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "workflow")


def manifest(subjects=6, per=4, classes=("happy", "sad"), sessions=False):
    rows = []
    for s in range(subjects):
        for v in range(per):
            row = {"dataset": "d", "video_id": f"s{s}_v{v}", "path": f"/x/s{s}_v{v}.mp4", "subject": f"S{s}",
                   "emotion": classes[v % len(classes)]}
            if sessions:
                row["session"] = f"S{s}_sess{v % 2}"
            rows.append(row)
    return pd.DataFrame(rows)


def _assert_disjoint(folds, group="subject"):
    for f in folds:
        for a, b in (("train", "test"), ("val", "test"), ("train", "val")):
            assert not set(f.groups(a)) & set(f.groups(b))
            assert not set(f.videos(a)) & set(f.videos(b))
        assert not set(f.val) & set(f.test), "inner validation holds a test subject"


@pytest.mark.parametrize("protocol", ["loso", "group_kfold"])
def test_subject_protocols_are_disjoint_and_cover_every_video(protocol):
    table = manifest()
    folds = F.plan_folds(table, {"protocol": protocol, "k": 3, "inner_val": 0.25, "seed": 0})
    assert len(folds) == (6 if protocol == "loso" else 3)
    _assert_disjoint(folds)
    tested = [v for f in folds for v in f.videos("test")]
    assert sorted(tested) == sorted(table["video_id"])  # every video tested exactly once
    for f in folds:
        assert f.val, "inner validation carved from training subjects"
        assert set(f.train) | set(f.val) | set(f.test) == set(table["subject"])


def test_inner_validation_never_contains_a_test_subject_for_many_seeds():
    table = manifest(subjects=5)
    for seed in range(20):
        for protocol in ("loso", "group_kfold"):
            for f in F.plan_folds(table, {"protocol": protocol, "k": 2, "inner_val": 0.5, "seed": seed}):
                assert not set(f.val) & set(f.test)
                assert set(f.val) <= set(table["subject"]) - set(f.test)


def test_group_kfold_is_stratified_where_possible():
    table = manifest(subjects=8, per=1)
    table["emotion"] = ["happy"] * 4 + ["sad"] * 4
    folds = F.plan_folds(table, {"protocol": "group_kfold", "k": 4, "inner_val": 0.0, "seed": 0})
    labels = table.set_index("video_id")["emotion"]
    for f in folds:  # each test fold gets one of each class
        assert sorted(labels[f.videos("test")]) == ["happy", "sad"]


def test_session_kfold_is_session_disjoint():
    table = manifest(subjects=3, per=4, sessions=True)
    folds = F.plan_folds(table, {"protocol": "session_kfold", "k": 3, "inner_val": 0.3, "seed": 1})
    assert all(f.extra["group"] == "session" for f in folds)
    _assert_disjoint(folds)


def test_session_kfold_needs_sessions():
    with pytest.raises(DataError, match="session"):
        F.plan_folds(manifest(), {"protocol": "session_kfold", "k": 2})


def test_too_few_subjects_for_k():
    with pytest.raises(DataError, match="only 3 distinct subjects"):
        F.plan_folds(manifest(subjects=3), {"protocol": "group_kfold", "k": 5})


def test_official_folds_from_csv_and_directory(tmp_path):
    table = manifest(subjects=10, per=1)
    ids = list(table["video_id"])
    csv = tmp_path / "folds.csv"
    pd.DataFrame({"video_id": ids, "fold": [i % 5 + 1 for i in range(10)]}).to_csv(csv, index=False)
    folds = F.plan_folds(table, {"protocol": "official", "official_folds": str(csv), "inner_val": 0.2})
    assert len(folds) == 5 and [len(f.videos("test")) for f in folds] == [2] * 5
    _assert_disjoint(folds)
    d = tmp_path / "test"
    d.mkdir()
    for k in range(1, 6):
        (d / f"set_{k}.csv").write_text("video_name,label\n" + "".join(f"{v},1\n" for v in ids[k - 1 :: 5]))
    folds2 = F.plan_folds(table, {"protocol": "official", "official_folds": str(tmp_path / "test"), "inner_val": 0.2})
    assert [f.videos("test") for f in folds2] == [f.videos("test") for f in folds]
    with pytest.raises(UserError, match="official_folds"):
        F.plan_folds(table, {"protocol": "official"})
    (d / "set_9.csv").write_text("nope\n")
    with pytest.raises(DataError, match="not in the manifest"):
        F.plan_folds(table, {"protocol": "official", "official_folds": str(d)})


def test_official_folds_keep_test_subjects_out_of_training(tmp_path):
    table = manifest(subjects=2, per=4)  # videos of one subject split over two official folds
    csv = tmp_path / "folds.csv"
    pd.DataFrame({"video_id": table["video_id"], "fold": [0, 1] * 4}).to_csv(csv, index=False)
    with pytest.raises(DataError, match="empty training side"):
        F.plan_folds(table, {"protocol": "official", "official_folds": str(csv)})


def test_a_leaky_split_is_refused(tmp_path):
    table = manifest(subjects=4)
    fold = F.plan_folds(table, {"protocol": "loso", "inner_val": 0.3})[0]
    obj = fold.to_json()
    leaky = json.loads(json.dumps(obj))
    leaky["train"]["subjects"].append(obj["test"]["subjects"][0])
    leaky["train"]["groups"].append(obj["test"]["groups"][0])
    with pytest.raises(DataError, match="leaky split refused"):
        F.check_fold(F.Fold.from_json(leaky))
    path = tmp_path / "leaky.json"
    path.write_text(json.dumps([leaky]))
    with pytest.raises(DataError, match="leaky split refused"):
        F.load_folds(path)
    # a video listed on two sides
    leaky = json.loads(json.dumps(obj))
    leaky["val"]["video_ids"].append(obj["test"]["video_ids"][0])
    with pytest.raises(DataError, match="leaky"):
        F.check_fold(F.Fold.from_json(leaky))
    # and at load time: the data actually loaded put a test subject into training
    with pytest.raises(DataError, match="loaded on both train and test"):
        F.check_loaded(fold, {"train": set(fold.train) | {fold.test[0]}, "test": set(fold.test)},
                       {"train": set(fold.videos("train")), "test": set(fold.videos("test"))}, "stores")
    with pytest.raises(DataError, match="does not list"):
        F.check_loaded(fold, {"train": set(fold.train)}, {"train": set(fold.videos("train")) | {fold.videos("test")[0]}}, "stores")


def test_folds_stage_writes_json(tmp_path):
    table = manifest(subjects=4)
    man = tmp_path / "m.csv"
    table.to_csv(man, index=False)
    out = tmp_path / "folds" / "exp.json"
    cfg = json.dumps({"finetune": {"protocol": "loso", "inner_val": 0.25, "seed": 0}, "experiment": {"name": "exp"}})
    proc = subprocess.run([sys.executable, "-m", "affectube", "folds", "--cfg", cfg, "--manifest", str(man), "--out", str(out)],
                          capture_output=True, text=True, env={"PYTHONPATH": REPO_WORKFLOW, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert len(data) == 4 and data[0]["test"]["subjects"] == ["S0"]
    assert set(data[0]["test"]["video_ids"]) == {f"s0_v{v}" for v in range(4)}
    assert data[0]["val"]["subjects"] and not set(data[0]["val"]["subjects"]) & {"S0"}
    assert [f.index for f in F.load_folds(out)] == [0, 1, 2, 3]


def test_dag_plans_each_experiments_own_folds():
    from pathlib import Path

    from affectube.config import load_params
    from affectube.dag import Dag

    cfg = load_params(Path(REPO_WORKFLOW).parent / "params.yaml")
    cfg["experiments"] = {"a": {}, "b": {"finetune.protocol": "group_kfold", "finetune.k": 2}}
    dag = Dag(cfg)
    n_subjects = dag.manifest(cfg["data"]["finetune"]).table["subject"].nunique()
    assert dag.exp_fold_ids("a") == [str(i) for i in range(n_subjects)]
    assert dag.exp_fold_ids("b") == ["0", "1"]
    wc = type("W", (), {"exp": "b"})()
    assert dag.fold_predictions(wc) == [f"results/finetune/b/fold{k}/predictions.csv" for k in (0, 1)]
