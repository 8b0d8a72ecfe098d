"""GRID words (issue 20), the data side: word columns and event spans from the adapter, any label
column, event-centred clips, the within-subject video k-fold and label budgets. Fast unit tests;
the end-to-end run of config/grid_words.yaml is tests/test_e2e_grid_words.py."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from affectube.clips import sampling
from affectube.clips.dataset import ClipDataset
from affectube.clips.store import write_store
from affectube.data.adapters import grid
from affectube.data.manifest import build_manifest, check_table
from affectube.errors import ConfigError, DataError
from affectube.eval.folds import Fold, check_fold, plan_folds

from clips_util import content

COLOURS = ["blue", "green", "red", "white"]


# ---------------------------------------------------------------- adapter


def test_sentence_code_spells_the_six_words():
    assert grid.sentence_words("bgaf2n") == {"command": "bin", "colour": "green", "preposition": "at",
                                             "letter": "f", "digit": "two", "adverb": "now"}
    assert grid.sentence_words("SWWZ9A")["digit"] == "nine"
    with pytest.raises(DataError, match="colour"):
        grid.sentence_words("bxaf2n")
    with pytest.raises(DataError, match="6 letters"):
        grid.sentence_words("bga")


def _align(path, rows):
    path.write_text("".join(f"{a} {b} {w}\n" for a, b, w in rows))


SIL = [(0, 23750, "sil"), (23750, 29500, "bin"), (29500, 34000, "green"), (34000, 35500, "at"),
       (35500, 41000, "f"), (41000, 47000, "two"), (47000, 53000, "now"), (53000, 74500, "sil")]


def test_adapter_reads_words_and_the_span_of_the_event_word(tmp_path):
    root, align = tmp_path / "s1", tmp_path / "align"
    root.mkdir(), align.mkdir()
    for code in ("bgaf2n", "lrbk5s", "pwiz1a"):
        (root / f"{code}.mpg").write_bytes(b"")
    _align(align / "bgaf2n.align", SIL)
    _align(align / "lrbk5s.align", [(0, 10000, "sil"), (10000, 12000, "lay"), (12000, 15000, "red"), (15000, 16000, "by"),
                                    (16000, 18000, "k"), (18000, 20000, "five"), (20000, 22000, "soon")])
    # pwiz1a: no alignment file -> listed as unusable, never silently dropped
    m = build_manifest("w", {"adapter": "grid", "root": str(root), "align": str(align), "event": "colour"})
    t = m.table.set_index("sentence")
    assert sorted(t.index) == ["bgaf2n", "lrbk5s"]
    assert t.loc["bgaf2n", "colour"] == "green" and t.loc["lrbk5s", "command"] == "lay"
    assert t.loc["bgaf2n", ["event_start", "event_end"]].tolist() == pytest.approx([29500 / 25000, 34000 / 25000])
    assert t.loc["lrbk5s", ["event_start", "event_end"]].tolist() == pytest.approx([0.48, 0.6])
    assert len(m.missing) == 1 and "no alignment pwiz1a.align" in m.missing["problem"].iloc[0]
    assert str(align / "bgaf2n.align") in m.sources  # an input of the manifest rule
    # the digit's span instead
    m = build_manifest("w", {"adapter": "grid", "root": str(root), "align": str(align), "event": "digit"})
    assert m.table.set_index("sentence").loc["bgaf2n", "event_start"] == pytest.approx(41000 / 25000)
    # an alignment whose word disagrees with the file name is refused, row by row
    _align(align / "pwiz1a.align", SIL)
    m = build_manifest("w", {"adapter": "grid", "root": str(root), "align": str(align), "event": "colour"})
    assert "does not hold the colour word 'white'" in m.missing["problem"].iloc[0]
    with pytest.raises(ConfigError, match="event: 'color' is not a GRID word"):
        build_manifest("w", {"adapter": "grid", "root": str(root), "align": str(align), "event": "color"})
    with pytest.raises(ConfigError, match="needs data.datasets.w.align"):
        build_manifest("w", {"adapter": "grid", "root": str(root), "event": "colour"})


def test_adapter_on_the_real_grid_words(realdata):
    words = realdata / "videos" / "grid_s1_words"
    align = realdata / "videos" / "grid_align" / "s1"
    m = build_manifest("grid_words", {"adapter": "grid", "root": str(words), "subject_regex": r"(s\d\d?)_words/",
                                      "align": str(align), "event": "colour"})
    t = m.table
    assert len(t) == 352 and m.missing.empty and set(t["subject"]) == {"s1"}
    assert t["colour"].value_counts().to_dict() == {c: 88 for c in COLOURS}
    assert (t.groupby(["command", "colour"]).size() == 22).all() and len(t.groupby(["command", "colour"])) == 16
    dur = t["event_end"] - t["event_start"]
    assert dur.between(0.08, 0.6).all() and t["event_start"].between(0.3, 2.8).all()  # a word of a 3 s sentence
    row = t.set_index("sentence").loc["bbaf3s"]  # its alignment file, read independently
    lines = [x.split() for x in (align / "bbaf3s.align").read_text().split("\n") if x.strip()]
    start, end = next((int(a), int(b)) for a, b, w in lines if w == "blue")
    assert (row["event_start"], row["event_end"]) == pytest.approx((start / 25000, end / 25000))


def test_manifest_event_columns_are_checked():
    base = {"dataset": ["d"] * 2, "video_id": ["a", "b"], "path": ["x", "y"], "subject": ["s", "s"]}
    t = check_table(pd.DataFrame({**base, "event_start": ["0.5", ""], "event_end": [0.7, None]}), "m.csv")
    assert t["event_start"].iloc[0] == 0.5 and np.isnan(t["event_end"].iloc[1])
    with pytest.raises(DataError, match="'event_start' without 'event_end'"):
        check_table(pd.DataFrame({**base, "event_start": [0.5, 0.6]}), "m.csv")
    with pytest.raises(DataError, match="row 2: event_start and event_end must both"):
        check_table(pd.DataFrame({**base, "event_start": [0.5, 0.6], "event_end": [0.7, None]}), "m.csv")
    with pytest.raises(DataError, match="row 1: event span 0.9..0.7"):
        check_table(pd.DataFrame({**base, "event_start": [0.9, 0.6], "event_end": [0.7, 0.8]}), "m.csv")
    with pytest.raises(DataError, match="row 2, column 'event_end': 'soon' is not a number"):
        check_table(pd.DataFrame({**base, "event_start": [0.5, 0.6], "event_end": [0.7, "soon"]}), "m.csv")


# ---------------------------------------------------------------- event-centred sampling


def test_event_frames_and_starts():
    t = np.arange(75) / 25.0  # GRID: 3 s at 25 fps
    assert sampling.event_frames(t, 1.18, 1.36) == (30, 34)  # frames at 1.20 .. 1.36 s
    assert sampling.event_frames(t, 1.21, 1.22) == (30, 30)  # an apex between frames: the nearest
    with pytest.raises(ValueError, match="outside the video"):
        sampling.event_frames(t, 5.0, 5.2)
    span = sampling.clip_span(16, 1)
    assert sampling.event_test_starts(75, span, (30, 34), 1) == [25]  # frames 25..40: centre 32.5, the event's 32 (+half a frame)
    starts = [sampling.event_train_start(75, span, (30, 34), 3, np.random.default_rng(i)) for i in range(300)]
    assert set(starts) == set(range(22, 29))  # +-3 frames, uniformly
    assert sampling.event_test_starts(75, span, (1, 2), 1) == [0]  # clamped into the video
    assert sampling.event_test_starts(75, span, (72, 74), 1) == [75 - 16]
    assert sampling.event_test_starts(75, span, (30, 34), 3, jitter=3) == [22, 25, 28]


def _word_stores(tmp_path, n_videos=8, n=75):
    paths = []
    for i in range(n_videos):
        c = content(f"w{i}", n=n, size=16, subject="s1", dataset="g", emotion=None, valence=None, per_frame=False, seed=i)
        start = 0.1 + (10 + 5 * i) / 25  # the event covers frames 10+5i .. 13+5i (timestamps start at 0.1 s)
        c.labels = {"colour": COLOURS[i % 4], "event_start": start, "event_end": start + 3 / 25}
        paths.append(write_store(tmp_path / f"w{i}.h5", c))
    return paths


def test_dataset_uses_any_label_column_and_centres_clips_on_the_event(tmp_path):
    paths = _word_stores(tmp_path)
    test = ClipDataset(paths, num_frames=8, sample_stride=1, input_size=16, mode="test", test_clips=1, label="colour", event=True)
    assert test.classes == COLOURS and test.labels().tolist() == [0, 1, 2, 3] * 2
    for i in range(8):
        item = test[i]
        idx = np.arange(item["start"], item["start"] + 8)
        assert idx.mean() == 10 + 5 * i + 1.5  # the clip's centre is the event's
    train = ClipDataset(paths, num_frames=8, sample_stride=1, input_size=16, mode="train", label="colour", event=True,
                        event_jitter=0.08)  # 2 frames
    seen = set()
    for epoch in range(40):
        train.set_epoch(epoch)
        seen.add(train[3]["start"] - test[3]["start"])
    assert seen == {-2, -1, 0, 1, 2}
    # without events: clips anywhere; the default label column is emotion (none here)
    plain = ClipDataset(paths, num_frames=8, sample_stride=1, input_size=16, mode="train", label="colour")
    starts = set()
    for epoch in range(40):
        plain.set_epoch(epoch)
        starts.add(plain[3]["start"])
    assert len(starts) > 10
    assert ClipDataset(paths, num_frames=8, input_size=16).classes == []  # default label column: emotion (absent)


def test_materialized_validation_clips_are_the_items_read_every_epoch(tmp_path):
    """Fine-tuning keeps the inner-validation clips in memory (issue 20's speed-up): the same items,
    bit for bit, as reading them in any epoch; refused for training clips (new every epoch)."""
    import torch

    from affectube.train.finetune import validation_clips

    paths = _word_stores(tmp_path)
    val = ClipDataset(paths, num_frames=8, sample_stride=1, input_size=16, mode="test", test_clips=3, label="colour",
                      event=True, event_jitter=0.08)
    kept = validation_clips(val)
    assert type(kept).__name__ == "MaterializedClips" and len(kept) == len(val) == 24
    for epoch in (1, 7):
        val.set_epoch(epoch)
        for i in range(len(val)):
            a, b = val[i], kept[i]
            assert a.keys() == b.keys()
            for k in a:
                assert torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k], k
    train = ClipDataset(paths, num_frames=8, input_size=16, mode="train", label="colour", event=True)
    assert validation_clips(train) is train and validation_clips(None) is None
    with pytest.raises(ValueError, match="deterministic"):
        train.materialize()


def test_event_mode_refuses_a_store_without_a_span(tmp_path):
    c = content("plain", n=40, size=16, per_frame=False)
    p = write_store(tmp_path / "plain.h5", c)
    with pytest.raises(DataError, match="plain.h5: finetune.event is on but the store has no event span"):
        ClipDataset([p], num_frames=8, input_size=16, event=True)


# ---------------------------------------------------------------- folds and label budgets


def _table(n_per_class=22, classes=COLOURS):
    rows = [{"dataset": "g", "video_id": f"s1_{c}{i:02d}", "path": "x", "subject": "s1", "colour": c}
            for c in classes for i in range(n_per_class)]
    return pd.DataFrame(rows)


def test_video_kfold_is_stratified_within_subject_and_covers_every_video():
    table = _table()
    folds = plan_folds(table, {"protocol": "video_kfold", "k": 4, "label": "colour", "seed": 3, "inner_val": 0.15})
    assert len(folds) == 4
    tested = [v for f in folds for v in f.videos("test")]
    assert sorted(tested) == sorted(table["video_id"])
    colour = dict(zip(table["video_id"], table["colour"]))
    for f in folds:
        counts = pd.Series([colour[v] for v in f.videos("test")]).value_counts()
        assert set(counts.index) == set(COLOURS) and counts.max() - counts.min() <= 1  # stratified
        sides = [set(f.videos(s)) for s in ("train", "val", "test")]
        assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
        assert len(f.videos("val")) == round(0.15 * 66)
        js = f.to_json()
        assert js["scope"] == "within-subject" and js["group"] == "video_id" and js["test"]["subjects"] == ["s1"]
        check_fold(Fold.from_json(json.loads(json.dumps(js))))
    # a cross-subject protocol is labelled so
    assert plan_folds(table.assign(subject=[f"p{i % 4}" for i in range(len(table))]), {"protocol": "loso"})[0].to_json()["scope"] == "cross-subject"


def test_label_fraction_subsamples_training_videos_only_stratified_seeded_and_nested():
    table = _table()
    colour = dict(zip(table["video_id"], table["colour"]))
    cfg = {"protocol": "video_kfold", "k": 4, "label": "colour", "seed": 1, "inner_val": 0.15}
    full = plan_folds(table, cfg)
    for frac in (0.1, 0.25):
        part = plan_folds(table, {**cfg, "label_fraction": frac})
        for f, p in zip(full, part):
            assert p.videos("test") == f.videos("test") and p.videos("val") == f.videos("val")  # never touched
            assert set(p.videos("train")) < set(f.videos("train"))
            assert set(p.extra["unlabelled"]) == set(f.videos("train")) - set(p.videos("train"))
            per_class = pd.Series([colour[v] for v in f.videos("train")]).value_counts()
            kept = pd.Series([colour[v] for v in p.videos("train")]).value_counts()
            for c in COLOURS:
                assert kept[c] == max(1, round(frac * per_class[c]))
            js = p.to_json()
            assert js["label_fraction"] == frac and Fold.from_json(js).videos("train") == p.videos("train")
    small, mid = plan_folds(table, {**cfg, "label_fraction": 0.1}), plan_folds(table, {**cfg, "label_fraction": 0.25})
    assert all(set(a.videos("train")) <= set(b.videos("train")) for a, b in zip(small, mid))  # nested budgets
    again = plan_folds(table, {**cfg, "label_fraction": 0.25})
    other = plan_folds(table, {**cfg, "label_fraction": 0.25, "seed": 2})
    assert [f.videos("train") for f in again] == [f.videos("train") for f in mid]
    assert [f.videos("train") for f in other] != [f.videos("train") for f in mid]


def test_params_schema_has_the_new_keys():
    from affectube.config import load_schema

    ft = load_schema()["properties"]["finetune"]["properties"]
    assert ft["label"]["default"] == "emotion" and ft["label_fraction"]["default"] == 1.0
    assert ft["event"]["default"] is False and ft["event_jitter"]["default"] == 0.0
    assert "video_kfold" in ft["protocol"]["enum"]


def test_config_reads_the_mouth_and_validates():
    """config/grid_words.yaml merged over params.yaml is valid and crops the mouth (grayscale), the
    encoder's input is that crop, and clips span the word's window (issue 20's recipe)."""
    import yaml

    from affectube.config import merge_params, validate

    from conftest import REPO

    cfg = merge_params(yaml.safe_load((REPO / "params.yaml").read_text()), yaml.safe_load((REPO / "config" / "grid_words.yaml").read_text()))
    cfg = validate(cfg, "config/grid_words.yaml")
    assert cfg["crop"]["strategy"] == "mouth" and cfg["crop"]["grayscale"] is True and 0.3 <= cfg["crop"]["scale"] <= 0.7
    assert cfg["pretrain"]["input_size"] == cfg["crop"]["size"]
    assert cfg["pretrain"]["num_frames"] * cfg["pretrain"]["sample_stride"] == 16  # 0.64 s around the word at 25 fps
    ft = cfg["finetune"]
    assert (ft["label"], ft["event"], ft["protocol"], ft["k"]) == ("colour", True, "video_kfold", 4)
