"""End to end on a real task with real signal (issue 20): the colour word read from the lips of GRID
speaker s1, config/grid_words.yaml REDUCED to fit CI, from raw videos through Snakemake.

Reduced, honestly: the same merged params (``affectube params --merge config/grid_words.yaml``), the
same detector, crops, model, recipe and protocol (4-fold stratified video k-fold, within-subject),
but the first ``PER_COLOUR`` clips of each colour (sorted by file name; symlinks to the real files),
pretraining on the 11 clips of ``grid/`` only with fewer steps, and two experiments: pretrained at
all labels, scratch at a quarter of the labels (label budget end to end). The full grid is a
documented command (docs/finetune.md, "GRID words"). The test fails if the fine-tuned accuracy at
all labels drops below 0.6 (chance 0.25).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, copy_workflow, run_snakemake, venv_env

pytestmark = [
    pytest.mark.slow,
    # Not yet part of CI (issue 20; docs/finetune.md "GRID words, measured"): with the mouth crop the full
    # run (352 clips, 4 folds, pretrained) reaches 0.668 at 30 epochs and 0.696 at 60 (the config's
    # epochs now; target 0.70), but this REDUCED run (40 clips per colour, 300 pretraining steps) was
    # never run or timed: the shared 2-core machine was loaded when the recipe was found. Estimate from
    # the full run (one 30-epoch fold of 224 training videos ~105 s CPU, 60 epochs ~2x): 4 folds of
    # ~100 training videos ~7 min CPU, the quarter-budget
    # experiment ~1 min, faces + clips of 160 clips ~2.5 min, pretraining ~0.5 min: ~4 min on 2 idle
    # cores plus Snakemake's start-up of ~330 per-video jobs; whether 40 clips per colour reach 0.6 is
    # unknown. Remove this mark after a measured run reaches 0.6 within ~5 min.
    pytest.mark.skip(reason="issue 20: the reduced GRID-words run was never measured (duration, accuracy); enable when it reaches 0.6 in <= 5 min"),
]

PER_COLOUR = 40
COLOURS = ["blue", "green", "red", "white"]
MIN_ACCURACY = 0.6
EXPERIMENTS = {"pretrained": {}, "scratch_quarter": {"finetune.init": "scratch", "finetune.label_fraction": 0.25}}


@pytest.fixture(scope="module")
def run(realdata, tmp_path_factory):
    root = tmp_path_factory.mktemp("grid_words")
    (root / "shared").mkdir()
    (root / "shared" / "realdata").symlink_to(realdata.resolve())  # the config's ../shared/realdata
    subset = root / "subset" / "grid_s1_words"  # speaker s1 in the root's name, as in the real folder
    subset.mkdir(parents=True)
    clips = sorted((realdata / "videos" / "grid_s1_words").glob("*.mpg"))
    for colour in "bgrw":  # the colour is the sentence code's 2nd letter
        for path in [p for p in clips if p.stem[1] == colour][:PER_COLOUR]:
            (subset / path.name).symlink_to(path.resolve())
    wf = copy_workflow(root / "wf")
    (wf / "config").mkdir(exist_ok=True)
    (wf / "config" / "grid_words.yaml").write_text((REPO / "config" / "grid_words.yaml").read_text())
    proc = subprocess.run([sys.executable, "-m", "affectube", "params", "--merge", "config/grid_words.yaml", "--out", "params.yaml"],
                          cwd=wf, capture_output=True, text=True, env=venv_env(PYTHONPATH=str(wf / "workflow")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    params = yaml.safe_load((wf / "params.yaml").read_text())
    params["data"]["datasets"]["grid_words"]["root"] = str(subset)
    params["data"]["pretrain"] = ["grid"]
    params["pretrain"].update(steps=300, warmup_steps=30, checkpoint_every=300)
    params["experiments"] = EXPERIMENTS
    (wf / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    t0 = time.monotonic()
    out = run_snakemake(wf, timeout=2400)
    minutes = (time.monotonic() - t0) / 60
    print(f"\nGRID words (reduced) through snakemake: {minutes:.1f} min")
    return wf, out.stdout + out.stderr


def test_the_word_is_read_from_the_lips_above_chance(run):
    wf, _ = run
    m = json.loads((wf / "results/grid_words/evaluate/pretrained/metrics.json").read_text())
    assert m["folds"] == 4 and m["videos"] == 4 * PER_COLOUR and m["classes"] == COLOURS
    assert m["main_metric"] == "accuracy"
    assert m["mean"]["accuracy"] >= MIN_ACCURACY, m["mean"]
    # the quarter budget trains on fewer videos and still runs to the end (its number is reported, not asserted)
    q = json.loads((wf / "results/grid_words/evaluate/scratch_quarter/metrics.json").read_text())
    assert q["folds"] == 4 and q["videos"] == 4 * PER_COLOUR and 0 <= q["mean"]["accuracy"] <= 1
    print(f"\naccuracy: pretrained all labels {m['mean']['accuracy']:.3f} +- {m['std']['accuracy']:.3f}, "
          f"scratch 0.25 of the labels {q['mean']['accuracy']:.3f} +- {q['std']['accuracy']:.3f}")


def test_folds_are_within_subject_stratified_and_budgets_touch_training_only(run):
    wf, _ = run
    manifest = pd.read_csv(wf / "results/grid_words/manifests/grid_words.csv")
    colour = dict(zip(manifest["video_id"], manifest["colour"]))
    full = json.loads((wf / "results/grid_words/folds/pretrained.json").read_text())
    quarter = json.loads((wf / "results/grid_words/folds/scratch_quarter.json").read_text())
    assert sorted(v for f in full for v in f["test"]["video_ids"]) == sorted(manifest["video_id"])
    for f, q in zip(full, quarter):
        assert f["scope"] == "within-subject" and f["protocol"] == "video_kfold"
        assert pd.Series([colour[v] for v in f["test"]["video_ids"]]).value_counts().to_dict() == {c: PER_COLOUR // 4 for c in COLOURS}
        assert q["test"] == f["test"] and q["val"] == f["val"]
        assert set(q["train"]["video_ids"]) < set(f["train"]["video_ids"])
        assert len(q["train"]["video_ids"]) == pytest.approx(0.25 * len(f["train"]["video_ids"]), abs=4)
        metrics = json.loads((wf / f"results/grid_words/finetune/scratch_quarter/fold{f['index']}/metrics.json").read_text())
        assert metrics["videos"]["train"] == len(q["train"]["video_ids"])


def test_clips_are_centred_on_the_colour_word(run):
    wf, _ = run
    from affectube.clips.dataset import ClipDataset

    stores = sorted((wf / "results/grid_words/clips/grid_words").glob("*.h5"))
    assert len(stores) == 4 * PER_COLOUR
    manifest = pd.read_csv(wf / "results/grid_words/manifests/grid_words.csv").set_index("video_id")
    ds = ClipDataset(stores, num_frames=16, sample_stride=1, input_size=64, mode="test", test_clips=1, label="colour", event=True)
    for i in range(0, len(ds), 17):
        item = ds[i]
        row = manifest.loc[item["video_id"]]
        centre = float(item["times"].mean())
        assert abs(centre - (row["event_start"] + row["event_end"]) / 2) <= 0.04 + 1e-6 or item["start"] in (0, 75 - 16)
        assert ds.classes[item["label"]] == row["colour"]


def test_pretraining_saw_no_labelled_clip(run):
    wf, _ = run
    summary = json.loads((wf / "results/grid_words/pretrain/summary.json").read_text())
    assert summary["data"]["datasets"] == ["grid"] and summary["data"]["transductive"] is False
    pre = pd.read_csv(wf / "results/grid_words/manifests/grid.csv")
    words = pd.read_csv(wf / "results/grid_words/manifests/grid_words.csv")
    assert not {Path(p).name for p in pre["path"]} & {Path(p).name for p in words["path"]}
