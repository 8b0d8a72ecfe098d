"""Chained fine-tuning across datasets in one DAG (issue 15): SSL pretraining -> supervised on
dataset A -> fine-tuned on dataset B, as "VideoMAE for emotion" did (Kinetics, AMIGOS, then the
target), declared in params.yaml with ``finetune.dataset`` and ``finetune.init: experiment:NAME/foldK``.

Dataset A: MEAD M030 + W009 (3 clips); dataset B: MEAD W011 + CREMA-D 1001 (real clips, real detector, real
Snakemake). The chain's refusals (a named fold within one dataset, no fold across datasets, datasets
sharing a subject, a chain that comes back to its own dataset) are checked on the DAG without running it.
"""

from __future__ import annotations

import json

import pytest
import yaml
from safetensors.torch import load_file

from conftest import REPO, run_snakemake

HEADER = "path,subject,emotion,intensity,face_vote\n"
# A: LOSO fold 0 tests M030 and trains on W009's two classes (the fold that feeds B; 3 videos keep the run short)
A = ["videos/mead/M030_front_happy_level3_001.mp4,MEAD_M030,happy,3,",
     "videos/mead/W009_front_happy_level3_001.mp4,MEAD_W009,happy,3,",
     "videos/mead/W009_front_sad_level3_001.mp4,MEAD_W009,sad,3,"]
B = ["videos/mead/W011_front_happy_level3_001.mp4,MEAD_W011,happy,3,",
     "videos/mead/W011_front_sad_level3_001.mp4,MEAD_W011,sad,3,",
     "videos/cremad/1001_DFA_HAP_XX.flv,CREMAD_1001,happy,,H",
     "videos/cremad/1001_DFA_SAD_XX.flv,CREMAD_1001,sad,,N"]
CHAIN = {"sup_a": {"finetune.dataset": "mead_a"},  # SSL -> supervised on A (all folds of A planned; fold 0 feeds B)
         "chained": {"finetune.init": "experiment:sup_a/fold0", "finetune.mode": "frozen"}}  # -> B: A's fold 0 model


def _params(realdata, tmp_path, insightface_model=None) -> dict:
    (tmp_path / "a.csv").write_text(HEADER + "\n".join(A) + "\n")
    (tmp_path / "b.csv").write_text(HEADER + "\n".join(B) + "\n")
    return {
        "data": {"datasets": {"mead_a": {"adapter": "csv", "root": str(realdata), "file": str(tmp_path / "a.csv")},
                              "mix_b": {"adapter": "csv", "root": str(realdata), "file": str(tmp_path / "b.csv")}},
                 "pretrain": ["mead_a"], "finetune": "mix_b", "transductive": True, "shard_size": 4},  # one faces + clips job per dataset
        "decode": {"fps": 6, "max_side": 320},
        "faces": {"backend": "insightface", "model": str(insightface_model), "det_size": 160, "every_k": 6},
        "crop": {"size": 32},
        "pretrain": {"size": "tiny", "width": 32, "depth": 1, "input_size": 32, "num_frames": 4, "sample_stride": 2,
                     "patch": 8, "steps": 3, "warmup_steps": 0, "batch_size": 2, "checkpoint_every": 100, "recon_clips": 1},
        "finetune": {"epochs": 1, "warmup_epochs": 0, "batch_size": 2, "inner_val": 0, "test_clips": 1, "classes": ["happy", "sad"],
                     "task": "categorical", "select_on": "last"},
        "experiments": CHAIN,
    }


