"""Tube-ready HDF5 clip stores: one file per video, ``results/clips/{dataset}/{video}.h5``.

Layout of a store (N = stored frames, S = crop side, C = 3 or 1):

``frames``         uint8 [N,S,S,C], contiguous (``chunk_frames`` 0: frames back to back) or chunked
                   ``(chunk_frames, S, S, C)``: whole frames per chunk, chunks written in time
                   order so the chunks a clip touches are adjacent in the file. Either way one
                   clip = one contiguous byte range, read front to back.
``frame_crc32``    uint32 [N]   crc32 of every frame's bytes (checked by the loader on each read).
``timestamps``     float64 [N]  seconds of each frame in the source video's timeline.
``face_status``    uint8 [N]    tracks status (0 no face, 1 detected, 2 tracked, 3 interpolated).
``face_score``     float32 [N]  detector score of the tracked face (0 where none).
``face_boxes``     float32 [N,4] face box (x1,y1,x2,y2, decoded-frame pixels) the crop came from.
``valid``          bool [N]     the crop holds a face (from ``crop_frames``).
``face_landmarks`` float32 [N,5,2] (optional) the 5 face landmarks (eyes, nose, mouth corners; x, y) in
                   crop pixels (NaN where no face): face-guided masking (``pretrain.masking: face``).
``audio_logmel``   float32 [N,M] (optional, ``clips.audio_mels`` = M > 0 and the video has audio) log-mel
                   energies of the audio track at each frame (:mod:`affectube.clips.audio`): the audio pretext.
``frame_labels/*`` float32 [N]  per-frame continuous labels aligned to ``timestamps`` (optional).

Root attributes (:data:`REQUIRED_ATTRS`): identity (dataset, video_id, subject, session),
clip-level ``labels`` (JSON), ``fps``, the ``decode``/``crop``/``clips`` params and the
``source`` video info (JSON), ``provenance`` (sha256 of the manifest row + params),
``compression``/``chunk_frames`` (the layout chosen), ``error`` ("" unless the video could not
be decoded: then N = 0), ``checksum`` (sha256 over every attribute and every array except the
frame bytes, which are covered through ``frame_crc32``) and ``complete`` (written last).

A store is written under a temporary name, verified, fsynced and renamed
(:func:`affectube.io.atomic_path`): a file at the final name is always complete.
:func:`check_file` refuses a file that is incomplete, lacks an attribute or array, or whose
checksum does not match, with a :class:`~affectube.errors.DataError` naming the file;
:func:`check_frames` checks every frame against its crc32. This module holds the format and the
writer; the readers (``open_store``, ``StoreReader``, ``DirectReader``) are in :mod:`affectube.clips.readers`.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter with HDF5 for reading and writing)
import numpy as np

from affectube.errors import DataError
from affectube.io import atomic_path, to_jsonable

FORMAT = "affectube-clips"
FORMAT_VERSION = 1

# compression name -> h5py create_dataset keywords (measured in benchmarks/bench_loader.py; see docs/clips.md)
COMPRESSION: dict[str, Callable[[], dict]] = {
    "none": lambda: {},
    "lzf": lambda: {"compression": "lzf"},
    "gzip": lambda: {"compression": "gzip", "compression_opts": 1},
    "blosc-lz4": lambda: dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE)),
}

# per-frame arrays: name -> dtype, trailing shape
FRAME_ARRAYS: dict[str, tuple[Any, tuple]] = {
    "frame_crc32": (np.uint32, ()),
    "timestamps": (np.float64, ()),
    "face_status": (np.uint8, ()),
    "face_score": (np.float32, ()),
    "face_boxes": (np.float32, (4,)),
    "valid": (np.bool_, ()),
}
JSON_ATTRS = ("labels", "decode", "crop", "clips", "source")
REQUIRED_ATTRS = (
    "format", "format_version", "dataset", "video_id", "subject", "session", "labels", "fps",
    "decode", "crop", "clips", "source", "provenance", "compression", "chunk_frames",
    "num_frames", "frame_shape", "error", "checksum", "complete",
)  # fmt: skip
_UNHASHED = ("checksum", "complete")


@dataclass
class StoreContent:
    """Everything one store holds: ``frames`` uint8 [N,S,S,C] (None when they are streamed through
    :class:`StoreWriter`) and per-frame arrays of length N."""

    frames: np.ndarray | None
    timestamps: np.ndarray
    dataset: str
    video_id: str
    subject: str
    session: str = ""
    labels: dict = field(default_factory=dict)
    fps: float = 0.0
    face_status: np.ndarray | None = None
    face_score: np.ndarray | None = None
    face_boxes: np.ndarray | None = None
    valid: np.ndarray | None = None
    face_landmarks: np.ndarray | None = None  # optional [N,5,2] in crop pixels
    audio_logmel: np.ndarray | None = None  # optional [N,M] log-mel energies at the frames
    frame_labels: dict[str, np.ndarray] = field(default_factory=dict)
    frame_labels_meta: dict = field(default_factory=dict)
    decode: dict = field(default_factory=dict)
    crop: dict = field(default_factory=dict)
    clips: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    provenance: str = ""
    error: str = ""
    # filled by StoreWriter.finish, not stored: the store's row of its shard's store table and the store
    # file's size and mtime it belongs to (clips/store_table.py), read from the read-back check's open file
    table: dict | None = None

    def arrays(self, n: int, crc: np.ndarray) -> dict[str, np.ndarray]:
        """The per-frame arrays, filled with neutral values where not given, checked for length ``n``."""
        given = {
            "timestamps": self.timestamps,
            "face_status": self.face_status if self.face_status is not None else np.zeros(n, np.uint8),
            "face_score": self.face_score if self.face_score is not None else np.zeros(n, np.float32),
            "face_boxes": self.face_boxes if self.face_boxes is not None else np.full((n, 4), np.nan, np.float32),
            "valid": self.valid if self.valid is not None else np.ones(n, bool),
            "frame_crc32": crc,
        }
        out = {}
        for name, (dtype, trail) in FRAME_ARRAYS.items():
            arr = np.asarray(given[name], dtype=dtype)
            if arr.shape != (n, *trail):
                raise DataError(f"{self.dataset}/{self.video_id}: {name} has shape {list(arr.shape)}, expected {[n, *trail]}")
            out[name] = arr
        if self.face_landmarks is not None:
            arr = np.asarray(self.face_landmarks, dtype=np.float32)
            if arr.shape != (n, 5, 2):
                raise DataError(f"{self.dataset}/{self.video_id}: face_landmarks has shape {list(arr.shape)}, expected [{n}, 5, 2]")
            out["face_landmarks"] = arr
        if self.audio_logmel is not None:
            arr = np.asarray(self.audio_logmel, dtype=np.float32)
            if arr.ndim != 2 or len(arr) != n:
                raise DataError(f"{self.dataset}/{self.video_id}: audio_logmel has shape {list(arr.shape)}, expected [{n}, mels]")
            out["audio_logmel"] = arr
        for name, values in self.frame_labels.items():
            arr = np.asarray(values, dtype=np.float32)
            if arr.shape != (n,):
                raise DataError(f"{self.dataset}/{self.video_id}: frame label {name!r} has shape {list(arr.shape)}, expected [{n}]")
            out[f"frame_labels/{name}"] = arr
        return out


def frame_crc32(frames: np.ndarray) -> np.ndarray:
    """crc32 of each frame's bytes: uint32 [N]."""
    frames = np.ascontiguousarray(frames)
    return np.fromiter((zlib.crc32(f) for f in frames), dtype=np.uint32, count=len(frames))


