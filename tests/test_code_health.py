"""Code health: the affectube package's import graph has no cycle.

The graph is read from the source with :mod:`ast` (nothing is imported): an edge ``a -> b``
for every ``import``/``from ... import`` of an affectube module in ``a``. Two graphs are checked:

* module-level imports over the whole package: a cycle there breaks depending on import order;
* every import (function bodies too) inside ``affectube.models``: the model registry must not
  import back the models that register into it (timm's layout: ``models/__init__`` imports the
  model modules, ``registry`` imports no model).
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

PACKAGE = REPO / "workflow" / "affectube"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(target: str, modules: dict[str, Path]) -> str | None:
    """The affectube module ``target`` names (``a.b.name`` -> ``a.b`` when ``name`` is not a module)."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def _imports(name: str, path: Path, modules: dict[str, Path], *, module_level: bool) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    nodes = tree.body if module_level else list(ast.walk(tree))
    if module_level:  # module level includes if/try blocks, not function or class bodies
        stack, nodes = list(tree.body), []
        while stack:
            node = stack.pop()
            nodes.append(node)
            if isinstance(node, (ast.If, ast.Try)):
                stack.extend(ast.iter_child_nodes(node))
    found: set[str] = set()
    for node in nodes:
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name if is_pkg else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}" if base else pkg
            targets = [f"{base}.{a.name}" for a in node.names] or [base]
        for target in targets:
            if target.split(".")[0] != "affectube":
                continue
            resolved = _resolve(target, modules)
            if resolved and resolved != name:
                found.add(resolved)
    return found


def _graph(prefix: str, *, module_level: bool) -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {t for t in _imports(name, path, modules, module_level=module_level) if t.startswith(prefix)}
        for name, path in modules.items()
        if name.startswith(prefix)
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_sees_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_graph_reads_the_source():
    graph = _graph("affectube.models", module_level=False)
    assert "affectube.models.registry" in graph["affectube.models.videomae"]
    assert "affectube.models.videomae" in graph["affectube.models"]


def test_package_module_level_imports_have_no_cycle():
    cycle = _cycle(_graph("affectube", module_level=True))
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle)


def test_models_imports_have_no_cycle():
    graph = _graph("affectube.models", module_level=False)
    # a package's __init__ re-exporting its modules is not a cycle: its modules import siblings,
    # never the package itself (checked here), so the package node is left out
    for name, targets in graph.items():
        assert "affectube.models" not in targets or name == "affectube.models", (
            f"{name} imports the affectube.models package (import the module that defines the name)"
        )
    graph = {n: t - {"affectube.models"} for n, t in graph.items()}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle in affectube.models: " + " -> ".join(cycle)
    assert not graph["affectube.models.registry"] & {
        "affectube.models.videomae",
        "affectube.models.svfap",
    }, "the registry imports no model: models/__init__.py imports the model modules"


def test_to_jsonable_is_the_one_json_conversion():
    from affectube.io import to_jsonable

    obj = {"a": np.float32(0.5), "b": (np.int64(2), Path("x/y")), "c": np.arange(3), "d": [math.nan, np.inf]}
    out = to_jsonable(obj)
    assert out["a"] == 0.5 and out["b"] == [2, "x/y"] and out["c"] == [0, 1, 2] and type(out["b"][0]) is int
    assert math.isnan(out["d"][0]) and out["d"][1] == math.inf
    assert to_jsonable(obj, finite=True)["d"] == [None, None]
    with pytest.raises(TypeError, match="set"):
        to_jsonable({"s": {1}})
    assert to_jsonable({"s": {1}}, fallback=str) == {"s": "{1}"}


