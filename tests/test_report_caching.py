"""Caching: a change of a `figures` param re-runs only the figure and report rules.

Statically, from the params every rule depends on as read off the real Snakemake DAG (the
same reading the dvc.yaml generator does). The real runs (Snakemake and `dvc repro` count the
jobs that run again after `figures.dpi` changes, and `snakemake --report` captions) are in
test_e2e_realdata.py, on the real-data pipeline run end to end.
"""

from __future__ import annotations

from jobs_util import FIGURE_RULES, job_stats, rules_run

# ---------------------------------------------------------------- static: who depends on `figures`


def test_only_figure_rules_read_figure_params(workflow_copy):
    from affectube.dvcgen import collect_stages

    wf = workflow_copy()
    stages = {s.rule: s for s in collect_stages(wf / "Snakefile", wf)}
    assert {"figures", "report"} <= set(stages)
    readers = {name for name, s in stages.items() if "figures" in s.params}
    assert readers <= FIGURE_RULES, readers
    assert "figures" in readers and "report" in readers
    # the figure and report rules read saved predictions/metrics/logs, never a model
    for name in ("figures", "report"):
        assert not [d for d in stages[name].deps if d.endswith((".safetensors", ".pt", ".pth", ".ckpt"))], name
    # and nothing upstream of them consumes what they write
    fig_outs = stages["figures"].outs | stages["report"].outs
    for name, s in stages.items():
        if name not in ("figures", "report"):
            assert not (s.deps & fig_outs), name


def test_job_stats_parser():
    text = """Job stats:
job         count
--------  -------
figures          1
report           1
total            2
"""
    assert job_stats(text) == {"figures": 1, "report": 1}
    assert rules_run("\nrule figures:\n    input: x\nlocalrule report:\n") == ["figures", "report"]
