# Evaluate: per-fold predictions -> metrics per fold, per subject and pooled (from saved predictions alone).


rule evaluate:
    input:
        folds="results/folds/{exp}.json",
        predictions=D.fold_predictions,
    output:
        metrics="results/evaluate/{exp}/metrics.json",
        per_fold="results/evaluate/{exp}/per_fold.csv",
        per_subject="results/evaluate/{exp}/per_subject.csv",
    params:
        cfg=D.cfg("evaluate"),
    log:
        "results/logs/evaluate/{exp}.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python -m affectube evaluate --cfg {params.cfg:q} --folds {input.folds} --predictions {input.predictions}"
        " --out-dir results/evaluate/{wildcards.exp} > {log} 2>&1"
