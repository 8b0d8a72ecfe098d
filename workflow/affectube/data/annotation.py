"""Per-frame (time-continuous) annotations referenced by a manifest's ``annotation`` column.

The column holds one or more ``;``-separated entries, each ``[names=]path``:

- ``path``: a CSV with a header; a time column (``time``, ``timestamp``, ``frameTime``,
  ``frame_time``; seconds) and one numeric column per dimension;
- ``arousal=path``: the file's value columns (all but time) are raters of one
  dimension, averaged (RECOLA: ``time;FM1;FM2;FM3;FF1;FF2;FF3``);
- ``arousal,valence,liking=path``: the file's value columns are these dimensions, in
  order; a headerless file and a leading text column (AVEC:
  ``'Train_01';0.1;0.2;-0.1;0.0``) are understood.

:func:`load_annotation` returns one table: ``time`` (seconds, sorted) and one column
per dimension; entries with different time grids are joined on the first one's times
by linear interpolation. Separators ``,`` and ``;`` are detected.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from affectube.errors import DataError

TIME_COLUMNS = ("time", "timestamp", "frametime", "frame_time", "times")


def row_files(row: dict) -> list[str]:
    """The annotation files a manifest row names in its ``annotation`` column (none when it is empty)."""
    value = row.get("annotation")
    return [path for _, path in entries(value)] if isinstance(value, str) and value.strip() else []


def entries(value: str) -> list[tuple[list[str] | None, str]]:
    out = []
    for part in str(value).split(";"):
        part = part.strip()
        if not part:
            continue
        if "=" in part:
            names, path = part.split("=", 1)
            out.append(([n.strip() for n in names.split(",") if n.strip()], path.strip()))
        else:
            out.append((None, part))
    return out


def rebase(value: str, root: Path) -> str:
    """Make the relative paths of an annotation value relative to ``root``."""
    parts = []
    for names, path in entries(value):
        p = Path(path).expanduser()
        p = p if p.is_absolute() else root / p
        parts.append(f"{','.join(names)}={p}" if names else str(p))
    return ";".join(parts)


def load_annotation(value: str) -> pd.DataFrame:
    tables = [_read_entry(names, Path(path)) for names, path in entries(value)]
    if not tables:
        raise DataError(f"annotation {value!r}: no file given")
    out = tables[0]
    for t in tables[1:]:
        for col in t.columns[1:]:
            out[col] = np.interp(out["time"].to_numpy(), t["time"].to_numpy(), t[col].to_numpy())
    return out


def _read_entry(names: list[str] | None, path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    text = path.read_text(encoding="utf-8", errors="replace")
    first = next((line for line in text.splitlines() if line.strip()), "")
    sep = ";" if first.count(";") >= first.count(",") and ";" in first else ","
    cells = [c.strip().strip("'\"") for c in first.split(sep)]
    header = not all(_is_number(c) for c in cells[1:]) and not _is_number(cells[0]) and not _looks_like_id(cells, names)
    try:
        t = pd.read_csv(path, sep=sep, header=0 if header else None, skipinitialspace=True)
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the annotation ({exc})") from None
    t.columns = [str(c).strip() for c in t.columns]
    # drop text columns (instance names), keep numeric ones
    numeric = [c for c in t.columns if pd.to_numeric(t[c], errors="coerce").notna().all()]
    if header:
        tcol = next((c for c in t.columns if c.lower() in TIME_COLUMNS), None)
        if tcol is None:
            raise DataError(f"{path}: no time column (looked for {', '.join(TIME_COLUMNS)}; have {', '.join(t.columns)})")
    else:
        if not numeric:
            raise DataError(f"{path}: no numeric columns in the annotation")
        tcol = numeric[0]
    values = [c for c in numeric if c != tcol]
    if not values:
        raise DataError(f"{path}: no value columns beside the time column {tcol!r}")
    time = pd.to_numeric(t[tcol], errors="coerce").to_numpy(np.float64)
    data = t[values].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    if names is None:
        out = pd.DataFrame(data, columns=[str(c) for c in values] if header else [f"value{i}" for i in range(len(values))])
    elif len(names) == 1:
        out = pd.DataFrame({names[0]: np.nanmean(data, axis=1)})
    else:
        if len(names) != data.shape[1]:
            raise DataError(f"{path}: {data.shape[1]} value columns but {len(names)} names ({', '.join(names)})")
        out = pd.DataFrame(data, columns=names)
    out.insert(0, "time", time)
    if out["time"].isna().any():
        raise DataError(f"{path}: row {int(np.flatnonzero(out['time'].isna())[0]) + 1}: time is not a number")
    return out.sort_values("time", kind="stable").reset_index(drop=True)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _looks_like_id(cells: list[str], names: list[str] | None) -> bool:
    # AVEC label rows start with the instance name and are otherwise numeric
    return names is not None and len(cells) > 1 and all(_is_number(c) for c in cells[1:])
