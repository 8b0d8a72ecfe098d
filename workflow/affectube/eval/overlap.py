"""Pretraining/test overlap, checked on the data: by subject id and by video content, not by dataset name.

A clip store's *content hash* (:func:`content_hash`) is the sha256 of its frame shape and of
the crc32 of every stored face crop (``frame_crc32``, written with the store): two stores of the
same video decoded and cropped with the same params have the same hash, whatever their dataset
or video id, so a video registered twice (two dataset names, a copy under another id) is found.
A re-encoded or re-cropped copy is not (it is other bytes).

- Pretraining (:func:`select_pretrain_stores`) records a :func:`fingerprint` of every store it
  used in ``results/pretrain/summary.json`` (``data.fingerprints``) and, when
  ``data.transductive`` is false, drops every store whose content equals a store of the
  fine-tuning dataset (besides that dataset's own stores, dropped by name as before).
- The report (:func:`check`) compares those fingerprints with the test side of the folds: test
  subjects by subject id, test videos by content hash (of their stores under
  ``results/clips/{dataset}/``). A subject id shared with another dataset may be a naming
  coincidence (datasets number their subjects independently); the report says so.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def content_hash(path: str | Path) -> str | None:
    """sha256 (first 16 hex digits) of a store's frame shape and per-frame crc32s; None for an empty store."""
    import h5py

    with h5py.File(path, "r") as f:
        return content_hash_open(f)


def content_hash_open(f) -> str | None:
    """:func:`content_hash` of a store already open (an ``h5py.File``)."""
    crc = np.asarray(f["frame_crc32"][...], dtype="<u4")
    shape = np.asarray(f["frames"].shape[1:], dtype="<i8")
    if not len(crc):
        return None
    h = hashlib.sha256()
    h.update(shape.tobytes())
    h.update(crc.tobytes())
    return h.hexdigest()[:16]


def fingerprint(path: str | Path) -> dict:
    """``{dataset, video_id, subject, content}`` of a clip store (content None when it has no frames)."""
    import h5py

    with h5py.File(path, "r") as f:
        attrs = {k: str(f.attrs[k]) for k in ("dataset", "video_id", "subject") if k in f.attrs}
    return {"dataset": attrs.get("dataset", Path(path).parent.name), "video_id": attrs.get("video_id", Path(path).stem),
            "subject": attrs.get("subject", ""), "content": content_hash(path)}


def select_pretrain_stores(stores: list[str], dcfg: dict, prints: dict | None = None) -> tuple[list[str], list[dict], list[str]]:
    """(stores pretraining may read, their fingerprints, notes on what was dropped).

    Transductive: every store. Otherwise every store but those of the fine-tuning dataset (by name, as
    :func:`affectube.train.pretrain.allowed_datasets`) and those whose content equals one of them.
    ``prints``: the stores' fingerprints when known (clips shard store tables), else read from each store."""
    prints = prints if prints is not None else {s: fingerprint(s) for s in stores}
    if dcfg.get("transductive", False):
        return list(stores), [prints[s] for s in stores], []
    finetune = dcfg.get("finetune")
    test_content = {p["content"] for p in prints.values() if p["dataset"] == finetune and p["content"]}
    test_subjects = {p["subject"] for p in prints.values() if p["dataset"] == finetune}
    kept, notes, same_subject = [], [], set()
    for s in stores:
        p = prints[s]
        if p["dataset"] == finetune:
            continue
        if p["content"] and p["content"] in test_content:
            notes.append(f"{p['dataset']}/{p['video_id']}: same content as a video of the fine-tuning dataset {finetune!r}: left out")
            continue
        if p["subject"] in test_subjects:
            same_subject.add(f"{p['dataset']}/{p['subject']}")
        kept.append(s)
    if same_subject:
        notes.append(f"subject id(s) {', '.join(sorted(same_subject)[:5])} also name subjects of {finetune!r} "
                     "(kept: the same id in two datasets may be two people; the report flags it)")
    return kept, [prints[s] for s in kept], notes


