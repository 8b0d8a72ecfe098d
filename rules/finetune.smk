# Finetune: subject-disjoint folds, one job per (experiment, fold), so folds run in
# parallel on a cluster and a failed fold re-runs alone.


wildcard_constraints:
    fold=r"\d+",


rule folds:
    input:
        manifest=f"{R}/manifests/{config['data']['finetune']}.csv",
    output:
        folds=R + "/folds/{exp}.json",
    params:
        cfg=lambda w: D.exp_cfg(w.exp, "finetune"),
    log:
        R + "/logs/folds/{exp}.log",
    conda:
        "../envs/torch.yaml"
    shell:
        "python -m affectube folds --cfg {params.cfg:q} --manifest {input.manifest} --out {output.folds} > {log} 2>&1"


rule finetune:
    input:
        folds=R + "/folds/{exp}.json",
        stores=D.stores(config["data"]["finetune"]),
        encoder=D.pretrained_encoder,
    output:
        predictions=R + "/finetune/{exp}/fold{fold}/predictions.csv",
        frames=R + "/finetune/{exp}/fold{fold}/predictions_frames.csv",
        metrics=R + "/finetune/{exp}/fold{fold}/metrics.json",
        log_csv=R + "/finetune/{exp}/fold{fold}/log.csv",
        model=R + "/finetune/{exp}/fold{fold}/model.safetensors",
    params:
        cfg=lambda w: D.exp_cfg(w.exp, "pretrain", "finetune", "evaluate"),
        stores_dir=lambda w, input: os.path.dirname(input.stores[0]),
    log:
        R + "/logs/finetune/{exp}/fold{fold}.log",
    benchmark:
        R + "/benchmarks/finetune/{exp}/fold{fold}.tsv"
    threads: 8  # capped by --cores locally; workflow.cores is undefined under --profile slurm
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=lambda wc, attempt: 4 * 60 * attempt,
    conda:
        "../envs/torch.yaml"
    shell:
        # exec: a scheduler's SIGTERM reaches the trainer, not an intermediate shell
        "exec python -m affectube finetune --cfg {params.cfg:q} --folds {input.folds} --fold {wildcards.fold}"
        " --stores-dir {params.stores_dir} --encoder '{input.encoder}' --threads {threads}"
        " --out-dir {R}/finetune/{wildcards.exp}/fold{wildcards.fold} > {log} 2>&1"
