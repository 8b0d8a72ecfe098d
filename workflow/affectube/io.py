"""Atomic file output: a partial output never looks complete.

Every stage writes through :func:`atomic_path`: it yields a temporary name in the
same directory, and only when the block finishes without error is the file fsynced
and renamed onto the final name (rename is atomic on POSIX file systems, including
Lustre/GPFS within a directory). On error the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    sfx = suffix if suffix is not None else "".join(final.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".partial{sfx}", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            if tmp_path.is_file():  # mkstemp made it 0600: give it the mode a plain open() would
                os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, final)
        _fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def to_jsonable(obj: Any, *, finite: bool = False, fallback: Callable[[Any], Any] | None = None) -> Any:
    """``obj`` in plain JSON types, for every JSON the package writes.

    Dicts, lists and tuples are converted item by item; numpy scalars become Python numbers,
    numpy arrays lists, paths strings. ``finite=True``: NaN and infinities become ``None``
    (strict JSON: metrics files). Any other type raises ``TypeError``, or becomes
    ``fallback(obj)`` when given (``str`` for free-form metadata).
    """
    np = sys.modules.get("numpy")  # a numpy object exists only when numpy was imported
    if isinstance(obj, dict):
        return {k: to_jsonable(v, finite=finite, fallback=fallback) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, finite=finite, fallback=fallback) for v in obj]
    if np is not None and isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), finite=finite, fallback=fallback)
    if np is not None and isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return None if finite and not math.isfinite(obj) else obj
    if obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if fallback is not None:
        return fallback(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def stable_hash(obj: Any) -> str:
    """sha256 of a JSON-serialisable object with sorted keys (params/manifest provenance)."""
    blob = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
