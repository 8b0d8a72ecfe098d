"""MEAD (Wang et al., ECCV 2020): posed emotions at 3 intensities, 7 camera views.

Layouts understood (paths relative to ``root``):

- the released tree ``M003/video/front/angry/level_1/001.mp4``;
- flat names ``M030_front_angry_level3_001.mp4`` (as redistributed in many repos).

Columns: subject (``M030``), emotion (angry, contempt, disgust, fear, happy,
neutral, sad, surprise), ``intensity`` (1-3), ``view``, ``take``.
Spec keys: ``views`` (default ``[front]``), ``extensions``.
Files whose path matches neither layout are listed as missing (problem: name not understood).
"""

from __future__ import annotations

import re

from affectube.data.adapters.common import check_keys, emotion, frame, list_videos, rel, root_dir, unmatched

KEYS = ["views", "extensions"]
VIEW = r"(?:front|down|top|left_30|left_60|right_30|right_60|[a-z]+(?:_\d+)?)"
PATTERNS = [
    re.compile(rf"(?:^|/)(?P<subject>[MW]\d{{3}})/video/(?P<view>{VIEW})/(?P<emotion>[a-z]+)/level_(?P<level>\d)/(?P<take>\d{{3}})\.\w+$"),
    re.compile(rf"(?:^|/)(?P<subject>[MW]\d{{3}})_(?P<view>{VIEW})_(?P<emotion>[a-z]+)_level_?(?P<level>\d)_(?P<take>\d{{3}})\.\w+$"),
]


def build(name: str, spec: dict):
    check_keys(spec, KEYS, "mead")
    root = root_dir(spec, "mead")
    views = spec.get("views", ["front"])
    rows = []
    for path in list_videos(root, spec.get("extensions", [".mp4"])):
        r = rel(path, root)
        m = next((m for m in (p.search(r) for p in PATTERNS) if m), None)
        if m is None:
            rows.append(unmatched(path, "file name does not follow the MEAD layout (M003/video/front/angry/level_1/001.mp4 or M003_front_angry_level1_001.mp4)"))
            continue
        g = m.groupdict()
        if views and g["view"] not in views:
            continue
        rows.append(
            {
                "video_id": f"{g['subject']}_{g['view']}_{g['emotion']}_level{g['level']}_{g['take']}",
                "path": str(path),
                "subject": g["subject"],
                "emotion": emotion(g["emotion"], str(path)),
                "intensity": int(g["level"]),
                "view": g["view"],
                "take": g["take"],
            }
        )
    return frame(rows)
