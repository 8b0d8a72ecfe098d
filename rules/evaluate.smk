# Evaluate: per-fold predictions -> metrics per fold, per subject and pooled (from saved predictions alone).


rule evaluate:
    input:
        folds=R + "/folds/{exp}.json",
        predictions=D.fold_predictions,
    output:
        metrics=R + "/evaluate/{exp}/metrics.json",
        per_fold=R + "/evaluate/{exp}/per_fold.csv",
        per_subject=R + "/evaluate/{exp}/per_subject.csv",
    params:
        cfg=D.cfg("evaluate"),
    log:
        R + "/logs/evaluate/{exp}.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python -m affectube evaluate --cfg {params.cfg:q} --folds {input.folds} --predictions {input.predictions}"
        " --out-dir {R}/evaluate/{wildcards.exp} > {log} 2>&1"