# ---------------------------------------------------------------- write
def write_store(path: str | os.PathLike, content: StoreContent, compression: str = "none", chunk_frames: int = 0) -> Path:
    """Write ``content`` (frames in memory) atomically to ``path``; see :class:`StoreWriter`."""
    frames = np.asarray(content.frames)
    with StoreWriter(path, len(frames), frames.shape[1:], compression, chunk_frames) as w:
        w.append(frames)
        return w.finish(content)


class StoreWriter:
    """Stream frames (in time order) into a new store, then :meth:`finish` it with its metadata.

    Frames go to a temporary file next to ``path``; only whole chunks are written (a partial
    chunk waits in memory), so every chunk is compressed once and chunks land back to back in
    time order. :meth:`finish` writes the per-frame arrays and attributes, the checksum and the
    ``complete`` marker, re-reads every frame against the crc32 of what was appended (a
    bit-exact read-back check), fsyncs and renames. Leaving the ``with`` block without
    :meth:`finish` (an exception) removes the temporary file; a killed process leaves only
    the temporary name, which :func:`~affectube.clips.readers.open_store` refuses.
    """

    def __init__(self, path: str | os.PathLike, num_frames: int, frame_shape, compression: str = "none", chunk_frames: int = 0):
        self.path = Path(path)
        if compression not in COMPRESSION:
            raise DataError(f"{path}: unknown compression {compression!r} (known: {', '.join(COMPRESSION)})")
        if chunk_frames < 0 or (chunk_frames == 0 and compression != "none"):
            raise DataError(f"{path}: chunk_frames must be >= 1 (or 0: contiguous, only without compression), "
                            f"got {chunk_frames} with compression {compression!r}")
        frame_shape = tuple(int(x) for x in frame_shape)
        if len(frame_shape) != 3 or frame_shape[0] != frame_shape[1] or frame_shape[2] not in (1, 3):
            raise DataError(f"{path}: frames must be [N,S,S,C] with C in (1, 3), got frame shape {list(frame_shape)}")
        self.n, self.frame_shape, self.compression = int(num_frames), frame_shape, compression
        # 0 = contiguous layout (frames back to back, no chunk index); else chunks of whole frames in time
        self.chunk_frames = max(1, min(int(chunk_frames), self.n)) if self.n and chunk_frames else 0
        self._block = self.chunk_frames or 1  # frames are written to the file in whole chunks
        self.crc = np.zeros(self.n, np.uint32)
        self.pos = 0  # frames appended
        self._written = 0  # frames written to the file
        self._pending: list[np.ndarray] = []
        self._ctx = atomic_path(self.path)
        self.tmp = self._ctx.__enter__()
        self._done = False
        try:
            self.file = h5py.File(self.tmp, "w", libver=("v110", "latest"), meta_block_size=_meta_block_size(self.n, self.chunk_frames))
            chunks = (self.chunk_frames, *frame_shape) if self.chunk_frames else None
            self.frames = self.file.create_dataset("frames", shape=(self.n, *frame_shape), dtype=np.uint8, chunks=chunks,
                                                   **(COMPRESSION[compression]() if self.chunk_frames else {}))
        except BaseException as exc:
            self._abort(exc)
            raise

    def append(self, frames: np.ndarray) -> None:
        frames = np.ascontiguousarray(frames)
        if frames.dtype != np.uint8 or frames.shape[1:] != self.frame_shape:
            raise DataError(f"{self.path}: appended frames are {frames.dtype}{list(frames.shape)}, expected uint8[k,{','.join(map(str, self.frame_shape))}]")
        k = len(frames)
        if self.pos + k > self.n:
            raise DataError(f"{self.path}: more frames appended ({self.pos + k}) than announced ({self.n})")
        self.crc[self.pos : self.pos + k] = frame_crc32(frames)
        self.pos += k
        self._pending.append(frames)
        pending = sum(len(p) for p in self._pending)
        whole = pending if self.pos == self.n else (pending // self._block) * self._block
        if whole:
            block = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
            self.frames[self._written : self._written + whole] = block[:whole]
            self._written += whole
            self._pending = [block[whole:]] if whole < len(block) else []

    def finish(self, content: StoreContent) -> Path:
        if self.pos != self.n:
            raise DataError(f"{self.path}: {self.pos} frames appended, {self.n} announced")
        f = self.file
        f.flush()  # every frame chunk is allocated, in time order, before any other array
        for name, arr in content.arrays(self.n, self.crc).items():
            f.create_dataset(name, data=arr)
        if content.frame_labels:
            f["frame_labels"].attrs["meta"] = json.dumps(content.frame_labels_meta, sort_keys=True, default=str)
        attrs = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "dataset": str(content.dataset),
            "video_id": str(content.video_id),
            "subject": str(content.subject),
            "session": "" if content.session is None else str(content.session),
            "fps": float(content.fps),
            "provenance": str(content.provenance),
            "compression": self.compression,
            "chunk_frames": self.chunk_frames,
            "num_frames": self.n,
            "frame_shape": np.asarray(self.frame_shape, np.int64),
            "error": str(content.error or ""),
        }
        for name in JSON_ATTRS:
            attrs[name] = json.dumps(to_jsonable(getattr(content, name), fallback=str), sort_keys=True)
        f.attrs.update(attrs)
        f.attrs["checksum"] = meta_checksum(f, attrs)  # the attributes as written (the read-back below reads them)
        f.flush()
        f.attrs["complete"] = True
        f.close()
        from affectube.clips.readers import Store  # (readers and store_table import this module)
        from affectube.clips.store_table import table_row

        with h5py.File(self.tmp, "r") as back:  # read back: metadata checks, every frame against the crc32 appended
            back_attrs = read_attrs(back)
            check_file(back, self.tmp, back_attrs)
            check_frames(back, self.tmp)
            row = table_row(Store(self.tmp, back, back_attrs), self.path)  # while the file is open and checked
        self._done = True
        self._ctx.__exit__(None, None, None)  # fsync + rename onto the final name
        st = os.stat(self.path)
        content.table = {"row": row, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        return self.path

    def _abort(self, exc: BaseException) -> None:
        if self._done:
            return
        self._done = True
        file = getattr(self, "file", None)
        if file is not None and file.id.valid:
            file.close()
        self._ctx.__exit__(type(exc), exc, exc.__traceback__)  # removes the temporary file

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self._abort(exc)
        elif not self._done:
            self._abort(DataError(f"{self.path}: store writer closed before finish()"))
            raise DataError(f"{self.path}: store writer closed before finish()")


def _meta_block_size(n: int, chunk_frames: int) -> int:
    """Metadata block big enough for the chunk index, so HDF5 never places index blocks between
    frame chunks (libver v110+ fixed-array index; ~20 bytes per chunk)."""
    need = 32 * (n // max(1, chunk_frames) + 1) + 4096
    return max(4096, 1 << int(np.ceil(np.log2(need))))


# ---------------------------------------------------------------- checks
def read_attrs(f: h5py.File) -> dict:
    """The root attributes of an open store, read once (attribute reads dominate opening a store)."""
    return {k: f.attrs[k] for k in f.attrs.keys()}


def check_file(f: h5py.File, path: Path, attrs: dict | None = None) -> None:
    """An open store is complete, has every attribute and array, and its checksum matches (else DataError)."""
    a = attrs if attrs is not None else read_attrs(f)
    if not a.get("complete", False):
        raise DataError(f"{path}: incomplete clip store (no 'complete' marker: an interrupted write?)")
    missing = [k for k in REQUIRED_ATTRS if k not in a]
    if missing:
        raise DataError(f"{path}: clip store lacks attribute(s) {', '.join(missing)}")
    if attr_value(a["format"]) != FORMAT:
        raise DataError(f"{path}: not an affectube clip store (format {attr_value(a['format'])!r})")
    if int(a["format_version"]) > FORMAT_VERSION:
        raise DataError(f"{path}: clip store format version {int(a['format_version'])} is newer than this reader ({FORMAT_VERSION})")
    for name in ("frames", *FRAME_ARRAYS):
        if name not in f:
            raise DataError(f"{path}: clip store lacks the {name!r} array")
    n = int(a["num_frames"])
    if f["frames"].shape[0] != n or any(f[k].shape[0] != n for k in FRAME_ARRAYS):
        raise DataError(f"{path}: clip store arrays disagree with num_frames={n}")
    got = meta_checksum(f, a)
    if got != attr_value(a["checksum"]):
        raise DataError(f"{path}: clip store checksum mismatch (stored {attr_value(a['checksum'])[:12]}..., computed {got[:12]}...): corrupt or modified")


def check_frames(f: h5py.File, path: Any, block: int = 256) -> None:
    """Check every frame of an open store against its ``frame_crc32`` (reads the whole store)."""
    frames, crc = f["frames"], f["frame_crc32"][...]
    for a in range(0, frames.shape[0], block):
        part = frames[a : a + block]
        check_crc(part, crc[a : a + len(part)], np.arange(a, a + len(part)), path)


def check_crc(frames: np.ndarray, crc: np.ndarray, numbers: np.ndarray, path: Any) -> None:
    """``frames`` (frame ``numbers`` of the store at ``path``) against their stored ``crc``: DataError naming the first bad one."""
    bad = np.flatnonzero(frame_crc32(frames) != crc)
    if bad.size:
        raise DataError(f"{path}: frame {int(numbers[bad[0]])} does not match its checksum (corrupt store)")


# ---------------------------------------------------------------- checksum
def meta_checksum(f: h5py.File, attrs: dict | None = None) -> str:
    """sha256 over every attribute (but checksum/complete) and every array but the frame bytes
    (those are covered through ``frame_crc32``); the frames' shape, dtype, chunks and filters too."""
    h = hashlib.sha256()
    attrs = attrs if attrs is not None else read_attrs(f)
    for key in sorted(attrs):
        if key in _UNHASHED:
            continue
        h.update(f"attr:{key}={_canon(attrs[key])};".encode())
    fr = f["frames"]
    h.update(f"frames:{fr.shape}:{fr.dtype}:{fr.chunks}:{dataset_filters(fr)};".encode())

    def visit(raw: bytes, info) -> None:
        # f.visititems' order and values, through the low-level API (no object per array unless it has attributes)
        name = raw.decode("utf-8")
        if info.type == h5py.h5o.TYPE_DATASET and name != "frames":
            did = h5py.h5d.open(f.id, raw)
            if did.dtype.kind == "O":  # variable-length data: as the high-level API reads it
                data = f[name][...]
            else:
                data = np.empty(did.shape, did.dtype)
                if data.size:
                    did.read(h5py.h5s.ALL, h5py.h5s.ALL, data)
            h.update(f"array:{name}:{data.dtype.str}:{data.shape};".encode())
            h.update(np.ascontiguousarray(data).tobytes())
        if info.num_attrs:
            obj = f[name]
            for key in sorted(obj.attrs.keys()):
                h.update(f"attr:{name}/{key}={_canon(obj.attrs[key])};".encode())

    h5py.h5o.visit(f.id, visit, info=True)
    return h.hexdigest()


def dataset_filters(ds: h5py.Dataset) -> list:
    plist = ds.id.get_create_plist()
    return [plist.get_filter(i)[:3] for i in range(plist.get_nfilters())]


def _canon(value: Any) -> str:
    value = attr_value(value)
    if isinstance(value, np.ndarray):
        return f"{value.dtype.str}{value.shape}{value.tolist()}"
    return repr(value)


def attr_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


__all__ = ["COMPRESSION", "FORMAT", "FORMAT_VERSION", "REQUIRED_ATTRS", "StoreContent", "StoreWriter", "check_crc", "check_file", "check_frames", "frame_crc32", "meta_checksum", "write_store"]
