# Faces: decode each video and detect + track its face (cached per video);
# cropping reads these tracks, so crop params never re-run detection.


rule faces:
    input:
        video=D.video_path,
    output:
        tracks=f"{R}/faces/{{dataset}}/tracks/{{video}}.npz",
    params:
        cfg=D.cfg("decode", "faces"),
    log:
        f"{R}/logs/faces/{{dataset}}/{{video}}.log",
    benchmark:
        f"{R}/benchmarks/faces/{{dataset}}/{{video}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/video.yaml"
    shell:
        "python -m affectube faces --cfg {params.cfg:q} --video {input.video:q} --threads {threads}"
        " --dataset {wildcards.dataset} --video-id {wildcards.video} --out {output.tracks} > {log} 2>&1"


rule faces_qc:
    input:
        manifest=f"{R}/manifests/{{dataset}}.csv",
        tracks=lambda w: D.tracks(w.dataset),
    output:
        table=f"{R}/faces/{{dataset}}/qc.csv",
        figure=report(f"{R}/faces/{{dataset}}/qc.png", caption="../workflow/report/faces_qc.rst", category="Preprocessing"),
    params:
        root=lambda w: R,  # run.results, the results root of this run
        cfg=D.cfg("figures", "pretrain"),  # pretrain: clip length, for the QC's short_clip column
    log:
        f"{R}/logs/faces_qc/{{dataset}}.log",
    conda:
        "../envs/video.yaml"
    shell:
        "python -m affectube faces-qc --cfg {params.cfg:q} --manifest {input.manifest}"
        " --tracks-dir {params.root}/faces/{wildcards.dataset}/tracks --table {output.table} --figure {output.figure} > {log} 2>&1"


rule faces_sheet:
    input:
        manifest=f"{R}/manifests/{{dataset}}.csv",
        tracks=lambda w: D.tracks(w.dataset),
        videos=D.manifest_inputs,
    output:
        sheet=report(f"{R}/faces/{{dataset}}/contact_sheet.png", caption="../workflow/report/faces_sheet.rst", category="Preprocessing"),
    params:
        root=lambda w: R,  # run.results, the results root of this run
        cfg=D.cfg("decode", "faces", "crop"),
    log:
        f"{R}/logs/faces_sheet/{{dataset}}.log",
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/video.yaml"
    shell:
        "python -m affectube faces-sheet --cfg {params.cfg:q} --manifest {input.manifest}"
        " --tracks-dir {params.root}/faces/{wildcards.dataset}/tracks --out {output.sheet} > {log} 2>&1"


# data.shard_size set: one faces job per shard of videos (affectube.shards); the tracks files are the same
# per-video files, written by the shard job with a per-video cache (a new or changed video is the only one
# processed). A shard job's inputs are its videos and its rows (written at DAG time, only when they change:
# dag.Dag.shard_rows), not the dataset manifest: a new video re-runs its own shard's jobs only.
# One decode per video: a video it detects also gets its clip store (crop + pack from the same decoded frames,
# under the clips job's per-video cache key: affectube.shards.onepass), hence the crop/clips params and the
# clips rows; a crop-only change finds every tracks file cached (no decode here) and clips_shard re-crops.
rule faces_shard:
    input:
        videos=D.shard_videos,
        rows=D.shard_rows("faces"),
        clips_rows=D.shard_rows("clips"),
        annotations=D.shard_annotation_files,
    output:
        index=f"{R}/faces/{{dataset}}/shard-{{shard}}.json",
    wildcard_constraints:
        shard=r"\d+",
    params:
        cfg=D.cfg("decode", "faces", "crop", "clips"),
        root=lambda w: R,  # run.results, the results root of this run
    log:
        f"{R}/logs/faces/{{dataset}}/shard-{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/faces/{{dataset}}/shard-{{shard}}.tsv"
    threads: 4
    resources:
        mem_mb=3000,
        runtime=D.shard_runtime(0.5),
    conda:
        "../envs/video.yaml"
    shell:
        "python -m affectube faces-shard --cfg {params.cfg:q} --rows {input.rows} --dataset {wildcards.dataset}"
        " --shard {wildcards.shard} --threads {threads} --stage-dir {params.root}/faces/{wildcards.dataset}"
        " --clips-rows {input.clips_rows} --clips-dir {params.root}/clips/{wildcards.dataset}"
        " --out {output.index} > {log} 2>&1"