def test_finetuned_metadata_written_and_read_by_one_module(tmp_path):
    import torch

    from affectube.errors import DataError
    from affectube.models import finetuned
    from affectube.train.supervised import Task

    task = Task(kind="categorical", classes=["a", "b"], targets=[], bins=5, target_range=(-1.0, 1.0))
    path = tmp_path / "model.safetensors"
    finetuned.save_finetuned(path, {"w": torch.zeros(2)}, finetune={"lr": 1}, pretrain={"size": "tiny"},
                             encoder_spec=None, preprocessing={"crop": {}}, task=task)
    info = finetuned.read_finetuned(path)
    assert finetuned.is_finetuned(finetuned.read_metadata(path))
    assert info == {"finetune": {"lr": 1}, "pretrain": {"size": "tiny"}, "encoder_spec": None,
                    "preprocessing": {"crop": {}},
                    "task": {"kind": "categorical", "classes": ["a", "b"], "targets": [], "bins": 5, "target_range": [-1.0, 1.0]}}
    with pytest.raises(DataError, match="metadata affectube.task, affectube.finetune"):
        finetuned.decode({"format": finetuned.FORMAT}, path)


def test_report_text_needs_no_matplotlib():
    """Metric names and ranges live in eval/metrics.py: the Markdown/HTML report imports no plotting."""
    import subprocess
    import sys

    code = ("import sys; import affectube.report.build; from affectube.eval.metrics import metric_label, metric_range; "
            "assert metric_label('frame_ccc_valence') == 'CCC valence (per frame)'; "
            "assert metric_range('uar') == (0.0, 1.0) and metric_range('frame_pearson_arousal') == (-1.0, 1.0); "
            "assert metric_range('rmse') is None and metric_range('frame_uar') is None; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO / "workflow"), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]", out.stdout


def _non_default(section: str, values: dict) -> dict:
    """The keys of ``values`` whose value differs from the schema's default."""
    from affectube.config import load_schema

    props = load_schema()["properties"][section]["properties"]
    return {k: v for k, v in values.items() if k not in props or props[k].get("default", object()) != v}


def test_stage_cli_with_a_partial_cfg_behaves_as_with_the_full_params(tmp_path, capsys):
    """``config.sections``: a stage run with only the non-default keys of its section writes what it
    writes with the full (pipeline) section; a bad value fails naming the key."""
    import json

    from test_folds_protocols import manifest

    from affectube.cli import main
    from affectube.config import load_params, sections

    full = {"finetune": dict(load_params(REPO / "params.yaml")["finetune"], protocol="loso", k=3, inner_val=0.25, seed=3)}
    partial = {"finetune": _non_default("finetune", full["finetune"])}
    assert len(partial["finetune"]) < len(full["finetune"])  # something is left to the defaults
    assert sections(partial, "finetune") == sections(full, "finetune")
    table = tmp_path / "manifest.csv"
    manifest(subjects=4).to_csv(table, index=False)
    outs = []
    for name, cfg in (("full", full), ("partial", partial)):
        out = tmp_path / f"{name}.json"
        assert main(["folds", "--cfg", json.dumps(cfg), "--manifest", str(table), "--out", str(out)]) == 0
        outs.append(json.loads(out.read_text()))
    assert outs[0] == outs[1] and len(outs[0]) == 4  # loso over 4 subjects
    bad = {"finetune": {"k": 0}}
    assert main(["folds", "--cfg", json.dumps(bad), "--manifest", str(table), "--out", str(tmp_path / "bad.json")]) == 2
    assert "--cfg finetune: k:" in capsys.readouterr().err


def test_literal_defaults_in_code_equal_the_schema():
    """``faces_cfg.get("every_k", 2)`` next to a schema default of 5 is drift: every remaining
    ``{section}_cfg.get(key, literal)`` (or ``pcfg``/``dcfg``: pretrain/data) in the package must repeat the
    schema's default. (``ft.get`` in ``supervised.build_model`` keeps the values models saved before a key
    existed were trained with, on purpose.)"""
    from affectube.config import load_schema

    props = load_schema()["properties"]
    aliases = {"pcfg": "pretrain", "dcfg": "data"}
    drift, seen = [], 0
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and isinstance(node.func.value, ast.Name)
                    and (node.func.value.id.endswith("_cfg") or node.func.value.id in aliases)
                    and len(node.args) == 2 and all(isinstance(a, ast.Constant) for a in node.args)):
                continue
            receiver = node.func.value.id
            section, key, literal = aliases.get(receiver, receiver.removesuffix("_cfg")), node.args[0].value, node.args[1].value
            schema = props.get(section, {}).get("properties", {}).get(key)
            if schema is None or "default" not in schema:
                continue
            seen += 1
            if schema["default"] != literal:
                drift.append(f"{name}:{node.lineno}: {section}.{key} {literal!r} (schema {schema['default']!r})")
    assert seen >= 5  # the scan finds the calls
    assert not drift, "defaults in code differ from the schema:\n" + "\n".join(drift)



