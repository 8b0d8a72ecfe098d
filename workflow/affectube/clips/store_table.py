"""The store table of a clips shard: what the loader needs of each store, in numpy arrays, in one file.

``clips-shard`` writes it beside its shard index (``clips/<dataset>/shard-<k>.json`` ->
``shard-<k>.table.npz``, before the index: :func:`affectube.shards.index.run_shard`), from the rows the stores'
writers made from their read-back check (:func:`table_row`, kept in the clips key files), opening only the
stores whose rows are missing or whose file changed since. :class:`~affectube.clips.dataset.ClipDataset` given shard
indexes then reads these tables instead of opening every store (issue 17, point 3: a dataset of 1M clips
opened without 1M file opens) and holds per clip a few numpy columns (:class:`EntryTable`), not a Python
object: a :class:`~affectube.clips.dataset.VideoEntry` is made when an item is read. The stores are opened
lazily by the process that reads them (the dataset's bounded handle cache, ``max_open``).

File (``numpy.savez``, no pickles): ``version``; per store, in the shard index's order: ``path``,
``dataset``, ``video_id``, ``subject``, ``session`` (utf-8 bytes), ``num_frames`` (int32), ``channels``
(int8), ``size``/``mtime_ns`` (int64: the store file when indexed; a store rewritten since fails its
first direct read instead of being read at the old offsets), ``content`` (its content hash,
:func:`affectube.eval.overlap.content_hash`), and ragged utf-8 JSON (``<name>_blob`` uint8 +
``<name>_offsets`` int64): ``labels``, ``frame_labels`` (names), ``layout`` (the direct-read byte
offsets, :class:`~affectube.clips.readers.FrameLayout`; empty for a compressed store) and ``error``.

A table is used only when it lists exactly the stores of its shard index, with the signature of each
store file as it is now unchecked (no ``stat`` per store at start); otherwise the loader opens the
stores as before (:func:`shard_table`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from affectube.errors import DataError

log = logging.getLogger(__name__)

VERSION = 1
STRINGS = ("path", "dataset", "video_id", "subject", "session")
RAGGED = ("labels", "frame_labels", "layout", "error")


def table_path(index: str | os.PathLike) -> Path:
    """``shard-<k>.json`` -> ``shard-<k>.table.npz`` (beside it)."""
    p = Path(index)
    return p.with_name(p.name[: -len(".json")] + ".table.npz") if p.name.endswith(".json") else p.with_name(p.name + ".table.npz")


def _ragged(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    data = [t.encode("utf-8") for t in texts]
    offsets = np.zeros(len(data) + 1, np.int64)
    np.cumsum([len(d) for d in data], out=offsets[1:])
    return np.frombuffer(b"".join(data), np.uint8).copy(), offsets


def _layout_json(layout) -> str:
    if layout is None:
        return ""
    return json.dumps({"frames": layout.frames, "frame_bytes": layout.frame_bytes, "frame_shape": list(layout.frame_shape),
                       "arrays": {k: list(v) for k, v in layout.arrays.items()}}, sort_keys=True)


def table_row(s, path: str | os.PathLike) -> dict:
    """One store's columns (but ``size``/``mtime_ns``) from the open, verified store ``s``
    (:class:`~affectube.clips.readers.Store`); ``path``: the store's name in the table."""
    from affectube.clips.readers import frame_layout
    from affectube.eval.overlap import content_hash_open

    n = len(s)
    return {"path": str(path), "dataset": s.dataset, "video_id": s.video_id, "subject": s.subject, "session": s.session,
            "num_frames": n, "channels": int(s.attrs["frame_shape"][-1]),
            "labels": json.dumps(s.labels, sort_keys=True), "frame_labels": json.dumps(sorted(s.frame_label_names)),
            "layout": _layout_json(frame_layout(s.file, s.path) if n else None), "error": s.error or "",
            "content": content_hash_open(s.file) or ""}  # fmt: skip


def write_table(stores: list[str], out: str | os.PathLike, known: dict | None = None) -> Path:
    """Read each store once (:func:`open_store`, ``verify="meta"``) and write their table to ``out`` (atomic).

    ``known``: store path -> ``{"row", "size", "mtime_ns"}``, rows made by the store's writer from its read-back
    check (:class:`~affectube.clips.store.StoreWriter`, kept in the clips cache's key file): used instead of
    opening the store when the file's size and mtime are still those it was written with."""
    from affectube.clips.readers import open_store
    from affectube.io import atomic_path

    cols: dict[str, list] = {k: [] for k in (*STRINGS, *RAGGED, "num_frames", "channels", "size", "mtime_ns", "content")}
    for path in stores:
        st = os.stat(path)
        rec = (known or {}).get(str(path))
        if rec and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns and set(rec["row"]) == set(cols) - {"size", "mtime_ns"}:
            row = {**rec["row"], "path": str(path)}
        else:
            with open_store(path, verify="meta") as s:
                row = table_row(s, path)
        row.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
        for k, v in row.items():
            cols[k].append(v)
    arrays = {"version": np.int64(VERSION)}
    for k in (*STRINGS, "content"):
        arrays[k] = np.array([v.encode("utf-8") for v in cols[k]], dtype=bytes) if cols[k] else np.array([], "S1")
    arrays["num_frames"] = np.asarray(cols["num_frames"], np.int32)
    arrays["channels"] = np.asarray(cols["channels"], np.int8)
    arrays["size"], arrays["mtime_ns"] = np.asarray(cols["size"], np.int64), np.asarray(cols["mtime_ns"], np.int64)
    for k in RAGGED:
        arrays[f"{k}_blob"], arrays[f"{k}_offsets"] = _ragged(cols[k])
    out = Path(out)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return out


