"""AMIGOS (Miranda-Correa et al. 2018): 40 participants watching 16 short videos (experiment 1).

Face videos ``Exp1_P01_face/P01_10_face.mov`` (participant, stimulus video id; the
archives ``Exp1_P<nn>_face.zip`` unpack to such names; numbers may or may not be
zero-padded). Self-assessments: ``Metadata/SelfAsessment.xlsx`` (or the same sheet
exported to CSV) with columns ``UserID, VideoID, arousal, valence, dominance, liking,
familiarity`` (1-9 scales) and the basic-emotion checkboxes, joined on (participant,
video) as integers. Columns: subject (``P01``), session (stimulus ``video``), the
ratings; ``emotion`` is not set (AMIGOS ratings are continuous).

Spec keys: ``labels`` (path to the sheet; default ``root/Metadata/SelfAsessment.xlsx``;
``.xlsx`` needs openpyxl, a CSV export works without), ``extensions``.
"""

from __future__ import annotations

import re

from affectube.data.adapters.common import check_keys, find_column, frame, list_videos, option_path, read_table, root_dir, unmatched

KEYS = ["labels", "extensions"]
NAME = re.compile(r"^P(?P<subject>\d{1,2})_(?P<video>[A-Za-z]?\d{1,3})_face$", re.IGNORECASE)
RATINGS = ["arousal", "valence", "dominance", "liking", "familiarity"]


def _int(value) -> int | None:
    m = re.search(r"\d+", str(value))
    return int(m.group()) if m else None


def build(name: str, spec: dict):
    check_keys(spec, KEYS, "amigos")
    root = root_dir(spec, "amigos")
    labels = option_path(spec, "labels", root, "Metadata/SelfAsessment.xlsx")
    ratings = {}
    cols = {}
    if labels.exists() or spec.get("labels"):
        t = read_table(labels, "AMIGOS self-assessment sheet")
        uid = find_column(t, ["UserID", "User ID", "participant"], labels, "participant")
        vid = find_column(t, ["VideoID", "Video ID", "video"], labels, "video")
        cols = {r: find_column(t, [r], labels, r) for r in RATINGS if any(str(c).strip().lower() == r for c in t.columns)}
        ratings = {(_int(r[uid]), _int(r[vid])): r for r in t.to_dict("records")}
    rows = []
    for path in list_videos(root, spec.get("extensions", [".mov", ".mp4", ".avi"])):
        m = NAME.match(path.stem)
        if m is None:
            rows.append(unmatched(path, "file name is not an AMIGOS face-video name (P01_10_face.mov)"))
            continue
        s, v = int(m["subject"]), m["video"]
        row = {"video_id": f"P{s:02d}_{v}", "path": str(path), "subject": f"P{s:02d}", "session": f"video{v}"}
        r = ratings.get((s, _int(v)), {})
        row.update({k: r.get(c) for k, c in cols.items()})
        rows.append(row)
    return frame(rows, [labels] if ratings else [])
