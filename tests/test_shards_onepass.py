"""One decode per video in the shard jobs (issue 17): the faces shard job decodes, detects, tracks, crops and
packs; the clips shard job then decodes nothing; a crop-only change re-crops without re-detecting; the stores
are those of the two-decode path, pixel for pixel. Real clips, the real SCRFD detector, real ffmpeg and HDF5."""

from __future__ import annotations

import argparse
import json
import os

import h5py
import numpy as np
import pytest

from affectube.clips.build import build_store
from affectube.shards import clips as clips_shard
from affectube.shards import faces as faces_shard
from affectube.video import decode as decode_mod

CLIPS = {"mead": "videos/mead/M030_front_angry_level3_001.mp4", "cremad": "videos/cremad/1001_DFA_ANG_XX.flv"}


@pytest.fixture()
def decodes(monkeypatch):
    """How many decodes (ffmpeg runs of a FrameStream) were started, per video file name."""
    counts: dict[str, int] = {}
    real = decode_mod.FrameStream._run

    def counting(self, slot):
        counts[self.path.name] = counts.get(self.path.name, 0) + 1
        return real(self, slot)

    monkeypatch.setattr(decode_mod.FrameStream, "_run", counting)
    return counts


def _setup(tmp_path, realdata, insightface_model, reader="ffmpeg"):
    rows = [{"dataset": "d", "video_id": vid, "path": str(realdata / rel), "subject": vid} for vid, rel in CLIPS.items()]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    # the realdata run's settings (config/realdata.yaml)
    cfg = {"decode": {"fps": 8, "max_side": 320, "reader": reader},
           "faces": {"backend": "insightface", "model": str(insightface_model), "det_size": 160, "every_k": 4},
           "crop": {"size": 64}, "clips": {}}
    return rows, cfg


def _faces(tmp_path, cfg, onepass=True):
    out = tmp_path / "faces-0.json"
    faces_shard.run(argparse.Namespace(
        cfg=json.dumps(cfg), rows=str(tmp_path / "rows.json"), dataset="d", shard="0", threads=1, out=str(out),
        stage_dir=str(tmp_path / "faces"), clips_rows=str(tmp_path / "rows.json") if onepass else None,
        clips_dir=str(tmp_path / "clips") if onepass else None))
    return {e["video_id"]: e["status"] for e in json.loads(out.read_text())["videos"]}


def _clips(tmp_path, cfg):
    out = tmp_path / "clips-0.json"
    clips_shard.run(argparse.Namespace(
        cfg=json.dumps(cfg), rows=str(tmp_path / "rows.json"), dataset="d", shard="0", out=str(out),
        faces_dir=str(tmp_path / "faces"), stage_dir=str(tmp_path / "clips")))
    return {e["video_id"]: e["status"] for e in json.loads(out.read_text())["videos"]}


def _same_store(a, b) -> None:
    with h5py.File(a) as x, h5py.File(b) as y:
        assert sorted(x) == sorted(y)
        for k in x:
            assert np.array_equal(x[k][()], y[k][()], equal_nan=True), k
        assert x.attrs["provenance"] == y.attrs["provenance"]


@pytest.mark.parametrize("reader", ["ffmpeg", "pyav"])  # the CLI's filter-graph split, or two conversions in process
def test_one_decode_per_video_and_a_crop_change_recrops_without_detection(tmp_path, realdata, insightface_model, decodes, reader):
    rows, cfg = _setup(tmp_path, realdata, insightface_model, reader)
    names = {vid: os.path.basename(r["path"]) for vid, r in zip(CLIPS, rows)}

    # detection and crop both out of date: one decode per video, in the faces job; the clips job decodes none
    assert _faces(tmp_path, cfg) == {"mead": "ran", "cremad": "ran"}
    assert decodes == {n: 1 for n in names.values()}
    assert _clips(tmp_path, cfg) == {"mead": "onepass", "cremad": "onepass"}
    assert decodes == {n: 1 for n in names.values()}
    assert _clips(tmp_path, cfg) == {"mead": "cached", "cremad": "cached"}
    # the stores are those of the two-decode path (stage clips along the same tracks), pixel for pixel
    for vid, row in zip(CLIPS, rows):
        ref = tmp_path / f"ref-{vid}.h5"
        build_store(row["path"], tmp_path / f"faces/tracks/{vid}.npz", row, vid, {k: cfg[k] for k in ("decode", "crop", "clips")}, ref)
        _same_store(tmp_path / f"clips/{vid}.h5", ref)
        with h5py.File(ref) as f:
            assert f["valid"][()].mean() > 0.9  # real faces were cropped
    decodes.clear()

    # a crop-only change: the faces job decodes nothing (tracks cached), the clips job re-crops along them
    tracks_mtime = {v: (tmp_path / f"faces/tracks/{v}.npz").stat().st_mtime_ns for v in CLIPS}
    cfg2 = {**cfg, "crop": {"size": 48}}
    assert _faces(tmp_path, cfg2) == {"mead": "cached", "cremad": "cached"} and decodes == {}
    assert _clips(tmp_path, cfg2) == {"mead": "ran", "cremad": "ran"}
    assert decodes == {n: 1 for n in names.values()}
    assert {v: (tmp_path / f"faces/tracks/{v}.npz").stat().st_mtime_ns for v in CLIPS} == tracks_mtime
    for vid in CLIPS:
        with h5py.File(tmp_path / f"clips/{vid}.h5") as f:
            assert f["frames"].shape[1:] == (48, 48, 3)

    # a faces change re-detects in one decode again and replaces the store (the old key no longer matches)
    decodes.clear()
    cfg3 = {**cfg2, "faces": {**cfg2["faces"], "every_k": 2}}
    assert _faces(tmp_path, cfg3) == {"mead": "ran", "cremad": "ran"} and decodes == {n: 1 for n in names.values()}
    assert _clips(tmp_path, cfg3) == {"mead": "onepass", "cremad": "onepass"}


def test_a_video_over_the_frame_buffer_is_decoded_again_by_the_clips_job(tmp_path, realdata, insightface_model, monkeypatch, decodes):
    from affectube.shards import onepass

    rows, cfg = _setup(tmp_path, realdata, insightface_model)
    monkeypatch.setattr(onepass, "MAX_BUFFER_BYTES", 64 * 48 * 3 * 10)  # under one clip's frames
    assert _faces(tmp_path, cfg) == {"mead": "ran", "cremad": "ran"}
    assert not list((tmp_path / "clips").glob("*.h5"))  # no frames kept, no store
    assert _clips(tmp_path, cfg) == {"mead": "ran", "cremad": "ran"}
    assert sum(decodes.values()) == 4
