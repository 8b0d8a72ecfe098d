"""Dataset manifests: one row per video.

Columns: ``dataset, video_id, path, subject`` (required), ``session`` (optional),
clip-level labels (``emotion`` and/or continuous columns such as ``valence``,
``arousal``), and ``annotation`` (optional path to a per-frame annotation file
with its own timestamps), ``event_start``/``event_end`` (optional: seconds of one event in the
video, e.g. a spoken word, an expression's onset to offset or an apex frame (start = end);
clips are then sampled around it, see :mod:`affectube.clips.sampling`). Any other categorical
column (e.g. GRID's ``colour``) can be the class of fine-tuning (``finetune.label``).
``video_id`` is unique within a dataset and safe to use
as a file name / Snakemake wildcard.

Adapters (``affectube.data.adapters``) turn a layout into rows; :func:`build_manifest`
checks the result and separates rows whose video file is missing (listed, never
silently dropped).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from affectube.errors import DataError

REQUIRED = ["dataset", "video_id", "path", "subject"]
OPTIONAL = ["session", "emotion", "annotation"]
# clip-level continuous labels a manifest may carry (numbers; empty = unknown)
# the time span of one event in the video (seconds; both or neither)
EVENT = ["event_start", "event_end"]
CONTINUOUS = ["valence", "arousal", "dominance", "liking", "familiarity", "expectation", "power", "intensity_score"]
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class Manifest:
    name: str
    table: pd.DataFrame  # rows whose video exists (or will be generated)
    missing: pd.DataFrame  # rows whose video file is missing, with a `problem` column
    sources: list = field(default_factory=list)  # label/list files the adapter read (inputs of the manifest rule)

    @property
    def label_columns(self) -> list[str]:
        """``emotion`` and the continuous labels present (other extra columns are metadata)."""
        return [c for c in self.table.columns if c == "emotion" or c in CONTINUOUS]


def check_events(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """``event_start``/``event_end`` as floats: both or neither, numbers >= 0, end >= start (row named on error)."""
    have = [c for c in EVENT if c in table.columns]
    if not have:
        return table
    if len(have) == 1:
        raise DataError(f"{source}: column {have[0]!r} without {(set(EVENT) - set(have)).pop()!r} (an event span needs both)")
    num = {col: numeric_column(table, col, source, " (seconds)") for col in EVENT}
    start, end = num["event_start"], num["event_end"]
    s_nan, e_nan = start.isna().to_numpy(), end.isna().to_numpy()
    one_sided = s_nan != e_nan
    with np.errstate(invalid="ignore"):
        backwards = ~s_nan & ~e_nan & ((start.to_numpy() < 0) | (end.to_numpy() < start.to_numpy()))
    bad = np.flatnonzero(one_sided | backwards)  # vectorised: one pass over 100k rows, not a Python loop
    if len(bad):
        i = int(bad[0])
        if one_sided[i]:
            raise DataError(f"{source}: row {i + 1}: event_start and event_end must both be given or both be empty")
        raise DataError(f"{source}: row {i + 1}: event span {start.iloc[i]}..{end.iloc[i]} s is not 0 <= event_start <= event_end")
    table["event_start"], table["event_end"] = start, end
    return table


def numeric_column(table: pd.DataFrame, col: str, source: str, unit: str = "") -> pd.Series:
    """Column ``col`` as floats (blank cells -> NaN); DataError naming the first row that is not a number."""
    values = table[col].map(lambda v: None if v is None or (isinstance(v, str) and not v.strip()) else v)
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() & values.notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{source}: row {i + 1}, column {col!r}: {table[col].iloc[i]!r} is not a number{unit}")
    return numbers.astype(float)


def safe_id(text: str) -> str:
    """A file-name/wildcard-safe id from any file stem (spaces, non-ASCII -> '_')."""
    out = re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_.")
    return out or "video"


def _empty(values: pd.Series) -> np.ndarray:
    """Cells that are missing or blank (whitespace only), as a boolean array."""
    missing = values.isna().to_numpy(dtype=bool)
    blank = values.astype(str).str.strip().eq("").to_numpy(dtype=bool)
    return missing | blank


def check_table(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """Raise DataError naming the row (1 = first data row) and column at fault; convert label columns."""
    for col in REQUIRED:
        if col not in table.columns:
            raise DataError(f"{source}: missing required column {col!r} (have: {', '.join(map(str, table.columns))})")
    table = table.reset_index(drop=True)
    # column-wise (a 1M-row manifest is checked in about a second): the first row at fault, and in that
    # row the first required column that is empty, then an unsafe video_id, as a row-by-row check reports
    empty = {col: _empty(table[col]) for col in REQUIRED}
    unsafe = ~empty["video_id"] & ~table["video_id"].astype(str).str.match(SAFE_ID.pattern).fillna(False).to_numpy(dtype=bool)
    bad = np.flatnonzero(np.logical_or.reduce([*empty.values(), unsafe]))
    if len(bad):
        i = int(bad[0])
        col = next((c for c in REQUIRED if empty[c][i]), None)
        if col is not None:
            raise DataError(f"{source}: row {i + 1}, column {col!r}: empty value")
        value = table["video_id"].iloc[i]
        raise DataError(f"{source}: row {i + 1}, column 'video_id': {value!r} is not a safe id (letters, digits, _ . + -)")
    for col in [c for c in CONTINUOUS if c in table.columns]:
        table[col] = numeric_column(table, col, source)
    table = check_events(table, source)
    if "emotion" in table.columns:
        table["emotion"] = table["emotion"].map(lambda v: None if pd.isna(v) or not str(v).strip() else str(v).strip())
    for col in ("subject", "session", "video_id"):
        if col in table.columns:
            table[col] = table[col].map(lambda v: v if pd.isna(v) else str(v).strip())
    dup = table["video_id"][table["video_id"].duplicated()]
    if not dup.empty:
        i = int(dup.index[0])
        first = int(np.flatnonzero((table["video_id"] == dup.iloc[0]).to_numpy())[0])
        raise DataError(f"{source}: row {i + 1}, column 'video_id': duplicate id {dup.iloc[0]!r} (first in row {first + 1})")
    return table


def dataset_spec(config: dict, name: str) -> dict:
    """The spec of dataset ``name`` from the params (the demo's rows are planned from the ``demo`` section)."""
    from affectube.errors import ConfigError

    spec = (config.get("data", {}).get("datasets") or {}).get(name)
    if spec is None:
        known = ", ".join(sorted(config.get("data", {}).get("datasets") or {}))
        raise ConfigError(f"params.yaml: data.datasets: no dataset named {name!r} (known: {known})")
    if spec["adapter"] == "demo":
        spec = {**(config.get("demo") or {}), **spec}
    return spec


def build_manifest(name: str, spec: dict) -> Manifest:
    """Build, check and split the manifest of dataset ``name`` from its params spec."""
    from affectube.data.adapters import get_adapter

    adapter = get_adapter(spec["adapter"])
    table = adapter(name, spec)
    attrs = dict(table.attrs)
    source = attrs.get("source") or f"dataset {name} ({spec['adapter']} adapter, root {spec['root']})"
    table = table.copy()
    # rows the adapter could not interpret (file name not understood, label missing, ...)
    if "problem" in table.columns:
        bad = table["problem"].notna()
        unusable = table.loc[bad, ["path", "problem"]].copy()
        table = table.loc[~bad].drop(columns=["problem"])
        table = table.dropna(axis=1, how="all") if table.empty else table
        for col in REQUIRED[1:]:
            if col not in table.columns:
                table[col] = pd.Series(dtype=object)
    else:
        unusable = pd.DataFrame(columns=["path", "problem"])
    if "dataset" not in table.columns:
        table.insert(0, "dataset", name)
    table["dataset"] = table["dataset"].fillna(name)
    table = check_table(table, source)
    generated = bool(getattr(adapter, "generated", False))
    exists = pd.Series(True, index=table.index) if generated else table["path"].map(lambda p: os.path.isfile(p))
    missing = table.loc[~exists].copy()
    missing["problem"] = "video file not found"
    unusable.insert(0, "dataset", name)
    missing = pd.concat([missing, unusable], ignore_index=True, sort=False) if len(unusable) else missing
    sources = [str(p) for p in attrs.get("sources", []) if p is not None]
    return Manifest(name, table.loc[exists].reset_index(drop=True), missing.reset_index(drop=True), sources)


def combine(manifests: list[Manifest]) -> pd.DataFrame:
    """Concatenate several datasets' tables (e.g. for pretraining), keeping each row's dataset."""
    return pd.concat([m.table for m in manifests], ignore_index=True, sort=False)
