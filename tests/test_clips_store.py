"""Clip stores: bit-exact round trip, metadata, chunk layout, atomic writes, refusal of bad stores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from affectube.clips.labels import align, frame_labels
from affectube.clips.sampling import clip_span
from affectube.clips.readers import StoreReader, chunk_byte_ranges, frame_layout, open_store
from affectube.clips.store import COMPRESSION, REQUIRED_ATTRS, StoreWriter, write_store
from affectube.errors import DataError

from clips_util import content

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("compression", sorted(COMPRESSION))
def test_round_trip_bit_exact_with_all_metadata(tmp_path, compression):
    c = content(n=45, size=24)
    path = write_store(tmp_path / "v0.h5", c, compression=compression, chunk_frames=8)
    with open_store(path, verify="full") as s:
        assert np.array_equal(s.frames[...], c.frames)
        assert s.frames.dtype == np.uint8 and s.frames.shape == (45, 24, 24, 3)
        assert set(REQUIRED_ATTRS) <= set(s.attrs)
        assert (s.dataset, s.video_id, s.subject, s.session) == ("d", "v0", "s0", "s0_a")
        assert s.labels == {"emotion": "happy", "valence": 0.5}
        assert s.attrs["compression"] == compression and s.attrs["chunk_frames"] == 8
        assert s.attrs["crop"]["size"] == 24 and s.attrs["decode"]["fps"] == 25.0 and s.attrs["fps"] == 25.0
        assert s.attrs["provenance"] == "0" * 64 and s.attrs["error"] == ""
        assert list(s.attrs["frame_shape"]) == [24, 24, 3]
        np.testing.assert_array_equal(s.array("timestamps"), c.timestamps)
        np.testing.assert_array_equal(s.array("face_status"), c.face_status)
        np.testing.assert_array_equal(s.array("face_score"), c.face_score)
        np.testing.assert_array_equal(s.array("face_boxes"), c.face_boxes)
        np.testing.assert_array_equal(s.array("valid"), c.valid)
        assert s.frame_label_names == ["arousal"]
        np.testing.assert_array_equal(s.array("frame_labels/arousal"), c.frame_labels["arousal"])
        idx = np.array([3, 5, 7, 9])
        np.testing.assert_array_equal(s.read_frames(idx), c.frames[idx])
    # stores are ordinary shared outputs, not private temp files
    assert os.stat(path).st_mode & 0o044


def test_empty_store_for_undecodable_video(tmp_path):
    c = content(n=0, size=16)
    c.error = "cannot decode"
    path = write_store(tmp_path / "bad.h5", c)
    with open_store(path, verify="full") as s:
        assert len(s) == 0 and s.error == "cannot decode" and s.frames.shape == (0, 16, 16, 3)


@pytest.mark.parametrize("compression", ["none", "blosc-lz4"])
@pytest.mark.parametrize("n", [40, 3000])
def test_chunks_hold_whole_frames_and_a_clip_is_one_contiguous_byte_range(tmp_path, compression, n):
    chunk_frames = 8
    c = content(n=n, size=8, per_frame=False)
    path = write_store(tmp_path / "v.h5", c, compression=compression, chunk_frames=chunk_frames)
    with h5py.File(path, "r") as f:
        ds = f["frames"]
        assert ds.chunks == (chunk_frames, 8, 8, 3)  # time-only chunking: whole frames, never split in space
        ranges = chunk_byte_ranges(ds)
    assert [r[0] for r in ranges] == list(range(0, n, chunk_frames))  # every chunk stored, in time order
    offsets = np.array([r[1] for r in ranges])
    sizes = np.array([r[2] for r in ranges])
    assert np.all(offsets[1:] == offsets[:-1] + sizes[:-1]), "frame chunks are not back to back in the file"
    # hence any clip (16 frames, stride 2 or 4) reads the chunks [first, last] = one contiguous byte range,
    # and at most ceil(span / chunk_frames) + 1 of them
    for stride in (2, 4):
        span = clip_span(16, stride)
        for start in range(0, n - span + 1, 3):
            first, last = start // chunk_frames, (start + span - 1) // chunk_frames
            assert last - first + 1 <= -(-span // chunk_frames) + 1
            assert offsets[last] + sizes[last] - offsets[first] == sizes[first : last + 1].sum()


@pytest.mark.parametrize("chunk_frames", [0, 16])
def test_uncompressed_frames_are_one_byte_range_at_the_offset_hdf5_reports(tmp_path, chunk_frames):
    c = content(n=100, size=8, per_frame=False)
    path = write_store(tmp_path / "v.h5", c, compression="none", chunk_frames=chunk_frames)
    with h5py.File(path, "r") as f:
        assert f["frames"].chunks == (None if chunk_frames == 0 else (16, 8, 8, 3))
        assert f.attrs["chunk_frames"] == chunk_frames
        layout = frame_layout(f, path)
    raw = path.read_bytes()
    fb = layout.frame_bytes
    for i in (0, 15, 16, 99):  # frame i is at offset + i * frame_bytes, chunk boundaries or not
        assert raw[layout.frames + i * fb : layout.frames + (i + 1) * fb] == c.frames[i].tobytes()
    with pytest.raises(DataError, match="contiguous, only without compression"):
        write_store(tmp_path / "w.h5", c, compression="lzf", chunk_frames=0)


def test_streamed_writes_in_uneven_blocks_keep_whole_chunks_in_order(tmp_path):
    c = content(n=301, size=16)
    with StoreWriter(tmp_path / "v.h5", 301, (16, 16, 3), compression="blosc-lz4", chunk_frames=16) as w:
        for a in range(0, 301, 37):
            w.append(c.frames[a : a + 37])
        w.finish(c)
    with open_store(tmp_path / "v.h5", verify="full") as s:
        assert np.array_equal(s.frames[...], c.frames)
        ranges = chunk_byte_ranges(s.frames)
    assert all(b[1] == a[1] + a[2] for a, b in zip(ranges, ranges[1:]))
    assert [p.name for p in tmp_path.iterdir()] == ["v.h5"]


def test_writer_failing_midway_leaves_nothing(tmp_path):
    c = content(n=40, size=16)
    with pytest.raises(DataError, match="more frames appended"):
        with StoreWriter(tmp_path / "v.h5", 30, (16, 16, 3)) as w:
            w.append(c.frames)
    with pytest.raises(DataError, match="20 frames appended, 40 announced"):
        with StoreWriter(tmp_path / "v.h5", 40, (16, 16, 3)) as w:
            w.append(c.frames[:20])
            w.finish(c)
    assert list(tmp_path.iterdir()) == []


def test_killed_writer_leaves_no_complete_looking_store(tmp_path):
    out = tmp_path / "v.h5"
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(REPO / 'workflow')!r}, {str(REPO / 'tests')!r}]
        from clips_util import content
        from affectube.clips.store import write_store
        c = content(n=1500, size=112, per_frame=False)
        print("writing", flush=True)
        write_store({str(out)!r}, c, compression="gzip", chunk_frames=16)
        print("done", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    deadline = time.time() + 60
    partial = []
    while time.time() < deadline:  # wait until the temporary file is being filled, then kill -9
        partial = [p for p in tmp_path.iterdir() if p.name != out.name and p.stat().st_size > 1 << 20]
        if partial or proc.poll() is not None:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the writer finished before it could be killed"
    assert partial, "no partial file was seen"
    assert not out.exists()
    for p in tmp_path.iterdir():  # what is left is a hidden temporary name, and it is refused
        assert p.name.startswith(".v.h5.") and ".partial" in p.name
        with pytest.raises(DataError, match=str(p.name)):
            open_store(p)
        with pytest.raises(DataError):
            StoreReader(p)


@pytest.fixture
def store(tmp_path):
    return write_store(tmp_path / "v.h5", content(n=40, size=16), chunk_frames=8)


def test_corrupt_frame_bytes_are_refused(store):
    with h5py.File(store, "r") as f:
        _, offset, size = chunk_byte_ranges(f["frames"])[2]  # frames 16..23
    with open(store, "r+b") as fh:
        fh.seek(offset + size // 2)
        byte = fh.read(1)
        fh.seek(offset + size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(DataError, match=r"v\.h5: frame \d+ does not match its checksum"):
        open_store(store, verify="full")
    reader = StoreReader(store)
    with pytest.raises(DataError, match="frame 1[6-9]|frame 2[0-3]"):
        reader.read(np.arange(14, 30, 2))
    reader.read(np.arange(0, 16, 2))  # the clean chunks still read
    reader.close()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: f.attrs.__setitem__("subject", "s9"), "checksum mismatch"),
        (lambda f: f["timestamps"].__setitem__(3, 99.0), "checksum mismatch"),
        (lambda f: f["frame_labels/arousal"].__setitem__(0, 5.0), "checksum mismatch"),
        (lambda f: f.attrs.__delitem__("provenance"), "lacks attribute.*provenance"),
        (lambda f: f.attrs.__delitem__("complete"), "incomplete clip store"),
        (lambda f: f.__delitem__("face_status"), "lacks the 'face_status' array"),
    ],
)
def test_modified_or_incomplete_store_is_refused(store, damage, message):
    with h5py.File(store, "r+") as f:
        damage(f)
    with pytest.raises(DataError, match=message) as err:
        open_store(store)
    assert str(store) in str(err.value)


def test_truncated_or_foreign_file_is_refused(store, tmp_path):
    data = store.read_bytes()
    store.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="v.h5: not a readable HDF5 clip store"):
        open_store(store)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["complete"] = True
    with pytest.raises(DataError, match="other.h5: clip store lacks attribute"):
        open_store(other)


def test_cli_verify_reports_one_line_error(store):
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    ok = subprocess.run([sys.executable, "-m", "affectube", "clips", "--verify", str(store)], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "OK (40 frames" in ok.stdout
    with h5py.File(store, "r+") as f:
        f.attrs["video_id"] = "tampered"
    bad = subprocess.run([sys.executable, "-m", "affectube", "clips", "--verify", str(store)], capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "checksum mismatch" in bad.stderr and str(store) in bad.stderr


# ---------------------------------------------------------------- per-frame labels
def test_frame_labels_align_by_timestamp(tmp_path):
    import pandas as pd

    t = np.arange(0, 2.0, 0.02)  # 50 Hz annotation, nothing between 1.0 s and 1.5 s
    t = t[(t < 1.0) | (t > 1.5)]
    pd.DataFrame({"time": t, "valence": t * 2}).to_csv(tmp_path / "v.csv", index=False)
    pd.DataFrame({"time": t, "r1": np.sin(t), "r2": np.sin(t) + 0.2}).to_csv(tmp_path / "a.csv", index=False)
    value = f"{tmp_path / 'v.csv'};arousal={tmp_path / 'a.csv'}"  # the manifest's annotation syntax
    frames_t = np.arange(-0.2, 2.4, 0.04)  # 25 fps, starting before and ending after the annotation
    labels, meta = frame_labels(value, frames_t)
    assert sorted(labels) == ["arousal", "valence"]
    inside = (frames_t >= -0.01) & (frames_t <= 1.99) & ((frames_t <= 0.98 + 1e-9) | (frames_t >= 1.52 - 1e-9))
    np.testing.assert_allclose(labels["valence"][inside], frames_t[inside] * 2, atol=1e-5)
    np.testing.assert_allclose(labels["arousal"][inside], np.sin(frames_t[inside]) + 0.1, atol=1e-3)  # raters averaged
    assert np.isnan(labels["valence"][~inside]).all()  # never extrapolated, gaps stay gaps
    assert meta["annotation_rows"] == {str(tmp_path / "v.csv"): len(t), str(tmp_path / "a.csv"): len(t)}
    assert len(meta["sha256"]) == 2


def test_frame_labels_from_one_file_per_target_are_aligned_each_on_its_own_grid(tmp_path):
    import pandas as pd

    ta = np.arange(0, 3.0, 0.04)  # arousal at 25 Hz over 0-3 s, two raters
    pd.DataFrame({"time": ta, "FM1": 0.5 * ta - 0.3, "FF1": 0.5 * ta - 0.1}).to_csv(tmp_path / "a.csv", sep=";", index=False)
    tv = np.arange(0.5, 1.5, 0.1)  # valence at 10 Hz over 0.5-1.4 s only
    pd.DataFrame({"time": tv, "valence": 0.3 - 0.25 * tv}).to_csv(tmp_path / "v.csv", index=False)
    frames_t = np.arange(0, 3.0, 1 / 30)
    labels, meta = frame_labels(f"arousal={tmp_path / 'a.csv'};valence={tmp_path / 'v.csv'}", frames_t)
    np.testing.assert_allclose(labels["arousal"][frames_t <= 2.96], 0.5 * frames_t[frames_t <= 2.96] - 0.2, atol=1e-5)
    covered = (frames_t >= 0.45) & (frames_t <= 1.45)  # half a step either side of 0.5-1.4 s
    np.testing.assert_allclose(labels["valence"][covered], 0.3 - 0.25 * np.clip(frames_t[covered], 0.5, 1.4), atol=1e-5)
    assert np.isnan(labels["valence"][~covered]).all()  # the shorter file is not extrapolated over the longer one's span
    assert meta["annotation_span"][str(tmp_path / "v.csv")] == [pytest.approx(0.5), pytest.approx(1.4)]
    with pytest.raises(DataError, match="label 'arousal' comes from more than one file"):
        frame_labels(f"arousal={tmp_path / 'a.csv'};arousal={tmp_path / 'v.csv'}", frames_t)


def test_align_leaves_long_gaps_empty():
    out = align(np.array([0.0, 0.5, 1.0, 1.5, 2.0]), np.array([0.0, 1.0, 2.0, 5.0]), np.array([0.0, 1.0, 2.0, 5.0]))
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0, 1.5, 2.0])
    gap = align(np.array([3.0]), np.array([0.0, 1.0, 2.0, 5.0]), np.array([0.0, 1.0, 2.0, 5.0]))
    assert np.isnan(gap).all()


@pytest.mark.parametrize("text, message", [("t,valence\n0,1\n1,2\n", "no time column"),
                                           ("time,valence\n0,1\n0,2\n", "appears twice"),
                                           ("time,valence\n0,1\n", "at least 2")])
def test_bad_annotation_file_is_refused(tmp_path, text, message):
    ann = tmp_path / "ann.csv"
    ann.write_text(text)
    with pytest.raises(DataError, match=message):
        frame_labels(str(ann), np.arange(3) / 25)
