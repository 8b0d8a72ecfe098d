"""Which figures a run has, decided from params alone (so Snakemake knows them at parse time).

The ``figures`` rule declares exactly the files :func:`figure_files` lists and the
``figures`` stage draws exactly the figures :func:`figure_plan` lists, from the same
params, so the two never disagree. Per experiment (with its overrides applied):

- ``{exp}/learning_curves``, ``{exp}/per_subject`` always;
- ``{exp}/confusion`` for a categorical task (``categorical`` or ``both``);
- ``{exp}/scatter`` and ``{exp}/traces`` for a continuous task (``continuous`` or ``both``);

and once per run ``pretrain_curve`` when some experiment starts from the pretrained
encoder, ``comparison`` when there are two or more experiments, and ``label_efficiency`` when a
grid entry varies ``finetune.label_fraction`` (:mod:`affectube.report.label_efficiency`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from affectube.config import apply_overrides, expand_experiments, sections
from affectube.errors import ConfigError

FIGURE_DIR = "results/report/figures"  # under the default results root (run.results)


def figure_dir(cfg: dict) -> str:
    """The run's figure directory: ``{run.results}/report/figures``."""
    from affectube.layout import results_root

    return f"{results_root(cfg)}/report/figures"

# kind -> (caption file in workflow/report/, snakemake report category)
KINDS: dict[str, str] = {
    "learning_curves": "Training",
    "per_subject": "Results",
    "confusion": "Results",
    "scatter": "Results",
    "traces": "Results",
    "pretrain_curve": "Pretraining",
    "comparison": "Comparison",
    "label_efficiency": "Comparison",
}


@dataclass(frozen=True)
class FigureSpec:
    kind: str
    exp: str | None = None

    @property
    def name(self) -> str:
        return f"{self.exp}/{self.kind}" if self.exp else self.kind


def experiment_finetune(cfg: dict, exp: str) -> dict:
    """The ``finetune`` section with experiment ``exp``'s overrides applied, filled with the schema's
    defaults (:func:`affectube.config.sections`; a missing section: all defaults)."""
    resolved = {"finetune": copy.deepcopy(cfg.get("finetune") or {}), "pretrain": {}}
    apply_overrides(resolved, expand_experiments(cfg.get("experiments")).get(exp, {}))
    return sections(resolved, "finetune", source=f"experiment {exp}")["finetune"]


def tasks(finetune: dict) -> set[str]:
    """The tasks of a filled ``finetune`` section (``both``: categorical and continuous)."""
    task = finetune["task"]
    return {"categorical", "continuous"} if task == "both" else {task}


def figure_plan(cfg: dict) -> list[FigureSpec]:
    """Every figure of a run, from the ``finetune``/``experiments``/``figures`` params."""
    experiments = list(expand_experiments(cfg.get("experiments")))  # grid entries expanded
    specs: list[FigureSpec] = []
    uses_pretrain = False
    for exp in experiments:
        ft = experiment_finetune(cfg, exp)
        uses_pretrain |= ft["init"] == "pretrained"
        specs += [FigureSpec("per_subject", exp), FigureSpec("learning_curves", exp)]
        if "categorical" in tasks(ft):
            specs.append(FigureSpec("confusion", exp))
        if "continuous" in tasks(ft):
            specs += [FigureSpec("scatter", exp), FigureSpec("traces", exp)]
    if uses_pretrain:
        specs.append(FigureSpec("pretrain_curve"))
    if len(experiments) > 1:
        specs.append(FigureSpec("comparison"))
    from affectube.report.label_efficiency import has_label_efficiency

    if has_label_efficiency(cfg):
        specs.append(FigureSpec("label_efficiency"))
    return specs


def figure_files(cfg: dict, fmt: str = "png", root: str = FIGURE_DIR) -> dict[str, str]:
    """Rule output name -> path of every figure in format ``fmt`` (names are identifiers)."""
    return {_ident(s.name, fmt): f"{root}/{s.name}.{fmt}" for s in figure_plan(cfg)}


def all_figure_files(cfg: dict, root: str | None = None) -> list[str]:
    formats = sections(cfg, "figures")["figures"]["formats"]
    return [p for fmt in formats for p in figure_files(cfg, fmt, root or figure_dir(cfg)).values()]


def uses_pretrain(cfg: dict) -> bool:
    return any(s.kind == "pretrain_curve" for s in figure_plan(cfg))


def _ident(name: str, fmt: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in f"{name}_{fmt}")


def report_outputs(cfg: dict, root: str | None = None) -> dict:
    """Rule outputs: PNGs flagged for ``snakemake --report`` with a caption per kind, other formats plain."""
    from snakemake.io import report  # only needed at Snakefile parse time

    root = root or figure_dir(cfg)
    formats = sections(cfg, "figures")["figures"]["formats"]
    out = {}
    for spec in figure_plan(cfg):
        for fmt in formats:
            path = f"{root}/{spec.name}.{fmt}"
            if fmt == "png":
                path = report(
                    path,
                    caption=f"../workflow/report/{spec.kind}.rst",
                    category=KINDS[spec.kind],
                    subcategory=spec.exp or "run",
                    labels={"figure": spec.kind, "experiment": spec.exp or "all"},
                )
            key = _ident(spec.name, fmt)
            if key in out:  # experiment names that differ only in punctuation (e.g. grid values a+b, a_b)
                raise ConfigError(f"params.yaml: experiments: figure {spec.name}.{fmt} and {out[key]} get the same rule output "
                                  f"name {key!r}: rename an experiment (or change a grid value)")
            out[key] = path
    out["index"] = f"{root}/index.json"
    return out


# ---------------------------------------------------------------- rule inputs (read off the Dag)


def _fold_files(dag, name: str) -> list[str]:
    return [f"{dag.results}/finetune/{e}/fold{k}/{name}" for e in dag.experiments for k in dag.exp_fold_ids(e)]


def figure_inputs(dag) -> dict:
    """Inputs of the ``figures`` rule: saved predictions, logs and folds only (never a model)."""
    out = {
        "folds": [f"{dag.results}/folds/{e}.json" for e in dag.experiments],
        "predictions": _fold_files(dag, "predictions.csv"),
        "logs": _fold_files(dag, "log.csv"),
    }
    if uses_pretrain(dag.config):
        out["pretrain_log"] = f"{dag.results}/pretrain/log.csv"
    return out


def report_inputs(dag) -> dict:
    """Inputs of the ``report`` rule: the figures, the evaluation, QC and pretraining summaries."""
    out = figure_inputs(dag)
    r = dag.results
    out["figures"] = f"{figure_dir(dag.config)}/index.json"
    out["evaluate"] = [f"{r}/evaluate/{e}/per_fold.csv" for e in dag.experiments]
    out["qc"] = [f"{r}/faces/{d}/qc.csv" for d in dag.datasets]
    out["qc_figures"] = [f"{r}/faces/{d}/{name}.png" for d in dag.datasets for name in ("qc", "contact_sheet")]
    out["manifest"] = f"{r}/manifests/{dag.config['data']['finetune']}.csv"
    if uses_pretrain(dag.config):
        out["pretrain_summary"] = f"{r}/pretrain/summary.json"
        out["reconstruction"] = f"{r}/pretrain/reconstruction.png"
    return out
