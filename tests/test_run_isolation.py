"""Run isolation (issue 21): two configs side by side in one checkout.

Each config names its own results root (``run.results``); every stage, the report included,
reads only what its params name (datasets, experiments, folds). Two real runs through
Snakemake one after the other: neither touches the other's results, each report mentions
only its own datasets, experiments and subjects, and a second run of either is a no-op.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, run_snakemake, venv_env

HEADER = "path,subject,emotion,intensity,face_vote\n"
ONE = ["videos/mead/M030_front_happy_level3_001.mp4,MEAD_M030,happy,3,",
       "videos/mead/M030_front_sad_level3_001.mp4,MEAD_M030,sad,3,",
       "videos/mead/W009_front_happy_level3_001.mp4,MEAD_W009,happy,3,",
       "videos/mead/W009_front_sad_level3_001.mp4,MEAD_W009,sad,3,"]
TWO = ["videos/mead/W011_front_happy_level3_001.mp4,MEAD_W011,happy,3,",
       "videos/mead/W011_front_sad_level3_001.mp4,MEAD_W011,sad,3,",
       "videos/cremad/1001_DFA_HAP_XX.flv,CREMAD_1001,happy,,H",
       "videos/cremad/1001_DFA_SAD_XX.flv,CREMAD_1001,sad,,N"]


def _small(realdata, insightface_model) -> dict:
    """Shared cheap settings: real detector, 64-px crops, a 1-block ViT trained from scratch for one epoch."""
    return {
        "decode": {"fps": 8, "max_side": 320},
        "faces": {"backend": "insightface", "model": str(insightface_model), "det_size": 160, "every_k": 4},
        "crop": {"size": 64},
        "pretrain": {"size": "tiny", "depth": 1, "input_size": 64, "num_frames": 8, "sample_stride": 1},
        "finetune": {"epochs": 1, "warmup_epochs": 0, "batch_size": 2, "inner_val": 0, "test_clips": 1, "classes": ["happy", "sad"],
                     "task": "categorical"},
    }


def _files(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_two_configs_side_by_side(workflow_copy, realdata, insightface_model, tmp_path):
    (tmp_path / "one.csv").write_text(HEADER + "\n".join(ONE) + "\n")
    (tmp_path / "two.csv").write_text(HEADER + "\n".join(TWO) + "\n")
    wf = workflow_copy(_small(realdata, insightface_model))
    params = yaml.safe_load((wf / "params.yaml").read_text())
    params["data"] = {"datasets": {"mead_pair": {"adapter": "csv", "root": str(realdata), "file": str(tmp_path / "one.csv")}},
                      "pretrain": ["mead_pair"], "finetune": "mead_pair", "transductive": True}
    params["experiments"] = {"scratch": {"finetune.init": "scratch"}}  # replaced: no pretraining needed
    (wf / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (wf / "two.yaml").write_text(yaml.safe_dump({
        "run": {"results": "results/two"},
        "data": {"datasets": {"w011_cremad": {"adapter": "csv", "root": str(realdata), "file": str(tmp_path / "two.csv")}},
                 "pretrain": ["w011_cremad"], "finetune": "w011_cremad"},
        "experiments": {"probe": {"finetune.init": "scratch", "finetune.lr": 0.01}},
    }, sort_keys=False))

    run_snakemake(wf)
    one_root = wf / "results"
    one = {p: t for p, t in _files(one_root).items() if "results/two" not in p.as_posix()}
    run_snakemake(wf, "--configfile", "two.yaml")
    two_root = wf / "results/two"

    # neither run's results were overwritten (or removed) by the other
    assert {p: t for p, t in _files(one_root).items() if "results/two" not in p.as_posix()} == one
    assert (two_root / "report/report.html").exists() and (two_root / "finetune/probe/fold0/metrics.json").exists()
    assert not (one_root / "finetune/probe").exists() and not (one_root / "faces/w011_cremad").exists()
    assert not (two_root / "faces/mead_pair").exists()

    md_one = (one_root / "report/report.md").read_text()
    md_two = (two_root / "report/report.md").read_text()
    for own, other in ((md_one, md_two), (md_two, md_one)):
        assert "code version" in own and "params file(s)" in own
    assert "mead_pair" in md_one and "MEAD_M030" in md_one and "scratch" in md_one
    for word in ("w011_cremad", "MEAD_W011", "CREMAD_1001", "probe", "results/two"):
        assert word not in md_one, word
    assert "w011_cremad" in md_two and "MEAD_W011" in md_two and "probe" in md_two and "two.yaml" in md_two
    for word in ("mead_pair", "MEAD_M030", "MEAD_W009"):
        assert word not in md_two, word
    # the report names each dataset's manifest and its sha256
    import hashlib

    digest = hashlib.sha256((two_root / "manifests/w011_cremad.csv").read_bytes()).hexdigest()
    assert digest in md_two
    summary_two = json.loads((two_root / "report/summary.json").read_text())
    assert set(summary_two["experiments"]) == {"scratch", "probe"}

    # a second run of either is a no-op
    for args in ((), ("--configfile", "two.yaml")):
        again = run_snakemake(wf, "-n", *args)
        assert "Nothing to be done" in again.stdout + again.stderr, args

    # dvc.yaml generated for config two lists only results/two paths (and its inputs)
    merged = wf / "params_two.yaml"
    subprocess.run([sys.executable, "-m", "affectube", "params", "--merge", "two.yaml", "--out", str(merged)],
                   cwd=wf, check=True, env=venv_env(), capture_output=True)
    (wf / "params.yaml").write_text(merged.read_text())
    out = subprocess.run([sys.executable, "-m", "affectube", "dvc-yaml", "--out", "-"], cwd=wf, check=True,
                         env=venv_env(), capture_output=True, text=True).stdout
    outs = [line.split(":")[0].strip(" -") for line in out.splitlines() if "persist: true" in line and not line.startswith("#")]
    assert outs and all(o.startswith("results/two/") for o in outs), outs[:5]

    # predict reads a model from the second run's root
    pred = tmp_path / "pred"
    subprocess.run([sys.executable, "-m", "affectube", "predict", str(realdata / "videos/mead/W011_front_happy_level3_001.mp4"),
                    "--model", str(two_root / "finetune/probe"), "--out-dir", str(pred), "--device", "cpu"],
                   cwd=wf, check=True, env=venv_env(), capture_output=True, timeout=600)
    assert any(pred.iterdir())


def test_results_root_must_stay_inside_the_checkout():
    from affectube.config import validate
    from affectube.errors import ConfigError

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for bad in ("/scratch/x", "../elsewhere", "results/../x", "results/"):
        params["run"] = {"results": bad}
        with pytest.raises(ConfigError, match="run.results"):
            validate(params, source="params.yaml")
