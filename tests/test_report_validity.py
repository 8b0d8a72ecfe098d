"""Issue 14, report side: seed groups, statistics against chance, training checks, validity (overlap, protocols)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from clips_util import content, write_store

import report_synth as R
from affectube.eval import overlap as O
from affectube.eval.folds import load_folds, save_folds
from affectube.report import compare as C
from affectube.report.build import build
from affectube.report.results import load_experiment

SEEDS = {"videomae": {"grid": {"finetune.seed": [0, 1, 2]}}, "random": {"finetune.init": "scratch"}}
NAMES = ["videomae-seed=0", "videomae-seed=1", "videomae-seed=2", "random"]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    R.write_run(root, experiments=NAMES, skills={"videomae-seed=0": 0.9, "videomae-seed=1": 0.7, "videomae-seed=2": 0.5, "random": 0.0})
    cfg = R.params_cfg(experiments=SEEDS, task="categorical")
    found = build(cfg, root / "results", root / "report")
    return root, cfg, found


def test_seed_variants_are_one_row_with_sample_sds(seeded):
    root, cfg, _ = seeded
    groups = C.seed_groups(cfg)
    assert [(g.name, g.members, g.seeds) for g in groups] == [("videomae", NAMES[:3], [0, 1, 2]), ("random", ["random"], [0])]
    comp = pd.read_csv(root / "report/comparison.csv", keep_default_na=False)
    assert sorted(set(comp["experiment"])) == ["random", "videomae"]
    for col in ("seeds", "mean", "std", "folds", "sd_seeds", "pooled", "chance", "p_perm", "ci_low", "ci_high", "ci_unit", "ci_n"):
        assert col in comp.columns, col
    uar = comp[comp["metric"] == "uar"].set_index("experiment")
    exps = [load_experiment(root / "results", n) for n in NAMES[:3]]
    folds = [e.recompute("uar")[1]["uar"].to_numpy(float) for e in exps]
    allv = np.concatenate(folds)
    row = uar.loc["videomae"]
    assert int(row["seeds"]) == 3 and int(row["folds"]) == 12
    assert float(row["mean"]) == pytest.approx(allv.mean())
    assert float(row["std"]) == pytest.approx(allv.std(ddof=1))  # sample sd over every fold of every seed
    assert float(row["sd_seeds"]) == pytest.approx(np.std([f.mean() for f in folds], ddof=1))  # sample sd over seeds
    assert row["finetune.seed"] == "0 1 2"
    assert uar.loc["random", "sd_seeds"] == ""  # one seed: no sd over seeds
    md = (root / "report/report.md").read_text()
    assert "sd over seeds" in md and "sample sd, ddof 1" in md
    summary = json.loads((root / "report/summary.json").read_text())
    assert summary["experiments"]["videomae"]["seeds"] == 3 and set(summary["paired_tests"]) == {"random_vs_videomae"}


def test_permutation_p_and_bootstrap_interval_in_every_output(seeded):
    root, _, _ = seeded
    comp = pd.read_csv(root / "report/comparison.csv")
    uar = comp[comp["metric"] == "uar"].set_index("experiment")
    good, rand = uar.loc["videomae"], uar.loc["random"]
    assert good["p_perm"] < 0.01 and rand["p_perm"] > 0.05  # a learned model vs random probabilities
    for r in (good, rand):
        assert r["ci_low"] <= r["pooled"] <= r["ci_high"] and r["ci_unit"] == "subject" and r["ci_n"] == 4
        assert r["chance"] == pytest.approx(0.25, abs=0.05)  # 4 classes
    assert comp.loc[comp["metric"] != "uar", "p_perm"].isna().all()  # the main metric only
    md = (root / "report/report.md").read_text()
    html = (root / "report/report.html").read_text()
    for text in (md, html):
        assert "p vs chance" in text and "95% CI (bootstrap)" in text and "(4 subjects)" in text
    summary = json.loads((root / "report/summary.json").read_text())["experiments"]
    assert summary["videomae"]["p_perm"] == pytest.approx(good["p_perm"]) and summary["random"]["ci_unit"] == "subject"


def test_chance_level_folds_are_flagged(seeded):
    _, _, found = seeded
    flagged = found.get("chance-level test predictions", [])
    assert any(p.startswith("random: fold") for p in flagged)
    assert not any(p.startswith("videomae-seed=0:") for p in flagged)  # the best seed is far above chance


def _edit_fold(results, exp, k, training=None, log_cols=None):
    fdir = results / "finetune" / exp / f"fold{k}"
    m = json.loads((fdir / "metrics.json").read_text())
    m["training"].update(training or {})
    (fdir / "metrics.json").write_text(json.dumps(m))
    if log_cols:
        log = pd.read_csv(fdir / "log.csv")
        for c, v in log_cols.items():
            log[c] = v
        log.to_csv(fdir / "log.csv", index=False)


def test_warmup_selection_and_underfitting_are_flagged(tmp_path):
    res = R.write_run(tmp_path, experiments=["videomae"], low_coverage=False)
    _edit_fold(res, "videomae", 0, {"best_epoch": 1, "warmup_epochs": 2})  # selected inside the warmup
    _edit_fold(res, "videomae", 1, {"best_epoch": 4, "warmup_epochs": 2}, {"train_accuracy": [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]})
    _edit_fold(res, "videomae", 2, {"best_epoch": 5, "warmup_epochs": 2, "train_at_best": {"train_accuracy": 1.0, "train_ccc": 0.1}})
    _edit_fold(res, "videomae", 3, {"best_epoch": 6, "warmup_epochs": 2, "train_at_best": {"train_accuracy": 0.95, "train_ccc": 0.9}})
    m3 = res / "finetune/videomae/fold3/metrics.json"  # running 0.95, but the kept weights on the training videos: 0.6
    m3.write_text(json.dumps({**json.loads(m3.read_text()), "train": {"videos": 10, "accuracy": 0.6, "uar": 0.6}}))
    cfg = R.params_cfg(experiments={"videomae": {}})
    found = build(cfg, res, tmp_path / "out")
    assert found["selected epoch inside the warmup"] == [
        "videomae: fold 0: the selected epoch 1 is inside the warmup (2 epoch(s)): the kept model barely trained"]
    under = found["underfitting at the selected epoch"]
    assert len(under) == 3
    assert under[0].startswith("videomae: fold 1: training accuracy 0.50 at the selected epoch 4 (running")  # read from log.csv
    assert under[1].startswith("videomae: fold 2: training CCC 0.10")
    assert under[2].startswith("videomae: fold 3: training accuracy 0.60 at the selected epoch 6 (the kept weights")
    cfg["report"]["underfit_accuracy"] = 0.4
    assert "fold 1: training accuracy" not in " ".join(build(cfg, res, tmp_path / "out").get("underfitting at the selected epoch", []))


def _store(path, video, subject, dataset="demo", seed=0):
    return write_store(path, content(video, n=12, size=16, subject=subject, dataset=dataset, seed=seed))


def test_pretraining_test_overlap_by_subject_and_content(tmp_path):
    res = R.write_run(tmp_path, experiments=["videomae"], low_coverage=False)
    clips = res / "clips"
    test_video = "W009_happy_0"
    _store(clips / "demo" / f"{test_video}.h5", test_video, "W009", seed=3)
    _store(clips / "demo" / "W011_sad_1.h5", "W011_sad_1", "W011", seed=4)
    copy = O.fingerprint(_store(tmp_path / "other" / "x1.h5", "x1", "p7", dataset="other", seed=3))  # same frames, other name
    assert copy["content"] == O.content_hash(clips / "demo" / f"{test_video}.h5")
    unrelated = O.fingerprint(_store(tmp_path / "other" / "x2.h5", "x2", "p8", dataset="other", seed=9))
    same_id = {**unrelated, "video_id": "x3", "subject": "M030"}  # a pretraining subject named like a test subject
    summary = res / "pretrain" / "summary.json"

    def run(prints, transductive=False):
        summary.write_text(json.dumps({"steps": 60, "data": {"datasets": ["other"], "transductive": transductive, "fingerprints": prints}}))
        cfg = R.params_cfg(experiments={"videomae": {}})
        cfg["data"].update({"pretrain": ["other"], "transductive": transductive})
        found = build(cfg, res, tmp_path / "out")
        return found.get("pretraining/test overlap", []), (tmp_path / "out/report.md").read_text()

    flagged, md = run([copy, unrelated, same_id])
    assert len(flagged) == 2
    assert flagged[0].startswith("1 of 30 test videos were in the pretraining data (same content hash): W009_happy_0 = other/x1")
    assert flagged[1].startswith("1 of 4 test subject id(s) also occur in the pretraining data: M030 (in other)")
    assert "## Validity" in md and "Not transductive (data.transductive: false): 1 of the 30 test videos (2 hashed)" in md
    clean, md = run([unrelated])
    assert clean == [] and "0 of the 30 test videos (2 hashed) and 0 of the 4 test subject ids" in md
    flagged, md = run([copy, unrelated], transductive=True)
    assert flagged == [] and "Transductive run (data.transductive: true): 1 of the 30 test videos" in md
    # an old summary without fingerprints: said, not silently passed
    flagged, _ = run(None)
    assert flagged and "not checked" in flagged[0]


def test_pretraining_drops_copies_of_finetune_videos(tmp_path):
    d = [_store(tmp_path / "demo" / f"v{i}.h5", f"v{i}", f"s{i}", seed=i) for i in range(2)]
    other = [_store(tmp_path / "other" / "a.h5", "a", "s1", dataset="other", seed=1),  # copy of demo/v1
             _store(tmp_path / "other" / "b.h5", "b", "q", dataset="other", seed=7)]
    stores = [str(p) for p in d + other]
    kept, prints, notes = O.select_pretrain_stores(stores, {"finetune": "demo", "pretrain": ["demo", "other"], "transductive": False})
    assert kept == [str(other[1])] and [p["video_id"] for p in prints] == ["b"]
    assert "other/a: same content as a video of the fine-tuning dataset 'demo'" in notes[0]
    kept, prints, notes = O.select_pretrain_stores(stores, {"finetune": "demo", "transductive": True})
    assert kept == stores and len(prints) == 4 and notes == []


def test_session_folds_are_labelled_subject_dependent(tmp_path):
    res = R.write_run(tmp_path, experiments=["videomae"], low_coverage=False)
    folds = load_folds(res / "folds" / "videomae.json")
    for f in folds:
        f.extra.update(protocol="session_kfold", group="session")
        f.extra["groups"] = {side: [f"{s}_{side}" for s in getattr(f, side)] for side in ("train", "val", "test")}
        f.train = sorted(set(f.train) | set(f.test))  # other sessions of the test subject are trained on
    save_folds(res / "folds" / "videomae.json", folds)
    build(R.params_cfg(experiments={"videomae": {}}), res, tmp_path / "out")
    md = (tmp_path / "out/report.md").read_text()
    validity = md.split("## Validity")[1].split("\n## ")[0]
    assert "protocol session_kfold: subject-dependent" in validity and "not comparable with subject-independent" in validity
    assert "subject-dependent folds" in md
    assert "protocol loso, 4 folds (subject-dependent (k folds of sessions" in md.split("## Problems")[0]  # in the summary too
    from affectube.report.build import protocol_label

    assert "within-subject" in protocol_label("video_kfold", [])
    assert protocol_label("loso", folds[:0]).startswith("subject-independent")


def test_grid_over_seed_and_another_key_groups_by_the_other_key(tmp_path):
    experiments = {"g": {"grid": {"finetune.seed": [0, 1], "finetune.mode": ["finetune", "frozen"]}}}
    cfg = R.params_cfg(experiments=experiments, task="categorical")
    groups = C.seed_groups(cfg)
    assert [(g.name, g.members) for g in groups] == [
        ("g-mode=finetune", ["g-mode=finetune-seed=0", "g-mode=finetune-seed=1"]),
        ("g-mode=frozen", ["g-mode=frozen-seed=0", "g-mode=frozen-seed=1"])]
    names = [m for g in groups for m in g.members]
    R.write_run(tmp_path, experiments=names, skills=dict(zip(names, [0.9, 0.8, 0.3, 0.2])))
    exps = [load_experiment(tmp_path / "results", n) for n in names]
    table = C.side_by_side(exps, "uar", C.experiment_params(cfg), groups)
    uar = table[table["metric"] == "uar"].set_index("experiment")
    assert list(uar.index) == ["g-mode=finetune", "g-mode=frozen"] and (uar["seeds"] == 2).all() and (uar["folds"] == 8).all()
    assert uar.loc["g-mode=frozen", "finetune.mode"] == "frozen" and uar.loc["g-mode=frozen", "finetune.seed"] == "0 1"
    grid = C.grid_tables(table, cfg, "uar")["g"]
    assert list(grid.columns) == ["mode=finetune", "mode=frozen"] and grid.loc["uar", "mode=finetune"] == C.mean_std(uar.loc["g-mode=finetune"])
    tests = C.paired_tests(exps, "uar", "g-mode=finetune-seed=1", groups=groups)  # a member names its group
    assert [(t.baseline, t.other, t.n) for t in tests] == [("g-mode=finetune", "g-mode=frozen", 4)]
    # one seed grid only: no grid table (nothing to lay out)
    assert C.grid_tables(table, R.params_cfg(experiments={"v": {"grid": {"finetune.seed": [0, 1]}}}), "uar") == {}


def test_sample_sd_with_one_fold_is_nan():
    assert math.isnan(C._sd([0.5])) and C._sd([0.4, 0.6]) == pytest.approx(np.std([0.4, 0.6], ddof=1))
