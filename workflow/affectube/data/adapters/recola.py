"""RECOLA (Ringeval et al. 2013): 23 participants (P16-P65), 5-minute dyadic recordings.

Layout: ``video/P16.mp4`` (any depth under the videos directory) and the time-continuous
ratings ``emotional_behaviour/arousal/P16.csv`` and ``.../valence/P16.csv``
(``;``-separated: ``time`` in seconds, then one column per rater: FM1 FM2 FM3 FF1 FF2 FF3,
40 ms steps). The ``annotation`` column points to both files
(``arousal=.../P16.csv;valence=.../P16.csv``); :func:`affectube.data.annotation.load_annotation`
reads it into one table (time, arousal, valence: the mean over raters).

Spec keys: ``videos`` (default ``root``), ``annotations`` (default
``root/emotional_behaviour``), ``dimensions`` (default ``[arousal, valence]``), ``extensions``.
"""

from __future__ import annotations

import re

from affectube.data.adapters.common import check_keys, frame, list_videos, option_path, root_dir, unmatched

KEYS = ["videos", "annotations", "dimensions", "extensions"]
NAME = re.compile(r"^(?:.*_)?P(?P<subject>\d{2})$")


def build(name: str, spec: dict):
    check_keys(spec, KEYS, "recola")
    root = root_dir(spec, "recola")
    videos = option_path(spec, "videos", root, ".")
    ann_dir = option_path(spec, "annotations", root, "emotional_behaviour")
    dims = spec.get("dimensions", ["arousal", "valence"])
    rows = []
    for path in list_videos(videos, spec.get("extensions", [".mp4", ".avi", ".mkv"])):
        m = NAME.match(path.stem)
        if m is None:
            rows.append(unmatched(path, "file name is not a RECOLA recording (P16.mp4)"))
            continue
        subject = f"P{m['subject']}"
        files = {d: ann_dir / d / f"{subject}.csv" for d in dims}
        lacking = [str(f) for f in files.values() if not f.is_file()]
        if lacking:
            rows.append(unmatched(path, f"annotation file(s) not found: {', '.join(lacking)}"))
            continue
        rows.append(
            {
                "video_id": subject,
                "path": str(path),
                "subject": subject,
                "annotation": ";".join(f"{d}={f}" for d, f in files.items()),
            }
        )
    return frame(rows)
