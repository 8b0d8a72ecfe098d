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
    threads: 8  # capped by --cores locally; workflow.cores is undefined under --profile slurm
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
