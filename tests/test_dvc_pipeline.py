"""DVC as a second front end: `dvc repro` runs the stages Snakemake would, leaves Snakemake nothing to do,
and `dvc exp run -S section.key=value` re-runs exactly the affected rule's jobs (in a scratch git repo)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml

from conftest import REPO, VENV_BIN, copy_workflow, run_snakemake, venv_env
from jobs_util import assert_dag_order

# A tiny demo (8 videos of 5 frames at 128 px) so the whole round trip stays cheap.
SMALL = {"demo": {"subjects": 4, "classes": ["happy", "sad"], "videos_per_class": 1, "seconds": 0.5, "fps": 10, "size": 128},
         "decode": {"fps": 10}}

# The part of the DAG reproduced end to end (the scratch copy's default target is cut down to it):
# widened as the stages land. The generator and the drift test always cover the full DAG (test_dvc_yaml.py).
E2E_RULES = ["demo_data", "manifest", "faces", "clips"]
DEFAULT_TARGET = "        D.all_targets(),\n"


def _targets() -> list[str]:
    from affectube.demo import plan

    rows = plan({**SMALL["demo"], "root": "results/demo"})[:2]  # two videos' jobs keep it cheap
    # the manifest too: clips jobs take their manifest row as a param, not the manifest file
    return [f"results/clips/demo/{r['video_id']}.h5" for r in rows] + ["results/manifests/demo.csv"]


def _run(wf: Path, *cmd: str, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), cwd=wf, capture_output=True, text=True, timeout=timeout,
                          env=venv_env(DVC_NO_ANALYTICS="1", PYTHONPATH=str(wf / "workflow")))
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def _git(wf: Path, *args: str) -> None:
    _run(wf, "git", "-c", "user.name=affectube-test", "-c", "user.email=test@affectube.invalid", *args)


def _ran_stages(out: str) -> list[str]:
    return re.findall(r"Running stage '([\w-]+)'", out)


def _ran_jobs(out: str) -> list[str]:
    """Rules of the Snakemake jobs that finished inside the DVC stages."""
    return re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", out)




def _mtimes(wf: Path, pattern: str) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(wf.glob(pattern))}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A scratch git repository holding the workflow, DVC initialised as in the real repo."""
    wf = copy_workflow(tmp_path_factory.mktemp("dvc") / "wf", SMALL)
    (wf / ".dvc").mkdir()
    for name in [".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore"]:
        shutil.copy2(REPO / name, wf / name)
    snakefile = (wf / "Snakefile").read_text()
    assert snakefile.count(DEFAULT_TARGET) == 1, "rule all changed: update DEFAULT_TARGET"
    (wf / "Snakefile").write_text(snakefile.replace(DEFAULT_TARGET, f"        {_targets()!r},\n"))
    _run(wf, sys.executable, "-m", "affectube", "dvc-yaml")
    _git(wf, "init", "-q")
    _git(wf, "add", "-A")
    _git(wf, "commit", "-q", "-m", "workflow")
    return wf


@pytest.mark.slow
def test_dvc_repro_runs_the_snakemake_dag_and_leaves_nothing_to_do(repo):
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    assert sorted(stages) == sorted(E2E_RULES)
    assert all(s["cmd"] == f"snakemake --cores all --until {name}" for name, s in stages.items())

    dry = run_snakemake(repo, "-n").stdout
    planned = sorted(re.findall(r"^rule (\w+):$", dry, flags=re.M))
    assert set(planned) - {"all"} == set(E2E_RULES)

    proc = _run(repo, str(VENV_BIN / "dvc"), "repro")
    out = proc.stdout + proc.stderr
    assert_dag_order(_ran_stages(out), stages)  # every stage, in DAG order
    assert sorted(_ran_jobs(out)) == [r for r in planned if r != "all"]  # exactly the jobs snakemake planned
    assert (repo / "dvc.lock").is_file()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(E2E_RULES) and all(lock[s]["outs"] for s in E2E_RULES)

    after = run_snakemake(repo, "-n")
    assert "Nothing to be done" in after.stdout + after.stderr

    assert "up to date" in _run(repo, str(VENV_BIN / "dvc"), "status").stdout
    again = _run(repo, str(VENV_BIN / "dvc"), "repro")
    assert _ran_stages(again.stdout + again.stderr) == []  # every stage unchanged: skipped
    assert _ran_jobs(again.stdout + again.stderr) == []


@pytest.mark.slow
def test_dvc_exp_run_with_a_param_reruns_only_that_stage(repo):
    if not (repo / "dvc.lock").exists():
        pytest.skip("needs the repro test first")  # same module; pytest runs them in order
    _git(repo, "add", "dvc.lock")
    _git(repo, "commit", "-q", "-m", "lock")
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    upstream = {p: _mtimes(repo, p) for p in ["results/demo/videos/*.mp4", "results/manifests/*.csv",
                                               "results/faces/demo/tracks/*.npz"]}
    stores = _mtimes(repo, "results/clips/demo/*.h5")
    assert len(stores) == 2

    proc = _run(repo, str(VENV_BIN / "dvc"), "exp", "run", "-S", "clips.compression=gzip", "-S", "clips.chunk_frames=16")  # gzip needs chunks
    out = proc.stdout + proc.stderr
    assert _ran_stages(out) == ["clips"]  # the stage whose params changed (nothing below it here)
    assert _ran_jobs(out) == ["clips"] * len(stores)  # and only that rule's jobs did work
    assert yaml.safe_load((repo / "params.yaml").read_text())["clips"]["compression"] == "gzip"
    for pattern, before in upstream.items():
        assert _mtimes(repo, pattern) == before, f"{pattern} were touched"
    new_stores = _mtimes(repo, "results/clips/demo/*.h5")
    assert new_stores.keys() == stores.keys() and all(new_stores[k] > stores[k] for k in stores)
    with h5py.File(next(iter(new_stores)), "r") as f:
        assert f.attrs["compression"] == "gzip"  # the job saw the new value

    after = run_snakemake(repo, "-n")
    assert "Nothing to be done" in after.stdout + after.stderr
    shown = json.loads(_run(repo, str(VENV_BIN / "dvc"), "exp", "show", "--json").stdout)
    found = json.dumps(shown)
    assert '"compression": "gzip"' in found
