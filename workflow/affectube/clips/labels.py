"""Labels of a store: clip-level labels from the manifest row, per-frame labels from its annotation file.

Annotation (manifest column ``annotation``): read with :func:`affectube.data.annotation.load_annotation`
(its format: ``[names=]path`` entries separated by ``;``, a time column in seconds of the source
video's timeline and one column per continuous label), one entry at a time: RECOLA/SEWA-style
values name one file per target (``arousal=a.csv;valence=b.csv``), each aligned on its own times.

Alignment: each label is linearly interpolated at the stored frames' timestamps (the decode
timestamps, so annotations at any rate line up with the kept frames). A frame earlier than
the first or later than the last annotated time by more than half an annotation step gets
NaN: labels are never extrapolated. Empty (NaN) values in the file stay gaps: frames between
two annotated points more than 1.5 annotation steps apart get NaN.
"""

from __future__ import annotations

import math

import numpy as np

from affectube.data.annotation import entries, load_annotation
from affectube.errors import DataError
from affectube.io import file_sha256

# manifest columns that are neither labels nor identity
NON_LABEL = {"dataset", "video_id", "path", "subject", "session", "annotation"}


def canonical_row(row: dict) -> dict:
    """A manifest row as plain JSON values: NaN -> None, numpy scalars -> Python, integral floats ->
    int (a column read as floats because another row lacks the value gives the same row)."""
    out = {}
    for key, value in row.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and math.isnan(value):
            value = None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        out[str(key)] = value
    return out


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


def frame_labels(annotation: str, timestamps: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
    """Per-frame labels at ``timestamps`` from a manifest ``annotation`` value, and their provenance.

    A value of several entries (RECOLA/SEWA: ``arousal=a.csv;valence=b.csv``, one file per target)
    is read entry by entry with :func:`load_annotation` and each file is aligned on its own time
    grid, so files at different rates or spans are neither resampled twice nor extrapolated."""
    parts = entries(annotation)
    if not parts:
        raise DataError(f"annotation {annotation!r}: no file given")
    labels: dict[str, np.ndarray] = {}
    rows, spans = {}, {}
    for names, path in parts:
        table = load_annotation(f"{','.join(names)}={path}" if names else path)
        t = table["time"].to_numpy(np.float64)
        if len(t) < 2:
            raise DataError(f"{path}: annotation has {len(t)} row(s); at least 2 are needed to align it")
        dup = np.flatnonzero(np.diff(t) == 0)
        if dup.size:
            raise DataError(f"{path}: annotation time {t[dup[0]]} appears twice")
        for c in table.columns:
            if c == "time":
                continue
            if str(c) in labels:
                raise DataError(f"annotation {annotation!r}: label {c!r} comes from more than one file")
            labels[str(c)] = align(timestamps, t, table[c].to_numpy(np.float64))
        rows[str(path)], spans[str(path)] = int(len(table)), [float(t[0]), float(t[-1])]
    meta = {
        "annotation": str(annotation),
        "sha256": {str(path): file_sha256(path) for _, path in parts},
        "method": "linear interpolation at frame timestamps, each file on its own time grid; NaN outside the annotated span and in gaps",
        "annotation_rows": rows,
        "annotation_span": spans,
    }
    return labels, meta
