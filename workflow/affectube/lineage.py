"""Where an experiment's encoder starts: ``finetune.init`` resolved into a chain.

``finetune.init`` is ``pretrained`` (this run's pretraining), ``scratch``, ``experiment:NAME``
(fold k starts from experiment NAME's fine-tuned fold k encoder: same clip stores, same folds, so
fold k's test subjects were never trained on) or a checkpoint path (docs/checkpoints.md).
:func:`lineage` follows ``experiment:`` links back to the root, refusing unknown names and cycles,
e.g. ``["pretraining", "experiment supervised", "experiment chained"]``.
"""

from __future__ import annotations

import copy

from affectube.errors import ConfigError

PREFIX = "experiment:"


def parse_init(init: str) -> tuple[str, str]:
    """``(kind, value)``: kind is pretrained | scratch | experiment | checkpoint."""
    if init in ("pretrained", "scratch"):
        return init, init
    if init.startswith(PREFIX):
        return "experiment", init[len(PREFIX):].strip()
    return "checkpoint", init


def experiment_init(cfg: dict, exp: str) -> str:
    from affectube.config import apply_overrides, expand_experiments

    overrides = expand_experiments(cfg.get("experiments"))
    if exp not in overrides:
        raise ConfigError(f"params.yaml: finetune.init names experiment {exp!r}, which is not in experiments "
                          f"({', '.join(overrides)})")
    resolved = {"finetune": copy.deepcopy(cfg.get("finetune", {})), "pretrain": {}}
    apply_overrides(resolved, overrides[exp])
    return str(resolved["finetune"].get("init", "pretrained"))


def lineage(cfg: dict, exp: str) -> list[str]:
    """The chain of experiment ``exp``'s encoder, root first."""
    chain, seen, current = [f"experiment {exp}"], [exp], exp
    while True:
        kind, value = parse_init(experiment_init(cfg, current))
        if kind != "experiment":
            root = {"pretrained": "pretraining", "scratch": "random init"}.get(kind, f"checkpoint {value}")
            return [root, *reversed(chain)]
        if value in seen:
            raise ConfigError(f"params.yaml: finetune.init chain of experiment {exp!r} loops: "
                              + " <- ".join([*seen, value]))
        seen.append(value)
        chain.append(f"experiment {value}")
        current = value
