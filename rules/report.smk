# Report: figures and the HTML/Markdown report, regenerated from saved predictions alone.


rule report:
    input:
        metrics=expand("results/evaluate/{exp}/metrics.json", exp=D.experiments),
        qc=expand("results/faces/{dataset}/qc.csv", dataset=D.datasets),
        pretrain="results/pretrain/summary.json",
    output:
        html="results/report/report.html",
        md="results/report/report.md",
    params:
        cfg=D.cfg("figures", "report"),
    log:
        "results/logs/report.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python -m affectube report --cfg {params.cfg:q} --results results --out-dir results/report > {log} 2>&1"
