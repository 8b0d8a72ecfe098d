"""slurm/profile.yaml read by Snakemake's own profile parser and resource evaluator (no SLURM needed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from configargparse import ConfigFileParserException
from snakemake.cli import parse_set_resources
from snakemake.profiles import ProfileConfigFileParser
from snakemake.resources import Resources

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "slurm" / "profile.yaml"
SITE_VARS = [
    "AFFECTUBE_ACCOUNT", "AFFECTUBE_PARTITION", "AFFECTUBE_GPU_PARTITION", "AFFECTUBE_GPU_MODEL",
    "AFFECTUBE_CPUS_PER_GPU", "AFFECTUBE_GPU_GRES", "AFFECTUBE_PRETRAIN_NODES", "AFFECTUBE_GPUS_PER_NODE",
]  # fmt: skip


@pytest.fixture
def site(monkeypatch):
    """Parse the profile with exactly these site variables set (the others unset)."""

    def set_(**values):
        for var in SITE_VARS:
            monkeypatch.delenv(var, raising=False)
        for key, value in values.items():
            monkeypatch.setenv(f"AFFECTUBE_{key.upper()}", str(value))
        with open(PROFILE) as fh:
            return ProfileConfigFileParser().parse(fh)

    return set_


def evaluate(assignments: list[str], attempt: int = 1, threads: int = 1) -> dict:
    res = Resources.parse(assignments, allow_expressions=True)
    return {name: _value(r, attempt, threads) for name, r in res.items()}


def per_rule(profile: dict, attempt: int = 1) -> dict[str, dict]:
    return {
        rule: {name: _value(r, attempt, 1) for name, r in res.items()}
        for rule, res in parse_set_resources(profile["set-resources"]).items()
    }


def _value(resource, attempt, threads):
    if resource.is_evaluable():
        resource = resource.evaluate(wildcards={}, input=[], attempt=attempt, threads=threads, rulename="r", async_run=None)
    return resource.value


def test_profile_core_settings(site):
    p = site()
    assert p["executor"] == "slurm"
    assert int(p["jobs"]) >= 10
    assert int(p["latency-wait"]) >= 30  # shared file systems
    assert p["rerun-incomplete"] == "True" and int(p["retries"]) >= 1
    assert p["slurm-logdir"] == "results/logs/slurm"


def test_defaults_without_site_variables(site):
    p = site()
    d = evaluate(p["default-resources"], threads=3)
    assert d["slurm_partition"] == ""  # empty: the plugin falls back to the cluster's default partition
    assert "slurm_account" not in d  # unset: the plugin guesses or submits without -A
    assert d["runtime"] == 60 and d["mem_mb"] == 2000
    assert d["cpus_per_task"] == 3  # = the rule's threads


def test_account_and_partitions_from_the_environment(site):
    p = site(account="proj-x1", partition="cpu-short", gpu_partition="gpu-a100")
    d = evaluate(p["default-resources"])
    assert d["slurm_account"] == "proj-x1" and d["slurm_partition"] == "cpu-short"
    rules = per_rule(p)
    assert rules["pretrain"]["slurm_partition"] == "gpu-a100"  # a string with '-', not a subtraction
    assert rules["finetune"]["slurm_partition"] == "gpu-a100"
    # without a GPU partition, GPU jobs go where CPU jobs go
    assert per_rule(site(partition="all"))["pretrain"]["slurm_partition"] == "all"


def test_gpu_rules_ask_per_gpu_and_grow_with_the_attempt(site):
    p = site(cpus_per_gpu=6)
    one, two = per_rule(p, attempt=1), per_rule(p, attempt=2)
    for rule in ("pretrain", "finetune"):
        assert one[rule]["cpus_per_task"] == 0 and one[rule]["cpus_per_gpu"] == 6
        assert "gpu" not in one[rule] and "gres" not in one[rule]  # the rule's own gpu count -> --gpus
        assert one[rule]["slurm_extra"] == "--signal=TERM@600"  # checkpoint before the time limit
    assert two["pretrain"]["mem_mb"] == 2 * one["pretrain"]["mem_mb"]
    assert two["pretrain"]["runtime"] == 2 * one["pretrain"]["runtime"]
    # finetune: memory and time are the rule's, from the experiment's params (profile dry run below)
    assert "mem_mb" not in one["finetune"] and "runtime" not in one["finetune"]


def test_gpu_type(site):
    rules = per_rule(site(gpu_model="a100"))
    assert rules["pretrain"]["gpu_model"] == "a100" and rules["finetune"]["gpu_model"] == "a100"


def test_gres_sites(site):
    rules = per_rule(site(gpu_gres=1, gpus_per_node=4, gpu_model="v100"))
    assert rules["pretrain"]["gres"] == "gpu:v100:4" and rules["pretrain"]["gpu"] == 0
    assert rules["finetune"]["gres"] == "gpu:v100:1" and rules["finetune"]["gpu"] == 0
    assert "gpu_model" not in rules["pretrain"]  # would add a second, conflicting --gpus


def test_multi_node_pretraining(site):
    pre = per_rule(site(pretrain_nodes=2, gpus_per_node=8))["pretrain"]
    assert pre["nodes"] == 2 and pre["tasks"] == 2 and pre["tasks_per_gpu"] == 0
    assert pre["mpi"] == "srun"  # the rule runs in the batch script and srun's torchrun per node
    assert pre["gres"] == "gpu:8" and pre["gpu"] == 0


def test_gpus_per_node_is_required_where_it_matters(site):
    with pytest.raises(ConfigFileParserException, match="AFFECTUBE_GPUS_PER_NODE"):
        site(pretrain_nodes=2)
    with pytest.raises(ConfigFileParserException, match="AFFECTUBE_GPUS_PER_NODE"):
        site(gpu_gres="yes")


def test_rules_declare_portable_resources_only():
    """Partitions, accounts and SLURM flags live in the profile, never in rules."""
    for smk in (REPO / "rules").glob("*.smk"):
        code = "\n".join(line.split("#", 1)[0] for line in smk.read_text().splitlines())
        found = re.search(r"\b(slurm_\w+|gres|partition|account|qos|constraint)\s*=", code)
        assert not found, f"{smk}: cluster setting {found.group(0)!r} belongs in slurm/profile.yaml"
    for rule in ("pretrain", "finetune"):
        block = re.search(rf"^rule {rule}:(.*?)(?=^rule |\Z)", _rules_text(), re.S | re.M).group(1)
        assert re.search(r"^\s+gpu=", block, re.M), f"rule {rule} must declare a gpu resource"
        assert "exec python -m affectube" in block, f"rule {rule} must exec its trainer (signals)"
    # `workflow.cores` raises under --profile slurm (no --cores): rules must not depend on it
    code = "\n".join(line.split("#", 1)[0] for line in _rules_text().splitlines())
    assert "workflow.cores" not in code, "a rule uses workflow.cores"


def _rules_text() -> str:
    return "\n".join(p.read_text() for p in sorted((REPO / "rules").glob("*.smk")))


@pytest.mark.slow
def test_profile_as_typed_dry_run(workflow_copy):
    """``snakemake --profile slurm -n`` in a copy of the workflow: the profile loads and resources resolve."""
    wf = workflow_copy({"pretrain": {"gpus": 2}, "finetune": {"gpus": 2, "mem_gb": 12, "time_minutes": 90},
                        "experiments": {"videomae": {}, "small": {"finetune.mem_gb": 6}}})
    env = {k: v for k, v in os.environ.items() if k not in SITE_VARS}
    env.update(AFFECTUBE_PARTITION="cpu", AFFECTUBE_GPU_PARTITION="gpu-big", AFFECTUBE_ACCOUNT="proj1",
               PATH=f"{Path(sys.executable).parent}:{env['PATH']}")  # fmt: skip
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "--profile", "slurm", "-n", "results/pretrain/encoder.safetensors",
         "results/finetune/videomae/fold0/metrics.json", "results/finetune/small/fold0/metrics.json"],
        cwd=wf, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    pre = re.search(r"^rule pretrain:.*?resources: ([^\n]*)", out, re.S | re.M).group(1)
    for item in ("slurm_partition=gpu-big", "slurm_account=proj1", "gpu=2", "cpus_per_gpu=8", "nodes=1", "mem_mb=64000"):
        assert item in pre, (item, pre)
    # finetune: GPUs, memory and time from finetune.gpus / mem_gb / time_minutes of each experiment
    fine = dict(re.findall(r"^rule finetune:.*?wildcards: exp=(\w+).*?resources: ([^\n]*)", out, re.S | re.M))
    assert set(fine) == {"videomae", "small"}, fine
    for exp, mem in (("videomae", 12000), ("small", 6000)):
        for item in ("slurm_partition=gpu-big", "gpu=2", "cpus_per_gpu=8", f"mem_mb={mem}", "runtime=90"):
            assert item in fine[exp], (exp, item, fine[exp])
    faces = re.search(r"^rule faces:.*?resources: ([^\n]*)", out, re.S | re.M).group(1)
    assert "slurm_partition=cpu" in faces and "mem_mb=4000" in faces
