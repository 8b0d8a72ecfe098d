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


# data.shard_size set: one clips job per shard (the same shards as faces_shard); per-video stores
# (clips/<dataset>/<video>.h5) with a per-video cache, listed by the shard index the job writes.
rule clips_shard:
    input:
        videos=D.shard_videos,
        tracks=f"{R}/faces/{{dataset}}/shard-{{shard}}.json",
        annotations=D.shard_annotation_files,
        rows=D.shard_rows("clips"),
    output:
        index=f"{R}/clips/{{dataset}}/shard-{{shard}}.json",
    wildcard_constraints:
        shard=r"\d+",
    params:
        cfg=D.cfg("decode", "crop", "clips"),
        root=lambda w: R,  # run.results, the results root of this run
    log:
        f"{R}/logs/clips/{{dataset}}/shard-{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/clips/{{dataset}}/shard-{{shard}}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=D.shard_runtime(0.5),
    conda:
        "../envs/video.yaml"
    shell:
        "python -m affectube clips-shard --cfg {params.cfg:q} --rows {input.rows} --dataset {wildcards.dataset}"
        " --shard {wildcards.shard} --faces-dir {params.root}/faces/{wildcards.dataset}"
        " --stage-dir {params.root}/clips/{wildcards.dataset} --out {output.index} > {log} 2>&1"
