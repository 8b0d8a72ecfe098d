"""Readers of the clip stores (format: :mod:`affectube.clips.store`).

* :func:`open_store` -> :class:`Store`: a store opened and verified (completeness, attributes,
  arrays, checksum; ``verify="full"``: every frame against its crc32), its metadata parsed;
* :class:`StoreReader`: a store opened cheaply for reading clips in one process (h5py, one
  read of a clip's frame span);
* :class:`DirectReader`: clips of an uncompressed store read with ``pread`` at the byte offsets
  of its :class:`FrameLayout` (:func:`frame_layout`), the frames skipped by a stride never read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter with HDF5 for reading)
import numpy as np

from affectube.clips.store import JSON_ATTRS, attr_value, check_crc, check_file, check_frames, dataset_filters, read_attrs
from affectube.errors import DataError


class Store:
    """An open, verified store. Small per-frame arrays are read on demand (``store.array(name)``)."""

    def __init__(self, path: Path, f: h5py.File, attrs: dict | None = None):
        self.path = path
        self.file = f
        a = attrs if attrs is not None else read_attrs(f)
        self.attrs = {k: attr_value(v) for k, v in a.items()}
        for name in JSON_ATTRS:
            self.attrs[name] = json.loads(self.attrs[name])
        self.frames: h5py.Dataset = f["frames"]

    # identity
    dataset = property(lambda self: self.attrs["dataset"])
    video_id = property(lambda self: self.attrs["video_id"])
    subject = property(lambda self: self.attrs["subject"])
    session = property(lambda self: self.attrs["session"])
    labels = property(lambda self: self.attrs["labels"])
    error = property(lambda self: self.attrs["error"])

    def __len__(self) -> int:
        return int(self.attrs["num_frames"])

    @property
    def frame_label_names(self) -> list[str]:
        return sorted(self.file["frame_labels"].keys()) if "frame_labels" in self.file else []

    def array(self, name: str, sel: Any = ...) -> np.ndarray:
        return self.file[name][sel]

    def read_frames(self, indices: np.ndarray, check: bool = True) -> np.ndarray:
        """Frames at sorted ``indices`` (uint8 [T,S,S,C]) read as ONE span ``[min, max]``; crc-checked."""
        return read_frames(self.file, indices, check=check, path=self.path)

    def verify_frames(self, block: int = 256) -> None:
        """Check every frame against ``frame_crc32`` (reads the whole store)."""
        check_frames(self.file, self.path, block)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_h5(path: str | os.PathLike) -> h5py.File:
    """Open a store read-only. HDF5 file locking follows HDF5's default and ``HDF5_USE_FILE_LOCKING``
    (set it to FALSE on parallel file systems without flock; stores are immutable once renamed)."""
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise DataError(f"{path}: no such clip store") from None
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 clip store ({exc})") from None


def open_store(path: str | os.PathLike, verify: str = "meta") -> Store:
    """Open and check a store. ``verify``: "meta" (completeness, attributes, arrays, checksum)
    or "full" (also every frame against its crc32)."""
    if verify not in ("meta", "full"):
        raise ValueError(f"verify must be 'meta' or 'full', got {verify!r}")
    path = Path(path)
    f = open_h5(path)
    try:
        attrs = read_attrs(f)  # once: attribute reads dominate opening a store
        check_file(f, path, attrs)
        store = Store(path, f, attrs)
        if verify == "full":
            store.verify_frames()
    except BaseException:
        f.close()
        raise
    return store


def read_frames(f: h5py.File, indices: np.ndarray, check: bool = True, path: Any = None) -> np.ndarray:
    """Read frames ``indices`` (non-decreasing) of an open store with one read of their span."""
    crc = f["frame_crc32"] if check else None
    return read_span(f["frames"], indices, crc, path or f.filename)


def read_span(frames: h5py.Dataset, indices: np.ndarray, crc, path) -> np.ndarray:
    indices = np.asarray(indices, dtype=np.int64)
    lo, hi = int(indices[0]), int(indices[-1]) + 1
    # one hyperslab [lo, hi): the clip's chunks, adjacent in the file (HDF5's strided selections
    # are far slower than reading the span and picking the frames here)
    out = frames[lo:hi][indices - lo]
    if crc is not None:
        check_crc(out, crc[lo:hi][indices - lo], indices, path)
    return out


class StoreReader:
    """A store opened for reading clips in one process: cheap to open (no verification beyond the
    complete marker, which ``check_complete=False`` skips for stores :func:`open_store` already
    verified), then one read of a clip's frame span plus the matching slices of the small
    per-frame arrays."""

    def __init__(self, path: str | os.PathLike, check_complete: bool = True):
        self.path = str(path)
        self.file = open_h5(path)
        try:
            if check_complete and not self.file.attrs.get("complete", False):
                raise DataError(f"{path}: incomplete clip store (no 'complete' marker: an interrupted write?)")
            self.frames = self.file["frames"]
            self._crc = self.file["frame_crc32"]
        except KeyError as exc:
            self.file.close()
            raise DataError(f"{path}: clip store lacks an array ({exc})") from None
        except BaseException:
            self.file.close()
            raise

    def read(self, indices: np.ndarray, check: bool = True) -> np.ndarray:
        """Frames at non-decreasing ``indices``: one read of their span, crc32-checked."""
        return read_span(self.frames, indices, self._crc if check else None, self.path)

    def array(self, name: str, indices: np.ndarray) -> np.ndarray:
        """A per-frame array (``timestamps``, ``frame_labels/valence``, ...) at ``indices`` (one span read)."""
        lo, hi = int(indices[0]), int(indices[-1]) + 1
        return self.file[name][lo:hi][np.asarray(indices) - lo]

    def close(self) -> None:
        self.file.close()


@dataclass(frozen=True)
class FrameLayout:
    """Where an uncompressed store's arrays lie in its file (byte offsets), for direct reads.

    Exists only when the frames are stored without filters, frame after frame in time order
    (contiguous layout, or chunks back to back: what :class:`StoreWriter` writes), and the
    per-frame arrays are contiguous: then frame ``i`` starts at ``frames + i * frame_bytes``
    and a clip's span is ONE ``pread``. ``signature`` (inode, size, mtime) detects a store
    replaced after the layout was read.
    """

    frames: int
    frame_bytes: int
    frame_shape: tuple
    arrays: dict  # name -> (byte offset, dtype str, item size)
    signature: tuple


def frame_layout(f: h5py.File, path: str | os.PathLike) -> FrameLayout | None:
    """The :class:`FrameLayout` of an open store, or None when direct reads do not apply."""
    ds = f["frames"]
    n = ds.shape[0]
    if n == 0 or dataset_filters(ds):
        return None
    frame_bytes = int(np.prod(ds.shape[1:]))
    if ds.chunks is None:
        base = ds.id.get_offset()
        if base is None:
            return None
    else:
        if ds.chunks[1:] != ds.shape[1:]:
            return None
        ranges = chunk_byte_ranges(ds)
        cf = ds.chunks[0]
        base = ranges[0][1] if ranges else None
        expected = [(k * cf, base + k * cf * frame_bytes, cf * frame_bytes) for k in range(-(-n // cf))]
        if base is None or ranges != expected:
            return None
    arrays = {}
    names = ["frame_crc32", "timestamps"] + [f"frame_labels/{k}" for k in (f["frame_labels"] if "frame_labels" in f else [])]
    for name in names:
        a = f[name]
        off = a.id.get_offset() if a.chunks is None and not dataset_filters(a) else None
        if off is None or a.shape[:1] != (n,) or a.ndim != 1:
            return None
        arrays[name] = (int(off), a.dtype.str, a.dtype.itemsize)
    st = os.stat(path)
    return FrameLayout(int(base), frame_bytes, tuple(ds.shape[1:]), arrays, (st.st_ino, st.st_size, st.st_mtime_ns))


class DirectReader:
    """Reads clips of an uncompressed store with plain ``pread`` calls at the offsets of its
    :class:`FrameLayout` (taken from HDF5 when the store was indexed). A clip's frames are read
    straight into the output, one ``preadv`` per run of consecutive frames: with a stride > 1
    the skipped frames are never read (kernel readahead is off for this file: POSIX_FADV_RANDOM).
    Same interface as :class:`StoreReader`."""

    def __init__(self, path: str | os.PathLike, layout: FrameLayout):
        self.path, self.layout = str(path), layout
        self.fd = os.open(self.path, os.O_RDONLY)
        st = os.fstat(self.fd)
        # (inode, size, mtime) from HDF5 at indexing; (size, mtime) from a shard's store table (clips/store_table.py)
        if (st.st_ino, st.st_size, st.st_mtime_ns)[-len(layout.signature) :] != tuple(layout.signature):
            os.close(self.fd)
            raise DataError(f"{path}: clip store changed since the dataset was indexed (rebuilt while training?)")
        os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_RANDOM)

    def _pread(self, size: int, offset: int) -> bytes:
        buf = os.pread(self.fd, size, offset)
        if len(buf) != size:
            raise DataError(f"{self.path}: clip store is truncated (wanted {size} bytes at {offset}, got {len(buf)})")
        return buf

    def prefetch(self, indices: np.ndarray) -> None:
        """Ask the kernel to start reading the clip's frames (and its crc32s, timestamps) now."""
        L = self.layout
        for a, b in _runs(np.unique(indices)):
            os.posix_fadvise(self.fd, L.frames + a * L.frame_bytes, (b - a) * L.frame_bytes, os.POSIX_FADV_WILLNEED)
        lo, hi = int(indices[0]), int(indices[-1]) + 1
        for name in ("frame_crc32", "timestamps"):
            off, _, size = L.arrays[name]
            os.posix_fadvise(self.fd, off + lo * size, (hi - lo) * size, os.POSIX_FADV_WILLNEED)

    def read(self, indices: np.ndarray, check: bool = True) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        L = self.layout
        frames, inverse = np.unique(indices, return_inverse=True)
        out = np.empty((len(frames), *L.frame_shape), np.uint8)
        pos = 0
        for a, b in _runs(frames):
            view = memoryview(out[pos : pos + b - a]).cast("B")
            got = os.preadv(self.fd, [view], L.frames + a * L.frame_bytes)
            if got != len(view):
                raise DataError(f"{self.path}: clip store is truncated (frames {a}-{b - 1}: {got} of {len(view)} bytes)")
            pos += b - a
        if len(frames) != len(indices):
            out = out[inverse]  # a short video repeats its last frame
        if check:
            check_crc(out, self.array("frame_crc32", indices), indices, self.path)
        return out

    def array(self, name: str, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        lo, hi = int(indices[0]), int(indices[-1]) + 1
        off, dtype, size = self.layout.arrays[name]
        return np.frombuffer(self._pread((hi - lo) * size, off + lo * size), dtype)[indices - lo]

    def close(self) -> None:
        os.close(self.fd)


def _runs(sorted_unique: np.ndarray) -> list[tuple[int, int]]:
    """[a, b) runs of consecutive values."""
    if len(sorted_unique) == 0:
        return []
    breaks = np.flatnonzero(np.diff(sorted_unique) != 1) + 1
    starts = np.r_[0, breaks]
    ends = np.r_[breaks, len(sorted_unique)]
    return [(int(sorted_unique[i]), int(sorted_unique[j - 1]) + 1) for i, j in zip(starts, ends)]


def chunk_byte_ranges(ds: h5py.Dataset) -> list[tuple[int, int, int]]:
    """(first frame, byte offset, size) of every stored chunk of a frames dataset, in time order."""
    out = []
    for i in range(ds.id.get_num_chunks()):
        info = ds.id.get_chunk_info(i)
        out.append((int(info.chunk_offset[0]), int(info.byte_offset), int(info.size)))
    return sorted(out)


__all__ = ["DirectReader", "FrameLayout", "Store", "StoreReader", "chunk_byte_ranges", "frame_layout", "open_h5", "open_store", "read_frames", "read_span"]
