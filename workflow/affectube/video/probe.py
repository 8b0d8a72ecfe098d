"""Probe a video file with PyAV (there is no ffprobe here): codec, size, rotation, rate, VFR.

:func:`probe` reads the container header and demuxes the video packets (no
decoding) to learn the presentation timestamps of every frame, so variable frame
rate is detected from the file itself rather than trusted from the header.
Unusable files raise :class:`~affectube.errors.DataError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from affectube.errors import DataError


def check_readable(path: str | os.PathLike) -> Path:
    """The cheap checks every decoder runs first: exists, is a file, is not empty."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such video file")
    if not p.is_file():
        raise DataError(f"{p}: not a regular file")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: empty file (0 bytes), not a video")
    return p


def probe(path: str | os.PathLike) -> dict:
    """Describe the first video stream of ``path``.

    Returns a dict with ``codec, width, height`` (display size, after rotation),
    ``coded_width, coded_height``, ``sar`` (sample aspect ratio of a pixel, width/height, in the
    display orientation; 1.0 for square pixels or when the file says nothing), ``rotation`` (degrees, counter-clockwise, as in
    the display matrix), ``fps`` (average rate), ``duration`` (s), ``start_time`` (s),
    ``frames_header`` (frame count in the header, 0 if unknown), ``packets`` (video
    packets demuxed), ``vfr`` (True when packet durations differ by more than 10%),
    ``container``, ``has_audio``, ``size_bytes``.
    """
    import av

    p = check_readable(path)
    try:
        container = av.open(str(p), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise DataError(f"{p}: not a readable video file: {_av_reason(exc)} (corrupt, truncated or not a video)") from None
    try:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise DataError(f"{p}: no video stream (container has: {', '.join(kinds)})")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        codec = ctx.name if ctx is not None else "unknown"
        coded_w, coded_h = int(stream.width or 0), int(stream.height or 0)
        if coded_w <= 0 or coded_h <= 0:
            raise DataError(f"{p}: video stream has no frame size (codec {codec}); the file is corrupt or truncated")
        tb = float(stream.time_base) if stream.time_base else None
        pts = []
        first = _FirstFrame(p, stream)
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.size > 0:
                    pts.append(packet.pts)
                first.feed(packet)
        except av.error.FFmpegError as exc:
            if not pts:
                raise DataError(f"{p}: cannot read video packets ({_av_reason(exc)})") from None
            first.stopped(exc)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        duration = None
        if stream.duration is not None and tb:
            duration = float(stream.duration) * tb
        elif container.duration is not None:
            duration = float(container.duration) / 1e6
        start = float(stream.start_time) * tb if (stream.start_time is not None and tb) else 0.0
        vfr = False
        if len(pts) > 3 and tb:
            d = np.diff(np.sort(np.asarray(pts, dtype=np.float64))) * tb
            d = d[d > 0]
            if d.size:
                med = float(np.median(d))
                vfr = bool(np.any(np.abs(d - med) > 0.1 * med + 1e-3))
                if not fps and med > 0:
                    fps = 1.0 / med
        rotation = first.rotation() if pts else 0
        swap = rotation % 180 != 0
        sar = _sample_aspect(stream)
        if swap:
            sar = 1.0 / sar
        info = {
            "codec": codec,
            "container": container.format.name,
            "width": coded_h if swap else coded_w,
            "height": coded_w if swap else coded_h,
            "coded_width": coded_w,
            "coded_height": coded_h,
            "rotation": rotation,
            "sar": round(sar, 6),
            "fps": round(fps, 6),
            "duration": None if duration is None else round(duration, 6),
            "start_time": round(start, 6),
            "frames_header": int(stream.frames or 0),
            "packets": len(pts),
            "vfr": vfr,
            "has_audio": bool(container.streams.audio),
            "size_bytes": p.stat().st_size,
        }
    finally:
        container.close()
    if info["packets"] == 0:
        raise DataError(f"{p}: the video stream holds no frames (codec {info['codec']})")
    return info


def _sample_aspect(stream) -> float:
    """Pixel width/height from the stream (container or codec); 1.0 when unset or absurd."""
    try:
        r = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
        sar = float(r) if r else 1.0
    except (AttributeError, ZeroDivisionError, ValueError):
        sar = 1.0
    return sar if 0.1 <= sar <= 10.0 else 1.0


class _FirstFrame:
    """Display rotation (degrees counter-clockwise, 0/90/180/270) read off the first decoded frame,
    decoded from the packets :func:`probe` demuxes anyway: one open of the file, not two (opening
    it again cost ~10 ms per clip, as much as decoding a short clip). Packets are decoded until the
    first frame comes out; a decode error, or a demux error before it, means no frame decodes."""

    def __init__(self, path: Path, stream):
        self.path = path
        self.stream = stream
        self.value: int | None = None
        self.error: Exception | None = None
        try:
            stream.codec_context.thread_count = 1  # one frame is decoded: no decoder threads to start
        except (AttributeError, RuntimeError, ValueError):
            pass

    def feed(self, packet) -> None:
        import av

        if self.value is not None or self.error is not None:
            return
        try:
            for frame in self.stream.decode(packet):
                self.value = int(round(float(frame.rotation or 0) / 90.0)) * 90 % 360
                return
        except av.error.FFmpegError as exc:
            self.error = exc

    def stopped(self, exc: Exception) -> None:
        """Demuxing stopped with ``exc``: if no frame came out before, none decodes."""
        if self.value is None and self.error is None:
            self.error = exc

    def rotation(self) -> int:
        if self.value is not None:
            return self.value
        if self.error is not None:
            raise DataError(f"{self.path}: cannot decode a single video frame ({_av_reason(self.error)}); the file is corrupt or truncated")
        raise DataError(f"{self.path}: no video frame could be decoded; the file is corrupt or truncated")


def _av_reason(exc: Exception) -> str:
    msg = getattr(exc, "strerror", None) or str(exc)
    return msg.split(":")[0].strip() if msg else type(exc).__name__
