"""envs/: every rule names a conda environment that exists, and the pip pins agree with envs/requirements.txt."""

from __future__ import annotations

import re

import yaml

from conftest import REPO

# Tools of the driver (the machine that runs snakemake/dvc/pytest), not of any job's environment.
DRIVER_ONLY = {"snakemake", "snakemake-executor-plugin-slurm", "dvc", "pytest"}


def _name(spec: str) -> str:
    return re.split(r"[<>=!~\[; ]", spec.strip(), maxsplit=1)[0].lower()


def _requirements() -> dict[str, str]:
    lines = [ln.split("#")[0].strip() for ln in (REPO / "envs/requirements.txt").read_text().splitlines()]
    return {_name(ln): ln for ln in lines if ln}


def _env_pip(path) -> list[str]:
    env = yaml.safe_load(path.read_text())
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    return [p for group in pips for p in group]


def test_every_rule_has_an_existing_conda_env():
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text()
        rules = re.findall(r"^rule (\w+):", text, flags=re.M)
        envs = re.findall(r"^\s+conda:\s*\n\s+\"([^\"]+)\"", text, flags=re.M)
        assert len(envs) == len(rules), f"{smk.name}: {len(rules)} rules but {len(envs)} conda: directives"
        for env in envs:
            path = (smk.parent / env).resolve()
            assert path.is_file(), f"{smk.name}: conda env {env} does not exist"
            doc = yaml.safe_load(path.read_text())
            assert doc["name"].startswith("affectube-") and "python=3.11" in doc["dependencies"]


def test_env_pins_match_requirements_and_cover_them():
    req = _requirements()
    covered = set()
    for path in sorted((REPO / "envs").glob("*.yaml")):
        for spec in _env_pip(path):
            name = _name(spec)
            assert name in req, f"{path.name}: {spec} is not in envs/requirements.txt"
            assert spec.replace(" ", "") == req[name].replace(" ", ""), f"{path.name}: {spec} != requirements {req[name]}"
            covered.add(name)
    missing = set(req) - covered - DRIVER_ONLY
    assert not missing, f"in envs/requirements.txt but in no envs/*.yaml: {sorted(missing)}"


def test_torch_is_not_pinned_above_what_this_machine_has():
    req = _requirements()
    assert req["torch"] == "torch==2.14.1" and req["torchvision"] == "torchvision==0.29.1"
    assert req["opencv-python"] == "opencv-python<5"
