"""Decoding: every codec of the real material, true timestamps, rotation, and every kind of broken file."""

from __future__ import annotations

import shutil
import subprocess

import av
import numpy as np
import pytest

from affectube.errors import DataError
from affectube.video.decode import decode, ffmpeg_exe
from affectube.video.probe import probe

CODECS = {
    "h264": "videos/mead/M030_front_angry_level3_001.mp4",
    "vp6f": "videos/cremad/1001_DFA_ANG_XX.flv",
    "hevc": "videos/pyfeat/face_noface.mov",
    "mpeg1video": "videos/grid/bbaf2n.mpg",
}


def pyav_times(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.array([float(f.pts * f.time_base) for f in c.decode(video=0)])


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_each_codec_decodes_with_true_timestamps(realdata, codec):
    path = realdata / CODECS[codec]
    d = decode(path, fps=25, max_side=160)
    assert d.info["codec"] == codec
    n = len(d)
    assert d.frames.dtype == np.uint8 and d.frames.shape[0] == n and d.frames.shape[-1] == 3 and max(d.frames.shape[1:3]) == 160
    assert n > 40 and d.frames.std() > 5  # real pictures, not a blank buffer
    # every kept timestamp is the presentation time of a real source frame, none twice, in order
    src = pyav_times(path)
    assert np.all(np.diff(d.timestamps) > 0)
    assert np.abs(d.timestamps[:, None] - src[None, :]).min(axis=1).max() < 1e-3
    # one frame per 1/25 s slot at most, and no slot skipped when the source has a frame there
    slots = np.floor(d.timestamps * 25 + 0.5 + 1e-6).astype(int)
    assert len(np.unique(slots)) == n
    assert set(np.floor(src * 25 + 0.5 + 1e-6).astype(int)) == set(slots)


def test_frame_rate_conversion_and_vfr(realdata):
    flv = decode(realdata / CODECS["vp6f"], fps=25, max_side=120)  # 29.97 fps, starts at 27 ms
    assert flv.timestamps[0] == pytest.approx(0.027)
    assert flv.info["kept_fps"] == pytest.approx(25, abs=0.3) and flv.info["source_fps"] == pytest.approx(29.97, abs=0.01)
    mov = realdata / CODECS["hevc"]
    assert probe(mov)["vfr"] is True and probe(realdata / CODECS["h264"])["vfr"] is False
    allf = decode(mov, fps=None, max_side=120)
    assert len(allf) == len(pyav_times(mov)) and np.allclose(allf.timestamps, pyav_times(mov), atol=1e-5)
    slow = decode(realdata / "videos/pyfeat/no_face.mp4", fps=25, max_side=120)  # 23.67 fps source: nothing duplicated
    assert slow.info["fps_limited"] is True and len(slow) == len(pyav_times(realdata / "videos/pyfeat/no_face.mp4"))


def test_size_is_never_upscaled(realdata):
    d = decode(realdata / CODECS["h264"], fps=25, max_side=1024)
    assert d.frames.shape[1:3] == (256, 256) and d.info["width"] == 256


def test_rotation_metadata_is_applied(realdata, tmp_path):
    src = realdata / "videos/pyfeat/single_face.mp4"
    rot = tmp_path / "rot90.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-display_rotation", "90", "-i", str(src), "-c", "copy", str(rot)], check=True)
    a = decode(src, fps=25, max_side=320)
    b = decode(rot, fps=25, max_side=320)
    assert b.info["rotation"] == 90 and a.info["rotation"] == 0
    assert a.frames.shape[1:3] == (180, 320) and b.frames.shape[1:3] == (320, 180)
    # the rotated file shows the same picture turned 90 degrees counter-clockwise
    turned = np.rot90(a.frames[10], k=1)
    assert np.abs(turned.astype(int) - b.frames[10].astype(int)).mean() < 6


def test_path_with_spaces_and_non_ascii(realdata, tmp_path):
    odd = tmp_path / "dir with spaces" / "vidéo ü 1.flv"
    odd.parent.mkdir()
    shutil.copy(realdata / CODECS["vp6f"], odd)
    assert len(decode(odd, fps=25, max_side=96)) == len(decode(realdata / CODECS["vp6f"], fps=25, max_side=96))


def _truncate(src, dst, frac=0.5):
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * frac)])
    return dst


def test_truncated_files_fail_naming_the_file(realdata, tmp_path):
    """decode.on_truncated: fail (the default, keep, is tested in test_video_wild.py)."""
    flv = _truncate(realdata / CODECS["vp6f"], tmp_path / "cut.flv")
    with pytest.raises(DataError, match=r"cut\.flv: truncated or corrupt: frames stop at"):
        decode(flv, fps=25, max_side=96, on_truncated="fail")
    faststart = tmp_path / "fs.mp4"  # moov first: the frames themselves are cut off
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(realdata / CODECS["h264"]), "-c", "copy", "-movflags", "+faststart", str(faststart)], check=True)
    with pytest.raises(DataError, match=r"cut\.mp4: truncated or corrupt"):
        decode(_truncate(faststart, tmp_path / "cut.mp4"), fps=25, max_side=96, on_truncated="fail")
    with pytest.raises(DataError, match=r"cut2\.mp4: not a readable video file.*truncated"):  # moov at the end: lost
        decode(_truncate(realdata / CODECS["h264"], tmp_path / "cut2.mp4"), fps=25, max_side=96)


def test_empty_missing_and_non_video_files(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.mp4: empty file \(0 bytes\)"):
        decode(empty)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(DataError, match=r"notes\.mp4: not a readable video file"):
        decode(text)
    wav = tmp_path / "tone.wav"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "sine=d=0.5", str(wav)], check=True)
    with pytest.raises(DataError, match=r"tone\.wav: no video stream \(container has: audio\)"):
        decode(wav)
    with pytest.raises(DataError, match=r"absent\.mp4: no such video file"):
        decode(tmp_path / "absent.mp4")
