"""Where a run's files live and which datasets it uses, from its params alone.

Imported by the DAG (:mod:`affectube.dag`), the report and dvc.yaml generation; it imports
nothing beyond the standard library (and :mod:`affectube.config`, yaml, for the experiments), so the
report's environment needs no video packages.
"""

from __future__ import annotations

RESULTS = "results"  # the schema's default of run.results


def results_root(config: dict) -> str:
    """The run's results root (``run.results``): every stage's outputs, logs and report."""
    root = str((config.get("run") or {}).get("results") or RESULTS).rstrip("/")
    return root or RESULTS


def datasets_of(config: dict) -> list[str]:
    """The datasets a run uses: ``data.pretrain``, ``data.finetune``, then those other experiments fine-tune
    (``finetune.dataset``: the earlier stages of cross-dataset chains, :mod:`affectube.lineage`), each once."""
    data = config.get("data") or {}
    names = [*data.get("pretrain", []), *([data["finetune"]] if data.get("finetune") else [])]
    names += [(config.get("finetune") or {}).get("dataset")]
    if config.get("experiments"):
        from affectube.config import expand_experiments  # yaml only; the DAG validates the names (lineage.experiment_dataset)

        names += [o.get("finetune.dataset") for o in expand_experiments(config["experiments"]).values()]
    return list(dict.fromkeys(str(n) for n in names if n))
