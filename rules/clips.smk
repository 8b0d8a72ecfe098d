# Clips: crop faces from the cached tracks and pack one tube-ready HDF5 store per video.


# A job depends on its own video only: its manifest row is a param (Snakemake re-runs the job when
# the row changes) and the annotation files the row names are inputs; adding a video to a dataset
# runs that video's faces + clips jobs, not every clips job of the dataset.
rule clips:
    input:
        video=D.video_path,
        tracks=f"{R}/faces/{{dataset}}/tracks/{{video}}.npz",
        annotations=D.annotation_files,
    output:
        store=f"{R}/clips/{{dataset}}/{{video}}.h5",
    params:
        cfg=D.cfg("decode", "crop", "clips"),
        row=D.manifest_row,
    log:
        f"{R}/logs/clips/{{dataset}}/{{video}}.log",
    benchmark:
        f"{R}/benchmarks/clips/{{dataset}}/{{video}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/video.yaml"
    shell:
        "python -m affectube clips --cfg {params.cfg:q} --video {input.video:q} --tracks {input.tracks}"
        " --row {params.row:q} --video-id {wildcards.video} --out {output.store} > {log} 2>&1"
