"""Generate ``dvc.yaml`` from the Snakemake DAG (CLI ``affectube dvc-yaml``).

Snakemake owns the DAG; DVC is a second front end to it. One DVC stage per rule:

- ``deps``: the union of the input files of the rule's jobs (plus the manifest of a job that
  gets its manifest row as ``params.row``: a relabelled video re-runs the clips stage);
  With ``data.shard_size`` set, the videos (files no rule writes under a dataset's ``root``) and the shard
  rows files that stand for them in the DAG (``results/shards/<dataset>/``) stand as their dataset's root
  folder, and faces/clips outs are the shard indexes: dvc.yaml grows with the number of shards, not of videos;
- ``params``: the params.yaml sections named by the top-level keys of the JSON the
  rule passes as ``params.cfg`` (the convention of :mod:`affectube.dag`;
  ``experiment`` stands for the ``experiments`` section);
- ``outs`` / ``metrics`` / ``plots``: the union of the output files of its jobs, all with
  ``cache: false`` and ``persist: true``: DVC never copies, checks out or deletes
  results, so file mtimes stay what Snakemake wrote (no ``snakemake --touch`` needed)
  and Snakemake alone decides which jobs of a stage to (re)run. ``dvc.lock`` still
  records the hash of every dependency, parameter and output;
- ``cmd``: ``snakemake --cores all --until <rule>``: Snakemake runs that rule's jobs of
  the default target's DAG (and upstream jobs only if it finds them out of date, normally
  none because DVC runs the stages in order). The command stays short whatever the number
  of videos (explicit file targets would exceed the 128 KiB limit of one shell argument on
  large datasets, and Snakemake 9.27 stops with "Out of jobs ready" when explicit file
  targets are combined with ``--until``);
- no ``always_changed``: DVC skips a stage whose deps, params and outs are unchanged, so
  after a run ``dvc status`` is clean, and a change re-runs the changed stage and the stages
  below it (each then asks Snakemake, which runs only the jobs it finds out of date).
  DVC decides by content, Snakemake by modification times (and, for inputs under
  ``--max-checksum-file-size``, 1 MB by default, by checksum): if a stage rewrites a large
  file with identical content, DVC skips the stages below it and ``snakemake -n`` lists their
  jobs as out of date although their result would be the same.

The jobs come from Snakemake's Python API (the same DAG ``snakemake -n`` prints).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import fnmatch
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from affectube.errors import ConfigError, UserError

HEADER = (
    "# Generated from the Snakemake DAG by `python -m affectube dvc-yaml`: do not edit by hand.\n"
    "# One stage per Snakemake rule; every stage runs Snakemake. Results are not cached by DVC\n"
    "# (cache: false, persist: true), so `dvc repro` never rewrites or reorders what Snakemake wrote,\n"
    "# DVC skips unchanged stages; a stage it runs asks Snakemake, which runs only what is out of date.\n"
)

# cfg JSON keys that are not params.yaml sections -> the section they stand for
CFG_KEY_SECTIONS = {"experiment": "experiments"}

# output path pattern under the run's results root (run.results) -> how DVC declares it
# (first match wins; default: outs)
OUTPUT_KINDS: list[tuple[str, str, dict]] = [
    ("evaluate/*/metrics.json", "metrics", {}),
    ("finetune/*/fold*/log.csv", "plots", {"x": "epoch"}),  # contract: epoch, train_loss, val_loss, ...
    ("pretrain/log.csv", "plots", {"x": "step", "y": "loss"}),  # one row per optimizer step
]


@dataclass
class Stage:
    rule: str
    deps: set[str] = field(default_factory=set)
    outs: set[str] = field(default_factory=set)
    params: set[str] = field(default_factory=set)
    upstream: set[str] = field(default_factory=set)
    order: int = 0


def collect_stages(snakefile: str | Path = "Snakefile", workdir: str | Path = ".",
                   config_args: list[str] | None = None) -> list[Stage]:
    """Stages (one per rule that has outputs) in topological order, read off the Snakemake DAG
    of the default target (the one `snakemake` and each stage's `--until` run)."""
    jobs, rule_names = _dag_jobs(Path(snakefile), Path(workdir), config_args or [])
    sections = _params_sections(Path(workdir))
    stages: dict[str, Stage] = {}
    producer: dict[str, str] = {}
    for job in jobs:
        if not list(job.output):
            continue  # target-only rules such as `all`
        st = stages.setdefault(job.rule.name, Stage(job.rule.name))
        st.outs.update(str(f) for f in job.output)
        st.deps.update(str(f) for f in job.input)
        st.deps.update(_row_deps(job))
        st.params.update(_cfg_sections(job, sections))
        for f in job.output:
            producer[str(f)] = job.rule.name
    rule_order = {name: i for i, name in enumerate(rule_names)}
    roots = _sharded_roots(jobs)
    rows_files = _rows_file_roots(jobs) if roots else {}
    for st in stages.values():
        st.deps -= st.outs
        if roots:
            st.deps = {_collapse(d, roots, rows_files) if d not in producer else d for d in st.deps}
        st.upstream = {producer[d] for d in st.deps if d in producer} - {st.rule}
        st.order = rule_order[st.rule]
    return _toposort(stages)


def _row_deps(job) -> list[str]:
    """A job that gets its video's manifest row as ``params.row`` (rule clips) depends on that
    manifest's content: Snakemake sees a changed row as a changed param; DVC needs the file."""
    if "row" not in job.params.keys() or "dataset" not in job.wildcards.keys():
        return []
    from affectube.layout import results_root

    return [f"{results_root(job.rule.workflow.config)}/manifests/{job.wildcards.dataset}.csv"]


def _sharded_roots(jobs) -> list[str]:
    """With ``data.shard_size`` set: the dataset root folders (a stage depends on a folder, not on each
    video in it, so dvc.yaml lists shards, not videos, and adding a video to a folder needs no regeneration)."""
    for job in jobs:
        config = job.rule.workflow.config
        if not (config.get("data") or {}).get("shard_size"):
            return []
        return sorted({os.path.normpath(spec["root"]) for spec in config["data"]["datasets"].values()}, key=len, reverse=True)
    return []


def _rows_file_roots(jobs) -> dict[str, str]:
    """Sharded: ``results/shards/<dataset>/`` -> the dataset's root folder. The shard rows files stand for
    the dataset's videos in the DAG (they hold each video's size and mtime, :meth:`affectube.dag.Dag.shard_rows_file`),
    but Snakemake writes them when it plans: for DVC, the stage depends on the dataset's folder, whose
    content DVC hashes (a new or changed video changes it)."""
    from affectube.data.adapters import get_adapter
    from affectube.layout import results_root

    for job in jobs:
        config = job.rule.workflow.config
        results = os.path.normpath(results_root(config))
        return {os.path.join(results, "shards", name): os.path.normpath(spec["root"])
                for name, spec in config["data"]["datasets"].items()
                if not getattr(get_adapter(spec["adapter"]), "generated", False)}  # the demo's videos: a rule's outs
    return {}


def _collapse(path: str, roots: list[str], rows_files: dict[str, str] | None = None) -> str:
    """``path`` (a file no rule writes) under one of ``roots``: that root; a shard rows file: its dataset's root
    (``rows_files``); else ``path``."""
    norm = os.path.normpath(path)
    for prefix, root in (rows_files or {}).items():
        if norm.startswith(prefix + os.sep):
            return root
    for root in roots:
        if norm.startswith(root + os.sep):
            return root
    return path


def render(stages: list[Stage]) -> str:
    """dvc.yaml text for ``stages`` (deterministic: sorted paths, topological stage order)."""
    doc: dict = {"stages": {}}
    for st in stages:
        entry: dict = {"cmd": f"snakemake --cores all --until {st.rule}"}
        if st.deps:
            entry["deps"] = sorted(st.deps)
        if st.params:
            entry["params"] = _FlowList(sorted(st.params))
        for kind, items in _classify(st.outs).items():
            entry[kind] = items
        doc["stages"][st.rule] = entry
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)
    return HEADER + body


