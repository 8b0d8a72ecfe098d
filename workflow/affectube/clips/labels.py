"""Labels of a store: clip-level labels from the manifest row, per-frame labels from its annotation file.

Annotation file (manifest column ``annotation``): a CSV (``.csv``; ``.tsv``/``.txt`` read
tab-separated) with a time column in seconds of the source video's timeline (``time``,
``timestamp`` or ``time_s``) and one numeric column per continuous label (e.g. ``valence``,
``arousal``). Adapters convert a dataset's own annotation format into this one.

Alignment: each label is linearly interpolated at the stored frames' timestamps (the decode
timestamps, so annotations at any rate line up with the kept frames). A frame earlier than
the first or later than the last annotated time by more than half an annotation step gets
NaN: labels are never extrapolated. Empty (NaN) values in the file stay gaps: frames between
two annotated points more than 1.5 annotation steps apart get NaN.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from affectube.errors import DataError
from affectube.io import file_sha256

TIME_COLUMNS = ("time", "timestamp", "time_s")
# manifest columns that are neither labels nor identity
NON_LABEL = {"dataset", "video_id", "path", "subject", "session", "annotation"}


def clip_labels(row: dict) -> dict:
    """Clip-level labels of a manifest row (every column but identity/path/annotation); NaN -> None."""
    out = {}
    for key, value in row.items():
        if key in NON_LABEL:
            continue
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out[key] = None
        elif isinstance(value, (np.integer, np.floating, np.bool_)):
            out[key] = value.item()
        else:
            out[key] = value
    return out


def read_annotation(path: str | Path) -> pd.DataFrame:
    """The annotation table sorted by time: column ``time`` + numeric label columns."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    try:
        table = pd.read_csv(path, sep=sep)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable annotation table ({exc})") from None
    time_col = next((c for c in TIME_COLUMNS if c in table.columns), None)
    if time_col is None:
        raise DataError(f"{path}: annotation file has no time column (one of {', '.join(TIME_COLUMNS)}; have {', '.join(map(str, table.columns))})")
    table = table.rename(columns={time_col: "time"})
    labels = [c for c in table.columns if c != "time"]
    if not labels:
        raise DataError(f"{path}: annotation file has a time column but no label column")
    for col in ["time", *labels]:
        if not pd.api.types.is_numeric_dtype(table[col]):
            raise DataError(f"{path}: annotation column {col!r} is not numeric")
    if table["time"].isna().any():
        raise DataError(f"{path}: annotation time column has empty values")
    if len(table) < 2:
        raise DataError(f"{path}: annotation file has {len(table)} row(s); at least 2 are needed to align it")
    table = table.sort_values("time", kind="stable").reset_index(drop=True)
    if table["time"].duplicated().any():
        t = float(table["time"][table["time"].duplicated()].iloc[0])
        raise DataError(f"{path}: annotation time {t} appears twice")
    return table


def align(times: np.ndarray, ann_times: np.ndarray, values: np.ndarray, max_gap: float = 1.5) -> np.ndarray:
    """``values`` (at ``ann_times``) linearly interpolated at ``times``; NaN outside the annotated span
    (beyond half a step) and inside gaps longer than ``max_gap`` annotation steps."""
    times = np.asarray(times, np.float64)
    ok = ~np.isnan(values)
    at, av = np.asarray(ann_times, np.float64)[ok], np.asarray(values, np.float64)[ok]
    out = np.full(len(times), np.nan, np.float32)
    if len(at) == 0:
        return out
    step = float(np.median(np.diff(ann_times))) if len(ann_times) > 1 else 0.0
    inside = (times >= at[0] - step / 2) & (times <= at[-1] + step / 2)
    out[inside] = np.interp(times[inside], at, av).astype(np.float32)
    if len(at) > 1:
        # points between two annotated samples further apart than max_gap steps are gaps
        r = np.searchsorted(at, times, side="right").clip(1, len(at) - 1)
        gap = (at[r] - at[r - 1]) > max_gap * step + 1e-9
        out[gap & (times > at[r - 1]) & (times < at[r])] = np.nan
    return out


def frame_labels(path: str | Path, timestamps: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
    """Per-frame labels at ``timestamps`` from annotation file ``path``, and their provenance."""
    table = read_annotation(path)
    t = table["time"].to_numpy(np.float64)
    labels = {c: align(timestamps, t, table[c].to_numpy(np.float64)) for c in table.columns if c != "time"}
    meta = {
        "file": str(path),
        "sha256": file_sha256(path),
        "method": "linear interpolation at frame timestamps; NaN outside the annotated span",
        "annotation_rows": int(len(table)),
        "annotation_span": [float(t[0]), float(t[-1])],
    }
    return labels, meta
