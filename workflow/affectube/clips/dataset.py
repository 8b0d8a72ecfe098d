"""``ClipDataset``: a PyTorch Dataset of clips over any set of clip stores.

Items (dicts, batched by torch's default collate):

``video``          float32 [C,T,S,S], normalised (``dataset.mean``/``dataset.std``, in [0,1] units);
                   with ``output="uint8"``: the stored uint8 crops [T,S0,S0,C] and ``window`` int64 [5]
                   (the clip's crop window and flip), to be applied on the accelerator with
                   ``dataset.transform.apply(batch["video"].to(device), batch["window"])``
``label``          int64 class index in ``dataset.classes`` of the store's ``label`` column (default
                   ``emotion``; any clip-level categorical label, e.g. GRID's ``colour``; -1: none or another)
``targets``        float32 [D] clip-level continuous targets: the mean of the per-frame labels over
                   the clip's frames where the store has them, else the manifest's clip-level value, else NaN
``frame_targets``  float32 [T,D] per-frame labels at the clip's frames (NaN where the store has none)
``times``          float64 [T] seconds of each clip frame in the source video
``subject``, ``video_id``, ``dataset`` (str), ``clip`` (int: 0 in training, 0..test_clips-1 in testing),
``start`` (int: first frame), ``mask`` (bool [N], only with ``mask_generator``)

Sampling (see :mod:`affectube.clips.sampling`): ``mode="train"`` gives one item per video at a
random start; ``mode="test"`` gives ``test_clips`` items per video, centred in ``test_clips`` equal
segments of the video (spread over the whole video, the middle included). A video shorter than one clip
(``(num_frames - 1) x sample_stride + 1`` frames) is kept in both modes: its clip starts at frame 0
and repeats the last frame (``dataset.short`` lists such videos).

Augmentation (``augment=True``, training): a random resized crop (``scale``, ``ratio``; ``crop=False``:
none) and a flip with probability ``flip``, one per clip (:class:`~affectube.clips.transforms.TubeTransform`);
fine-tuning takes them from ``finetune.augment``. With
``event=True`` every store must carry an event span (``event_start``/``event_end`` in its labels):
training clips are centred on it +- ``event_jitter`` seconds, test clips centred on it.

Determinism: every random choice of item ``i`` comes from ``numpy.random.default_rng([seed,
epoch, i])``, so the samples do not depend on the number of DataLoader workers or on which
worker reads which item. ``set_epoch(e)`` draws new clips and augmentations for epoch ``e``
(call it before creating the epoch's iterator; with ``persistent_workers`` the workers keep the
epoch they were started with). An index ``i >= len(ds)`` is read as epoch ``i // len(ds)``,
item ``i % len(ds)`` (for samplers that encode the epoch in the index).

Stores: a list of paths, a directory (its ``*.h5``) or clips shard indexes (``shard-<k>.json``: their
stores). Given only shard indexes that have their store tables (:mod:`affectube.clips.store_table`,
written by ``clips-shard``), the constructor reads those tables and opens no store; the videos are then
numpy columns (:class:`~affectube.clips.store_table.EntryTable`, a few hundred bytes per video), not
objects (except with ``event`` or a landmark-guided mask generator: they need each store's timestamps or
landmarks, read as below). Same videos, same order, same items either way. Order: as the stores are given
(``order="given"``), or by dataset (in order of first appearance) then video id (``order="video"``,
pretraining's: the same batches whether a dataset's stores come one per video in manifest order or shard
by shard from ``data.shard_size``'s indexes).

Workers: otherwise the constructor reads and verifies each store's metadata (:func:`open_store`) and
closes it again; frames are read through handles opened lazily inside the process that reads
(a worker), kept in a small LRU, never inherited across fork (handles are dropped from the
pickled state and when the process id changes). Uncompressed stores are read with ``direct``
preads at the byte offsets HDF5 reported at indexing (:class:`~affectube.clips.readers.DirectReader`:
one ``preadv`` per run of consecutive clip frames, no HDF5 call per item); compressed ones through
h5py. Every frame read is checked against its crc32 (``check_frames``). Memory per item is one
clip, whatever the dataset size.

Training picks the output by device (:func:`loader_output`): ``"uint8"`` on CUDA (pretraining:
:meth:`affectube.train.masked_data.MaskedClips.to_device`; fine-tuning:
:func:`affectube.train.supervised.clip_input`), ``"float"`` on the CPU; both give the same pixels.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from affectube.clips import sampling
from affectube.clips.readers import DirectReader, FrameLayout, StoreReader, frame_layout, open_store
from affectube.clips.store_table import EntryTable, shard_table
from affectube.clips.transforms import IMAGENET_MEAN, IMAGENET_STD, TubeTransform
from affectube.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoEntry:
    path: str
    dataset: str
    video_id: str
    subject: str
    session: str
    num_frames: int
    channels: int
    emotion: str | None  # the value of the dataset's label column (``emotion`` unless ``label`` names another)
    clip_targets: tuple  # float per requested target (NaN if none)
    frame_targets: tuple  # names of requested targets the store has per frame
    layout: FrameLayout | None = None  # byte offsets for direct reads (uncompressed stores)
    event: tuple | None = None  # (first, last) frame of the event span, with event=True
    event_jitter: int = 0  # event_jitter in frames of this store
    landmarks: np.ndarray | None = None  # [N,5,2] crop pixels: only for a mask generator that uses them (face masking)


class ClipDataset(Dataset):
    def __init__(
        self,
        stores: str | os.PathLike | Iterable[str | os.PathLike],
        num_frames: int = 16,
        sample_stride: int = 2,
        input_size: int = 112,
        mode: str = "train",
        test_clips: int = 2,
        classes: Sequence[str] | None = None,
        targets: Sequence[str] = (),
        augment: bool = False,
        seed: int = 0,
        subjects: Iterable[str] | None = None,
        datasets: Iterable[str] | None = None,
        video_ids: Iterable[str] | None = None,
        require_label: bool = False,
        scale: tuple[float, float] = (0.6, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: float = 0.5,
        crop: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        mask_generator=None,
        output: str = "float",
        check_frames: bool = True,
        direct: bool = True,
        max_open: int = 64,
        label: str = "emotion",
        event: bool = False,
        event_jitter: float = 0.0,
        order: str = "given",
    ):
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        if output not in ("float", "uint8"):
            raise ValueError(f"output must be 'float' or 'uint8', got {output!r}")
        self.output = output
        if num_frames < 1 or sample_stride < 1 or test_clips < 1:
            raise ValueError("num_frames, sample_stride and test_clips must be >= 1")
        self.num_frames, self.sample_stride = int(num_frames), int(sample_stride)
        self.span = sampling.clip_span(self.num_frames, self.sample_stride)
        self.mode, self.test_clips = mode, int(test_clips)
        self.target_names = list(targets)
        self.seed, self.epoch = int(seed), 0
        self.transform = TubeTransform(input_size, augment, scale, ratio, flip, mean, std, crop=crop)
        self.mask_generator = mask_generator
        self.check_frames = bool(check_frames)
        self.direct = bool(direct)
        self.max_open = int(max_open)
        self.skipped: list[tuple[str, str]] = []
        self.label = str(label)
        self.event, self.event_jitter = bool(event), float(event_jitter)

        paths, tables = _sources(stores)
        if tables is not None and not self.event and not getattr(mask_generator, "uses_landmarks", False):
            # clips shard indexes with their store tables: no store opened here (clips/store_table.py)
            entries, skipped = EntryTable.from_tables(tables, self.label, self.target_names, self.direct, _as_float)
            log.info("%d videos indexed from %d clips shard store tables (no store opened)", len(entries), len(tables))
            for path, reason in skipped:
                self.skipped.append((path, reason))
                log.warning("%s: skipped, the store has no frames (%s)", path, reason)
        else:
            entries = [e for e in (self._entry(p) for p in paths) if e is not None]
        if order == "video":  # whether the stores came one per video or shard by shard (data.shard_size)
            entries = _by_video(entries)
        elif order != "given":
            raise ValueError(f"order must be 'given' or 'video', got {order!r}")
        if classes is None:  # every emotion of the given stores, before any filter: the same for every fold
            classes = sorted({e for e in _column(entries, "emotion") if e is not None})
        self.classes = list(classes)
        self._class_index = {c: i for i, c in enumerate(self.classes)}
        entries = _filter(entries, subjects, datasets, video_ids)
        if require_label:
            entries = _where(entries, [e in self._class_index for e in _column(entries, "emotion")])
        channels = set(_column(entries, "channels"))
        if len(channels) > 1:
            raise DataError(f"clip stores mix {sorted(channels)} channels (grayscale and colour crops): use one crop.grayscale setting")
        self.channels = channels.pop() if channels else 3
        self.entries = entries
        # videos shorter than one clip are kept, never dropped: their clips repeat the last frame
        # (sampling.frame_indices); counted here and in the faces QC table (short_clip)
        self.short = [(v, n) for v, n in zip(_column(entries, "video_id"), _column(entries, "num_frames")) if n < self.span]
        if self.short:
            log.info("%d of %d videos have fewer frames than one clip spans (%d): their clips repeat the last frame (e.g. %s)",
                     len(self.short), len(entries), self.span, ", ".join(f"{v}: {n}" for v, n in self.short[:3]))
        self._per_video = 1 if mode == "train" else self.test_clips  # item i: video i // per_video, clip i % per_video
        mean_t, std_t = self.transform.stats(self.channels)
        self.mean, self.std = tuple(mean_t.tolist()), tuple(std_t.tolist())
        self._handles: OrderedDict[str, StoreReader | DirectReader] = OrderedDict()
        self._pid = os.getpid()

    # ---------------------------------------------------------------- index
    def _entry(self, path: Path) -> VideoEntry | None:
        m = store_index(path)
        if m["num_frames"] == 0:
            reason = m["error"] or "no frames"
            self.skipped.append((str(path), reason))
            log.warning("%s: skipped, the store has no frames (%s)", path, reason)
            return None
        labels = m["labels"]
        emotion = labels.get(self.label)
        event, jitter = None, 0
        if self.event:
            event, jitter = _event(m, labels, path, self.event_jitter)
        landmarks = None
        if getattr(self.mask_generator, "uses_landmarks", False):
            landmarks = m["landmarks"]
            if landmarks is None:
                raise DataError(f"{path}: the store has no face_landmarks, which face-guided masking (pretrain.masking: face) "
                                "needs: re-run the clips stage (stores written since it records the landmarks)")
        return VideoEntry(
            path=str(path),
            dataset=m["dataset"],
            video_id=m["video_id"],
            subject=m["subject"],
            session=m["session"],
            num_frames=m["num_frames"],
            channels=m["channels"],
            emotion=None if emotion is None else str(emotion),
            clip_targets=tuple(_as_float(labels.get(t), t, path) for t in self.target_names),
            frame_targets=tuple(t for t in self.target_names if t in m["frame_labels"]),
            layout=m["layout"] if self.direct else None,
            event=event,
            event_jitter=jitter,
            landmarks=landmarks,
        )

    @property
    def subjects(self) -> list[str]:
        return sorted(set(_column(self.entries, "subject")))

    @property
    def video_ids(self) -> list[str]:
        return _column(self.entries, "video_id")

    @property
    def datasets(self) -> list[str]:
        return sorted(set(_column(self.entries, "dataset")))

    @property
    def paths(self) -> list[str]:
        """The store of every video, in order (without making a :class:`VideoEntry` per video)."""
        return _column(self.entries, "path")

    def labels(self) -> np.ndarray:
        """Class index of every item (without reading frames): for class weights / samplers."""
        per_video = np.asarray([self._class_index.get(e, -1) for e in _column(self.entries, "emotion")], np.int64)
        return np.repeat(per_video, self._per_video)

    def as_test(self) -> "ClipDataset":
        """The same videos, read as test clips (``test_clips`` per video at fixed starts, no
        augmentation): e.g. a fine-tuned model on its own training videos."""
        import copy

        other = copy.copy(self)
        other.mode, other.epoch = "test", 0
        other.transform = copy.copy(self.transform)
        other.transform.augment = False
        other._per_video = self.test_clips
        other._handles = OrderedDict()
        return other

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def deterministic(self) -> bool:
        """Whether every item is the same in every epoch (test mode, no augmentation, no masks)."""
        return self.mode == "test" and not self.transform.augment and self.mask_generator is None

    def nbytes(self) -> int:
        """Bytes of the clip tensors of all items (``video`` only: the rest is small)."""
        if self.output == "float":  # float32 [C,T,S,S]
            per = self.num_frames * self.transform.size**2 * self.channels * 4
        else:  # the stored uint8 crops (their own size)
            if isinstance(self.entries, EntryTable):
                per = self.num_frames * max(self.entries.frame_bytes(), default=0)
            else:
                per = self.num_frames * max((e.layout.frame_bytes for e in self.entries if e.layout is not None), default=0)
        return per * len(self)

    def materialize(self) -> "MaterializedClips":
        """Every item read once and kept in memory: for a :meth:`deterministic` dataset read again and
        again (the inner-validation clips, predicted after every epoch), the same items without
        re-reading, re-checking and re-transforming them each time."""
        if not self.deterministic():
            raise ValueError("only a deterministic dataset (test mode, no augmentation, no masks) can be materialized")
        return MaterializedClips(self)

    def __len__(self) -> int:
        return len(self.entries) * self._per_video

    # ---------------------------------------------------------------- items
    def _plan(self, index: int) -> tuple:
        """(epoch, index, entry, clip, start, frame indices, rng) of item ``index``."""
        n_items = len(self)
        epoch, index = (self.epoch, int(index)) if index < n_items else divmod(int(index), n_items)
        v, clip = divmod(index, self._per_video)
        e = self.entries[v]
        rng = np.random.default_rng([self.seed, epoch, index])
        if e.event is not None and self.mode == "train":
            start = sampling.event_train_start(e.num_frames, self.span, e.event, e.event_jitter, rng)
        elif e.event is not None:
            start = sampling.event_test_starts(e.num_frames, self.span, e.event, self.test_clips, e.event_jitter)[clip]
        elif self.mode == "train":
            start = sampling.train_start(e.num_frames, self.span, rng)
        else:
            start = sampling.segment_starts(e.num_frames, self.span, self.test_clips)[clip]
        idx = sampling.frame_indices(start, self.num_frames, self.sample_stride, e.num_frames)
        return epoch, index, e, clip, start, idx, rng

    def __getitem__(self, index: int) -> dict:
        return self._load(*self._plan(index))

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """A batch (torch's DataLoader calls this when it exists): the clips' byte ranges are announced
        to the kernel first (``posix_fadvise WILLNEED``), so their reads proceed in parallel."""
        plans = [self._plan(i) for i in indices]
        for p in plans:
            f = self._handle(p[2])
            if hasattr(f, "prefetch"):
                f.prefetch(p[5])
        return [self._load(*p) for p in plans]

    def _load(self, epoch: int, index: int, e: VideoEntry, clip: int, start: int, idx: np.ndarray, rng) -> dict:
        f = self._handle(e)
        frames = f.read(idx, check=self.check_frames)
        times = f.array("timestamps", idx)
        frame_t = np.full((self.num_frames, len(self.target_names)), np.nan, np.float32)
        clip_t = np.asarray(e.clip_targets, np.float32)
        for j, name in enumerate(self.target_names):
            if name in e.frame_targets:
                frame_t[:, j] = f.array(f"frame_labels/{name}", idx)
                vals = frame_t[:, j][~np.isnan(frame_t[:, j])]
                clip_t[j] = vals.mean() if vals.size else np.nan
        window = self.transform.window(frames.shape[1], frames.shape[2], rng)
        if self.output == "float":
            video = self.transform.crop_window(frames, window)
        else:
            video = torch.from_numpy(frames)  # [T,S,S,C] as stored: batching it is a plain copy
        item = {
            "video": video,
            "label": self._class_index.get(e.emotion, -1),
            "targets": torch.from_numpy(clip_t),
            "frame_targets": torch.from_numpy(frame_t),
            "times": torch.from_numpy(np.asarray(times, np.float64)),
            "subject": e.subject,
            "video_id": e.video_id,
            "dataset": e.dataset,
            "clip": int(clip),
            "start": int(start),
        }
        if self.output == "uint8":
            item["window"] = window.as_tensor()
        if self.mask_generator is not None:
            mask_rng = np.random.default_rng([self.seed, epoch, index, 1])
            if e.landmarks is not None:  # face-guided masking: the landmarks where they land in the model's input
                mask = self.mask_generator(mask_rng, landmarks=self.transform.points(e.landmarks[idx], window))
            else:
                mask = self.mask_generator(mask_rng)
            item["mask"] = torch.from_numpy(np.asarray(mask, dtype=bool))
        return item

    # ---------------------------------------------------------------- per-process HDF5 handles
    def _handle(self, entry: VideoEntry):
        if os.getpid() != self._pid:  # a forked worker: never use the parent's handles
            self._handles = OrderedDict()
            self._pid = os.getpid()
        f = self._handles.get(entry.path)
        if f is not None:
            self._handles.move_to_end(entry.path)
            return f
        if entry.layout is not None:
            f = DirectReader(entry.path, entry.layout)  # plain preads at the indexed offsets
        else:
            f = StoreReader(entry.path, check_complete=False)  # verified (open_store) when the index was built
        self._handles[entry.path] = f
        while len(self._handles) > self.max_open:
            _, old = self._handles.popitem(last=False)
            old.close()
        return f

    def close(self) -> None:
        if os.getpid() == self._pid:
            for f in self._handles.values():
                f.close()
        self._handles = OrderedDict()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"] = OrderedDict()  # open HDF5 handles never travel to another process
        state["_pid"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()


class MaterializedClips(Dataset):
    """The items of a deterministic :class:`ClipDataset`, read once (:meth:`ClipDataset.materialize`);
    ``transform``, ``classes`` and ``channels`` as the source's (the uint8 path's ``clip_input``)."""

    def __init__(self, source: ClipDataset):
        self.source = source
        self.transform, self.classes, self.channels = source.transform, source.classes, source.channels
        self.items = source.__getitems__(list(range(len(source)))) if len(source) else []
        source.close()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        return [self.items[i] for i in indices]


def loader_output(device) -> str:
    """The loader output for training on ``device``: ``"uint8"`` on CUDA (the stored crops cross the
    loader and the host-device link as uint8; ``transform.apply`` crops/resizes/normalises them on
    the GPU: the path that meets the loader's throughput targets), ``"float"`` elsewhere (the
    transform in the loader's workers)."""
    return "uint8" if torch.device(device).type == "cuda" else "float"


_INDEX: dict[str, tuple[tuple, dict]] = {}


def store_index(path: str | os.PathLike) -> dict:
    """What the loader needs from a store, read and verified (:func:`open_store`) once per process
    and file version (inode, size, mtime): several datasets over the same stores (folds, splits)
    do not re-read them."""
    path = str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such clip store") from None
    sig = (st.st_ino, st.st_size, st.st_mtime_ns)
    hit = _INDEX.get(path)
    if hit is not None and hit[0] == sig:
        return hit[1]
    with open_store(path, verify="meta") as s:
        channels = int(s.attrs["frame_shape"][-1])
        meta = {
            "dataset": s.dataset, "video_id": s.video_id, "subject": s.subject, "session": s.session,
            "num_frames": len(s), "channels": channels, "labels": s.labels,
            "frame_labels": set(s.frame_label_names), "error": s.error,
            "layout": frame_layout(s.file, path) if len(s) else None,
            "timestamps": np.asarray(s.array("timestamps"), np.float64),
            "landmarks": np.asarray(s.file["face_landmarks"], np.float32) if "face_landmarks" in s.file else None,
            # decode/face/crop params the store was made with (fine-tuning checks they agree; predict reuses them)
            "preprocessing": {"decode": s.attrs.get("decode"), "crop": s.attrs.get("crop"), "faces": (s.attrs.get("source") or {}).get("faces"),
                              "channels": channels},
        }  # fmt: skip
    _INDEX[path] = (sig, meta)
    return meta


def _sources(stores) -> tuple[list[Path], list[dict] | None]:
    """(store paths, store tables). A directory stands for its ``*.h5`` files (sorted), a clips shard index
    (``shard-<k>.json``) for the stores it lists (:func:`affectube.shards.index.expand_stores`), other paths
    for themselves. The tables: when there are sources and every one is a shard index with its store table
    (:func:`affectube.clips.store_table.shard_table`), else None."""
    from affectube.shards.index import expand_stores, is_shard_index

    if isinstance(stores, (str, os.PathLike)):
        stores = [stores]
    out: list[Path] = []
    tables: list[dict] | None = []
    for s in stores:
        p = Path(s)
        if p.is_dir():
            out.extend(sorted(p.glob("*.h5")))
            tables = None
        elif is_shard_index(p):
            listed = expand_stores([str(p)])
            out.extend(Path(x) for x in listed)
            table = shard_table(p, listed) if tables is not None else None
            tables = None if table is None else [*tables, table]
        else:
            out.append(p)
            tables = None
    return out, (tables or None)


def _column(entries, name: str) -> list:
    """One field of every entry (a list of :class:`VideoEntry` or an :class:`EntryTable`)."""
    if isinstance(entries, EntryTable):
        return entries.column("label" if name == "emotion" else name)
    return [getattr(e, name) for e in entries]


def _by_video(entries):
    """The entries by dataset (in the order the datasets first appear) then video id: one order for the same
    stores however they were listed (per video in manifest order, or shard by shard)."""
    datasets, videos = _column(entries, "dataset"), _column(entries, "video_id")
    rank = {d: i for i, d in enumerate(dict.fromkeys(datasets))}
    idx = sorted(range(len(videos)), key=lambda i: (rank[datasets[i]], videos[i]))
    if isinstance(entries, EntryTable):
        return entries.take(np.asarray(idx, np.int64))
    return [entries[i] for i in idx]


def _where(entries, keep):
    """The entries where ``keep`` (one bool per entry) is true, in order."""
    if isinstance(entries, EntryTable):
        return entries.take(np.flatnonzero(np.asarray(keep, bool)))
    return [e for e, k in zip(entries, keep) if k]


def _filter(entries, subjects, datasets, video_ids):
    keep = entries
    if subjects is not None:
        subjects = set(map(str, subjects))
        keep = _where(keep, [v in subjects for v in _column(keep, "subject")])
    if datasets is not None:
        datasets = set(map(str, datasets))
        keep = _where(keep, [v in datasets for v in _column(keep, "dataset")])
    if video_ids is not None:
        video_ids = set(map(str, video_ids))
        keep = _where(keep, [v in video_ids for v in _column(keep, "video_id")])
    return keep


def _event(meta: dict, labels: dict, path, jitter_s: float) -> tuple[tuple[int, int], int]:
    """The store's event span as (first, last) frame, and ``jitter_s`` in its frames."""
    start, end = labels.get("event_start"), labels.get("event_end")
    if start is None or end is None:
        raise DataError(f"{path}: finetune.event is on but the store has no event span (manifest columns "
                        "event_start/event_end; GRID: data.datasets.*.align and event)")
    t = meta["timestamps"]
    try:
        frames = sampling.event_frames(t, float(start), float(end))
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None
    step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
    return frames, int(round(jitter_s / step)) if step > 0 else 0


def _as_float(value, name: str, path) -> float:
    if value is None:
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{path}: clip-level label {name!r} = {value!r} is not a number (a continuous target)") from None
