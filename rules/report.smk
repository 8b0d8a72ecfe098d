# Report: figures, then the HTML/Markdown report, regenerated from saved predictions, metrics and
# logs alone (never a model). Two rules, so a change of a `figures` param re-runs these two only.
from affectube.report import plan as report_plan


rule figures:
    input:
        **report_plan.figure_inputs(D),
    output:
        **report_plan.report_outputs(config),
    params:
        cfg=D.cfg("figures", "evaluate", "finetune", "experiments", "report"),
    log:
        "results/logs/figures.log",
    benchmark:
        "results/benchmarks/figures.tsv"
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        "../envs/report.yaml"
    shell:
        "python -m affectube figures --cfg {params.cfg:q} --results results --out-dir results/report/figures > {log} 2>&1"


rule report:
    input:
        **report_plan.report_inputs(D),
    output:
        html=report("results/report/report.html", caption="../workflow/report/report.rst", category="Report"),
        md="results/report/report.md",
        comparison="results/report/comparison.csv",
        summary="results/report/summary.json",
    params:
        cfg=D.cfg(*config),
    log:
        "results/logs/report.log",
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        "../envs/report.yaml"
    shell:
        "python -m affectube report --cfg {params.cfg:q} --results results --out-dir results/report > {log} 2>&1"
