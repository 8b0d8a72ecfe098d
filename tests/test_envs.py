"""The pinned environment: envs/requirements.txt (direct dependencies, ranges), envs/requirements.lock
(exact versions of everything, made by ``python3 envs/lock.py update``) and envs/*.yaml agree.

* the lock pins every package of requirements.txt inside its range, lists nothing that
  requirements.txt does not pull in (directly or transitively), and is what is installed here;
* the install stamp in .venv follows the lock's hash (a changed lock reinstalls);
* every pip pin in an env file is exact (``==``), equals the lock's version and satisfies
  envs/requirements.txt's specifier for that package;
* every package of requirements.txt is in some env file, except the tools that drive the
  workflow from outside the rule environments (snakemake and its plugin, dvc, pytest);
* each rule's ``conda:`` env provides every third-party package that its stage's modules
  import (found by walking the imports of the ``affectube`` modules from the stage's CLI module,
  lazy imports and registry entries such as ``"affectube.faces.backends.mtcnn:MtcnnDetector"`` included).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import re
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
ENVS = REPO / "envs"
PKG = REPO / "workflow" / "affectube"
# tools that drive the workflow from outside the rule environments; modules that import
# snakemake do so at Snakefile parse time (e.g. snakemake.io.report), not inside a job
DRIVER_TOOLS = {"snakemake", "snakemake-executor-plugin-slurm", "dvc", "pytest", "pytest-xdist"}
REGISTRY_ENTRY = re.compile(r"^affectube(\.\w+)+(:\w+)?$")


def requirements() -> dict[str, Requirement]:
    out = {}
    for line in (ENVS / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            out[canonicalize_name(req.name)] = req
    return out


def lock() -> dict[str, str]:
    """{canonical name: version} of envs/requirements.lock."""
    out = {}
    for line in (ENVS / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            specs = list(req.specifier)
            assert len(specs) == 1 and specs[0].operator == "==", f"requirements.lock: {line!r} is not an exact pin"
            name = canonicalize_name(req.name)
            assert name not in out, f"requirements.lock: {req.name} listed twice"
            out[name] = specs[0].version
    return out


def test_lock_pins_every_requirement_inside_its_range():
    locked = lock()
    for name, req in requirements().items():
        assert name in locked, f"{req.name} is in envs/requirements.txt but not in envs/requirements.lock: run `python3 envs/lock.py update`"
        assert req.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock pins {req.name}=={locked[name]}, outside requirements.txt's {req}: run `python3 envs/lock.py update`"
        )


def _required_closure(roots: dict[str, Requirement]) -> set[str]:
    """Canonical names that ``roots`` pull in, following the installed packages' metadata
    (environment markers and extras evaluated for this interpreter)."""
    seen: set[str] = set()
    todo = [(name, set(req.extras)) for name, req in roots.items()]
    done_extras: dict[str, set[str]] = {}
    while todo:
        name, extras = todo.pop()
        if name in seen and extras <= done_extras.get(name, set()):
            continue
        seen.add(name)
        done_extras[name] = done_extras.get(name, set()) | extras
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for line in requires:
            dep = Requirement(line)
            envs = [{"extra": e} for e in sorted(extras)] or [{"extra": ""}]
            if dep.marker is None or any(dep.marker.evaluate(env) for env in envs):
                todo.append((canonicalize_name(dep.name), set(dep.extras)))
    return seen


def test_lock_lists_only_what_requirements_pull_in():
    stale = set(lock()) - _required_closure(requirements()) - {"setuptools"}  # setuptools: build backend of sdists
    assert not stale, (f"envs/requirements.lock lists {sorted(stale)}, which nothing in envs/requirements.txt requires"
                       " (a package removed from requirements.txt?): run `python3 envs/lock.py update`")


def test_installed_environment_is_the_lock():
    wrong = {}
    for name, version in lock().items():
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            have = None
        if have is None or have.split("+", 1)[0] != version:
            wrong[name] = (version, have)
    assert not wrong, f"installed versions differ from envs/requirements.lock (locked, installed): {wrong}; rerun `bash .ci/run`"


def test_install_stamp_follows_the_lock():
    """.ci/run's stamp is sha256(Python version + lock + pyproject.toml): a changed lock reinstalls."""
    import hashlib

    stamp = REPO / ".venv" / ".affectube-install"
    text = (REPO / ".ci" / "run").read_text()
    assert "cat envs/requirements.lock pyproject.toml" in text and "-r envs/requirements.lock" in text
    if not stamp.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{stamp} missing: .ci/run installs and stamps .venv")
        pytest.skip(f"{stamp}: .venv was not installed by .ci/run")
    body = (sys.version + "\n").encode() + (ENVS / "requirements.lock").read_bytes() + (REPO / "pyproject.toml").read_bytes()
    assert stamp.read_text().strip() == hashlib.sha256(body).hexdigest(), f"{stamp} does not match the lock: .ci/run would reinstall"


def env_files() -> list[Path]:
    return sorted(ENVS.glob("*.yaml"))


