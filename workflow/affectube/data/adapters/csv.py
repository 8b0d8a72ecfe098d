"""A manifest written by hand (or by a script): one CSV row per video.

``file`` is the CSV; its columns are the manifest's: ``path`` and ``subject``
(required), ``video_id`` (default: the file name without extension, made safe),
``session``, ``emotion``, continuous labels (``valence``, ``arousal``, ``dominance``,
``liking``, ...) and ``annotation`` (per-frame annotation file). Other columns are
kept as metadata. ``columns`` renames CSV columns to manifest columns
(``{path: clip_file, subject: speaker}``). Relative ``path``/``annotation`` values are
relative to ``root``. Errors name the CSV, the row (1 = first data row) and the column.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from affectube.data.adapters.common import check_keys, read_table, root_dir
from affectube.data.annotation import rebase
from affectube.data.manifest import safe_id
from affectube.errors import ConfigError, DataError

KEYS = ["file", "columns", "sep"]


def build(name: str, spec: dict):
    check_keys(spec, KEYS, "csv")
    root = root_dir(spec, "csv", must_exist=False)
    if not spec.get("file"):
        raise ConfigError(f"data.datasets.{name}: the csv adapter needs file (the manifest CSV)")
    path = Path(str(spec["file"])).expanduser()
    t = read_table(path, "manifest CSV", sep=spec.get("sep", ","), dtype=str, keep_default_na=False, skipinitialspace=True)
    rename = {v: k for k, v in (spec.get("columns") or {}).items()}
    missing = [src for src in rename if src not in t.columns]
    if missing:
        raise DataError(f"{path}: columns {', '.join(missing)} named in data.datasets.{name}.columns are not in the CSV (have {', '.join(t.columns)})")
    t = t.rename(columns=rename)
    for col in ("path", "subject"):
        if col not in t.columns:
            raise DataError(f"{path}: missing required column {col!r} (have: {', '.join(t.columns)})")
    t = t.replace({"": None})
    for i, value in enumerate(t["path"]):
        if value is None or not str(value).strip():
            raise DataError(f"{path}: row {i + 1}, column 'path': empty value")
    t["path"] = [str(_under(root, v)) for v in t["path"]]
    if "annotation" in t.columns:
        t["annotation"] = [None if v is None else rebase(v, root) for v in t["annotation"]]
    if "video_id" not in t.columns:
        t.insert(0, "video_id", [safe_id(PurePosixPath(Path(p).as_posix()).stem) for p in t["path"]])
    t.attrs["source"] = str(path)
    t.attrs["sources"] = [str(path)]
    return t


def _under(root: Path, value: str) -> Path:
    p = Path(str(value).strip()).expanduser()
    return p if p.is_absolute() else root / p

