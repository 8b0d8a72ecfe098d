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
    ``.get(key, literal)`` on a params section (``{section}_cfg``, ``pcfg``/``dcfg``/``rcfg``/``fig_cfg``,
    ``cfg["report"]``, ``cfg.get("report", {})``, ...: :func:`_section_of`) in the package must repeat the
    schema's default. (``ft.get`` in ``supervised.build_model`` keeps the values models saved before a key
    existed were trained with, on purpose.)"""
    from affectube.config import load_schema

    props = load_schema()["properties"]
    drift, seen = [], 0
    for name, path in _modules().items():
        for line, section, key, literal in _section_defaults(ast.parse(path.read_text()), props):
            schema = props[section]["properties"][key]
            if "default" not in schema or (name, section) == ("affectube.train.supervised", "finetune"):
                continue
            seen += 1
            if schema["default"] != literal:
                drift.append(f"{name}:{line}: {section}.{key} {literal!r} (schema {schema['default']!r})")
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
    "affectube.faces.pipeline": ("decode", "faces"),  # track_video: also called with partial sections (tests, predict)
    "affectube.faces.detect": ("faces",),  # build_detector
    "affectube.demo": ("demo",),  # run() and params() (plan/outputs/generate: the demo dataset's spec over the demo section)
}
# the report and figures stages fill through report/params.py (report, evaluate, figures always; finetune and
# pretrain when given: results of runs without them keep saying '?'); these modules index what it filled
REPORT_MODULES = ("build", "checks", "compare", "figures", "plan", "style", "params", "pretext", "results", "document")
FACES_MODULES = ("pipeline", "detect", "adaptive", "tracking", "cli", "sheet", "qc", "backends.scrfd", "backends.mtcnn")
PARAMS_NAMES = {"cfg", "pcfg", "dcfg", "ft"}  # names a params section (or the sections) goes by, besides {section}_cfg


def _section_of(node: ast.AST, sections: set[str]) -> str | None:
    """The params section an expression stands for: ``report_cfg``/``rcfg``/``fig_cfg``/``pcfg``/``dcfg``,
    ``cfg["report"]``, ``cfg.get("report", {})``, ``(cfg.get("report") or {})``, ``self.fig_cfg``; else None."""
    aliases = {"rcfg": "report", "fig_cfg": "figures", "figures_cfg": "figures", "pcfg": "pretrain", "dcfg": "data", "ft": "finetune"}
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
        return _section_of(node.values[0], sections)
    if isinstance(node, (ast.Name, ast.Attribute)):
        name = node.id if isinstance(node, ast.Name) else node.attr
        section = aliases.get(name, name.removesuffix("_cfg") if name.endswith("_cfg") else None)
        return section if section in sections else None
    key = None
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        key = node.slice.value
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
          and node.args and isinstance(node.args[0], ast.Constant)):
        key = node.args[0].value
    return key if key in sections else None


def _section_defaults(tree: ast.AST, props: dict) -> list[tuple[int, str, str, object]]:
    """``(line, section, key, default)`` of every ``<section>.get("key", default)`` of a schema key: a default in code."""
    out = []
    for n in ast.walk(tree):
        if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "get" and len(n.args) == 2
                and isinstance(n.args[0], ast.Constant)):
            section = _section_of(n.func.value, set(props))
            if section and n.args[0].value in props[section].get("properties", {}):
                default = n.args[1].value if isinstance(n.args[1], ast.Constant) else ast.unparse(n.args[1])
                out.append((n.lineno, section, n.args[0].value, default))
    return out


def test_report_and_faces_modules_keep_no_defaults_in_code():
    """The report/figures and faces stages index sections filled by config.sections: no ``.get(key, default)``
    of a schema key on a params section, however it is reached (``cfg.get("report", {}).get("alpha", 0.05)``)."""
    from affectube.config import load_schema

    props = load_schema()["properties"]
    found = _section_defaults(ast.parse('cfg.get("report", {}).get("alpha", 0.05); (run.cfg.get("report") or {}).get("ci_level", 0.95)\n'
                                        'self.fig_cfg.get("dpi", 120); rcfg.get("title", "t"); row.get("alpha", 1); '
                                        'cfg.get("data", {}).get("finetune")'), props)
    assert found == [(1, "report", "alpha", 0.05), (1, "report", "ci_level", 0.95), (2, "figures", "dpi", 120),
                     (2, "report", "title", "t")]  # the scan sees them (and not other mappings, nor a missing section's read)
    modules = _modules()
    names = [f"affectube.report.{m}" for m in REPORT_MODULES] + [f"affectube.faces.{m}" for m in FACES_MODULES]
    bad = {name: hits for name in names if (hits := _section_defaults(ast.parse(modules[name].read_text()), props))}
    assert not bad, f"defaults in code (index a section filled by config.sections instead): {bad}"
    for name in ("build", "figures", "checks"):  # the stage entry points fill through report_params
        assert "report_params(" in modules[f"affectube.report.{name}"].read_text(), name
    params = ast.parse(modules["affectube.report.params"].read_text())
    assert any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "sections" for n in ast.walk(params))


def test_report_with_partial_params_writes_what_the_pipeline_params_write(tmp_path):
    """The report stage run with only the non-default keys of its sections writes what it writes with the
    sections as the pipeline passes them (validated, defaults filled); a bad value fails naming the key."""
    import report_synth as R

    from affectube.config import sections
    from affectube.errors import ConfigError
    from affectube.report.build import build

    R.write_run(tmp_path, experiments=["videomae"], low_coverage=False)
    partial = R.params_cfg(experiments={"videomae": {}}, formats=["png"], dpi=50)
    partial["report"] = _non_default("report", partial["report"])
    partial["figures"] = _non_default("figures", partial["figures"])
    full = {**partial, **sections(partial, "report", "evaluate", "figures", "finetune")}
    assert full != partial and len(partial["report"]) < len(full["report"])
    outs = {}
    for name, cfg in (("partial", partial), ("full", full)):
        found = build(cfg, tmp_path / "results", tmp_path / name)
        outs[name] = (found, (tmp_path / name / "summary.json").read_text(), (tmp_path / name / "comparison.csv").read_text(),
                      (tmp_path / name / "report.md").read_text())
    assert outs["partial"] == outs["full"]
    assert "coverage_threshold: 0.8" in outs["partial"][3]  # the stated params carry the defaults
    with pytest.raises(ConfigError, match="report: alpha:"):
        build({**partial, "report": {"alpha": 2}}, tmp_path / "results", tmp_path / "bad")


def test_track_video_with_partial_sections_tracks_as_with_the_pipeline_sections(realdata, insightface_model):
    """``track_video`` fills partial decode/faces sections (tests, benchmarks) with the schema's defaults: the
    same tracks, and the same recorded params, as the full sections the faces stage passes."""
    from affectube.config import sections
    from affectube.faces.detect import build_detector
    from affectube.faces.pipeline import track_video

    clip = realdata / "videos/grid/bbaf2n.mpg"
    partial = {"faces": {"backend": "insightface", "model": str(insightface_model)}, "decode": {}}
    full = sections(partial, "decode", "faces")
    assert full["faces"]["adaptive_max_size"] == 640 and full["faces"]["every_k"] == 5  # filled from the schema
    a = track_video(clip, partial["decode"], partial["faces"], build_detector(partial["faces"]))
    b = track_video(clip, full["decode"], full["faces"], build_detector(full["faces"]))
    assert len(a) > 50 and np.array_equal(a.status, b.status) and np.allclose(a.boxes, b.boxes, equal_nan=True)
    assert a.meta["faces"] == b.meta["faces"] == full["faces"] and a.meta["decode"] == full["decode"]
    assert a.meta["adaptive"]["enabled"] == b.meta["adaptive"]["enabled"]


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
