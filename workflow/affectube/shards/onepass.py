"""One decode per video in a faces shard job: the frames the clips stage would decode again, kept from the faces pass.

With ``decode.reader: pyav`` the one decode is in this process: every kept frame is converted
twice, at the analysis size (every k-th) and at the decoded size (:meth:`TeeStream._kept`). With the ffmpeg
CLI reader (the default): the faces stage decodes every kept frame (``decode.fps``) but converts only every k-th one, at the small
analysis size (:class:`affectube.video.decode.FrameStream` with ``stride``/``work_side``); the clips stage
decodes the same video again at ``decode.max_side``. :class:`TeeStream` is the faces pass's stream with a
second output from the same ffmpeg process: after the frame-rate selection and ``showinfo`` (one timeline)
the filter graph splits; one branch is exactly the faces stream (stride, analysis size), the other exactly
the clips stream (every kept frame at the decoded size), written to a FIFO that a thread drains into memory.
Both branches run the same filters as the two separate decodes, so the frames are the same pixels and the
tracks and stores are those of the two-pass path (tests/test_shards_onepass.py compares them).

Memory: the video's decoded frames, at most :data:`MAX_BUFFER_BYTES` (a longer video keeps none: its clips
shard job decodes it again, as without this module). The faces shard job then crops and packs the store
from these frames (:func:`affectube.shards.clips.build_cached`), under the same per-video cache key the
clips shard job checks, so that job finds it fresh and does not decode the video.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from affectube.video.decode import FrameStream, _read_exact, ffmpeg_exe
from affectube.video.pyav_reader import RGBConverter

log = logging.getLogger(__name__)
MAX_BUFFER_BYTES = 1 << 30  # decoded frames held per video (the faces shard job's mem_mb is sized for it)
BLOCK = 256  # frames per block handed to the store builder (as clips.build.BLOCK)


class TeeStream(FrameStream):
    """A :class:`FrameStream` (the faces pass: ``stride``, ``work_side``) that also keeps every kept frame at
    the decoded size: :meth:`full_frames` after iterating (None when the video exceeded the buffer)."""

    def __init__(self, *args, max_bytes: int = MAX_BUFFER_BYTES, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_bytes = int(max_bytes)
        self._full: list[np.ndarray] = []
        self._overflow = False
        self._complete = False
        self._fifo: str | None = None

    def command(self) -> list[str]:
        import ffmpeg

        src = (self.info["source_width"], self.info["source_height"])
        stream = ffmpeg.input(str(self.path), **({"threads": self.threads} if self.threads else {}))["v:0"]
        if self.fps:  # as FrameStream.command: the first frame of each grid slot
            slot = f"floor(t*{self.fps!r}+0.5)"
            stream = stream.filter("select", f"if(gte({slot},ld(0)),st(0,{slot}+1)*0+1,0)")
        stream = stream.filter("showinfo", checksum=0)
        split = stream.filter_multi_output("split")
        work, full = split.stream(0), split.stream(1)
        if self.stride > 1:
            work = work.filter("select", f"not(mod(n,{self.stride}))")
        work, full = self._sized(work, self.size, src), self._sized(full, self.decoded_size, src)
        raw = dict(format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
        out = ffmpeg.merge_outputs(work.output("pipe:", **raw), full.output(self._fifo, **raw)).overwrite_output()
        out = out.global_args("-nostdin", "-hide_banner", "-nostats", "-loglevel", "info")
        if self.threads:
            out = out.global_args("-filter_complex_threads", str(self.threads))
        return out.compile(cmd=ffmpeg_exe())

    def _sized(self, stream, size: tuple[int, int], src: tuple[int, int]):
        h, w = size  # as FrameStream.command
        if (w, h) != src:
            stream = stream.filter("scale", w, h, flags="area")
        if self.info["sar"] != 1.0:
            stream = stream.filter("setsar", 1)
        return stream

    def __iter__(self):
        self._full, self._overflow, self._complete = [], False, False
        if self.reader == "pyav":  # one decode in this process: every kept frame is converted twice (_kept)
            self._held, self._to_rgb = 0, RGBConverter(*self.decoded_size, threads=1)  # its own, not the analysis frames'
            yield from super().__iter__()
            self._complete = True
            return
        with tempfile.TemporaryDirectory(prefix="affectube-tee-") as tmp:
            self._fifo = os.path.join(tmp, "full.rgb")
            os.mkfifo(self._fifo)
            reader = threading.Thread(target=self._drain, daemon=True)
            reader.start()
            try:
                yield from super().__iter__()
                self._complete = True
            finally:
                if reader.is_alive():  # ffmpeg never opened the FIFO (it failed early): unblock the reader's open
                    try:
                        os.close(os.open(self._fifo, os.O_WRONLY | os.O_NONBLOCK))
                    except OSError:
                        pass
                reader.join()

    def _kept(self, frame) -> None:
        """PyAV reader: every kept frame at the decoded size, as the clips stage's stream converts it."""
        if self._overflow:
            return
        h, w = self.decoded_size
        if self._held + h * w * 3 > self.max_bytes:
            self._overflow, self._full = True, []
            log.info("%s: over %d MB of decoded frames: not kept (the clips shard job decodes it again)", self.path, self.max_bytes >> 20)
            return
        self._full.append(self._to_rgb(frame))
        self._held += h * w * 3

    def _drain(self) -> None:
        """Read the FIFO to its end (ffmpeg would block on a full FIFO): frames kept while under the budget."""
        h, w = self.decoded_size
        nbytes, held = h * w * 3, 0
        scratch = np.empty(nbytes, np.uint8)
        with open(self._fifo, "rb", buffering=1 << 20) as pipe:
            while True:
                frame = scratch
                if not self._overflow:
                    try:
                        if held + nbytes > self.max_bytes:
                            raise MemoryError(f"over {self.max_bytes >> 20} MB of decoded frames")
                        frame = np.empty((h, w, 3), np.uint8)
                    except MemoryError as exc:  # frames not kept: the clips job decodes the video again
                        self._overflow, self._full = True, []
                        log.info("%s: %s: not kept (the clips shard job decodes it again)", self.path, exc)
                got = _read_exact(pipe, memoryview(frame.reshape(-1)))
                if got < nbytes:
                    break
                if frame is not scratch:
                    self._full.append(frame)
                    held += nbytes

    def full_frames(self) -> "FullFrames | None":
        """The kept frames at the decoded size, as the clips stage's stream gives them; None if the pass did not
        finish, the buffer overflowed, or their count is not the timeline's."""
        if not self._complete or self._overflow or self.timestamps is None or len(self._full) != len(self.timestamps):
            return None
        return FullFrames(self._full, self.timestamps, self.info)


class FullFrames:
    """Frames in memory standing in for the clips stage's :class:`FrameStream`: ``info`` and blocks of (frames, times)."""

    def __init__(self, frames: list[np.ndarray], timestamps: np.ndarray, info: dict):
        self.frames, self.timestamps, self.info = frames, timestamps, info

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self):
        for i in range(0, len(self.frames), BLOCK):
            yield np.stack(self.frames[i : i + BLOCK]), self.timestamps[i : i + BLOCK]


class OnePass:
    """The stream factory handed to :func:`affectube.faces.pipeline.track_video` (``stream_factory``): it makes
    :class:`TeeStream` s and keeps the last (a restarted pass makes a second one)."""

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = MAX_BUFFER_BYTES if max_bytes is None else int(max_bytes)
        self.stream: TeeStream | None = None

    def __call__(self, path: str | Path, **kwargs) -> TeeStream:
        self.stream = TeeStream(path, max_bytes=self.max_bytes, **kwargs)
        return self.stream

    def frames(self) -> FullFrames | None:
        return self.stream.full_frames() if self.stream is not None else None
