# Evaluate: per-fold predictions -> metrics per fold, per subject and pooled (from saved predictions alone).


rule evaluate:
    input:
        folds=f"{R}/folds/{{exp}}.json",
        predictions=D.fold_predictions,
    output:
        metrics=f"{R}/evaluate/{{exp}}/metrics.json",
        per_fold=f"{R}/evaluate/{{exp}}/per_fold.csv",
        per_subject=f"{R}/evaluate/{{exp}}/per_subject.csv",
    params:
        root=lambda w: R,  # run.results, the results root of this run
        cfg=D.cfg("evaluate"),
    log:
        f"{R}/logs/evaluate/{{exp}}.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python -m affectube evaluate --cfg {params.cfg:q} --folds {input.folds} --predictions {input.predictions}"
        " --out-dir {params.root}/evaluate/{wildcards.exp} > {log} 2>&1"