# stage module -> the params sections its run() (build_store for the clips stage) reads through config.sections
STAGE_SECTIONS = {
    "affectube.train.pretrain": ("data", "pretrain"),
    "affectube.train.finetune": ("pretrain", "finetune", "evaluate"),
    "affectube.clips.build": ("decode", "crop", "clips"),
    "affectube.faces.qc": ("figures", "pretrain"),
    "affectube.faces.cli": ("decode", "faces"),
    "affectube.faces.sheet": ("decode", "faces", "crop"),
}
PARAMS_NAMES = {"cfg", "pcfg", "dcfg", "ft"}  # names a params section (or the sections) goes by, besides {section}_cfg


def _params_gets(tree: ast.AST) -> list[str]:
    """``cfg.get("key", ...)`` calls on a params mapping: a default in code, or a key that may be missing."""
    return [f"{n.lineno}: {n.func.value.id}.get({n.args[0].value!r}, ...)" for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "get"
            and isinstance(n.func.value, ast.Name) and (n.func.value.id in PARAMS_NAMES or n.func.value.id.endswith("_cfg"))
            and n.args and isinstance(n.args[0], ast.Constant)]


def test_stages_read_their_params_through_config_sections():
    """One config path: each stage validates its sections and fills the schema defaults with
    ``config.sections(raw, *names)``, then indexes them (no ``cfg.get(key, default)``); the per-stage
    fillers it replaced are gone."""
    modules = _modules()
    assert _params_gets(ast.parse('faces_cfg.get("every_k", 2); cfg.get("data", {}); row.get("video_id")')) == [
        "1: faces_cfg.get('every_k', ...)", "1: cfg.get('data', ...)"]  # the scan sees them (and not other mappings)
    for name, wanted in STAGE_SECTIONS.items():
        tree = ast.parse(modules[name].read_text())
        calls = [tuple(a.value for a in n.args[1:]) for n in ast.walk(tree)
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "sections"]
        assert calls == [wanted], f"{name}: config.sections calls {calls}, expected one for {wanted}"
        assert not _params_gets(tree), f"{name}: params read with .get: {_params_gets(tree)}"
    defined = {n.name for p in modules.values() for n in ast.walk(ast.parse(p.read_text()))
               if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert not defined & {"resolve_section", "validate_sections"}

def test_training_and_prediction_processes_import_no_timm():
    """Every training/prediction process imports the models without timm (and so without
    torchvision: seconds per process): the ViT Block and DropPath are affectube's (models/block.py);
    only the ResNet-GRU baseline imports timm, lazily, when it is built."""
    import subprocess
    import sys

    code = ("import sys, contextlib, io; from affectube.cli import main\n"
            "import affectube.models, affectube.train.finetune, affectube.train.pretrain, affectube.predict, affectube.embed\n"
            "for stage in ('finetune', 'pretrain', 'predict', 'embed'):\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()): main([stage, '--help'])\n"
            "from affectube.models import create_encoder\n"
            "create_encoder('svfap', size='tiny', width=32, depth=2, input_size=16, num_frames=8, tubelet=2, patch=8, "
            "svfap_stages=[1, 1, 1], svfap_tokens=2, drop_path=0.1)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'timm', 'torchvision'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO / "workflow"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_affectube_predict_stays_callable_after_the_submodule_is_imported():
    """``affectube.predict(...)`` (README) works before and after ``import affectube.predict`` (which sets
    the package attribute to the module): the suite once failed on that order."""
    import affectube
    import affectube.predict as module

    assert affectube.predict is module and callable(affectube.predict)
    with pytest.raises(Exception) as err:
        affectube.predict([], model="/nonexistent/run")  # reaches predict(): a clear error, not 'module' not callable
    assert "not callable" not in str(err.value)
