"""Stages faces, faces-qc and faces-sheet through the CLI: the tracks artifact, failures recorded, QC outputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from affectube.cli import main
from affectube.faces.tracks import load_tracks


@pytest.fixture(scope="module")
def cfg(insightface_model):
    from affectube.config import load_params

    p = load_params()
    return {"decode": p["decode"], "faces": {**p["faces"], "backend": "insightface", "model": str(insightface_model), "qc_frames": 3}, "crop": p["crop"], "figures": p["figures"]}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, realdata, cfg):
    """Tracks of one clip in an odd path, one corrupt file, one clip without a face."""
    root = tmp_path_factory.mktemp("faces")
    odd = root / "clips with spaces" / "vidéo ü.flv"
    odd.parent.mkdir()
    shutil.copy(realdata / "videos/cremad/1001_DFA_FEA_XX.flv", odd)
    broken = root / "broken.mp4"
    data = (realdata / "videos/mead/W009_front_sad_level3_001.mp4").read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    rows = [("fea", odd), ("broken", broken), ("noface", realdata / "videos/pyfeat/no_face.mp4")]
    out = root / "tracks"
    codes = {}
    for vid, path in rows:
        codes[vid] = main(["faces", "--cfg", json.dumps(cfg), "--video", str(path), "--dataset", "t", "--video-id", vid, "--out", str(out / f"{vid}.npz")])
    manifest = root / "t.csv"
    pd.DataFrame({"dataset": "t", "video_id": [r[0] for r in rows] + ["never_run"], "path": [str(r[1]) for r in rows] + [str(root / "x.mp4")],
                  "subject": ["s1", "s2", "s3", "s4"]}).to_csv(manifest, index=False)
    return root, out, manifest, codes


def test_tracks_file_follows_the_contract(tracked):
    root, out, _, codes = tracked
    assert codes["fea"] == 0
    with np.load(out / "fea.npz", allow_pickle=False) as z:
        n = len(z["timestamps"])
        spec = {"timestamps": ("f8", (n,)), "boxes": ("f4", (n, 4)), "landmarks": ("f4", (n, 5, 2)), "scores": ("f4", (n,)),
                "status": ("u1", (n,)), "num_faces": ("i2", (n,)), "frame_size": ("i4", (2,))}
        for key, (dtype, shape) in spec.items():
            assert z[key].dtype == np.dtype(dtype) and z[key].shape == shape, key
        meta = json.loads(str(z["meta"]))
        assert z["frame_size"].tolist() == [360, 480]
    assert n > 50 and meta["error"] is None and meta["video_id"] == "fea" and meta["dataset"] == "t"
    assert meta["path"].endswith("vidéo ü.flv") and meta["info"]["codec"] == "vp6f"
    assert meta["faces"]["backend"] == "insightface" and meta["decode"]["fps"] == 25
    tr = load_tracks(out / "fea.npz")
    assert tr.meta["counts"]["coverage"] >= 0.95
    k = tr.meta["faces"]["every_k"]
    key = np.arange(n) % k == 0
    assert set(np.unique(tr.status)) <= {1, 2, 3} and (tr.num_faces[key] >= 1).all() and (tr.num_faces[~key] == -1).all()


def test_undecodable_video_gets_an_empty_tracks_file(tracked):
    _, out, _, codes = tracked
    assert codes["broken"] == 0  # the job succeeds: the dataset goes on
    tr = load_tracks(out / "broken.npz")
    assert len(tr) == 0 and "broken.mp4" in tr.error and "truncated" in tr.error


def test_faces_qc_table_and_figure(tracked, cfg):
    root, out, manifest, _ = tracked
    table, fig = root / "qc.csv", root / "qc.png"
    assert main(["faces-qc", "--cfg", json.dumps({"figures": cfg["figures"]}), "--manifest", str(manifest), "--tracks-dir", str(out),
                 "--table", str(table), "--figure", str(fig)]) == 0
    qc = pd.read_csv(table).set_index("video_id")
    assert qc.loc["fea", "status"] == "ok" and qc.loc["fea", "coverage"] >= 0.95 and qc.loc["fea", "codec"] == "vp6f"
    assert qc.loc["broken", "status"] == "failed" and "truncated" in qc.loc["broken", "error"]
    assert qc.loc["noface", "status"] == "ok" and qc.loc["noface", "coverage"] == 0 and qc.loc["noface", "faces_max"] == 0
    assert qc.loc["never_run", "status"] == "missing"
    assert fig.stat().st_size > 10_000


def test_contact_sheet(tracked, cfg):
    import cv2

    root, out, manifest, _ = tracked
    sheet = root / "sheet.png"
    assert main(["faces-sheet", "--cfg", json.dumps(cfg), "--manifest", str(manifest), "--tracks-dir", str(out), "--out", str(sheet)]) == 0
    img = cv2.imread(str(sheet))
    assert img.shape[0] >= 4 * 96 and img.shape[1] >= 3 * 96
