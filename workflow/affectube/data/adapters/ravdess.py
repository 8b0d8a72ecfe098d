"""RAVDESS (Livingstone & Russo 2018): 24 actors, speech and song, 8 emotions, 2 intensities.

Files ``Actor_01/01-01-06-01-02-01-12.mp4``: modality (01 audio-video, 02 video only,
03 audio only), vocal channel (01 speech, 02 song), emotion (01 neutral, 02 calm,
03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised), intensity (01
normal, 02 strong), statement (01, 02), repetition (01, 02), actor (01-24; odd
male, even female).

The audio-video (01) and video-only (02) files of one take hold the same video: only
the first one found (01 before 02) is kept. Spec keys: ``modalities`` (default
``["01", "02"]``), ``channels`` (default ``[speech, song]``), ``extensions``.
Columns: subject (``actor01``), session (statement), emotion, ``intensity``,
``channel``, ``repetition``, ``sex``.
"""

from __future__ import annotations

import re

from affectube.data.adapters.common import check_keys, frame, list_videos, root_dir, unmatched

KEYS = ["modalities", "channels", "extensions"]
NAME = re.compile(r"^(?P<mod>0[123])-(?P<ch>0[12])-(?P<emo>0[1-8])-(?P<int>0[12])-(?P<st>0[12])-(?P<rep>0[12])-(?P<actor>\d\d)$")
EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fear", "07": "disgust", "08": "surprise"}
CHANNELS = {"01": "speech", "02": "song"}


def build(name: str, spec: dict):
    check_keys(spec, KEYS, "ravdess")
    root = root_dir(spec, "ravdess")
    modalities = [str(m).zfill(2) for m in spec.get("modalities", ["01", "02"])]
    channels = spec.get("channels", ["speech", "song"])
    rows, seen = [], set()
    for path in list_videos(root, spec.get("extensions", [".mp4"])):
        m = NAME.match(path.stem)
        if m is None:
            rows.append(unmatched(path, "file name is not a RAVDESS name (01-01-06-01-02-01-12)"))
            continue
        g = m.groupdict()
        if g["mod"] not in modalities or CHANNELS[g["ch"]] not in channels or g["mod"] == "03":
            continue
        take = (g["ch"], g["emo"], g["int"], g["st"], g["rep"], g["actor"])
        if take in seen:
            continue
        seen.add(take)
        rows.append(
            {
                "video_id": path.stem,
                "path": str(path),
                "subject": f"actor{g['actor']}",
                "session": f"statement{g['st']}",
                "emotion": EMOTIONS[g["emo"]],
                "intensity": "strong" if g["int"] == "02" else "normal",
                "channel": CHANNELS[g["ch"]],
                "repetition": int(g["rep"]),
                "sex": "male" if int(g["actor"]) % 2 else "female",
            }
        )
    return frame(rows)
