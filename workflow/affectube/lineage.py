"""Where an experiment's encoder starts: ``finetune.init`` resolved into a chain.

``finetune.init`` is ``pretrained`` (this run's pretraining), ``scratch``, a checkpoint path
(docs/checkpoints.md), or another experiment of the run:

* ``experiment:NAME`` (both experiments on the same dataset): fold k starts from experiment NAME's
  fine-tuned fold k encoder. Same clip stores, same folds (refused otherwise), so fold k's test
  subjects were never trained on anywhere in the chain.
* ``experiment:NAME/foldK`` (NAME fine-tunes another dataset, ``finetune.dataset``): every fold
  starts from NAME's fold K model, trained on that dataset's fold K training subjects. The two
  datasets must share no subject and no video file (refused otherwise, naming them), so no test
  subject of this experiment was seen by NAME. Within one dataset a named fold is refused: fold K's
  model was trained on other folds' test subjects.

:func:`lineage` follows the links back to the root, refusing unknown names and cycles, e.g.
``["pretraining", "experiment supervised", "experiment chained"]``; a chain over several datasets
names each experiment's dataset (``experiment amigos on amigos_ds (fold 0)``).
:func:`source_model` is the file a fold starts from (the DAG's input of that fold's job).
"""

from __future__ import annotations

import copy
import re

from affectube.errors import ConfigError

PREFIX = "experiment:"
_FOLD = re.compile(r"^(?P<name>[^/]+)/fold(?P<fold>\d+)$")


def parse_init(init: str) -> tuple[str, str]:
    """``(kind, value)``: kind is pretrained | scratch | experiment | checkpoint."""
    if init in ("pretrained", "scratch"):
        return init, init
    if init.startswith(PREFIX):
        return "experiment", init[len(PREFIX):].strip()
    return "checkpoint", init


def parse_source(value: str) -> tuple[str, str | None]:
    """``NAME`` -> ``(NAME, None)``; ``NAME/foldK`` -> ``(NAME, "K")``."""
    m = _FOLD.match(value)
    return (m["name"], str(int(m["fold"]))) if m else (value, None)


def experiment_finetune(cfg: dict, exp: str) -> dict:
    """Experiment ``exp``'s ``finetune`` section (its overrides applied to the run's; defaults not filled)."""
    from affectube.config import apply_overrides, expand_experiments

    overrides = expand_experiments(cfg.get("experiments"))
    if exp not in overrides:
        raise ConfigError(f"params.yaml: finetune.init names experiment {exp!r}, which is not in experiments "
                          f"({', '.join(overrides)})")
    resolved = {"finetune": copy.deepcopy(cfg.get("finetune", {})), "pretrain": {}}
    apply_overrides(resolved, overrides[exp])
    return resolved["finetune"]


def experiment_init(cfg: dict, exp: str) -> str:
    return str(experiment_finetune(cfg, exp).get("init") or "pretrained")


def experiment_dataset(cfg: dict, exp: str) -> str:
    """The labelled dataset experiment ``exp`` fine-tunes and is tested on: ``finetune.dataset``, else ``data.finetune``."""
    data = cfg.get("data") or {}
    name = experiment_finetune(cfg, exp).get("dataset") or data.get("finetune")
    if name not in (data.get("datasets") or {}):
        raise ConfigError(f"params.yaml: experiment {exp!r} fine-tunes dataset {name!r} (finetune.dataset), which is not in "
                          f"data.datasets ({', '.join(data.get('datasets') or {})})")
    return str(name)


def chain_datasets(cfg: dict) -> list[str]:
    """The labelled datasets of all experiments (``data.finetune`` and any ``finetune.dataset``), each once."""
    from affectube.config import expand_experiments

    return list(dict.fromkeys(experiment_dataset(cfg, e) for e in expand_experiments(cfg.get("experiments"))))


def links(cfg: dict, exp: str) -> list[dict]:
    """The chain of experiment ``exp``'s encoder, root last: one ``{experiment, dataset, init, kind, source, fold}``
    per experiment (``source``/``fold``: the experiment it starts from and the fold named, if any)."""
    out: list[dict] = []
    seen, current = [exp], exp
    while True:
        init = experiment_init(cfg, current)
        kind, value = parse_init(init)
        source, fold = parse_source(value) if kind == "experiment" else (None, None)
        out.append({"experiment": current, "dataset": experiment_dataset(cfg, current), "init": init, "kind": kind,
                    "source": source, "fold": fold})
        if kind != "experiment":
            return out
        if source in seen:
            raise ConfigError(f"params.yaml: finetune.init chain of experiment {exp!r} loops: "
                              + " <- ".join([*seen, source]))
        seen.append(source)
        current = source