def generate(snakefile: str | Path = "Snakefile", workdir: str | Path = ".", config_args: list[str] | None = None) -> str:
    """dvc.yaml text for the DAG of the Snakefile's default target."""
    return render(collect_stages(snakefile, workdir, config_args))


# ------------------------------------------------------------------------- CLI
DOCS = "docs/setup.md"  # holds the params-section -> stages table between these markers
TABLE_START, TABLE_END = "<!-- params-table: generated by `python -m affectube dvc-yaml` -->", "<!-- /params-table -->"


def params_table(stages: list[Stage], sections: list[str]) -> str:
    """Markdown: each params.yaml section (in file order) and the stages (rules) that depend on it."""
    users: dict[str, list[str]] = {sec: [] for sec in sections}
    for st in stages:
        for section in st.params:
            users.setdefault(section, []).append(st.rule)
    rows = ["| params.yaml section | stages (Snakemake rules) that depend on it |", "|---|---|"]
    rows += [f"| `{sec}` | {', '.join(f'`{r}`' for r in rules) or '(none)'} |" for sec, rules in users.items()]
    return "\n".join(rows) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--snakefile", default="Snakefile", help="Snakefile (default: Snakefile)")
    parser.add_argument("--workdir", default=".", help="workflow directory (default: .)")
    parser.add_argument("--out", default="dvc.yaml", help="where to write (default: dvc.yaml; '-' = stdout)")
    parser.add_argument("--check", action="store_true",
                        help=f"write nothing; exit 1 if --out (or the params table in {DOCS}) differs from the DAG")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE", help="Snakemake --config override")


