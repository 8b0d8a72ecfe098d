"""dvc.yaml is generated from the Snakemake DAG: drift check, and a cross-check against `snakemake -n`'s own listing."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict

import pytest
import yaml

from conftest import REPO, VENV_BIN, run_snakemake, venv_env


def _affectube(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "affectube", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
        env=venv_env(PYTHONPATH=str(REPO / "workflow"), DVC_NO_ANALYTICS="1"),
    )


@pytest.fixture(scope="module")
def generated() -> dict:
    proc = _affectube("dvc-yaml", "--out", "-")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("# Generated from the Snakemake DAG")
    return yaml.safe_load(proc.stdout)


@pytest.fixture(scope="module")
def dry_run() -> dict[str, dict[str, set]]:
    """Per rule: the union of its jobs' inputs and outputs as `snakemake -n --forceall` prints them
    (the CLI's text, an independent path from the Python API the generator uses)."""
    proc = run_snakemake(REPO, "-n", "--forceall", timeout=600)
    rules: dict[str, dict[str, set]] = defaultdict(lambda: {"outs": set(), "deps": set()})
    rule = None
    for line in proc.stdout.splitlines():
        head = re.match(r"^(?:local)?rule (\w+):$", line)
        if head:
            rule = rules[head.group(1)]
            continue
        field = re.match(r"^    (input|output): (.*)$", line)
        if field and rule is not None:
            rule["deps" if field.group(1) == "input" else "outs"].update(field.group(2).split(", "))
    for name in [n for n, r in rules.items() if not r["outs"]]:
        del rules[name]  # target-only rules (all)
    for r in rules.values():
        r["deps"] -= r["outs"]
    assert rules, proc.stdout[-2000:]
    return rules


def _paths(entries) -> set[str]:
    return {next(iter(e)) if isinstance(e, dict) else e for e in entries or []}


def test_committed_dvc_yaml_matches_the_dag():
    proc = _affectube("dvc-yaml", "--check")
    assert proc.returncode == 0, (
        "dvc.yaml is out of date with the Snakemake DAG; run `python -m affectube dvc-yaml` and commit it\n"
        + proc.stdout[-4000:] + proc.stderr[-2000:]
    )


def test_one_stage_per_rule_with_the_dags_files(generated, dry_run):
    stages = generated["stages"]
    assert set(stages) == set(dry_run), "stages differ from the rules of `snakemake -n --forceall`"
    for name, stage in stages.items():
        outs = _paths(stage.get("outs")) | _paths(stage.get("metrics")) | _paths(stage.get("plots"))
        assert outs == dry_run[name]["outs"], name
        # + the manifest of jobs that get their manifest row as a param (dvcgen._row_deps)
        row_deps = {f"results/manifests/{d}.csv" for d in ("demo",)} if name == "clips" else set()
        assert set(stage.get("deps", [])) == dry_run[name]["deps"] | row_deps, name
        assert stage["cmd"] == f"snakemake --cores all --until {name}"


def test_params_are_the_sections_each_rule_passes(generated):
    sections = set(yaml.safe_load((REPO / "params.yaml").read_text()))
    stages = generated["stages"]
    assert stages["demo_data"]["params"] == ["demo"]
    assert stages["faces"]["params"] == ["decode", "faces"]
    assert {"decode", "crop", "clips"} <= set(stages["clips"]["params"])
    assert "experiments" in stages["finetune"]["params"] and "finetune" in stages["finetune"]["params"]
    for name, stage in stages.items():
        assert set(stage.get("params", [])) <= sections, name


def test_results_are_never_cached_and_metrics_plots_are_declared(generated):
    stages = generated["stages"]
    for name, stage in stages.items():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                (path, opts), = entry.items()
                assert opts["cache"] is False and opts["persist"] is True, (name, path)
    metrics = _paths(stages["evaluate"].get("metrics"))
    assert metrics and all(p.startswith("results/evaluate/") and p.endswith("/metrics.json") for p in metrics)
    assert "results/pretrain/log.csv" in _paths(stages["pretrain"].get("plots"))
    finetune_plots = _paths(stages["finetune"].get("plots"))
    assert finetune_plots and all(p.endswith("/log.csv") for p in finetune_plots)


def test_dvc_reads_the_generated_pipeline():
    proc = subprocess.run([str(VENV_BIN / "dvc"), "stage", "list"], cwd=REPO, capture_output=True, text=True,
                          env=venv_env(DVC_NO_ANALYTICS="1"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert listed == set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    config = (REPO / ".dvc/config").read_text()
    assert "analytics = false" in config


def test_drift_is_detected_when_the_dag_changes(workflow_copy):
    wf = workflow_copy({"demo": {"subjects": 5}})
    proc = _affectube("dvc-yaml", "--check", cwd=wf)
    assert proc.returncode == 1
    assert "differs from the Snakemake DAG" in proc.stdout
    assert "+    - results/demo/videos/s05_happy_00.mp4: {cache: false, persist: true}" in proc.stdout