@pytest.mark.slow
def test_ssl_then_dataset_a_then_dataset_b_in_one_dag(workflow_copy, realdata, insightface_model, tmp_path):
    wf = workflow_copy(_params(realdata, tmp_path, insightface_model))
    run_snakemake(wf, "results/finetune/chained/fold0/metrics.json", "results/finetune/chained/fold1/metrics.json")
    res = wf / "results"
    a0 = json.loads((res / "finetune/sup_a/fold0/metrics.json").read_text())
    assert a0["training"]["init"] == "pretrained" and a0["training"]["encoder"].endswith("results/pretrain/encoder.safetensors")
    assert not (res / "finetune/sup_a/fold1").exists()  # only the fold that feeds B was trained
    a_folds = json.loads((res / "folds/sup_a.json").read_text())
    b_folds = json.loads((res / "folds/chained.json").read_text())
    assert {s for f in a_folds for s in f["test"]["subjects"]} == {"MEAD_M030", "MEAD_W009"}
    b_tested = {s for f in b_folds for s in f["test"]["subjects"]}
    assert b_tested == {"MEAD_W011", "CREMAD_1001"}
    assert a_folds[0]["train"]["subjects"] == ["MEAD_W009"] and not a_folds[0]["val"]["subjects"]
    assert not b_tested & set(a_folds[0]["train"]["subjects"])
    source = load_file(str(res / "finetune/sup_a/fold0/model.safetensors"))
    for k in ("0", "1"):  # each fold of B records the checkpoint it started from, and (frozen) carries its encoder
        fold = json.loads((res / f"finetune/chained/fold{k}/metrics.json").read_text())
        assert fold["training"]["init"] == "experiment:sup_a/fold0"
        assert fold["training"]["encoder"].endswith("results/finetune/sup_a/fold0/model.safetensors")
        saved = load_file(str(res / f"finetune/chained/fold{k}/model.safetensors"))
        enc = [n for n in source if n.startswith("encoder.")]
        assert enc and all((saved[n] == source[n]).all() for n in enc)
    from affectube.config import load_params
    from affectube.lineage import lineage

    cfg = load_params(wf / "params.yaml")
    assert lineage(cfg, "chained") == ["pretraining", "experiment sup_a on mead_a (fold 0)", "experiment chained on mix_b"]


def test_the_dag_refuses_chains_that_could_leak(realdata, tmp_path):
    from affectube.config import validate
    from affectube.dag import Dag
    from affectube.errors import ConfigError

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update({k: v for k, v in _params(realdata, tmp_path).items() if k in ("data", "experiments")})
    (tmp_path / "a2.csv").write_text(HEADER + "\n".join(A + B[:1]) + "\n")  # A plus one video of B's W011
    params["data"]["datasets"]["a_overlap"] = {"adapter": "csv", "root": str(realdata), "file": str(tmp_path / "a2.csv")}
    params["experiments"] = {
        **CHAIN,
        "no_fold": {"finetune.init": "experiment:sup_a"},
        "bad_fold": {"finetune.init": "experiment:sup_a/fold5"},
        "one": {}, "named_same": {"finetune.init": "experiment:one/fold1"},
        "sup_o": {"finetune.dataset": "a_overlap"}, "leaky": {"finetune.init": "experiment:sup_o/fold0"},
        # B -> A -> B: B's fold 0 model trained on B's other subjects, then all of B is tested again
        "on_a": {"finetune.dataset": "mead_a", "finetune.init": "experiment:one/fold0"},
        "b_again": {"finetune.init": "experiment:on_a/fold0"},
    }
    dag = Dag(validate(params))

    def plan(exp: str, fold: str = "0"):
        return dag.pretrained_encoder(type("W", (), {"exp": exp, "fold": fold})())

    assert plan("chained", "1") == ["results/finetune/sup_a/fold0/model.safetensors"]
    assert plan("on_a") == ["results/finetune/one/fold0/model.safetensors"]
    assert dag.datasets == ["mead_a", "mix_b", "a_overlap"]
    with pytest.raises(ConfigError, match=r"fine-tunes another dataset \('mead_a'\): finetune.init names no fold; "
                                          r"write experiment:sup_a/foldK with K in 0, 1"):
        plan("no_fold")
    with pytest.raises(ConfigError, match="names fold 5, which it does not have"):
        plan("bad_fold")
    with pytest.raises(ConfigError, match="same dataset 'mix_b': that fold's model was trained on other folds' test subjects"):
        plan("named_same")
    with pytest.raises(ConfigError, match=r"share subject\(s\) MEAD_W011 and video file\(s\) .*W011_front_happy"):
        plan("leaky")
    with pytest.raises(ConfigError, match="tests on dataset 'mix_b', which share subject"):
        plan("b_again")
    params["experiments"] = {"x": {"finetune.dataset": "nope"}}
    with pytest.raises(ConfigError, match=r"experiment 'x' fine-tunes dataset 'nope' \(finetune.dataset\), which is not in data.datasets"):
        Dag(validate(params)).datasets
