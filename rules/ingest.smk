# Ingest: the embedded demo dataset and per-dataset manifests.


rule demo_data:
    output:
        videos=D.demo_outputs("videos"),
        annotations=D.demo_outputs("annotations"),
        labels=D.demo_outputs("labels"),
    params:
        cfg=D.cfg("demo"),
        root=lambda w, output: os.path.dirname(output.labels[0]),
    log:
        f"{R}/logs/demo_data.log",
    benchmark:
        f"{R}/benchmarks/demo_data.tsv"
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/video.yaml"
    shell:
        "python -m affectube demo-data --cfg {params.cfg:q} --out {params.root:q} > {log} 2>&1"


rule manifest:
    input:
        D.manifest_inputs,
    output:
        table=f"{R}/manifests/{{dataset}}.csv",
        missing=f"{R}/manifests/{{dataset}}.missing.csv",
    params:
        cfg=D.cfg("data", "demo"),
    log:
        f"{R}/logs/manifest/{{dataset}}.log",
    conda:
        "../envs/video.yaml"
    shell:
        "python -m affectube manifest --cfg {params.cfg:q} --dataset {wildcards.dataset}"
        " --out {output.table} --missing {output.missing} > {log} 2>&1"
