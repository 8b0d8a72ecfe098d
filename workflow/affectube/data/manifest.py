"""Dataset manifests: one row per video.

Columns: ``dataset, video_id, path, subject`` (required), ``session`` (optional),
clip-level labels (``emotion`` and/or continuous columns such as ``valence``,
``arousal``), and ``annotation`` (optional path to a per-frame annotation file
with its own timestamps). ``video_id`` is unique within a dataset and safe to use
as a file name / Snakemake wildcard.

Adapters (``affectube.data.adapters``) turn a layout into rows; :func:`build_manifest`
checks the result and separates rows whose video file is missing (listed, never
silently dropped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from affectube.errors import DataError

REQUIRED = ["dataset", "video_id", "path", "subject"]
OPTIONAL = ["session", "emotion", "annotation"]
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class Manifest:
    name: str
    table: pd.DataFrame  # rows whose video exists (or will be generated)
    missing: pd.DataFrame  # rows whose video file is missing, with a `problem` column

    @property
    def label_columns(self) -> list[str]:
        return [c for c in self.table.columns if c not in REQUIRED + ["session", "annotation"]]


def safe_id(text: str) -> str:
    """A file-name/wildcard-safe id from any file stem (spaces, non-ASCII -> '_')."""
    out = re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_.")
    return out or "video"


def check_table(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """Raise DataError naming the row and column at fault."""
    for col in REQUIRED:
        if col not in table.columns:
            raise DataError(f"{source}: missing required column {col!r} (have: {', '.join(map(str, table.columns))})")
    for i, row in table.reset_index(drop=True).iterrows():
        for col in REQUIRED:
            value = row[col]
            if pd.isna(value) or str(value).strip() == "":
                raise DataError(f"{source}: row {i + 1}, column {col!r}: empty value")
        if not SAFE_ID.match(str(row["video_id"])):
            raise DataError(f"{source}: row {i + 1}, column 'video_id': {row['video_id']!r} is not a safe id (letters, digits, _ . + -)")
    dup = table["video_id"][table["video_id"].duplicated()]
    if not dup.empty:
        i = int(dup.index[0])
        raise DataError(f"{source}: row {i + 1}, column 'video_id': duplicate id {dup.iloc[0]!r}")
    return table


def build_manifest(name: str, spec: dict) -> Manifest:
    """Build, check and split the manifest of dataset ``name`` from its params spec."""
    from affectube.data.adapters import get_adapter

    adapter = get_adapter(spec["adapter"])
    table = adapter(name, spec)
    table = table.copy()
    table.insert(0, "dataset", name) if "dataset" not in table.columns else None
    table["dataset"] = table["dataset"].fillna(name)
    table = check_table(table, f"dataset {name} ({spec['adapter']} adapter, root {spec['root']})")
    generated = bool(getattr(adapter, "generated", False))
    exists = table["path"].map(lambda p: generated or Path(p).is_file())
    missing = table.loc[~exists].copy()
    missing["problem"] = "video file not found"
    return Manifest(name, table.loc[exists].reset_index(drop=True), missing.reset_index(drop=True))


def combine(manifests: list[Manifest]) -> pd.DataFrame:
    """Concatenate several datasets' tables (e.g. for pretraining), keeping each row's dataset."""
    return pd.concat([m.table for m in manifests], ignore_index=True, sort=False)
