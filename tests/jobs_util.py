"""Reading what Snakemake and DVC ran from their output (job counts, rules, stages)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

FIGURE_RULES = {"figures", "report", "faces_qc"}  # faces_qc draws the preprocessing QC figure
TRAINING_RULES = {"pretrain", "finetune"}


def job_stats(text: str) -> dict[str, int]:
    """The first ``Job stats`` table Snakemake printed: rule -> number of jobs."""
    m = re.search(r"Job stats:\s*\n\s*job\s+count\s*\n\s*-+\s+-+\s*\n(.*?)\n\s*total\s+(\d+)", text, re.S)
    if not m:
        return {}
    rows = [ln.split() for ln in m.group(1).splitlines() if ln.strip()]
    return {name: int(n) for name, n in rows}


def rules_run(text: str) -> list[str]:
    """Rules of the jobs a real Snakemake run started (its ``rule X:`` / ``localrule X:`` blocks)."""
    return re.findall(r"^\s*(?:local)?rule (\w+):", text, re.M)


def finished_jobs(text: str) -> list[str]:
    """Rules of the Snakemake jobs that finished (e.g. inside DVC stages)."""
    return re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", text)


def stages_run(text: str) -> list[str]:
    """DVC stages `dvc repro` ran (not those it skipped as unchanged)."""
    return re.findall(r"Running stage '([\w-]+)'", text)


def jobs_per_stage(text: str) -> dict[str, list[str]]:
    """DVC stage -> the rules of the Snakemake jobs that stage's command ran."""
    parts = re.split(r"Running stage '([^']+)'", text)
    return {parts[i]: rules_run(parts[i + 1]) for i in range(1, len(parts) - 1, 2)}


def set_param(wf: Path, section: str, key: str, value) -> None:
    """Edit one value of the params.yaml of workflow copy ``wf``."""
    params = yaml.safe_load((wf / "params.yaml").read_text())
    params[section][key] = value
    (wf / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def assert_dag_order(ran: list[str], stages: dict) -> None:
    """Every stage of dvc.yaml ``stages`` ran once, after the stages that produce its deps."""
    assert sorted(ran) == sorted(stages)
    producer = {next(iter(o)): name for name, st in stages.items() for o in st.get("outs", [])}
    for name, st in stages.items():
        for dep in st.get("deps", []):
            if dep in producer:
                assert ran.index(producer[dep]) < ran.index(name), f"{name} ran before {producer[dep]}"
