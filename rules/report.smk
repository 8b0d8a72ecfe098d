# Report: figures, then the HTML/Markdown report, regenerated from saved predictions, metrics and
# logs alone (never a model). Two rules, so a change of a `figures` param re-runs these two only.
from affectube.report import plan as report_plan


rule figures:
    input:
        **report_plan.figure_inputs(D),
    output:
        **report_plan.report_outputs(config),
    params:
        root=lambda w: R,  # run.results, the results root of this run
        cfg=D.cfg("figures", "evaluate", "finetune", "experiments", "report"),
    log:
        f"{R}/logs/figures.log",
    benchmark:
        f"{R}/benchmarks/figures.tsv"
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        "../envs/report.yaml"
    shell:
        "python -m affectube figures --cfg {params.cfg:q} --results {params.root} --out-dir {params.root}/report/figures > {log} 2>&1"


rule report:
    input:
        **report_plan.report_inputs(D),
    output:
        html=report(f"{R}/report/report.html", caption="../workflow/report/report.rst", category="Report"),
        md=f"{R}/report/report.md",
        comparison=f"{R}/report/comparison.csv",
        summary=f"{R}/report/summary.json",
    params:
        root=lambda w: R,  # run.results, the results root of this run
        cfg=D.cfg(*config),
        sources=D.params_files(workflow),
    log:
        f"{R}/logs/report.log",
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        "../envs/report.yaml"
    shell:
        "python -m affectube report --cfg {params.cfg:q} --params-files {params.sources:q} --results {params.root} --out-dir {params.root}/report > {log} 2>&1"