class Ragged:
    """Variable-length utf-8 texts in one byte buffer (no Python object per text)."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray):
        self.blob, self.offsets = blob, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.blob[self.offsets[i] : self.offsets[i + 1]].tobytes().decode("utf-8")

    def take(self, idx: np.ndarray) -> "Ragged":
        lengths = np.diff(self.offsets)[idx]
        offsets = np.zeros(len(idx) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        pieces = [self.blob[self.offsets[i] : self.offsets[i + 1]] for i in idx]
        return Ragged(np.concatenate(pieces) if pieces else np.zeros(0, np.uint8), offsets)

    @staticmethod
    def concat(parts: list["Ragged"]) -> "Ragged":
        blob = np.concatenate([p.blob for p in parts]) if parts else np.zeros(0, np.uint8)
        offsets, base = [np.zeros(1, np.int64)], 0
        for p in parts:
            offsets.append(p.offsets[1:] + base)
            base += int(p.offsets[-1])
        return Ragged(blob, np.concatenate(offsets))

    def nbytes(self) -> int:
        return self.blob.nbytes + self.offsets.nbytes


def read_table(path: str | os.PathLike) -> dict:
    """The arrays of a store table (raises :class:`DataError` naming the file if it is not one)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not a store table ({exc})") from None
    if int(data.get("version", -1)) != VERSION:
        raise DataError(f"{path}: store table version {data.get('version')} (this code reads {VERSION}): re-run clips_shard")
    return data


def shard_table(index: str | os.PathLike, stores: list[str]) -> dict | None:
    """The table of shard index ``index`` if it lists exactly ``stores`` (the index's stores, in order), else None."""
    path = table_path(index)
    if not path.exists():
        return None
    try:
        data = read_table(path)
    except DataError as exc:
        log.warning("%s: %s: opening its stores instead", index, exc)
        return None
    if [p.decode("utf-8") for p in data["path"]] != [str(s) for s in stores]:
        log.warning("%s: its store table lists other stores than the index (written by another run?): opening its stores instead", index)
        return None
    return data


