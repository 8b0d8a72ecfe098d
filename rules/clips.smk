# Clips: crop faces from the cached tracks and pack one tube-ready HDF5 store per video.


rule clips:
    input:
        video=D.video_path,
        tracks="results/faces/{dataset}/tracks/{video}.npz",
        manifest="results/manifests/{dataset}.csv",
    output:
        store="results/clips/{dataset}/{video}.h5",
    params:
        cfg=D.cfg("decode", "crop", "clips"),
    log:
        "results/logs/clips/{dataset}/{video}.log",
    benchmark:
        "results/benchmarks/clips/{dataset}/{video}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/video.yaml"
    shell:
        "python -m affectube clips --cfg {params.cfg:q} --video {input.video:q} --tracks {input.tracks}"
        " --manifest {input.manifest} --video-id {wildcards.video} --out {output.store} > {log} 2>&1"
