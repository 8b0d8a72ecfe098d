"""Decode a video into numpy frames at a target rate and size, with true timestamps.

``decode.reader``: ``ffmpeg`` (params.yaml's default) runs the static binary shipped by imageio-ffmpeg,
whose raw RGB frames stream straight into numpy; ``pyav`` decodes in this process
(:mod:`affectube.video.pyav_reader`: the same frames and timestamps as the CLI, no process start-up). No JPEG frame folders on disk.

Frame rate: frames are kept on a grid of ``1/fps`` seconds anchored at t=0 of the
source timeline. A source frame at time ``t`` falls into grid slot
``round(t * fps)``; the first frame of each slot is kept, later ones are dropped.
Frames are never duplicated: a source slower than ``fps`` keeps every frame (the
rate actually kept is ``info["kept_fps"]``) and variable-frame-rate sources keep
their real spacing. ``timestamps`` holds the presentation time (seconds, source
timeline, as reported by ffmpeg for the decoded frame) of every kept frame, so
per-frame annotations can be aligned exactly. ``fps=None`` keeps every frame.

Size: frames are downscaled (area filter) so the longest side is at most
``max_side``; they are never upscaled. Rotation metadata is applied (frames come
out the way a player shows them). ``info`` records codec, source fps, rotation,
source and decoded size, duration and the rate kept.

Corrupt, empty and non-video files raise :class:`~affectube.errors.DataError` naming
the file and the problem.

Truncated files (``decode.on_truncated``): a file whose frames stop before the duration
its header announces (by more than 0.5 s and 10% of it) is *truncated*. With ``keep``
(the default) the frames that decode are kept and ``info`` says so: ``truncated``
True, ``duration_announced`` (s, header) and ``duration_decoded`` (s, last frame + one
frame period), and a warning is logged; the faces QC table and the report list such
files. With ``fail`` it raises DataError ("truncated or corrupt: frames stop at ...").
A file of which no frame decodes always raises.

Geometry: display-matrix rotation is applied by ffmpeg (frames come out upright, as a
player shows them; ``info["rotation"]``). Non-square pixels (sample aspect ratio
``info["sar"]`` other than 1:1) are resampled to square ones at the display aspect
ratio: the frame width becomes ``coded width x SAR`` before the ``max_side`` limit, so
faces are not stretched. Odd sizes need nothing (rgb24 has no even-size rule).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from affectube.errors import DataError
from affectube.video.probe import check_readable, probe

log = logging.getLogger(__name__)

_PTS_RE = re.compile(r"\bn:\s*(\d+)\s+pts:\s*(-?\d+)\s+pts_time:\s*(-?[0-9.eE+-]+)")
# a truncated file may lose this much of its announced duration before it is called truncated
TRUNCATION_TOLERANCE_S = 0.5
TRUNCATION_TOLERANCE_FRAC = 0.1
ON_TRUNCATED = ("keep", "fail")
READERS = ("pyav", "ffmpeg")


@dataclass
class Decoded:
    """Frames of one video: ``frames`` uint8 [N,H,W,3] RGB, ``timestamps`` f8 [N] (s), ``info``."""

    frames: np.ndarray
    timestamps: np.ndarray
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.timestamps)


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def output_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(w, h) after scaling the longest side down to ``max_side`` (never up; rgb24 needs no even sizes)."""
    if not max_side or max(width, height) <= max_side:
        return int(width), int(height)
    s = max_side / float(max(width, height))
    return max(1, int(round(width * s))), max(1, int(round(height * s)))


