"""DFEW (Jiang et al., ACM MM 2020): 16,372 movie clips, 7 emotions, 5 official folds.

Layout: ``EmoLabel_DataSplit/test(single-labeled)/set_1.csv`` ... ``set_5.csv``
(columns ``video_name,label``; label 1 happy, 2 sad, 3 neutral, 4 angry, 5 surprise,
6 disgust, 7 fear) and the clips ``Clip/original/00001.mp4``. Every single-labelled
clip is in the test set of exactly one fold: its ``fold`` column (1-5) encodes the
official protocol (``finetune.protocol: official``: train on the other folds).
Clips from movies carry no actor identity: each clip is its own subject.

Spec keys: ``splits`` (default ``root/EmoLabel_DataSplit``), ``videos`` (default
``root/Clip/original``), ``extensions`` (tried in order, default ``[.mp4, .avi]``).
A clip listed in a fold file but not on disk is listed as missing.
"""

from __future__ import annotations

from affectube.data.adapters.common import check_keys, frame, option_path, read_table, root_dir
from affectube.errors import DataError

KEYS = ["splits", "videos", "extensions"]
LABELS = {1: "happy", 2: "sad", 3: "neutral", 4: "angry", 5: "surprise", 6: "disgust", 7: "fear"}
FOLDS = 5


def build(name: str, spec: dict):
    check_keys(spec, KEYS, "dfew")
    root = root_dir(spec, "dfew")
    splits = option_path(spec, "splits", root, "EmoLabel_DataSplit")
    videos = option_path(spec, "videos", root, "Clip/original")
    exts = spec.get("extensions", [".mp4", ".avi"])
    rows, seen, sources = [], {}, []
    for k in range(1, FOLDS + 1):
        path = splits / "test(single-labeled)" / f"set_{k}.csv"
        sources.append(path)
        t = read_table(path, f"DFEW fold {k} test list")
        for col in ("video_name", "label"):
            if col not in t.columns:
                raise DataError(f"{path}: missing column {col!r} (have {', '.join(map(str, t.columns))})")
        for i, r in enumerate(t.to_dict("records")):
            try:
                vid, lab = int(r["video_name"]), int(r["label"])
            except (TypeError, ValueError):
                raise DataError(f"{path}: row {i + 1}: video_name/label must be integers, got {r['video_name']!r}, {r['label']!r}") from None
            if lab not in LABELS:
                raise DataError(f"{path}: row {i + 1}, column 'label': {lab} is not a DFEW label (1-7)")
            video_id = f"{vid:05d}"
            if video_id in seen:
                raise DataError(f"{path}: row {i + 1}: clip {video_id} is already in the test set of fold {seen[video_id]}")
            seen[video_id] = k
            file = next((videos / f"{video_id}{e}" for e in exts if (videos / f"{video_id}{e}").is_file()), videos / f"{video_id}{exts[0]}")
            rows.append({"video_id": video_id, "path": str(file), "subject": video_id, "emotion": LABELS[lab], "fold": k})
    return frame(rows, sources)
