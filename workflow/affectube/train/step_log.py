"""The pretraining step log: one CSV row per optimizer step, flushed as it is written.

While a run is in progress the log lives beside its checkpoint; a resumed run first reads back the
rows up to the checkpoint's step (:func:`read_rows`), then rewrites them and goes on appending
(:class:`StepLog`), so the finished log has every step exactly once.
"""

from __future__ import annotations

import csv
from pathlib import Path

FIELDS = ["step", "loss", "lr", "grad_norm", "clips_per_s", "tokens_per_s", "data_wait", "step_time", "elapsed"]


def read_rows(path: Path, up_to_step: int) -> list[dict]:
    """The rows of the log at ``path`` up to step ``up_to_step`` (none when there is no log)."""
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [row for row in csv.DictReader(fh) if int(row["step"]) <= up_to_step]


class StepLog:
    """``rows`` (those of a resumed run first) written to ``path``, which is rewritten; ``path`` None:
    the rows are only kept in memory (ranks other than the main one)."""

    def __init__(self, path: Path | None, rows: list[dict]):
        self.rows = list(rows)
        self._fh = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "w", newline="")
            self._writer = csv.DictWriter(self._fh, FIELDS)
            self._writer.writeheader()
            self._writer.writerows(self.rows)
            self._fh.flush()

    def append(self, row: dict) -> None:
        self.rows.append(row)
        if self._fh is not None:
            self._writer.writerow(row)
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