@dataclass
class Overlap:
    """What the report knows about pretraining vs the test side of the folds."""

    transductive: bool
    pretrain_datasets: list[str]
    test_dataset: str
    checked: bool  # the pretraining summary has fingerprints
    test_subjects: int = 0
    test_videos: int = 0
    hashed_videos: int = 0  # test videos whose store could be hashed
    subjects: dict = field(default_factory=dict)  # test subject -> pretraining datasets with that subject id
    videos: dict = field(default_factory=dict)  # test video -> pretraining dataset/video with the same content
    same_dataset_videos: int = 0  # test videos pretraining read from the fine-tuning dataset itself

    def any(self) -> bool:
        return bool(self.subjects or self.videos)

    def problems(self) -> list[str]:
        """Overlap the params do not allow (``data.transductive: false``), or that could not be checked."""
        if self.transductive:
            return []
        if not self.checked:
            return [f"results/pretrain/summary.json has no data fingerprints: pretraining/test overlap not checked "
                    f"(pretraining read {', '.join(self.pretrain_datasets) or '?'}; re-run pretraining to record them)"]
        out = []
        if self.videos:
            shown = ", ".join(f"{t} = {p}" for t, p in list(self.videos.items())[:5])
            out.append(f"{len(self.videos)} of {self.test_videos} test videos were in the pretraining data (same content hash): {shown}"
                       f"{' ...' if len(self.videos) > 5 else ''}. The run is transductive although data.transductive is false.")
        if self.subjects:
            shown = ", ".join(f"{s} (in {', '.join(d)})" for s, d in list(self.subjects.items())[:5])
            out.append(f"{len(self.subjects)} of {self.test_subjects} test subject id(s) also occur in the pretraining data: {shown}. "
                       "Either the same people (then pretraining saw test subjects) or datasets that number their subjects alike: check.")
        return out

    def sentence(self) -> str:
        """One plain statement for the report's validity section."""
        if not self.checked:
            return (f"Pretraining read {', '.join(self.pretrain_datasets) or 'nothing recorded'}; its summary records no fingerprints, "
                    "so overlap with the test data was not checked.")
        what = (f"{len(self.videos)} of the {self.test_videos} test videos ({self.hashed_videos} hashed) and "
                f"{len(self.subjects)} of the {self.test_subjects} test subject ids occur in the pretraining data "
                "(compared by content hash and by subject id)")
        if self.transductive:
            return (f"Transductive run (data.transductive: true): {what}. Pretraining saw these test videos without labels; "
                    "the results are not those of an encoder that never saw the test subjects.")
        return f"Not transductive (data.transductive: false): {what}."


def check(summary: dict | None, test_dataset: str, test_subjects: set[str], test_videos: set[str],
          clips_dir: str | Path, transductive: bool, pretrain_datasets: list[str] | None = None) -> Overlap:
    """Compare the pretraining summary's fingerprints with the test subjects and the test videos' stores
    (``transductive``, ``pretrain_datasets``: the params', used where the summary does not say)."""
    data = (summary or {}).get("data") or {}
    prints = data.get("fingerprints")
    out = Overlap(bool(data.get("transductive", transductive)), list(data.get("datasets") or pretrain_datasets or []), test_dataset,
                  checked=prints is not None, test_subjects=len(test_subjects), test_videos=len(test_videos))
    if prints is None:
        return out
    by_subject: dict[str, set] = {}
    by_content: dict[str, str] = {}
    for p in prints:
        by_subject.setdefault(str(p.get("subject", "")), set()).add(str(p.get("dataset")))
        if p.get("content"):
            by_content.setdefault(str(p["content"]), f"{p.get('dataset')}/{p.get('video_id')}")
        if p.get("dataset") == test_dataset and str(p.get("video_id")) in test_videos:
            out.same_dataset_videos += 1
    out.subjects = {s: sorted(by_subject[s]) for s in sorted(test_subjects) if s in by_subject}
    for v in sorted(test_videos):
        store = Path(clips_dir) / test_dataset / f"{v}.h5"
        if not store.exists():
            continue
        try:
            h = content_hash(store)
        except (OSError, KeyError) as exc:
            log.warning("%s: cannot hash (%s)", store, exc)
            continue
        out.hashed_videos += 1
        if h and h in by_content:
            out.videos[v] = by_content[h]
    return out
