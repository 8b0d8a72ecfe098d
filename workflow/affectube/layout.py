"""Where a run's files live and which datasets it uses, from its params alone.

Imported by the DAG (:mod:`affectube.dag`), the report and dvc.yaml generation; it imports
nothing beyond the standard library, so the report's environment needs no video packages.
"""

from __future__ import annotations

RESULTS = "results"  # the schema's default of run.results


def results_root(config: dict) -> str:
    """The run's results root (``run.results``): every stage's outputs, logs and report."""
    root = str((config.get("run") or {}).get("results") or RESULTS).rstrip("/")
    return root or RESULTS


def datasets_of(config: dict) -> list[str]:
    """The datasets a run uses: ``data.pretrain`` then ``data.finetune`` (each once)."""
    data = config.get("data") or {}
    return list(dict.fromkeys([*data.get("pretrain", []), *([data["finetune"]] if data.get("finetune") else [])]))