class EntryTable(Sequence):
    """The dataset's videos as numpy columns; ``table[i]`` is the :class:`VideoEntry` of video ``i``,
    made on demand. Built by :meth:`from_tables` with the dataset's choices (label column, targets,
    direct reads); :meth:`take` keeps a subset (filters)."""

    def __init__(self, cols: dict, vocab: dict, layout: Ragged, label_names: list, direct: bool):
        self.cols, self.vocab, self.layout = cols, vocab, layout
        self.label_names, self.direct = label_names, direct

    @classmethod
    def from_tables(cls, tables: list[dict], label: str, targets: Sequence[str], direct: bool, as_float) -> tuple["EntryTable", list]:
        """(entries, skipped ``(path, reason)``) of the tables' stores with frames, in order."""
        paths = np.concatenate([t["path"] for t in tables]) if tables else np.array([], "S1")
        n_frames = np.concatenate([t["num_frames"] for t in tables]).astype(np.int32)
        keep = np.flatnonzero(n_frames > 0)
        errors = Ragged.concat([Ragged(t["error_blob"], t["error_offsets"]) for t in tables])
        skipped = [(paths[i].decode("utf-8"), errors[i] or "no frames") for i in np.flatnonzero(n_frames == 0)]
        labels = Ragged.concat([Ragged(t["labels_blob"], t["labels_offsets"]) for t in tables])
        frame_labels = Ragged.concat([Ragged(t["frame_labels_blob"], t["frame_labels_offsets"]) for t in tables])
        label_values, clip_t, frame_t = [], np.full((len(keep), len(targets)), np.nan), np.zeros((len(keep), len(targets)), bool)
        parsed: dict = {}  # videos share few distinct label records (a dataset's classes): each is parsed once
        for j, i in enumerate(keep):
            text = labels[i]
            if text not in parsed:
                lab = json.loads(text)
                v = lab.get(label)
                parsed[text] = (None if v is None else str(v), [lab.get(t) for t in targets])
            value, raw = parsed[text]
            label_values.append(value)
            if targets:
                path = paths[i].decode("utf-8")
                clip_t[j] = [as_float(x, t, path) for x, t in zip(raw, targets)]
                names = set(json.loads(frame_labels[i]))
                frame_t[j] = [t in names for t in targets]
        vocab, cols = {}, {"path": paths[keep], "video_id": np.concatenate([t["video_id"] for t in tables])[keep],
                           "num_frames": n_frames[keep], "clip_targets": clip_t, "frame_targets": frame_t,
                           "channels": np.concatenate([t["channels"] for t in tables])[keep]}  # fmt: skip
        for k in ("dataset", "subject", "session"):
            values = np.concatenate([t[k] for t in tables])[keep] if tables else np.array([], "S1")
            vocab[k], cols[k] = _codes([v.decode("utf-8") for v in values])
        vocab["label"], cols["label"] = _codes(label_values)
        layout = Ragged.concat([Ragged(t["layout_blob"], t["layout_offsets"]) for t in tables])
        layout = layout if len(keep) == len(layout) else layout.take(keep)
        sizes = np.concatenate([t["size"] for t in tables])[keep]
        mtimes = np.concatenate([t["mtime_ns"] for t in tables])[keep]
        cols["signature"] = np.stack([sizes, mtimes], axis=1) if len(keep) else np.zeros((0, 2), np.int64)
        return cls(cols, vocab, layout, list(targets), direct), skipped

    def __len__(self) -> int:
        return len(self.cols["num_frames"])

    def __getitem__(self, i):
        from affectube.clips.dataset import VideoEntry

        if not isinstance(i, (int, np.integer)):
            raise TypeError("EntryTable: index with an int (take() for subsets)")
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        c = self.cols
        return VideoEntry(
            path=c["path"][i].decode("utf-8"),
            dataset=self.vocab["dataset"][c["dataset"][i]],
            video_id=c["video_id"][i].decode("utf-8"),
            subject=self.vocab["subject"][c["subject"][i]],
            session=self.vocab["session"][c["session"][i]],
            num_frames=int(c["num_frames"][i]),
            channels=int(c["channels"][i]),
            emotion=self.vocab["label"][c["label"][i]],
            clip_targets=tuple(float(x) for x in c["clip_targets"][i]),
            frame_targets=tuple(t for t, has in zip(self.label_names, c["frame_targets"][i]) if has),
            layout=self._layout(i) if self.direct else None,
        )

    def _layout(self, i: int):
        from affectube.clips.readers import FrameLayout

        text = self.layout[i]
        if not text:
            return None
        d = json.loads(text)
        return FrameLayout(d["frames"], d["frame_bytes"], tuple(d["frame_shape"]), {k: tuple(v) for k, v in d["arrays"].items()},
                           tuple(int(x) for x in self.cols["signature"][i]))  # fmt: skip

    def column(self, name: str) -> list:
        """The values of one field for every video (strings decoded)."""
        c = self.cols[name]
        if name in self.vocab:
            return [self.vocab[name][k] for k in c]
        if c.dtype.kind == "S":
            return [v.decode("utf-8") for v in c]
        return c.tolist()

    def take(self, idx) -> "EntryTable":
        idx = np.asarray(idx, np.int64)
        return EntryTable({k: v[idx] for k, v in self.cols.items()}, self.vocab, self.layout.take(idx), self.label_names, self.direct)

    def frame_bytes(self) -> list[int]:
        """Bytes per frame of every video read directly (none without direct reads, as a :class:`VideoEntry`'s layout)."""
        if not self.direct:
            return []
        return [json.loads(self.layout[i])["frame_bytes"] for i in range(len(self)) if self.layout[i]]

    def nbytes(self) -> int:
        """Bytes held by the columns (the vocabularies are per distinct value, not per video)."""
        return sum(v.nbytes for v in self.cols.values()) + self.layout.nbytes()


def _codes(values: list) -> tuple[list, np.ndarray]:
    vocab: dict = {}
    codes = np.fromiter((vocab.setdefault(v, len(vocab)) for v in values), np.int32, count=len(values))
    return list(vocab), codes


def table_fingerprints(sources: list[str]) -> dict[str, dict] | None:
    """Store path -> :func:`affectube.eval.overlap.fingerprint`, read from the store tables of the clips shard
    indexes ``sources`` (no store opened); None unless every source is a shard index with its table."""
    from affectube.shards.index import expand_stores, is_shard_index

    out: dict[str, dict] = {}
    for src in sources:
        if not is_shard_index(src):
            return None
        stores = expand_stores([src])
        t = shard_table(src, stores)
        if t is None:
            return None
        for path, d, v, s, c in zip(stores, t["dataset"], t["video_id"], t["subject"], t["content"]):
            out[path] = {"dataset": d.decode("utf-8"), "video_id": v.decode("utf-8"), "subject": s.decode("utf-8"),
                         "content": c.decode("utf-8") or None}  # fmt: skip
    return out
