"""params.yaml and its schema: validation, defaults, one-line errors (CLI and Snakemake), the dry run and lint."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, run_snakemake, venv_env

from affectube.config import load_params, load_schema, validate
from affectube.errors import ConfigError

BAD_VALUES = [
    # override, key the message must name, words it must contain (the allowed range / values)
    ("faces.det_size=5000", "faces.det_size", ["5000", "maximum of 1280"]),
    ("crop.strategy=foo", "crop.strategy", ["'foo'", "box", "align"]),
    ("faces.det_sise=320", "faces.det_sise", ["unknown key", "did you mean 'det_size'"]),
    ("finetune.inner_val=-1", "finetune.inner_val", ["-1", "minimum of 0"]),
    ("data.finetune=null", "data.finetune", ["None is not of type 'string'"]),
]


def test_a_missing_required_key_is_named():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    del raw["crop"]
    with pytest.raises(ConfigError, match=r"^params.yaml: crop: missing \(this key is required\)$"):
        validate(raw)


def _leaf_properties(schema: dict, path: str = ""):
    for name, sub in schema.get("properties", {}).items():
        key = f"{path}.{name}" if path else name
        if sub.get("type") == "object" and "properties" in sub:
            yield from _leaf_properties(sub, key)
        else:
            yield key, sub, name in schema.get("required", [])


def test_params_yaml_validates_and_covers_every_section():
    cfg = load_params(REPO / "params.yaml")
    schema = load_schema()
    assert schema.get("additionalProperties") is False
    for section in schema["required"]:
        assert section in cfg, f"params.yaml lacks required section {section}"
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(raw) <= set(schema["properties"]), "params.yaml has sections the schema does not know"


def test_every_schema_key_is_typed_and_has_a_default():
    problems = []
    for key, sub, required in _leaf_properties(load_schema()):
        branches = sub.get("oneOf") or sub.get("anyOf") or [sub]
        if any("type" not in b and "enum" not in b for b in branches):
            problems.append(f"{key}: no type")
        if "default" not in sub and not required:
            problems.append(f"{key}: no default")
    for section, sub in load_schema()["properties"].items():
        if sub.get("type") == "object" and "properties" in sub:
            assert sub.get("additionalProperties") is False, f"{section}: additionalProperties must be false"
    assert not problems, "\n".join(problems)


def test_schema_defaults_fill_in():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    del raw["faces"]["det_size"]
    raw["crop"] = {}
    raw.pop("demo", None)
    cfg = validate(raw)
    props = load_schema()["properties"]
    assert cfg["faces"]["det_size"] == props["faces"]["properties"]["det_size"]["default"]
    assert cfg["crop"] == {k: v["default"] for k, v in props["crop"]["properties"].items()}
    assert cfg["demo"]["subjects"] == props["demo"]["properties"]["subjects"]["default"]
    assert "det_size" not in raw["faces"], "validate must not modify its input"


@pytest.mark.parametrize("override,key,words", BAD_VALUES)
def test_bad_value_is_one_line_naming_the_key_in_python(override, key, words):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    from affectube.config import apply_override

    apply_override(raw, override)
    with pytest.raises(ConfigError) as exc:
        validate(raw)
    message = str(exc.value)
    assert "\n" not in message
    assert f"{key}:" in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("override,key,words", BAD_VALUES[:3])
def test_bad_value_is_one_line_naming_the_key_in_the_cli(override, key, words):
    proc = subprocess.run(
        [sys.executable, "-m", "affectube", "validate", "-S", override],
        cwd=REPO, capture_output=True, text=True, env=venv_env(PYTHONPATH=str(REPO / "workflow")), timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("affectube validate: error: params.yaml (with -S overrides): ")
    assert f"{key}:" in lines[0]
    for word in words:
        assert word in lines[0]


def test_validate_cli_accepts_params_and_prints_defaults():
    proc = subprocess.run(
        [sys.executable, "-m", "affectube", "validate", "--print", "-S", "faces.det_size=640"],
        cwd=REPO, capture_output=True, text=True, env=venv_env(PYTHONPATH=str(REPO / "workflow")), timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)
    assert printed["faces"]["det_size"] == 640
    assert printed["demo"]["annotation_hz"] == 10


@pytest.mark.slow
def test_snakemake_rejects_a_bad_value_with_one_line_naming_the_key(workflow_copy):
    wf = workflow_copy({"faces": {"det_size": 5000}})
    proc = run_snakemake(wf, "-n", check=False, timeout=300)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    lines = [ln for ln in out.splitlines() if "faces.det_size" in ln]
    assert lines == ["params.yaml: faces.det_size: 5000 is greater than the maximum of 1280"], out[-3000:]
    # the same through a command-line override of a valid params.yaml (what `dvc exp run -S` amounts to)
    wf2 = workflow_copy(name="wf2")
    (wf2 / "bad.yaml").write_text("crop:\n  strategy: foo\n")
    proc = run_snakemake(wf2, "-n", "--configfile", "bad.yaml", check=False, timeout=300)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    lines = [ln for ln in out.splitlines() if "crop.strategy" in ln]
    assert lines == ["params.yaml (with command-line overrides): crop.strategy: 'foo' is not one of ['box', 'align', 'mouth']"], out[-3000:]


def _rule_names() -> set[str]:
    names = set()
    for smk in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        names |= set(re.findall(r"^rule (\w+):", smk.read_text(), flags=re.M))
    return names


@pytest.mark.slow
def test_dry_run_prints_the_whole_dag(workflow_copy):
    wf = workflow_copy()
    # + an experiment with a pretext of its own, so that rule pretrain_experiment is planned too
    (wf / "pretext.yaml").write_text("experiments:\n  byol: {pretrain.method: byol}\n")
    # + a second dry run with the dataset in shards (data.shard_size), which plans the shard rules
    (wf / "shards.yaml").write_text("data:\n  shard_size: 8\n")
    counted = set()
    for configfiles in (["pretext.yaml"], ["pretext.yaml", "shards.yaml"]):
        proc = run_snakemake(wf, "-n", "--configfile", *configfiles, timeout=300)
        out = proc.stdout + proc.stderr
        assert "This was a dry-run" in out, out[-3000:]
        stats = out[out.index("Job stats:"):]
        counted |= set(re.findall(r"^(\w+)\s+\d+$", stats, flags=re.M)) - {"total"}
    assert counted == _rule_names(), f"rules missing from the dry runs: {_rule_names() - counted}"


@pytest.mark.slow
def test_snakemake_lint_is_clean(workflow_copy):
    wf = workflow_copy()
    proc = run_snakemake(wf, "--lint", check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_params_merge_matches_snakemake_configfile_semantics(tmp_path):
    """`affectube params --merge F --out params.yaml` gives DVC the config `snakemake --configfile F` sees."""
    import copy as _copy
    import subprocess
    import sys

    import yaml
    from snakemake.utils import update_config

    from affectube.config import merge_params

    base = yaml.safe_load((REPO / "params.yaml").read_text())
    over = yaml.safe_load((REPO / "config" / "realdata.yaml").read_text())
    expected = _copy.deepcopy(base)
    update_config(expected, _copy.deepcopy(over))
    assert merge_params(_copy.deepcopy(base), over) == expected
    assert set(expected["experiments"]) == {"videomae", "scratch", "frozen"}  # merged, not replaced

    out = tmp_path / "params.yaml"
    proc = subprocess.run([sys.executable, "-m", "affectube", "params", "--params", str(REPO / "params.yaml"),
                           "--merge", str(REPO / "config" / "realdata.yaml"), "-S", "figures.dpi=80", "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    written = yaml.safe_load(out.read_text())
    expected["figures"]["dpi"] = 80
    assert written == expected
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune: {epochs: -1}\n")
    proc = subprocess.run([sys.executable, "-m", "affectube", "params", "--params", str(REPO / "params.yaml"),
                           "--merge", str(bad), "--out", str(tmp_path / "p2.yaml")], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "epochs" in proc.stderr and str(bad) in proc.stderr
    assert not (tmp_path / "p2.yaml").exists()
