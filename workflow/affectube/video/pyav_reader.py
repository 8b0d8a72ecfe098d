"""Decode in this process with PyAV (``decode.reader: pyav``, the default): the same frames, timestamps and
pixels as the ffmpeg command line of :meth:`affectube.video.decode.FrameStream.command`, without its process.

Why: a video's ffmpeg process costs ~18 ms of CPU to start (the static binary's start-up), and the CLI's
decode-to-null pass itself costs about twice PyAV's decode of the same packets (measured on the real clips:
``benchmarks/bench_faces.py`` records both). For short clips (most of this field's datasets: 2-10 s) that
start-up is a third of the decode.

What the CLI does and this module repeats (``tests/test_ingest_pyav.py`` checks frames and timestamps against
the CLI on real clips):

- timeline: the CLI shifts every timestamp by the file's start time (``-copyts`` off): pts minus
  ``av_rescale_q(container start_time, 1/1000000, stream time base)``; for formats with timestamp
  discontinuities (MPEG-TS/PS) the start of the video stream when later (the CLI's "Correcting start time";
  its mid-stream discontinuity fix-ups, for jumps over 10 s, are not repeated); a frame's time is that times
  ``av_q2d(time base)``, computed as ffmpeg computes it (so the grid selection below falls the same way),
  recorded to the microsecond (the CLI's ``showinfo`` prints 6 significant digits);
  frames without a pts follow the previous one by its duration, as the CLI's decoder does;
- rate: ``select`` keeps the first frame of each ``1/fps`` slot (``floor(t * fps + 0.5)``, stateful);
- stride: every k-th kept frame is converted (``select=not(mod(n, k))``);
- size: the CLI's filters, ``scale=w:h:flags=area`` and rgb24 output, run in a libavfilter graph of this process
  (:class:`RGBConverter`): the same pixels, bit for bit;
- damage: a packet the decoder refuses is logged as a warning and skipped (the CLI logs "Error submitting
  packet to decoder" and goes on); a demuxer error ends the stream with the frames decoded so far; the
  caller's truncation check (``decode.on_truncated``) then sees where the frames stop.

Not repeated: display-matrix rotation (the CLI's autorotate filters); a rotated video is decoded by the CLI
(:class:`FrameStream` chooses, ``info["reader"]`` says which).
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from affectube.errors import DataError

AVFMT_TS_DISCONT = 0x0200  # libavformat: the format allows timestamp discontinuities (MPEG-TS, MPEG-PS)


def rescale_near(a: int, b_num: int, b_den: int, c_num: int, c_den: int) -> int:
    """``av_rescale_q(a, b, c)`` with ``AV_ROUND_NEAR_INF`` (half away from zero), in exact integers."""
    num, den = a * b_num * c_den, b_den * c_num
    q, r = divmod(abs(num), den)
    if 2 * r >= den:
        q += 1
    return q if num >= 0 else -q


class RGBConverter:
    """Decoded frames as uint8 [h, w, 3] RGB, the pixels the CLI delivers (``tests/test_ingest_pyav.py``: bit for bit).

    At the frame's own size: one swscale rgb24 conversion (the CLI's auto-inserted format conversion). Scaled:
    the CLI's own filters, ``scale=w:h:flags=area`` then ``format=rgb24``, in a libavfilter graph of this process.
    Not ``VideoReformatter.reformat(..., interpolation="AREA")``: its direct swscale context scales differently
    from the scale filter (mean 0.5, max 23 levels apart at 160 -> 107 px), enough to move a detector's boxes
    on small frames. The graph is rebuilt when the frames' size or pixel format changes mid-stream.
    """

    def __init__(self, h: int, w: int, threads: int = 1):
        self.h, self.w, self.threads = int(h), int(w), max(0, int(threads))
        self._reformatter = None
        self._graph = self._key = None

    def __call__(self, frame) -> np.ndarray:
        if (frame.width, frame.height) == (self.w, self.h):
            if self._reformatter is None:
                from av.video.reformatter import VideoReformatter

                self._reformatter = VideoReformatter()  # caches its swscale context
            return self._reformatter.reformat(frame, format="rgb24", interpolation="AREA", threads=self.threads).to_ndarray()
        key = (frame.width, frame.height, frame.format.name)
        if key != self._key:
            self._graph, self._key = self._build(frame), key
        self._graph.push(frame)
        return self._graph.pull().to_ndarray()

    def _build(self, frame):
        import av

        graph = av.filter.Graph()
        src = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                               time_base=frame.time_base or "1/25")
        chain = [src, graph.add("scale", f"{self.w}:{self.h}:flags=area:threads={self.threads}"),
                 graph.add("format", "rgb24"), graph.add("buffersink")]
        for a, b in zip(chain, chain[1:]):
            a.link_to(b)
        graph.configure()
        return graph


def run_pyav(stream, slot) -> Iterator[int]:
    """:meth:`FrameStream._run` for the PyAV reader: write delivered frame k into ``slot(k)``, yield the count."""
    import av
    h, w = stream.size
    times: list[float] = []
    errors: list[str] = []
    stream._times, stream._reader = times, None
    try:
        container = av.open(str(stream.path))
    except (av.error.FFmpegError, OSError) as exc:
        raise DataError(f"{stream.path}: cannot decode ({type(exc).__name__}: {exc})") from None
    count = kept = 0
    try:
        video = container.streams.video[0]
        ctx = video.codec_context
        if stream.threads:
            ctx.thread_count = int(stream.threads)
        if stream.threads != 1:
            ctx.thread_type = "AUTO"
        tb = video.time_base
        start = container.start_time  # microseconds (AV_TIME_BASE), the file's: what the CLI subtracts
        if start is not None and container.format.flags & AVFMT_TS_DISCONT and video.start_time is not None:
            # the CLI's start-time correction for MPEG-TS/PS-like formats: the start of the streams it decodes
            # (here the video only) when that is later than the file's
            start = max(start, rescale_near(int(video.start_time), tb.numerator, tb.denominator, 1, 1_000_000))
        offset = rescale_near(int(start), 1, 1_000_000, tb.numerator, tb.denominator) if start is not None else 0
        q2d = tb.numerator / float(tb.denominator)  # av_q2d
        fps, k = stream.fps, stream.stride
        to_rgb = RGBConverter(h, w, threads=1)
        nxt = 0.0  # the select filter's ld(0): the next free slot
        last_pts = last_dur = None
        packets = container.demux(video)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:  # the demuxer gives up (truncated file): keep what decoded
                errors.append(f"demuxer: {exc}")
                break
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:  # a damaged packet: the CLI logs it and decodes on
                errors.append(f"Error submitting packet to decoder: {exc}")
                continue
            for frame in frames:
                pts = frame.pts
                if pts is None:  # as the CLI's decoder: the previous frame's pts plus its duration
                    pts = 0 if last_pts is None else last_pts + (last_dur or 1)
                last_pts, last_dur = pts, frame.duration
                t = (pts - offset) * q2d
                if fps:
                    s = math.floor(t * fps + 0.5)
                    if not s >= nxt:
                        continue
                    nxt = s + 1
                times.append(round(t, 6))  # to the microsecond: 0.12, not 3600 x 3 x (1/90000) = 0.12000000000000001
                stream._kept(frame)
                if kept % k == 0:
                    np.asarray(slot(count)).reshape(h, w, 3)[...] = to_rgb(frame)
                    count += 1
                    kept += 1
                    yield count
                else:
                    kept += 1
    finally:
        container.close()
    n = len(times)
    if count != -(-n // k):
        raise DataError(f"{stream.path}: PyAV delivered {count} frames for {n} timestamps at stride {k}")
    stream._finish(n, times, errors)
