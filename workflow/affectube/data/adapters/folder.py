"""An unlabelled folder of videos (pretraining material), searched recursively.

The subject of each video comes from ``subject``:

- ``parent`` (default): the name of the directory holding the video;
- ``regex``: the first group (or the group named ``subject``) of ``subject_regex``
  searched in the path relative to root; a video it does not match is listed as missing;
- ``video``: every video is its own subject.

``video_id`` is the relative path without extension, made file-name safe
(``/``, spaces and non-ASCII characters become ``_``). Spec keys: ``subject``,
``subject_regex``, ``extensions``.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from affectube.data.adapters.common import check_keys, frame, list_videos, rel, root_dir, unmatched
from affectube.data.manifest import safe_id
from affectube.errors import ConfigError

KEYS = ["subject", "subject_regex", "extensions"]


def build(name: str, spec: dict):
    check_keys(spec, KEYS, "folder")
    root = root_dir(spec, "folder")
    mode = spec.get("subject", "parent")
    if mode not in ("parent", "regex", "video"):
        raise ConfigError(f"data.datasets.{name}.subject: {mode!r} is not one of parent, regex, video")
    pattern = None
    if mode == "regex":
        if not spec.get("subject_regex"):
            raise ConfigError(f"data.datasets.{name}: subject: regex needs subject_regex")
        try:
            pattern = re.compile(spec["subject_regex"])
        except re.error as exc:
            raise ConfigError(f"data.datasets.{name}.subject_regex: not a regular expression ({exc})") from None
    rows = []
    for path in list_videos(root, spec.get("extensions")):
        r = rel(path, root)
        video_id = safe_id(str(PurePosixPath(r).with_suffix("")))
        if mode == "parent":
            subject = path.parent.name or root.resolve().name
        elif mode == "video":
            subject = video_id
        else:
            m = pattern.search(r)
            if m is None:
                rows.append(unmatched(path, f"subject_regex {pattern.pattern!r} does not match {r!r}"))
                continue
            subject = m.groupdict().get("subject") or (m.group(1) if m.groups() else m.group(0))
        rows.append({"video_id": video_id, "path": str(path), "subject": subject})
    return frame(rows)