class FrameStream:
    """Iterate over decoded frames in chunks: ``for frames, times in FrameStream(...)``.

    ``info`` is available before iteration (probe + decode settings) and is
    completed after it (``frames``, ``kept_fps``, ``warnings``).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float | None = 25,
        max_side: int | None = 640,
        chunk: int = 32,
        threads: int = 0,
        work_side: int | None = None,
        stride: int = 1,
        on_truncated: str = "keep",
        first_chunk: int | None = None,
        reader: str = "ffmpeg",
    ):
        self.path = Path(path)
        if reader not in READERS:
            raise ValueError(f"decode.reader must be one of {READERS}, got {reader!r}")
        if on_truncated not in ON_TRUNCATED:
            raise ValueError(f"decode.on_truncated must be one of {ON_TRUNCATED}, got {on_truncated!r}")
        self.on_truncated = on_truncated
        if fps is not None and fps <= 0:
            raise DataError(f"{self.path}: decode fps must be > 0 (or null for every frame), got {fps}")
        self.fps = float(fps) if fps else None
        self.max_side = max_side
        self.chunk = max(1, int(chunk))
        # `first_chunk`: a smaller first chunk (the caller learns about the video early: adaptive detection)
        self.first_chunk = min(self.chunk, max(1, int(first_chunk))) if first_chunk else self.chunk
        self.threads = int(threads)
        # `stride` k > 1: deliver only every k-th kept frame (0, k, 2k, ...); `timestamps` still
        # lists every kept frame (read after iterating), so callers know the full timeline
        self.stride = max(1, int(stride))
        self.timestamps: np.ndarray | None = None
        src = probe(self.path)
        # PyAV decodes in this process; a display-matrix rotation (which the ffmpeg CLI applies) takes the CLI
        self.reader = "ffmpeg" if reader == "ffmpeg" or src.get("rotation") else "pyav"
        # display size: non-square pixels (SAR != 1) are resampled to square ones
        self.display = display_size(src["width"], src["height"], src.get("sar", 1.0))
        w, h = output_size(*self.display, max_side)
        # `work_side`: deliver smaller frames than the decoded size (same frames, same timestamps);
        # `scale` maps their pixel coordinates back to decoded-frame pixels.
        ww, wh = output_size(w, h, work_side) if work_side else (w, h)
        self.decoded_size = (h, w)
        self.size = (wh, ww)
        self.scale = (ww / w, wh / h)
        self.info = {
            **{k: src[k] for k in ("codec", "container", "rotation", "vfr", "duration", "start_time", "has_audio")},
            "source_fps": src["fps"],
            "source_width": src["width"],
            "source_height": src["height"],
            "sar": src.get("sar", 1.0),
            "source_frames": src["packets"],
            "width": w,
            "height": h,
            "target_fps": self.fps,
            "max_side": max_side,
            "reader": self.reader,
        }

    def command(self) -> list[str]:
        """The ffmpeg command line (written out directly: building it with ffmpeg-python's graph, which hashes
        every node, cost ~5 ms of CPU per video; ``tests/test_ingest_command.py`` checks it is the same argv)."""
        filters = []
        if self.fps:
            slot = f"floor(t*{self.fps!r}+0.5)"
            # keep the first frame of each grid slot (stateful select: variable 0 = next free slot)
            filters.append("select=" + _escape(f"if(gte({slot},ld(0)),st(0,{slot}+1)*0+1,0)"))
        filters.append("showinfo=checksum=0")
        if self.stride > 1:
            filters.append("select=" + _escape(f"not(mod(n,{self.stride}))"))
        h, w = self.size
        if (w, h) != (self.info["source_width"], self.info["source_height"]):
            filters.append(f"scale={w}:{h}:flags=area")
        if self.info["sar"] != 1.0:
            filters.append("setsar=1")
        graph = ";".join(f"[{'0:v:0' if i == 0 else f's{i - 1}'}]{f}[s{i}]" for i, f in enumerate(filters))
        threads = ["-threads", str(self.threads)] if self.threads else []
        return [ffmpeg_exe(), *threads, "-i", str(self.path), "-filter_complex", graph, "-map", f"[s{len(filters) - 1}]",
                "-f", "rawvideo", "-fps_mode", "passthrough", "-pix_fmt", "rgb24", "pipe:",
                "-nostdin", "-hide_banner", "-nostats", "-loglevel", "info",
                *(["-filter_complex_threads", str(self.threads)] if self.threads else [])]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        h, w = self.size
        buf = np.empty((self.chunk, h, w, 3), dtype=np.uint8)
        start = count = 0
        k = self.stride
        for count in self._run(lambda i: memoryview(buf[i - start].reshape(-1))):
            if count - start == (self.first_chunk if start == 0 else self.chunk):
                t = self._wait_times((count - 1) * k + 1)
                yield buf[: count - start].copy(), t[start * k : count * k : k]
                start = count
        if count > start:
            yield buf[: count - start].copy(), self._wait_times((count - 1) * k + 1)[start * k : count * k : k]

    def read_all(self) -> Decoded:
        """Every frame in one array, read straight from the pipe into it (no chunk copies)."""
        if self.stride > 1:
            raise ValueError("read_all() delivers every frame: use stride=1")
        h, w = self.size
        holder = [np.empty((max(16, int(self.info["source_frames"] * 1.02) + 4), h, w, 3), dtype=np.uint8)]

        def slot(k: int) -> memoryview:
            if k >= len(holder[0]):  # more frames than the header promised: grow
                holder[0] = np.concatenate([holder[0], np.empty_like(holder[0][: max(16, k // 2)])])
            return memoryview(holder[0][k].reshape(-1))

        count = 0
        for count in self._run(slot):
            pass
        return Decoded(holder[0][:count], self._wait_times(count)[:count], self.info)

    def _run(self, slot) -> Iterator[int]:
        """Decode; write delivered frame k into ``slot(k)``; yield the number of frames delivered so far."""
        if self.reader == "pyav":
            from affectube.video.pyav_reader import run_pyav

            yield from run_pyav(self, slot)
        else:
            yield from self._run_ffmpeg(slot)

    def _kept(self, frame) -> None:
        """Called with every kept PyAV frame (``av.VideoFrame``) before the stride: a subclass's second output."""

    def _run_ffmpeg(self, slot) -> Iterator[int]:
        """Run ffmpeg; read frame k into ``slot(k)``; yield the number of frames read so far."""
        h, w = self.size
        nbytes = h * w * 3
        proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._times: list[float] = []
        errors: list[str] = []
        self._reader = threading.Thread(target=_read_stderr, args=(proc.stderr, self._times, errors), daemon=True)
        self._reader.start()
        count = 0
        try:
            while True:
                got = _read_exact(proc.stdout, slot(count))
                if got == 0:
                    break
                if got < nbytes:
                    errors.append(f"incomplete last frame ({got} of {nbytes} bytes)")
                    break
                count += 1
                yield count
            proc.stdout.close()
            rc = proc.wait()
            self._reader.join()
            if rc != 0:
                detail = "; ".join(errors[-3:]) or f"ffmpeg exit code {rc}"
                raise DataError(f"{self.path}: cannot decode ({detail})")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        n = len(self._times) if self.stride > 1 else count
        if self.stride > 1 and count != -(-n // self.stride):
            raise DataError(f"{self.path}: ffmpeg delivered {count} frames for {n} timestamps at stride {self.stride}")
        self._finish(n, self._times, errors)

    def _wait_times(self, needed: int) -> np.ndarray:
        # showinfo logs a frame before it reaches the pipe, so its line is (almost always) already read
        times, reader = self._times, self._reader
        while reader is not None and len(times) < needed and reader.is_alive():
            reader.join(0.005)
        if len(times) < needed:
            raise DataError(f"{self.path}: ffmpeg reported {len(times)} frame timestamps for {needed} frames")
        return np.asarray(times[:needed], dtype=np.float64)

    def _finish(self, count: int, times: list[float], errors: list[str]) -> None:
        if count == 0:
            detail = "; ".join(errors[-3:]) or "no frame decoded"
            raise DataError(f"{self.path}: no video frames could be decoded ({detail})")
        t = np.asarray(times[:count], dtype=np.float64)
        self.timestamps = t
        duration = self.info.get("duration")
        period = 1.0 / (self.fps or self.info["source_fps"] or 25.0)
        last = float(t[-1]) + period
        truncated = False
        if duration:
            end_expected = self.info["start_time"] + duration
            if last < end_expected - max(TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_FRAC * duration):
                detail = f"; ffmpeg: {errors[-1]}" if errors else ""
                message = f"{self.path}: truncated or corrupt: frames stop at {last:.2f} s of the {end_expected:.2f} s the file announces{detail}"
                if self.on_truncated == "fail":
                    raise DataError(message)
                truncated = True
                log.warning("%s (decode.on_truncated: keep: the %d frames that decode are kept)", message, count)
        span = float(t[-1] - t[0]) if count > 1 else 0.0
        self.info.update(
            {
                "frames": count,
                "kept_fps": round((count - 1) / span, 4) if span > 0 else None,
                "fps_limited": bool(self.fps and self.info["source_fps"] and self.info["source_fps"] < self.fps * 0.999),
                "first_time": float(t[0]),
                "last_time": float(t[-1]),
                "truncated": truncated,
                "duration_announced": duration,
                "duration_decoded": round(last - float(self.info["start_time"] or 0.0), 4),
                "warnings": errors[-10:],
            }
        )
        if self.info["fps_limited"]:
            log.info("%s: source rate %.3f fps is below the target %.3f fps: every frame kept, none duplicated",
                        self.path, self.info["source_fps"], self.fps)


def _escape(value: str) -> str:
    """A filter argument escaped for a -filter_complex graph, as ffmpeg-python escapes it (twice for the filter's
    own syntax, once for the graph's)."""
    for chars in ("\\'=:", "\\'=:", "\\'[],;"):
        for ch in chars:
            value = value.replace(ch, "\\" + ch)
    return value


def display_size(width: int, height: int, sar: float = 1.0) -> tuple[int, int]:
    """(w, h) with square pixels: the width stretched (SAR > 1) or narrowed (SAR < 1) by the sample aspect ratio."""
    if not sar or abs(sar - 1.0) < 1e-6:
        return int(width), int(height)
    return max(1, int(round(width * sar))), int(height)


def _read_exact(pipe, view: memoryview) -> int:
    """Fill ``view`` from ``pipe``; return the bytes read (less than asked only at end of stream)."""
    got = 0
    total = len(view)
    while got < total:
        n = pipe.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _read_stderr(pipe, times: list[float], errors: list[str]) -> None:
    for raw in iter(pipe.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip()
        if "Parsed_showinfo" in line:
            m = _PTS_RE.search(line)
            if m:
                times.append(float(m.group(3)))
            continue
        low = line.lower()
        if "error" in low or "invalid" in low or "corrupt" in low or "truncat" in low or "moov atom" in low:
            errors.append(line.strip()[-300:])
    pipe.close()


def decode(path: str | os.PathLike, fps: float | None = 25, max_side: int | None = 640, threads: int = 0,
           on_truncated: str = "keep", reader: str = "ffmpeg") -> Decoded:
    """Decode the whole video into memory (see the module doc for rate, size, truncation and errors)."""
    return FrameStream(path, fps=fps, max_side=max_side, threads=threads, on_truncated=on_truncated, reader=reader).read_all()


def decode_null_fps(path: str | os.PathLike, threads: int = 1) -> tuple[int, float]:
    """Decode-only speed (ffmpeg to the null muxer, no pipe): (frames, seconds). The stage's physical limit."""
    import time

    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error"]
    if threads:
        cmd += ["-threads", str(threads)]
    cmd += ["-i", str(check_readable(path)), "-map", "0:v:0", "-f", "null", "-"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise DataError(f"{path}: ffmpeg could not decode it ({proc.stderr.strip()[-300:]})")
    return probe(path)["packets"], dt
