"""The in-process PyAV reader (``decode.reader: pyav``, the default) against the ffmpeg CLI it replaces: the same
frames at the same timestamps, on real clips of every container here and on ffmpeg-made odd files (VFR, a
start-time offset, 30 fps onto the 25 fps grid, non-square pixels, an odd size, a truncated file); frames
are the CLI's bit for bit, scaled or not; a rotated video takes the CLI."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from affectube.errors import DataError
from affectube.video.decode import FrameStream, decode, ffmpeg_exe
from affectube.video.pyav_reader import rescale_near

REAL = ["videos/mead/W009_front_sad_level3_001.mp4", "videos/cremad/1001_DFA_HAP_XX.flv", "videos/grid/bbaf2n.mpg",
        "videos/pyfeat/single_face.mp4"]


def ffmpeg(*args) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def made(tmp_path_factory, realdata):
    d = tmp_path_factory.mktemp("pyav")
    mead, cremad = realdata / REAL[0], realdata / REAL[1]
    x264 = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "18"]
    ffmpeg("-i", cremad, "-t", "1.2", "-r", "30", *x264, d / "r30.mp4")  # 30 fps onto the 25 fps grid
    # variable frame rate: frames 2x as far apart in the second half
    ffmpeg("-i", cremad, "-t", "1.6", "-vf", "setpts='if(lt(N,20),N,20+2*(N-20))/(25*TB)'", "-fps_mode", "passthrough", *x264, d / "vfr.mp4")
    ffmpeg("-i", cremad, "-t", "1", *x264, "-output_ts_offset", "0.37", "-f", "mpegts", d / "offset.ts")  # starts at 0.37 + 1.4 s
    ffmpeg("-i", cremad, "-t", "1", "-vf", "scale=240:360,setsar=2", *x264, d / "sar.mp4")
    ffmpeg("-i", cremad, "-t", "1", "-vf", "scale=161:121", "-pix_fmt", "yuv444p", *x264, d / "odd.mp4")
    ffmpeg("-i", mead, "-c", "copy", "-movflags", "+faststart", d / "fs.mp4")
    data = (d / "fs.mp4").read_bytes()
    (d / "cut.mp4").write_bytes(data[: int(len(data) * 0.6)])  # frames cut, header kept
    ffmpeg("-display_rotation", "90", "-i", d / "odd.mp4", "-c", "copy", d / "rotated.mp4")
    return d


def both(path, **kw):
    out = {}
    for reader in ("ffmpeg", "pyav"):
        s = FrameStream(path, fps=25, max_side=640, threads=1, reader=reader, **kw)
        frames = np.concatenate([f for f, _ in s])
        out[reader] = (frames, s.timestamps, s.info)
    return out["ffmpeg"], out["pyav"]


def same(cli, av, scaled: bool) -> None:
    assert av[2]["reader"] == "pyav" and cli[2]["reader"] == "ffmpeg"
    # the CLI's timestamps are showinfo's, printed to 6 significant digits
    np.testing.assert_allclose(av[1], cli[1], rtol=2e-6, atol=1e-6)
    assert av[0].shape == cli[0].shape
    diff = np.abs(av[0].astype(np.int16) - cli[0].astype(np.int16))
    assert diff.max() == 0, (scaled, diff.mean(), diff.max())  # scaled or not: the CLI's pixels, bit for bit
    for key in ("truncated", "frames"):
        assert av[2][key] == cli[2][key], key
    for key in ("kept_fps", "duration_decoded"):  # from the timestamps (the CLI's to 6 digits, these to the microsecond)
        assert av[2][key] == pytest.approx(cli[2][key], rel=1e-5), key


@pytest.mark.parametrize("rel", REAL)
def test_real_clips_same_frames_and_timestamps(realdata, rel):
    cli, av = both(realdata / rel)  # the clips stage's stream: every kept frame at max_side
    same(cli, av, scaled=max(cli[2]["source_width"], cli[2]["source_height"]) > 640)
    cli, av = both(realdata / rel, work_side=213, stride=5)  # the faces pass: every 5th, at the analysis size
    same(cli, av, scaled=True)


@pytest.mark.parametrize("name", ["r30.mp4", "vfr.mp4", "offset.ts", "sar.mp4", "odd.mp4", "cut.mp4"])
def test_made_files_same_frames_and_timestamps(made, name):
    cli, av = both(made / name)
    same(cli, av, scaled=name == "sar.mp4")
    if name == "offset.ts":
        assert cli[1][0] == pytest.approx(0.0, abs=1e-6) and cli[2]["start_time"] > 1.0  # the file's start is t = 0
    if name == "r30.mp4":
        assert len(cli[1]) == 30  # 1.2 s on the 25 fps grid: 36 frames of 30 fps select 30
    if name == "vfr.mp4":
        gaps = np.diff(av[1])
        assert gaps[-1] > 1.5 * gaps[0]  # the real spacing kept
    if name == "cut.mp4":
        assert av[2]["truncated"] is True and av[2]["warnings"]
        with pytest.raises(DataError, match=r"cut\.mp4: truncated or corrupt: frames stop at"):
            decode(made / name, on_truncated="fail", reader="pyav")


def test_rotated_video_takes_the_cli(made):
    s = FrameStream(made / "rotated.mp4", fps=25, max_side=640, reader="pyav")
    frames = np.concatenate([f for f, _ in s])
    assert s.info["reader"] == "ffmpeg" and s.info["rotation"] in (90, 270)
    assert frames.shape[1:3] == (161, 121)  # upright: the display matrix applied


def test_rescale_near_rounds_half_away_from_zero():
    assert rescale_near(8000, 1, 1_000_000, 1, 90000) == 720  # 8 ms in 1/90000
    assert rescale_near(5, 1, 10, 1, 1) == 1 and rescale_near(-5, 1, 10, 1, 1) == -1  # 0.5 -> 1, -0.5 -> -1
    assert rescale_near(4, 1, 10, 1, 1) == 0 and rescale_near(-6, 1, 10, 1, 1) == -1


def test_unknown_reader_is_refused(made):
    with pytest.raises(ValueError, match="decode.reader must be one of"):
        FrameStream(made / "odd.mp4", reader="opencv")
