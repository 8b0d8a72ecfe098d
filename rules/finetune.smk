# Finetune: subject-disjoint folds, one job per (experiment, fold), so folds run in
# parallel on a cluster and a failed fold re-runs alone. Each experiment fine-tunes its
# finetune.dataset (default data.finetune); finetune.init: experiment:NAME[/foldK] makes a
# fold wait for NAME's fold model (chains, also across datasets: affectube.lineage).


wildcard_constraints:
    fold=r"\d+",


rule folds:
    input:
        manifest=lambda w: f"{R}/manifests/{D.exp_dataset(w.exp)}.csv",  # finetune.dataset, else data.finetune
    output:
        folds=f"{R}/folds/{{exp}}.json",
    params:
        cfg=lambda w: D.exp_cfg(w.exp, "finetune"),
    log:
        f"{R}/logs/folds/{{exp}}.log",
    conda:
        "../envs/torch.yaml"
    shell:
        "python -m affectube folds --cfg {params.cfg:q} --manifest {input.manifest} --out {output.folds} > {log} 2>&1"


rule finetune:
    input:
        folds=f"{R}/folds/{{exp}}.json",
        stores=lambda w: D.stores(D.exp_dataset(w.exp)),
        encoder=D.pretrained_encoder,
    output:
        predictions=f"{R}/finetune/{{exp}}/fold{{fold}}/predictions.csv",
        frames=f"{R}/finetune/{{exp}}/fold{{fold}}/predictions_frames.csv",
        metrics=f"{R}/finetune/{{exp}}/fold{{fold}}/metrics.json",
        log_csv=f"{R}/finetune/{{exp}}/fold{{fold}}/log.csv",
        model=f"{R}/finetune/{{exp}}/fold{{fold}}/model.safetensors",
    params:
        root=lambda w: R,  # run.results, the results root of this run
        cfg=lambda w: D.exp_cfg(w.exp, "pretrain", "finetune", "evaluate"),
        stores_dir=lambda w, input: os.path.dirname(input.stores[0]),
    log:
        f"{R}/logs/finetune/{{exp}}/fold{{fold}}.log",
    benchmark:
        f"{R}/benchmarks/finetune/{{exp}}/fold{{fold}}.tsv"
    # finetune.threads when set (a tiny model: 1 thread a fold, folds side by side; issue 20), else 8;
    # capped by --cores locally; workflow.cores is undefined under --profile slurm
    threads: lambda w: int(D.experiment_config(w.exp)["finetune"]["threads"]) or 8
    resources:
        # the experiment's finetune.gpus/mem_gb/time_minutes; attempts 2, 3 (retries) get more memory and time
        gpu=lambda w: D.experiment_config(w.exp)["finetune"]["gpus"],
        mem_mb=lambda w, attempt: int(D.experiment_config(w.exp)["finetune"]["mem_gb"] * 1000) * attempt,
        runtime=lambda w, attempt: D.experiment_config(w.exp)["finetune"]["time_minutes"] * attempt,
    conda:
        "../envs/torch.yaml"
    shell:
        # exec: a scheduler's SIGTERM reaches the trainer (checkpoint + exit 75, resumed on retry), not a shell;
        # finetune.gpus > 1: the stage re-launches itself under torchrun (DDP)
        "exec python -m affectube finetune --cfg {params.cfg:q} --folds {input.folds} --fold {wildcards.fold}"
        " --stores-dir {params.stores_dir} --encoder '{input.encoder}' --threads {threads}"
        " --out-dir {params.root}/finetune/{wildcards.exp}/fold{wildcards.fold} > {log} 2>&1"
