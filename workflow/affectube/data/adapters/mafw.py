"""MAFW (Liu et al., ACM MM 2022): 10,045 movie clips, 11 emotions, 5 official folds.

Layout (single-label, no captions): ``Train & Test Set/single/no_caption/set_1/test.txt``
... ``set_5`` (lines ``00025.mp4 anger``) and the clips ``data/clips/00025.mp4``. The
labels are anger, disgust, fear, happiness, neutral, sadness, surprise, contempt,
anxiety, helplessness, disappointment (mapped to angry, happy, sad, ...). Every clip is
in the test set of exactly one fold: ``fold`` (1-5) encodes the official protocol.
Clips carry no actor identity: each clip is its own subject.

Spec keys: ``splits`` (the directory holding ``set_1`` ... ``set_5``; default
``root/Train & Test Set/single/no_caption``), ``videos`` (default ``root/data/clips``).
"""

from __future__ import annotations

from pathlib import Path

from affectube.data.adapters.common import check_keys, emotion, frame, option_path, root_dir
from affectube.data.manifest import safe_id
from affectube.errors import DataError

KEYS = ["splits", "videos"]
FOLDS = 5


def build(name: str, spec: dict):
    check_keys(spec, KEYS, "mafw")
    root = root_dir(spec, "mafw")
    splits = option_path(spec, "splits", root, "Train & Test Set/single/no_caption")
    videos = option_path(spec, "videos", root, "data/clips")
    rows, seen, sources = [], {}, []
    for k in range(1, FOLDS + 1):
        path = splits / f"set_{k}" / "test.txt"
        sources.append(path)
        if not path.is_file():
            raise DataError(f"{path}: MAFW fold {k} test list not found")
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise DataError(f"{path}: line {i + 1}: expected '<clip file> <label>', got {line!r}")
            clip, lab = parts
            video_id = safe_id(Path(clip).stem)
            if video_id in seen:
                raise DataError(f"{path}: line {i + 1}: clip {clip} is already in the test set of fold {seen[video_id]}")
            seen[video_id] = k
            file = videos / clip if Path(clip).suffix else videos / f"{clip}.mp4"
            rows.append({"video_id": video_id, "path": str(file), "subject": video_id, "emotion": emotion(lab, f"{path}: line {i + 1}"), "fold": k})
    return frame(rows, sources)
