"""Grid entries of ``experiments``: expansion, names, validation, the DAG, the comparison table, the dry run."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import yaml

import report_synth as R
from conftest import REPO, run_snakemake

from affectube.config import expand_experiments, experiment_variants, validate, value_label
from affectube.dag import Dag
from affectube.errors import ConfigError
from affectube.report import compare as C
from affectube.report import build as B
from affectube.report import plan as P
from affectube.report.results import load_experiment

LOSSES = [{"ccc": 1.0}, {"ccc": 1.0, "mse": 1.0}, {"ncce": 1.0, "ccc": 1.0}]
GRID = {
    "videomae": {},
    "losses": {"grid": {"finetune.mode": ["finetune", "frozen"], "finetune.losses": LOSSES}, "set": {"finetune.task": "continuous"}},
}
NAMES = [
    "videomae",
    "losses-losses=ccc-mode=finetune",
    "losses-losses=ccc-mode=frozen",
    "losses-losses=ccc+mse-mode=finetune",
    "losses-losses=ccc+mse-mode=frozen",
    "losses-losses=ccc+ncce-mode=finetune",
    "losses-losses=ccc+ncce-mode=frozen",
]
SAFE = re.compile(r"^[A-Za-z0-9._+=-]+$")


def _params(experiments: dict) -> dict:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["experiments"] = experiments
    return raw


def test_a_grid_expands_to_one_experiment_per_combination_with_stable_names():
    exps = expand_experiments(GRID)
    assert list(exps) == NAMES
    assert all(SAFE.match(n) for n in exps)
    assert exps["losses-losses=ccc+mse-mode=frozen"] == {
        "finetune.task": "continuous", "finetune.losses": {"ccc": 1.0, "mse": 1.0}, "finetune.mode": "frozen"}
    assert exps["videomae"] == {}
    # the rules pass params as JSON with sorted keys: the same names, the same overrides
    again = expand_experiments(json.loads(json.dumps(GRID, sort_keys=True)))
    assert sorted(again) == sorted(exps) and all(again[n] == exps[n] for n in exps)
    v = next(v for v in experiment_variants(GRID) if v.name == NAMES[-1])
    assert (v.entry, v.grid) == ("losses", {"finetune.losses": {"ccc": 1.0, "ncce": 1.0}, "finetune.mode": "frozen"})


def test_value_labels_are_short_and_path_safe():
    assert value_label(1.0e-3) == "0.001" and value_label(2.0) == "2" and value_label(0.5) == "0.5"
    assert value_label(True) == "true" and value_label(None) == "null" and value_label(3) == "3"
    assert value_label({"mse": 0.5, "ccc": 1.0}) == "ccc+mse0.5"
    assert value_label(["happy", "sad"]) == "happy+sad"
    assert value_label("a b/c:d=e") == "a_b_c_d_e"
    # keys that share their last part are named in full
    names = expand_experiments({"dp": {"grid": {"finetune.drop_path": [0.1], "pretrain.drop_path": [0.0], "finetune.lr": [1e-3]}}})
    assert list(names) == ["dp-finetune.drop_path=0.1-lr=0.001-pretrain.drop_path=0"]


def test_default_params_and_a_grid_validate():
    validate(_params(GRID))
    validate(yaml.safe_load((REPO / "params.yaml").read_text()))


BAD = [
    # experiments, the one-line message (after "params.yaml: ")
    ({"g": {"grid": {"finetune.mdoe": ["frozen"]}}}, r"experiments\.g\.grid\.finetune\.mdoe: unknown key \(did you mean 'mode'\?"),
    ({"g": {"grid": {"finetune.mode": []}}}, r"experiments\.g\.grid\.finetune\.mode: \[\] should be non-empty"),
    ({"g": {"grid": {"finetune.mode": "frozen"}}}, r"experiments\.g\.grid\.finetune\.mode: 'frozen' is not of type 'array'"),
    ({"g": {"grid": {"finetune.mode": ["frozen", "frozen"]}}}, r"experiments\.g\.grid\.finetune\.mode: .*non-unique"),
    ({"g": {"grid": {"finetune.mode": ["frozen", "bogus"]}}},
     r"experiments\.g\.grid\.finetune\.mode: 'bogus' is not one of \['finetune', 'frozen'\] \(variant g-mode=bogus\)"),
    ({"g": {"grid": {"crop.size": [64, 96]}}}, r"experiments\.g\.grid\.crop\.size: an experiment may override finetune\.\* and pretrain\.\*"),
    ({"g": {"crop.size": 64}}, r"experiments\.g\.crop\.size: an experiment may override finetune\.\* and pretrain\.\*"),
    ({"g": {"grid": {"finetune.mode": ["frozen"]}, "set": {"faces.pad": 0.1}}}, r"experiments\.g\.set\.faces\.pad: an experiment may override"),
    ({"g": {"grid": {"finetune.mode": ["frozen"]}, "sett": {}}}, r"experiments\.g\.sett: unknown key \(did you mean 'set'\?"),
    ({"g": {"grid": {}}}, r"experiments\.g\.grid: \{\} should be non-empty"),
    ({"g": {"grid": {"finetune.mode": ["frozen"]}, "set": {"finetune.mode": "finetune"}}},
     r"experiments\.g\.set\.finetune\.mode: also a grid key"),
    ({"g": {"grid": {"finetune.classes": [["a b", "c"], ["a_b", "c"]]}}}, r"experiments\.g\.grid: combinations .* get the same name 'g-classes=a_b\+c'"),
    ({"g/x": {}}, r"experiments\.g/x: experiment names may use letters, digits"),
]


@pytest.mark.parametrize("experiments,message", BAD)
def test_a_bad_grid_is_one_line_naming_the_key(experiments, message):
    with pytest.raises(ConfigError) as err:
        validate(_params(experiments))
    text = str(err.value)
    assert "\n" not in text and re.match(r"params\.yaml: " + message, text), text


def test_a_variant_name_colliding_with_a_plain_entry_is_refused():
    # (the schema keeps '=' out of plain names, so only a caller bypassing it can collide)
    with pytest.raises(ConfigError, match=r"experiments\.g: variant name 'g-mode=frozen' is already the plain entry"):
        expand_experiments({"g-mode=frozen": {}, "g": {"grid": {"finetune.mode": ["frozen"]}}})


def test_the_dag_plans_every_variant_with_its_own_params():
    cfg = validate(_params(GRID))
    dag = Dag(cfg)
    assert dag.experiments == NAMES
    ft = dag.experiment_config("losses-losses=ccc+mse-mode=frozen")["finetune"]
    assert (ft["mode"], ft["losses"], ft["task"]) == ("frozen", {"ccc": 1.0, "mse": 1.0}, "continuous")
    assert dag.experiment_config("videomae")["finetune"]["mode"] == "finetune"
    passed = json.loads(dag.exp_cfg("losses-losses=ccc-mode=finetune", "finetune"))
    assert passed["experiment"] == {"name": "losses-losses=ccc-mode=finetune",
                                    "overrides": {"finetune.task": "continuous", "finetune.losses": {"ccc": 1.0}, "finetune.mode": "finetune"}}
    assert passed["finetune"]["losses"] == {"ccc": 1.0}
    with pytest.raises(ConfigError, match="no experiment named 'losses'"):
        dag.experiment_config("losses")  # a grid entry is not itself an experiment
    # the figures follow each variant's task; the baseline is the plain entry without overrides
    plan = {s.name for s in P.figure_plan(cfg)}
    assert "losses-losses=ccc-mode=frozen/scatter" in plan and "losses-losses=ccc-mode=frozen/confusion" not in plan
    assert "videomae/confusion" in plan and "comparison" in plan
    assert C.default_baseline(cfg) == "videomae"


def test_grid_results_land_side_by_side_with_a_paired_test(tmp_path):
    experiments = {"videomae": {}, "g": {"grid": {"finetune.mode": ["finetune", "frozen"], "finetune.init": ["pretrained", "scratch"]}}}
    names = list(expand_experiments(experiments))
    assert names == ["videomae", "g-init=pretrained-mode=finetune", "g-init=pretrained-mode=frozen",
                     "g-init=scratch-mode=finetune", "g-init=scratch-mode=frozen"]
    skills = dict(zip(names, [0.8, 0.7, 0.5, 0.45, 0.3]))
    R.write_run(tmp_path, experiments=names, skills=skills)
    cfg = R.params_cfg(experiments=experiments, task="categorical")
    cfg["finetune"]["mode"] = "finetune"

    params = C.experiment_params(cfg)
    assert list(params.columns) == ["grid", "finetune.init", "finetune.mode"]
    assert params.loc["videomae"].tolist() == ["", "pretrained", "finetune"]  # its own params where it overrides nothing
    assert params.loc["g-init=scratch-mode=frozen"].tolist() == ["g", "scratch", "frozen"]

    B.build(cfg, tmp_path / "results", tmp_path / "report")
    comp = pd.read_csv(tmp_path / "report" / "comparison.csv", keep_default_na=False)
    assert list(comp.columns[:5]) == ["metric", "experiment", "grid", "finetune.init", "finetune.mode"]
    uar = comp[comp["metric"] == "uar"].set_index("experiment")
    assert sorted(uar.index) == sorted(names)
    assert uar.loc["g-init=pretrained-mode=frozen", ["grid", "finetune.init", "finetune.mode"]].tolist() == ["g", "pretrained", "frozen"]
    assert (uar["folds"] == 4).all()

    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert set(summary["paired_tests"]) == {f"{n}_vs_videomae" for n in names[1:]}
    exps = [load_experiment(tmp_path / "results", n) for n in names]
    direct = {t.other: t for t in C.paired_tests(exps, "uar", "videomae")}
    for n in names[1:]:
        assert direct[n].n == 4 and summary["paired_tests"][f"{n}_vs_videomae"]["n"] == 4
        assert summary["paired_tests"][f"{n}_vs_videomae"]["mean_diff"] == pytest.approx(direct[n].mean_diff)

    md = (tmp_path / "report" / "report.md").read_text()
    assert "grid 'g': uar mean ± sd over folds" in md
    assert "mode=frozen" in md and "(baseline)" in md and "combination of grid entry 'g'" in md
    grid = C.grid_tables(C.side_by_side(exps, "uar"), cfg, "uar")["g"]
    assert list(grid.columns) == ["mode=finetune", "mode=frozen"] and list(grid.index) == ["init=pretrained", "init=scratch"]


@pytest.mark.slow
def test_dry_run_plans_one_finetune_and_evaluate_job_set_per_combination(workflow_copy):
    grid = {"grid": {"finetune.mode": ["finetune", "frozen"], "finetune.init": ["pretrained", "scratch"]}}
    wf = workflow_copy({"experiments": {"videomae": {}, "g": grid}})
    proc = run_snakemake(wf, "-n", timeout=300)
    out = proc.stdout + proc.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out[out.index("Job stats:"):], flags=re.M))
    names = list(expand_experiments({"g": grid}))
    n_folds = 4  # the demo's 4 subjects, LOSO
    assert (counts["folds"], counts["evaluate"], counts["finetune"]) == (str(1 + len(names)), str(1 + len(names)), str((1 + len(names)) * n_folds))
    for name in names:
        assert f"results/evaluate/{name}/metrics.json" in out
        for k in range(n_folds):
            assert f"results/finetune/{name}/fold{k}/predictions.csv" in out
