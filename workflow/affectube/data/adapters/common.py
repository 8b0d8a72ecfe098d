"""Helpers shared by the adapters: listing videos, parsing names, joining label tables."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

import pandas as pd

from affectube.errors import ConfigError, DataError

VIDEO_EXTENSIONS = [".mp4", ".avi", ".mov", ".mkv", ".flv", ".mpg", ".mpeg", ".webm", ".m4v", ".wmv"]

# one vocabulary of emotion names across datasets
EMOTION_NAMES = {
    "anger": "angry", "angry": "angry", "ang": "angry", "a": "angry",
    "disgust": "disgust", "disgusted": "disgust", "dis": "disgust", "d": "disgust",
    "fear": "fear", "fearful": "fear", "fea": "fear", "f": "fear",
    "happy": "happy", "happiness": "happy", "hap": "happy", "h": "happy", "joy": "happy",
    "neutral": "neutral", "neu": "neutral", "n": "neutral",
    "sad": "sad", "sadness": "sad", "s": "sad",
    "surprise": "surprise", "surprised": "surprise", "sur": "surprise",
    "contempt": "contempt", "calm": "calm",
    "anxiety": "anxiety", "helplessness": "helplessness", "disappointment": "disappointment",
}


def emotion(name: str, where: str) -> str:
    key = str(name).strip().lower()
    if key not in EMOTION_NAMES:
        raise DataError(f"{where}: unknown emotion label {name!r}")
    return EMOTION_NAMES[key]


def check_keys(spec: dict, allowed: Iterable[str], adapter: str) -> None:
    allowed = set(allowed) | {"adapter", "root"}
    extra = sorted(set(spec) - allowed)
    if extra:
        raise ConfigError(f"data.datasets.*: key(s) {', '.join(extra)} are not used by the {adapter} adapter (it takes: {', '.join(sorted(allowed))})")


def root_dir(spec: dict, adapter: str, must_exist: bool = True) -> Path:
    root = Path(str(spec["root"])).expanduser()
    if must_exist and not root.is_dir():
        raise DataError(f"{root}: the {adapter} dataset root is not a directory")
    return root


def option_path(spec: dict, key: str, root: Path, default: str | None) -> Path | None:
    """``spec[key]`` (a path like ``root``: absolute or relative to the working directory) or ``root/default``."""
    value = spec.get(key)
    if value is None:
        return root / default if default is not None else None
    return Path(str(value)).expanduser()


def list_videos(root: Path, extensions: Iterable[str] | None = None) -> list[Path]:
    """The video files under ``root`` (recursive; symbolic links to files followed, to folders not; hidden files
    skipped), sorted as paths."""
    return [root.joinpath(*parts) for parts in video_parts(root, extensions)]


def video_parts(root: Path, extensions: Iterable[str] | None = None) -> list[tuple[str, ...]]:
    """:func:`list_videos` as the path parts below ``root`` (no Path objects: one ``os.scandir`` walk lists a
    folder of 100k videos in about a second), in the same order."""
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in (extensions or VIDEO_EXTENSIONS)}
    found: list[tuple[str, ...]] = []

    def walk(folder: str, parts: tuple[str, ...]) -> None:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    walk(entry.path, (*parts, entry.name))
                elif not entry.name.startswith(".") and os.path.splitext(entry.name)[1].lower() in exts and entry.is_file():
                    found.append((*parts, entry.name))
            except OSError:
                continue

    walk(str(root), ())
    found.sort()  # the order of sorted(Path): by parts
    return found


def rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def unmatched(path: Path, problem: str) -> dict:
    """A row for a file the adapter could not interpret: it goes to the missing list, never silently away."""
    return {"path": str(path), "problem": problem}


def read_table(path: Path, what: str, **kwargs) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            try:
                return pd.read_excel(path, **kwargs)
            except ImportError as exc:
                raise DataError(f"{path}: reading Excel needs openpyxl ({exc}); export the sheet to CSV and point to that") from None
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the {what} ({exc})") from None


def find_column(table: pd.DataFrame, names: Iterable[str], path: Path, what: str) -> str:
    """The first column of ``table`` whose name matches one of ``names`` (case/space-insensitive)."""
    norm = {re.sub(r"[\s_]+", "", str(c)).lower(): c for c in table.columns}
    for n in names:
        key = re.sub(r"[\s_]+", "", n).lower()
        if key in norm:
            return norm[key]
    raise DataError(f"{path}: no {what} column (looked for {', '.join(names)}; have {', '.join(map(str, table.columns))})")


def frame(rows: list[dict], sources: Iterable = ()) -> pd.DataFrame:
    """The adapter's rows; ``sources``: label/list files read (they become inputs of the manifest rule)."""
    out = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["video_id", "path", "subject"])
    out.attrs["sources"] = [str(s) for s in sources if s is not None]
    return out
