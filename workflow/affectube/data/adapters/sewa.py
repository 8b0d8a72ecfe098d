"""SEWA (Kossaifi et al. 2019), as distributed for AVEC 2017/2019: in-the-wild video chats.

Layout: recordings ``Train_01.avi``, ``Devel_03.avi``, ``Test_05.avi`` (any depth under
the videos directory) and per-recording labels ``labels/Train_01.csv``: ``;``-separated,
no header, rows ``'Train_01';<time s>;<arousal>;<valence>;<liking>`` (gold standard, 100 ms
steps). Each recording shows one subject; its id is the recording name. The
``annotation`` column reads ``arousal,valence,liking=labels/Train_01.csv`` (the file's
value columns in that order); the ``partition`` column keeps Train/Devel/Test.

Spec keys: ``videos`` (default ``root``), ``labels`` (default ``root/labels``),
``dimensions`` (the label file's value columns, default ``[arousal, valence, liking]``),
``extensions``.
"""

from __future__ import annotations

import re

from affectube.data.adapters.common import check_keys, frame, list_videos, option_path, root_dir, unmatched

KEYS = ["videos", "labels", "dimensions", "extensions"]
NAME = re.compile(r"^(?P<partition>Train|Devel|Test)_(?P<num>\d{2,3})$")


def build(name: str, spec: dict):
    check_keys(spec, KEYS, "sewa")
    root = root_dir(spec, "sewa")
    videos = option_path(spec, "videos", root, ".")
    labels = option_path(spec, "labels", root, "labels")
    dims = ",".join(spec.get("dimensions", ["arousal", "valence", "liking"]))
    rows = []
    for path in list_videos(videos, spec.get("extensions", [".avi", ".mp4", ".mkv"])):
        m = NAME.match(path.stem)
        if m is None:
            rows.append(unmatched(path, "file name is not a SEWA/AVEC recording (Train_01.avi)"))
            continue
        ann = labels / f"{path.stem}.csv"
        row = {"video_id": path.stem, "path": str(path), "subject": path.stem, "partition": m["partition"]}
        if ann.is_file():
            row["annotation"] = f"{dims}={ann}"
        elif m["partition"] != "Test":  # AVEC withheld the test labels
            rows.append(unmatched(path, f"label file not found: {ann}"))
            continue
        rows.append(row)
    return frame(rows)
