"""The decode command line, written out directly, is the one ffmpeg-python's graph compiles (same frames, same times)."""

from __future__ import annotations

import itertools

import ffmpeg

from affectube.video.decode import FrameStream, ffmpeg_exe


def _ffmpeg_python(s: FrameStream) -> list[str]:
    """FrameStream.command as it was built with ffmpeg-python (the reference)."""
    stream = ffmpeg.input(str(s.path), **({"threads": s.threads} if s.threads else {}))["v:0"]
    if s.fps:
        slot = f"floor(t*{s.fps!r}+0.5)"
        stream = stream.filter("select", f"if(gte({slot},ld(0)),st(0,{slot}+1)*0+1,0)")
    stream = stream.filter("showinfo", checksum=0)
    if s.stride > 1:
        stream = stream.filter("select", f"not(mod(n,{s.stride}))")
    h, w = s.size
    if (w, h) != (s.info["source_width"], s.info["source_height"]):
        stream = stream.filter("scale", w, h, flags="area")
    if s.info["sar"] != 1.0:
        stream = stream.filter("setsar", 1)
    out = stream.output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
    out = out.global_args("-nostdin", "-hide_banner", "-nostats", "-loglevel", "info")
    if s.threads:
        out = out.global_args("-filter_complex_threads", str(s.threads))
    return out.compile(cmd=ffmpeg_exe())


def test_command_is_the_ffmpeg_python_one(realdata, tmp_path):
    odd = tmp_path / "a clip, [odd]; it's=1:2.mp4"  # characters the filter graph escapes are in the path only
    odd.symlink_to(realdata / "videos/cremad/1001_DFA_HAP_XX.flv")
    clips = [realdata / "videos/mead/M030_front_angry_level3_001.mp4", realdata / "videos/pyfeat/noface_face.mov", odd]
    n = 0
    for path, work in itertools.product(clips, [None, 100]):
        s = FrameStream(path, fps=25, max_side=640, work_side=work)  # probed once; the settings the command reads vary
        for fps, threads, stride, sar in itertools.product([25.0, 29.97, None], [0, 2], [1, 5], [1.0, 0.9375]):
            s.fps, s.threads, s.stride, s.info["sar"] = fps, threads, stride, sar
            assert s.command() == _ffmpeg_python(s)
            n += 1
    assert n == 144