def lineage(cfg: dict, exp: str) -> list[str]:
    """The chain of experiment ``exp``'s encoder, root first."""
    chain = links(cfg, exp)
    several = len({link["dataset"] for link in chain}) > 1
    labels = []
    for i, link in enumerate(chain):
        label = f"experiment {link['experiment']}" + (f" on {link['dataset']}" if several else "")
        child = chain[i - 1] if i else None
        if child is not None and child["fold"] is not None:
            label += f" (fold {child['fold']})"
        labels.append(label)
    root = chain[-1]
    name = {"pretrained": "pretraining", "scratch": "random init"}.get(root["kind"], f"checkpoint {root['init']}")
    return [name, *reversed(labels)]


def source_model(dag, exp: str, fold: str) -> str:
    """The fine-tuned ``model.safetensors`` fold ``fold`` of experiment ``exp`` starts from (``finetune.init:
    experiment:...``), after the checks of the module doc. ``dag``: the run's :class:`affectube.dag.Dag`."""
    cfg = dag.config
    chain = links(cfg, exp)  # unknown names and loops are refused here, the whole chain at once
    source, named = chain[0]["source"], chain[0]["fold"]
    mine, theirs = experiment_dataset(cfg, exp), experiment_dataset(cfg, source)
    if mine == theirs:
        if named is not None:
            raise ConfigError(f"params.yaml: experiment {exp!r} starts from experiment:{source}/fold{named}, on the same "
                              f"dataset {mine!r}: that fold's model was trained on other folds' test subjects. Write "
                              f"experiment:{source} (fold k starts from {source}'s fold k)")
        if dag.exp_fold_ids(source) != dag.exp_fold_ids(exp):
            raise ConfigError(f"params.yaml: experiment {exp!r} starts from experiment {source!r}, whose folds "
                              "differ (set the same finetune.protocol and fold params in both)")
        _check_upstream(dag, chain, mine)
        return f"{dag.results}/finetune/{source}/fold{fold}/model.safetensors"
    folds = dag.exp_fold_ids(source)
    if named is None or named not in folds:
        what = "names no fold" if named is None else f"names fold {named}, which it does not have"
        raise ConfigError(f"params.yaml: experiment {exp!r} (dataset {mine!r}) starts from experiment {source!r}, which "
                          f"fine-tunes another dataset ({theirs!r}): finetune.init {what}; write "
                          f"experiment:{source}/foldK with K in {', '.join(folds)} (the model of that fold)")
    _check_upstream(dag, chain, mine)
    return f"{dag.results}/finetune/{source}/fold{named}/model.safetensors"


def _check_upstream(dag, chain: list[dict], mine: str) -> None:
    """Every experiment upstream of the chain's first change of dataset (that one included) trained on
    subjects outside fold k's: its dataset must be disjoint from ``mine`` (``mine`` itself never is)."""
    crossed = False
    for link in chain[1:]:
        crossed = crossed or link["dataset"] != mine
        if crossed:
            check_disjoint(dag, link["dataset"], mine)


def check_disjoint(dag, source: str, target: str) -> None:
    """Datasets ``source`` (trained on by an earlier stage) and ``target`` (tested on) share no subject and no
    video file: else no fold of ``target`` could claim its test subjects unseen."""
    a, b = dag.manifest(source).table, dag.manifest(target).table
    subjects = sorted(set(a["subject"].astype(str)) & set(b["subject"].astype(str)))
    videos = sorted(set(a["path"].astype(str)) & set(b["path"].astype(str)))
    if subjects or videos:
        what = (f"subject(s) {', '.join(subjects[:5])}" if subjects else "") + (" and " if subjects and videos else "") + \
               (f"video file(s) {', '.join(videos[:3])}" if videos else "")
        raise ConfigError(f"params.yaml: a chain fine-tunes dataset {source!r} and then tests on dataset {target!r}, "
                          f"which share {what}: the later stage's test subjects would have been trained on. Use "
                          "datasets of different people (if these ids name different people, give them distinct ids)")
