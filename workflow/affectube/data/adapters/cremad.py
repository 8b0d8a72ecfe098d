"""CREMA-D (Cao et al. 2014): 91 actors, 12 sentences, 6 emotions, 4 intensity levels.

Video files ``VideoFlash/1001_DFA_ANG_XX.flv``: actor, sentence, emotion (ANG DIS FEA
HAP NEU SAD), level (LO MD HI XX). The official label table ``summaryTable.csv``
(``processedResults/`` in the release) holds the crowd's votes per clip; the
``label`` key picks the label:

- ``intended`` (default): the emotion the actor was asked to express (file name);
- ``face``: the crowd's video-only vote (``FaceVote``); ``voice``: audio-only
  (``VoiceVote``); ``multimodal``: audio-visual (``MultiModalVote``).
  A tie (``A:D``) is resolved to the intended emotion when it is among the tied
  votes, else to the first one listed.

Columns: subject (actor id), session (sentence), emotion, ``intended``,
``intensity`` (LO/MD/HI/XX), ``face_vote``/``face_level`` (agreement %),
``voice_vote``, ``multimodal_vote`` when the table is found, ``sex`` and ``age`` when
``VideoDemographics.csv`` is found. Spec keys: ``label``, ``summary_table`` and
``demographics`` (paths; default: looked up in ``root/meta``, ``root``, ``root/..``,
``root/../processedResults``), ``extensions``.
"""

from __future__ import annotations

import re
from pathlib import Path

from affectube.data.adapters.common import check_keys, emotion, frame, list_videos, read_table, root_dir, unmatched
from affectube.errors import ConfigError, DataError

KEYS = ["label", "summary_table", "demographics", "extensions"]
NAME = re.compile(r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>ANG|DIS|FEA|HAP|NEU|SAD)_(?P<level>LO|MD|HI|XX|X)$")
VOTE_COLUMNS = {"face": "FaceVote", "voice": "VoiceVote", "multimodal": "MultiModalVote"}
SEARCH = ["meta", ".", "..", "../processedResults"]


def _find(spec: dict, key: str, root: Path, filename: str) -> Path | None:
    if spec.get(key):
        p = Path(str(spec[key])).expanduser()
        if not p.is_file():
            raise DataError(f"{p}: CREMA-D {key} not found")
        return p
    for sub in SEARCH:
        p = root / sub / filename
        if p.is_file():
            return p
    return None


def _vote(value, intended: str, where: str) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    votes = [emotion(v, where) for v in str(value).split(":") if v.strip()]
    if not votes:
        return None
    return intended if intended in votes else votes[0]


def build(name: str, spec: dict):
    check_keys(spec, KEYS, "cremad")
    root = root_dir(spec, "cremad")
    label = spec.get("label", "intended")
    if label not in ("intended", *VOTE_COLUMNS):
        raise ConfigError(f"data.datasets.{name}.label: {label!r} is not one of intended, face, voice, multimodal")
    table_path = _find(spec, "summary_table", root, "summaryTable.csv")
    if label != "intended" and table_path is None:
        raise DataError(f"{root}: label {label!r} needs the official summaryTable.csv (set summary_table)")
    votes = {}
    if table_path is not None:
        t = read_table(table_path, "CREMA-D summary table")
        if "FileName" not in t.columns:
            raise DataError(f"{table_path}: no FileName column (have {', '.join(map(str, t.columns))})")
        votes = {str(r["FileName"]).strip(): r for r in t.to_dict("records")}
    demo = {}
    demo_path = _find(spec, "demographics", root, "VideoDemographics.csv")
    if demo_path is not None:
        d = read_table(demo_path, "CREMA-D demographics")
        demo = {str(r["ActorID"]): r for r in d.to_dict("records")}
    rows = []
    for path in list_videos(root, spec.get("extensions", [".flv", ".mp4"])):
        m = NAME.match(path.stem)
        if m is None:
            rows.append(unmatched(path, "file name is not a CREMA-D clip name (1001_DFA_ANG_XX)"))
            continue
        g = m.groupdict()
        intended = emotion(g["emotion"], str(path))
        row = {
            "video_id": path.stem,
            "path": str(path),
            "subject": g["actor"],
            "session": g["sentence"],
            "emotion": intended,
            "intended": intended,
            "intensity": g["level"],
        }
        v = votes.get(path.stem)
        if v is not None:
            where = f"{table_path} ({path.stem})"
            row.update(
                {
                    "face_vote": _vote(v.get("FaceVote"), intended, where),
                    "face_level": v.get("FaceLevel"),
                    "voice_vote": _vote(v.get("VoiceVote"), intended, where),
                    "multimodal_vote": _vote(v.get("MultiModalVote"), intended, where),
                }
            )
            if label != "intended":
                row["emotion"] = _vote(v.get(VOTE_COLUMNS[label]), intended, where)
        elif label != "intended":
            rows.append(unmatched(path, f"no row in {table_path} for this clip, so no {label} label"))
            continue
        a = demo.get(g["actor"])
        if a is not None:
            row.update({"sex": a.get("Sex"), "age": a.get("Age")})
        rows.append(row)
    return frame(rows, [table_path, demo_path])
