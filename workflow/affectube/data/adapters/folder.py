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

import os
import re
from pathlib import Path

from affectube.data.adapters.common import check_keys, frame, root_dir, unmatched, video_parts
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
    prefix = "" if str(root) == "." else str(root).rstrip("/") + "/"  # str(root / r), without a Path per video
    root_name = None
    for parts in video_parts(root, spec.get("extensions")):
        r = "/".join(parts)
        path = prefix + r
        video_id = safe_id(os.path.splitext(r)[0])  # the relative path without its (video) extension
        if mode == "parent":
            if len(parts) > 1:
                subject = parts[-2]
            else:  # a video directly in root: root's name
                root_name = root_name or root.name or root.resolve().name
                subject = root_name
        elif mode == "video":
            subject = video_id
        else:
            m = pattern.search(r)
            if m is None:
                rows.append(unmatched(Path(path), f"subject_regex {pattern.pattern!r} does not match {r!r}"))
                continue
            subject = m.groupdict().get("subject") or (m.group(1) if m.groups() else m.group(0))
        rows.append({"video_id": video_id, "path": path, "subject": subject})
    return frame(rows)