def run(args: argparse.Namespace) -> int:
    stages = collect_stages(args.snakefile, args.workdir, args.config)
    text = render(stages)
    if args.out == "-":
        print(text, end="")
        return 0
    wanted = {Path(args.workdir) / args.out: text}
    docs = Path(args.workdir) / DOCS
    if docs.exists() and TABLE_START in docs.read_text():
        wanted[docs] = _with_table(docs, params_table(stages, _params_sections(Path(args.workdir))))
    if args.check:
        stale = 0
        for path, new in wanted.items():
            current = path.read_text() if path.exists() else ""
            if current == new:
                print(f"{path}: up to date with the Snakemake DAG")
                continue
            stale += 1
            diff = difflib.unified_diff(current.splitlines(True), new.splitlines(True), str(path), "generated", n=1)
            print("".join(diff)[:4000], end="")
            print(f"{path}: differs from the Snakemake DAG; regenerate it with `python -m affectube dvc-yaml`")
        return 1 if stale else 0
    from affectube.io import write_text

    for path, new in wanted.items():
        if not path.exists() or path.read_text() != new:
            write_text(path, new)
        print(f"{path}: {new.count(chr(10))} lines")
    return 0


def _with_table(docs: Path, table: str) -> str:
    text = docs.read_text()
    head, rest = text.split(TABLE_START, 1)
    if TABLE_END not in rest:
        raise UserError(f"{docs}: {TABLE_START} without {TABLE_END}")
    tail = rest.split(TABLE_END, 1)[1]
    return f"{head}{TABLE_START}\n{table}{TABLE_END}{tail}"


# ------------------------------------------------------------------- helpers
def _dag_jobs(snakefile: Path, workdir: Path, config_args: list[str]) -> tuple[list, list[str]]:
    """All jobs of the default target's DAG, as if every output were missing, and the rule names
    in definition order (Snakefile includes)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

    if not (workdir / snakefile).exists() and not snakefile.exists():
        raise UserError(f"{workdir / snakefile}: no such Snakefile")
    cwd = os.getcwd()
    try:
        with contextlib.redirect_stdout(io.StringIO()), SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
            wf = api.workflow(
                resource_settings=ResourceSettings(cores=1),
                config_settings=ConfigSettings(config=_parse_config_args(config_args)),
                snakefile=(workdir / snakefile).resolve() if not snakefile.is_absolute() else snakefile,
                workdir=workdir.resolve(),
            )
            wf.dag(DAGSettings(forceall=True))
            workflow = wf._workflow  # the DAG object is not part of the public API
            workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
            workflow._build_dag()
            return list(workflow.dag.jobs), [rule.name for rule in workflow.rules]
    finally:
        os.chdir(cwd)


def _parse_config_args(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--config {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def _params_sections(workdir: Path) -> list[str]:
    """Top-level sections of params.yaml, in file order."""
    path = workdir / "params.yaml"
    return list((yaml.safe_load(path.read_text()) or {}).keys()) if path.exists() else []


def _cfg_sections(job, sections: list[str]) -> set[str]:
    """params.yaml sections named by the rule's ``params.cfg`` JSON."""
    cfg = getattr(job.params, "cfg", None)
    if cfg is None:
        return set()
    try:
        keys = json.loads(cfg).keys()
    except (json.JSONDecodeError, AttributeError):
        raise ConfigError(f"rule {job.rule.name}: params.cfg is not a JSON object of params.yaml sections") from None
    out = set()
    for key in keys:
        section = CFG_KEY_SECTIONS.get(key, key)
        if section not in sections:
            raise ConfigError(f"rule {job.rule.name}: params.cfg key {key!r} is not a params.yaml section")
        out.add(section)
    return out


def _toposort(stages: dict[str, Stage]) -> list[Stage]:
    done: list[Stage] = []
    placed: set[str] = set()
    pending = dict(stages)
    while pending:
        ready = sorted((s for s in pending.values() if s.upstream <= placed), key=lambda s: (s.order, s.rule))
        if not ready:
            raise UserError(f"cycle between rules {', '.join(sorted(pending))}")
        first = ready[0]
        done.append(first)
        placed.add(first.rule)
        del pending[first.rule]
    return done


def _classify(outs: set[str]) -> dict[str, list]:
    groups: dict[str, list] = {"outs": [], "metrics": [], "plots": []}
    for path in sorted(outs):
        kind, extra = "outs", {}
        for pattern, k, ex in OUTPUT_KINDS:
            if fnmatch.fnmatch(path, f"*/{pattern}"):
                kind, extra = k, ex
                break
        groups[kind].append({path: _Flow({"cache": False, "persist": True, **extra})})
    return {k: v for k, v in groups.items() if v}


class _Flow(dict):
    """An out's options, written on the out's line: ``- path: {cache: false, persist: true}``."""


class _FlowList(list):
    """A short list written on one line (params sections)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Flow, lambda d, data: d.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True))
_Dumper.add_representer(_FlowList, lambda d, data: d.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True))
