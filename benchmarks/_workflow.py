"""A scratch copy of the workflow for the benchmarks that run it (bench_demo.py, bench_scale.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ["Snakefile", "rules", "workflow", "params.yaml", "envs", "slurm", "dvc.yaml"]


def copy_workflow(dest: Path, files: list[str] = WORKFLOW_FILES) -> None:
    """Copy ``files`` of the repository (never results/) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in files:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, dest / name)
