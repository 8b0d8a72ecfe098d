"""The generic CSV manifest: malformed input names row and column; missing videos are listed; the CLI stage."""

from __future__ import annotations

import pandas as pd
import pytest

from affectube.cli import main
from affectube.data.manifest import build_manifest
from affectube.errors import DataError


def csv_spec(tmp_path, text, **extra):
    f = tmp_path / "m.csv"
    f.write_text(text)
    return {"adapter": "csv", "root": str(tmp_path), "file": str(f), **extra}


@pytest.fixture
def videos(tmp_path):
    for name in ("a.mp4", "b.mp4", "c d é.mp4"):
        (tmp_path / name).write_bytes(b"\0")
    return tmp_path


def test_csv_manifest_ok(videos):
    m = build_manifest("x", csv_spec(videos, "path,subject,emotion,valence\na.mp4,s1,happy,0.5\nb.mp4,s2,sad,\nc d é.mp4,s2,sad,-0.25\n"))
    assert list(m.table["video_id"]) == ["a", "b", "c_d"]
    assert m.table["valence"].tolist()[0] == 0.5 and pd.isna(m.table["valence"][1])
    assert m.table["path"][2].endswith("c d é.mp4")


@pytest.mark.parametrize(
    "text, where",
    [
        ("path,subject\na.mp4,s1\nb.mp4,\n", r"row 2, column 'subject': empty value"),
        ("path,subject,arousal\na.mp4,s1,0.1\nb.mp4,s2,high\n", r"row 2, column 'arousal': 'high' is not a number"),
        ("video_id,path,subject\nv1,a.mp4,s1\nv1,b.mp4,s2\n", r"row 2, column 'video_id': duplicate id 'v1' \(first in row 1\)"),
        ("video_id,path,subject\nv/1,a.mp4,s1\n", r"row 1, column 'video_id'.*not a safe id"),
        ("path,speaker\na.mp4,s1\n", r"missing required column 'subject'"),
        ("path,subject\n,s1\n", r"row 1, column 'path': empty value"),
    ],
)
def test_malformed_manifest_names_row_and_column(videos, text, where):
    with pytest.raises(DataError, match=where) as exc:
        build_manifest("x", csv_spec(videos, text))
    assert "m.csv" in str(exc.value)


def test_column_mapping(videos):
    m = build_manifest("x", csv_spec(videos, "clip,speaker\na.mp4,s1\n", columns={"path": "clip", "subject": "speaker"}))
    assert list(m.table["subject"]) == ["s1"]
    with pytest.raises(DataError, match="columns clip_file named in"):
        build_manifest("x", csv_spec(videos, "clip,speaker\na.mp4,s1\n", columns={"path": "clip_file"}))


def test_manifest_stage_lists_missing_videos(videos, tmp_path, capsys):
    import json

    spec = csv_spec(videos, "path,subject\na.mp4,s1\ngone.mp4,s2\nb.mp4,s3\n")
    out, missing = tmp_path / "out" / "x.csv", tmp_path / "out" / "x.missing.csv"
    cfg = json.dumps({"data": {"datasets": {"x": spec}}})
    assert main(["manifest", "--cfg", cfg, "--dataset", "x", "--out", str(out), "--missing", str(missing)]) == 0
    table, miss = pd.read_csv(out), pd.read_csv(missing)
    assert list(table["video_id"]) == ["a", "b"]
    assert list(miss["video_id"]) == ["gone"] and miss["problem"][0] == "video file not found"
    assert "1 missing" in capsys.readouterr().out
    # a malformed manifest: one-line error naming file, row and column; exit code 2; nothing written
    bad = json.dumps({"data": {"datasets": {"x": csv_spec(videos, "path,subject\na.mp4,\n")}}})
    out2 = tmp_path / "out" / "y.csv"
    assert main(["manifest", "--cfg", bad, "--dataset", "x", "--out", str(out2), "--missing", str(tmp_path / "y.m.csv")]) == 2
    assert "row 1, column 'subject'" in capsys.readouterr().err
    assert not out2.exists()


def test_demo_adapter_still_plans_rows():
    from affectube.config import load_params
    from affectube.data.manifest import dataset_spec

    cfg = load_params()
    m = build_manifest("demo", dataset_spec(cfg, "demo"))
    assert len(m.table) > 0 and m.missing.empty and {"subject", "emotion"} <= set(m.table.columns)
