"""GRID (Cooke et al. 2006): 34 speakers x 1,000 six-word sentences, front-facing, 25 fps.

Layout: one directory per speaker, ``s1/bbaf2n.mpg`` (as unpacked from ``s1.mpg_vcd.zip``;
deeper trees such as ``s1/video/mpg_6000/bbaf2n.mpg`` work too). The speaker is the
last path component matching ``subject_regex`` (default: a directory ``s<N>``, also as a
suffix ``..._s<N>``); the ``sentence`` column keeps the 6-letter sentence code. GRID has
no emotion labels: it is pretraining material.

Spec keys: ``subject_regex`` (regular expression with one group, searched in the path
relative to root), ``extensions``. A file with no speaker in its path is listed as missing.
"""

from __future__ import annotations

import re

from affectube.data.adapters.common import check_keys, frame, list_videos, rel, root_dir, unmatched
from affectube.data.manifest import safe_id
from affectube.errors import ConfigError

KEYS = ["subject_regex", "extensions"]
SPEAKER = r"(?:^|/|_)(s\d{1,2})/"


def build(name: str, spec: dict):
    check_keys(spec, KEYS, "grid")
    root = root_dir(spec, "grid")
    try:
        pattern = re.compile(spec.get("subject_regex", SPEAKER))
    except re.error as exc:
        raise ConfigError(f"data.datasets.{name}.subject_regex: not a regular expression ({exc})") from None
    rows = []
    for path in list_videos(root, spec.get("extensions", [".mpg", ".mpeg", ".mp4", ".mov"])):
        r = f"{root.resolve().name}/{rel(path, root)}"  # the root's own name may hold the speaker (grid_s1/)
        found = pattern.findall(r)
        if not found:
            rows.append(unmatched(path, f"no speaker (s<N>) in the path (subject_regex {pattern.pattern!r})"))
            continue
        subject = found[-1] if isinstance(found[-1], str) else found[-1][0]
        rows.append({"video_id": safe_id(f"{subject}_{path.stem}"), "path": str(path), "subject": subject, "sentence": path.stem[-6:]})
    return frame(rows)