def pip_pins(path: Path) -> dict[str, tuple[Requirement, str]]:
    """{canonical name: (requirement, raw line)} of the env file's pip section."""
    spec = yaml.safe_load(path.read_text())
    pins = {}
    for dep in spec["dependencies"]:
        if isinstance(dep, dict) and "pip" in dep:
            for line in dep["pip"]:
                req = Requirement(line)
                pins[canonicalize_name(req.name)] = (req, line)
    return pins


def test_env_files_exist_and_are_conda_envs():
    names = {p.name for p in env_files()}
    assert {"video.yaml", "torch.yaml", "report.yaml"} <= names
    for path in env_files():
        spec = yaml.safe_load(path.read_text())
        assert spec["name"].startswith("affectube-"), path
        assert "conda-forge" in spec["channels"], path
        deps = [d for d in spec["dependencies"] if isinstance(d, str)]
        py = [d for d in deps if re.match(r"python[=<>]", d)]
        assert py == [f"python={sys.version_info.major}.{sys.version_info.minor}"], (path, py)


@pytest.mark.parametrize("path", env_files(), ids=lambda p: p.name)
def test_pins_are_exact_locked_and_allowed_by_requirements(path):
    reqs = requirements()
    locked = lock()
    pins = pip_pins(path)
    assert pins, f"{path}: no pip section"
    for name, (req, line) in pins.items():
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{path}: {line!r} is not an exact pin"
        pinned = specs[0].version
        assert name in reqs, f"{path}: {req.name} is not in envs/requirements.txt"
        assert reqs[name].specifier.contains(pinned, prereleases=True), (
            f"{path}: {line!r} is outside envs/requirements.txt's {reqs[name]}"
        )
        assert locked.get(name) == pinned, (
            f"{path}: {line!r} but envs/requirements.lock has {locked.get(name)}: run `python3 envs/lock.py sync`"
        )


def test_every_requirement_is_in_an_env():
    covered = set()
    for path in env_files():
        covered |= set(pip_pins(path))
    missing = set(requirements()) - covered - {canonicalize_name(t) for t in DRIVER_TOOLS}
    assert not missing, f"in envs/requirements.txt but in no envs/*.yaml: {sorted(missing)}"


# ---------------------------------------------------------------- each rule's env covers its imports
def rules() -> list[tuple[str, str, str]]:
    """(rule, env file name, stage) for every rule that runs ``python -m affectube <stage>``."""
    out = []
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text()
        for block in re.split(r"^rule ", text, flags=re.M)[1:]:
            name = block.split(":", 1)[0].strip()
            conda = re.search(r'conda:\s*\n\s*"\.\./envs/([\w.]+)"', block)
            flat = re.sub(r'"\s*\n\s*"', "", block)  # join the shell's implicitly concatenated strings
            stages = re.findall(r"python -m affectube ([a-z][\w-]*)", flat)
            stages = [s for s in stages if s != "launch"] + re.findall(r"affectube launch .*?-- ([a-z][\w-]*) ", flat)
            if conda and stages:
                out.append((name, conda.group(1), stages[0]))
    return out


def _module_file(module: str) -> Path | None:
    rel = Path(*module.split("."))
    for cand in (REPO / "workflow" / rel.with_suffix(".py"), REPO / "workflow" / rel / "__init__.py"):
        if cand.exists():
            return cand
    return None


@lru_cache(maxsize=None)
def third_party_imports(module: str) -> frozenset[str]:
    """Top-level third-party names imported (eagerly or lazily) by ``module`` and the affectube modules it uses."""
    seen: set[str] = set()
    found: set[str] = set()
    todo = [module]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        path = _module_file(mod)
        if path is None:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and REGISTRY_ENTRY.match(node.value):
                names = [node.value.split(":")[0]]  # registries name modules as strings
            for name in names:
                top = name.split(".")[0]
                if top == "affectube":
                    todo.append(name)
                elif top and top not in sys.stdlib_module_names:
                    found.add(top)
    return frozenset(found)


@lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    return md.packages_distributions()


def distributions_of(top: str) -> set[str]:
    return {canonicalize_name(d) for d in _packages_distributions().get(top, [])}


RULES = rules()


def test_rules_were_found():
    names = {r[0] for r in RULES}
    assert {"pretrain", "finetune", "clips", "faces", "evaluate", "report"} <= names, sorted(names)


@pytest.mark.parametrize("rule,env,stage", RULES, ids=[r[0] for r in RULES])
def test_rule_env_provides_what_its_stage_imports(rule, env, stage):
    from affectube.cli import STAGES

    assert stage in STAGES, f"rule {rule} runs unknown stage {stage!r}"
    module = STAGES[stage][0]
    if _module_file(module) is None:
        pytest.skip(f"stage module {module} not written yet")
    provided = set(pip_pins(ENVS / env))
    needed = {}
    tools = {canonicalize_name(t) for t in DRIVER_TOOLS}
    for top in third_party_imports(module):
        dists = distributions_of(top) - tools
        if dists and not dists & provided:
            needed[top] = sorted(dists)
    assert not needed, f"rule {rule} (envs/{env}) lacks packages its stage {stage} imports: {needed}"
