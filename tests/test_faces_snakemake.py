"""Through Snakemake: face tracks are a cached artifact of their own.

A crop-parameter change re-runs the clips (and contact-sheet) jobs and never the faces
(detection) jobs; adding a video to a dataset runs the faces job of that video only.
"""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import run_snakemake

CLIPS = {"M030_front_happy_level3_001": "mead/M030_front_happy_level3_001.mp4", "1001_DFA_SAD_XX": "cremad/1001_DFA_SAD_XX.flv"}


def jobs(proc) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table snakemake prints."""
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    block = text.split("Job stats:", 1)[1]
    out = {}
    for line in block.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)\s*$", line.strip())
        if not m:
            if out:
                break
            continue
        if m.group(1) != "total":
            out[m.group(1)] = int(m.group(2))
    return out


def write_csv(path, ids):
    path.write_text("video_id,path,subject\n" + "".join(f"{v},{CLIPS.get(v, EXTRA.get(v))},{v[:4]}\n" for v in ids))


EXTRA = {"bbaf2n": "grid/bbaf2n.mpg"}


@pytest.mark.slow
def test_crop_change_reruns_clips_never_faces(workflow_copy, realdata, insightface_model, tmp_path):
    table = tmp_path / "small.csv"
    write_csv(table, CLIPS)
    wf = workflow_copy(
        {
            "data": {"datasets": {"small": {"adapter": "csv", "root": str(realdata / "videos"), "file": str(table)}}, "pretrain": ["small"], "finetune": "small"},
            "faces": {"backend": "insightface", "model": str(insightface_model), "every_k": 2},
        }
    )
    targets = [f"results/clips/small/{v}.h5" for v in CLIPS] + ["results/faces/small/qc.csv", "results/faces/small/contact_sheet.png"]
    first = run_snakemake(wf, *targets)
    assert jobs(first).get("faces") == 2 and jobs(first).get("clips") == 2
    tracks = {v: wf / f"results/faces/small/tracks/{v}.npz" for v in CLIPS}
    stores = {v: wf / f"results/clips/small/{v}.h5" for v in CLIPS}
    t_tracks = {v: p.stat().st_mtime_ns for v, p in tracks.items()}
    t_stores = {v: p.stat().st_mtime_ns for v, p in stores.items()}

    params = yaml.safe_load((wf / "params.yaml").read_text())
    params["crop"]["scale"] = 1.6
    params["crop"]["strategy"] = "align"
    (wf / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    planned = jobs(run_snakemake(wf, "-n", *targets))
    assert planned.get("clips") == 2 and "faces" not in planned and "manifest" not in planned
    assert set(planned) <= {"clips", "faces_sheet"}
    run_snakemake(wf, *targets)
    assert {v: p.stat().st_mtime_ns for v, p in tracks.items()} == t_tracks  # detection did not run again
    assert all(stores[v].stat().st_mtime_ns > t_stores[v] for v in CLIPS)  # the crops were made again

    # a new video in the dataset: only its own detection job runs (the manifest is rebuilt: its CSV is an input)
    write_csv(table, [*CLIPS, "bbaf2n"])
    proc = run_snakemake(wf, "-n", *targets, "results/faces/small/tracks/bbaf2n.npz")
    planned = jobs(proc)
    assert planned.get("faces") == 1 and planned.get("manifest") == 1
    assert re.findall(r"output: results/faces/small/tracks/(\S+)\.npz", proc.stdout) == ["bbaf2n"]
