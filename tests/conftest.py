"""Shared fixtures: the repo root, the real test material, scratch copies of the workflow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
REALDATA = Path(os.environ.get("AFFECTUBE_REALDATA", REPO.parent / "shared" / "realdata"))
WORKFLOW_FILES = ["Snakefile", "rules", "workflow", "params.yaml", "envs", "slurm", "dvc.yaml"]


def _need_realdata() -> Path:
    if (REALDATA / "README.md").exists():
        return REALDATA
    msg = f"real test material not found at {REALDATA} (set AFFECTUBE_REALDATA)"
    if os.environ.get("CI"):
        pytest.fail(msg + " -- required under CI")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def realdata() -> Path:
    """../shared/realdata; fails (never skips) under CI when it is missing."""
    return _need_realdata()


@pytest.fixture(scope="session")
def insightface_model(realdata) -> Path:
    path = realdata / "models" / "insightface" / "buffalo_sc" / "det_500m.onnx"
    if not path.exists():
        pytest.fail(f"{path} missing from the real test material")
    return path


def copy_workflow(dest: Path, params_overrides: dict | None = None) -> Path:
    """Copy the workflow (not results/) into ``dest`` and deep-merge ``params_overrides``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    if params_overrides:
        params = yaml.safe_load((dest / "params.yaml").read_text())
        _deep_merge(params, params_overrides)
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def _deep_merge(base: dict, over: dict) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and not _is_leaf_map(key):
            _deep_merge(base[key], value)
        else:
            base[key] = value


def _is_leaf_map(key: str) -> bool:
    # maps that are replaced whole, not merged
    return key in {"datasets", "experiments", "losses"}


def venv_env(**extra: str) -> dict:
    """os.environ with this environment's bin/ first on PATH (jobs' `python`, DVC stages' `snakemake`)."""
    env = dict(os.environ, **extra)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_snakemake(workdir: Path, *args: str, timeout: int = 1800, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real snakemake CLI of this environment in ``workdir``."""
    cmd = [str(VENV_BIN / "snakemake"), "--cores", "2", "--nolock", *args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=venv_env())
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-5000:]}\n{proc.stderr[-8000:]}")
    return proc


@pytest.fixture
def workflow_copy(tmp_path):
    """Factory: ``workflow_copy(overrides)`` -> a scratch copy of the workflow with params overridden."""

    def make(overrides: dict | None = None, name: str = "wf") -> Path:
        return copy_workflow(tmp_path / name, overrides)

    return make


@pytest.fixture
def one_thread():
    """torch on one CPU thread for the test (restored after): training tests stay comparable under load."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- pytest-xdist (CI: `pytest -n 2`)
# CI runs the suite on two workers: `pytest -n 2 --dist loadfile --no-loadscope-reorder` (.ci/run).
# loadfile: each test module is one unit of work, so its module-scoped fixtures (a whole workflow
# run in the end-to-end modules) run once, on one worker. The suite is parallel-safe module by
# module: tmp_path is per worker, torchrun runs with --standalone or on a free port, the SLURM
# cluster of this machine is held by one module at a time (test_slurm_cluster.py, first in
# LONGEST_FIRST; test_pretext_slurm.py waits for it to go away), tests write under tmp_path only. (xdist_group marks
# with --dist loadgroup would group modules further, but pytest-xdist 3.8 marks the group in
# item._nodeid, which pytest 9.2 no longer reads: the groups are silently ignored.)
# The longest modules are handed out first (longest-processing-time-first), so that no long
# module starts last; `--no-loadscope-reorder` keeps this order (xdist's default reorder sorts
# modules by their number of tests). Seconds: the clean-clone CI run of d67636d, serial.
LONGEST_FIRST = [
    "test_e2e_realdata.py",  # ~1100 s: dvc repro on the real videos
    "test_slurm_cluster.py",  # ~360 s
    "test_e2e_grid_words.py",
    "test_demo_learns.py",
    "test_demo_shards.py",  # the demo again, on shards
    "test_clips_workflow.py",  # ~240 s
    "test_run_isolation.py",  # ~190 s
    "test_dvc_pipeline.py",  # ~130 s
    "test_finetune_learns.py",
    "test_gpu_check.py",
    "test_lineage_chain.py",
    "test_faces_snakemake.py",
    "test_shards_workflow.py",
    "test_pretrain_stage.py",
]


def pytest_collection_modifyitems(config, items):
    """Under xdist: the modules of LONGEST_FIRST first (stable: the others keep their order, after them)."""
    if hasattr(config, "workerinput"):
        rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
