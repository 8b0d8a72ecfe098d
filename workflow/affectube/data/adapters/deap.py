"""DEAP (Koelstra et al. 2012): 32 participants x 40 one-minute music-video trials; face video for s01-s22.

Layout: ``face_video/s01/s01_trial01.avi`` and ``metadata_csv/participant_ratings.csv``
(columns ``Participant_id, Trial, Experiment_id, Start_time, Valence, Arousal,
Dominance, Liking, Familiarity``; ``Trial`` is the presentation order, as in the
face-video names). Ratings are self-assessments on a 1-9 scale (familiarity 1-5),
kept as they are: columns ``valence, arousal, dominance, liking, familiarity``.
Subject ``s01``; a video with no rating row keeps empty labels.

Spec keys: ``videos`` (default ``root/face_video``), ``labels`` (default
``root/metadata_csv/participant_ratings.csv``), ``extensions``.
"""

from __future__ import annotations

import re

from affectube.data.adapters.common import check_keys, find_column, frame, list_videos, option_path, read_table, root_dir, unmatched

KEYS = ["videos", "labels", "extensions"]
NAME = re.compile(r"^s(?P<subject>\d{1,2})_trial(?P<trial>\d{1,2})$")
RATINGS = ["valence", "arousal", "dominance", "liking", "familiarity"]


def build(name: str, spec: dict):
    check_keys(spec, KEYS, "deap")
    root = root_dir(spec, "deap")
    videos = option_path(spec, "videos", root, "face_video")
    labels = option_path(spec, "labels", root, "metadata_csv/participant_ratings.csv")
    t = read_table(labels, "DEAP participant ratings")
    pid = find_column(t, ["Participant_id", "participant"], labels, "participant")
    trial = find_column(t, ["Trial"], labels, "trial")
    cols = {r: find_column(t, [r], labels, r) for r in RATINGS if any(str(c).lower() == r for c in t.columns)}
    ratings = {(int(r[pid]), int(r[trial])): r for r in t.to_dict("records")}
    rows = []
    for path in list_videos(videos if videos.is_dir() else root, spec.get("extensions", [".avi", ".mp4"])):
        m = NAME.match(path.stem)
        if m is None:
            rows.append(unmatched(path, "file name is not a DEAP face-video name (s01_trial01.avi)"))
            continue
        s, k = int(m["subject"]), int(m["trial"])
        row = {"video_id": f"s{s:02d}_trial{k:02d}", "path": str(path), "subject": f"s{s:02d}", "trial": k}
        r = ratings.get((s, k), {})
        row.update({name_: r.get(col) for name_, col in cols.items()})
        rows.append(row)
    return frame(rows, [labels])
