# Ingest: the embedded demo dataset and per-dataset manifests.


rule demo_data:
    output:
        videos=[p for p in D.manifest("demo").table["path"]] if "demo" in config["data"]["datasets"] else [],
    params:
        cfg=D.cfg("demo"),
    log:
        "results/logs/demo_data.log",
    conda:
        "../envs/video.yaml"
    shell:
        "python -m affectube demo-data --cfg {params.cfg:q} --out results/demo > {log} 2>&1"


rule manifest:
    input:
        D.manifest_inputs,
    output:
        table="results/manifests/{dataset}.csv",
        missing="results/manifests/{dataset}.missing.csv",
    params:
        cfg=D.cfg("data"),
    log:
        "results/logs/manifest/{dataset}.log",
    conda:
        "../envs/video.yaml"
    shell:
        "python -m affectube manifest --cfg {params.cfg:q} --dataset {wildcards.dataset}"
        " --out {output.table} --missing {output.missing} > {log} 2>&1"
