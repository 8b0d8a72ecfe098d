# Pretrain: self-supervised masked video autoencoding (VideoMAE tube masking / SVFAP) on unlabelled clips.


rule pretrain:
    input:
        stores=D.pretrain_stores,
    output:
        encoder=f"{R}/pretrain/encoder.safetensors",
        log_csv=f"{R}/pretrain/log.csv",
        summary=f"{R}/pretrain/summary.json",
        recon=report(f"{R}/pretrain/reconstruction.png", caption="../workflow/report/reconstruction.rst", category="Pretraining"),
    params:
        root=lambda w: R,  # run.results, the results root of this run
        cfg=D.cfg("data", "pretrain"),
    log:
        f"{R}/logs/pretrain.log",
    benchmark:
        f"{R}/benchmarks/pretrain.tsv"
    # pretrain.threads when set (the demo's tiny ViT: 1; Snakemake sets OMP_NUM_THREADS to it), else 8;
    # capped by --cores locally; workflow.cores is undefined under --profile slurm
    threads: lambda w: int(config["pretrain"]["threads"]) or 8
    resources:
        gpu=config["pretrain"]["gpus"],
        nodes=1,  # several on a cluster: AFFECTUBE_PRETRAIN_NODES in slurm/profile.yaml
        mem_mb=lambda wc, attempt: 16000 * attempt,
        runtime=lambda wc, attempt: 24 * 60 * attempt,
    conda:
        "../envs/torch.yaml"
    shell:
        # exec: SLURM's SIGTERM reaches the trainer itself (checkpoint + exit 75, resumed on retry);
        # launch: torchrun over the job's nodes/GPUs (affectube.train.launch)
        "exec python -m affectube launch --gpus {resources.gpu} --nodes {resources.nodes} --"
        " pretrain --cfg {params.cfg:q} --stores {input.stores} --out-dir {params.root}/pretrain > {log} 2>&1"


# An experiment that overrides pretrain.* keys (e.g. pretrain.method: pretexts compared as experiments) gets a
# pretraining of its own, named by those overrides (pretrain_exp/method=dino; dag.Dag.pretrain_label), on the same
# stores; experiments with the same overrides share it.
rule pretrain_experiment:
    input:
        stores=D.pretrain_stores,
    output:
        encoder=f"{R}/pretrain_exp/{{pretext}}/encoder.safetensors",
        log_csv=f"{R}/pretrain_exp/{{pretext}}/log.csv",
        summary=f"{R}/pretrain_exp/{{pretext}}/summary.json",
        recon=f"{R}/pretrain_exp/{{pretext}}/reconstruction.png",
    params:
        root=lambda w: R,
        cfg=lambda w: D.exp_cfg(D.pretrain_experiment(w.pretext), "data", "pretrain"),
    log:
        f"{R}/logs/pretrain_exp/{{pretext}}.log",
    benchmark:
        f"{R}/benchmarks/pretrain_exp/{{pretext}}.tsv"
    # as rule pretrain: the experiment's pretrain.threads when set, else 8 (it was always 8: two cores held, and
    # OMP_NUM_THREADS=2, by one tiny BYOL job of config/pretext_realdata.yaml, ~1.1 CPU-s a step)
    threads: lambda w: int(D.experiment_config(D.pretrain_experiment(w.pretext))["pretrain"]["threads"]) or 8
    resources:
        gpu=lambda w: D.experiment_config(D.pretrain_experiment(w.pretext))["pretrain"]["gpus"],
        nodes=1,
        mem_mb=lambda wc, attempt: 16000 * attempt,
        runtime=lambda wc, attempt: 24 * 60 * attempt,
    conda:
        "../envs/torch.yaml"
    shell:
        "exec python -m affectube launch --gpus {resources.gpu} --nodes {resources.nodes} --"
        " pretrain --cfg {params.cfg:q} --stores {input.stores} --out-dir {params.root}/pretrain_exp/{wildcards.pretext} > {log} 2>&1"
