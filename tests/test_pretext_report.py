"""The report's pretext table (SS-VAERR's Table II layout) on a synthetic results tree: experiments that select
pretexts (a grid over ``pretrain.method`` x ``finetune.mode``, face masking) give one row per pretext x frozen /
fine-tuned with the key metrics (mean ± sd over folds) and the paired per-subject test of the main metric against
the baseline, the numbers of the report's own comparison.csv and summary.json; a run comparing no pretexts has no
such table."""

from __future__ import annotations

import json

import pandas as pd
import report_synth as R

from affectube.report import compare as C
from affectube.report.build import build
from affectube.report.pretext import pretext_table

EXPERIMENTS = {"videomae": {}, "pretext": {"grid": {"pretrain.method": ["byol"], "finetune.mode": ["finetune", "frozen"]}},
               "fasking": {"pretrain.masking": "face"}}  # 4 experiments: the report recomputes every metric of each


def _cfg(experiments):
    cfg = R.params_cfg(experiments=experiments, task="categorical")
    cfg["pretrain"] = {"model": "videomae", "method": "masked", "masking": "tube"}
    cfg["report"].update(permutations=1000, bootstrap=100)  # the schema's minimums (the report validates its sections)
    return cfg


def _row(md: str, label: str) -> list[str]:
    lines = [ln for ln in md.splitlines() if ln.startswith(f"| {label} |")]
    assert len(lines) == 1, (label, lines)
    return [c.strip() for c in lines[0].strip("|").split("|")]


def test_the_report_renders_the_pretext_table(tmp_path):
    cfg = _cfg(EXPERIMENTS)
    params = C.experiment_params(cfg)
    names = list(params.index)
    assert len(names) == 4
    byol_frozen = params.index[(params["pretrain.method"] == "byol") & (params["finetune.mode"] == "frozen")].item()
    R.write_run(tmp_path, experiments=names, skills={n: 0.3 + 0.1 * i for i, n in enumerate(names)})
    build(cfg, tmp_path / "results", tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "pretexts compared" in md
    section = md[md.index("pretexts compared"): md.index("every experiment side by side")]
    table = pd.read_csv(tmp_path / "out" / "comparison.csv")
    tests = json.loads((tmp_path / "out" / "summary.json").read_text())["paired_tests"]
    uar = table[table["metric"] == "uar"].set_index("experiment")
    cells = _row(section, "byol / frozen")
    header = _row(section, "pretext / fine-tuning")
    assert header[1:4] == ["experiment", "uar", "accuracy"] and "ccc_valence" in header and "rmse" not in header  # the main metrics
    assert cells[1] == byol_frozen and cells[2] == C.mean_std(uar.loc[byol_frozen])  # experiment, uar
    t = tests[f"{byol_frozen}_vs_videomae"]
    assert f"{t['mean_diff']:+.3f}" in cells and f"{t['p']:.3g}" in cells
    assert _row(section, "masked (face) / fine-tuned")[1] == "fasking"
    assert _row(section, "masked / fine-tuned")[1] == "videomae" and "(baseline)" in _row(section, "masked / fine-tuned")
    labels = [ln.split("|")[1].strip() for ln in section.splitlines() if ln.startswith("| ") and " / " in ln.split("|")[1]][1:]
    assert labels == ["masked / fine-tuned", "byol / fine-tuned", "byol / frozen", "masked (face) / fine-tuned"]

    # one pretext only (frozen vs fine-tuned of the same encoder): no pretext table
    plain = _cfg({"videomae": {}, "frozen": {"finetune.mode": "frozen"}})
    assert pretext_table(table[table["experiment"] == "videomae"], plain, ["uar"], "uar", []) is None


def test_the_pretext_configs_validate_and_select_their_pretexts():
    """config/pretext_demo.yaml over params.yaml, config/pretext_realdata.yaml over params.yaml + config/realdata.yaml
    (as ``snakemake --configfile`` merges them): valid params whose experiments are every pretext they compare
    (VideoMAE, SVFAP, BYOL, DINO, and the audio targets where the videos have audio) fine-tuned AND frozen, plus
    from scratch; the demo's audio targets are its rendered videos' synthetic voice (affectube.demo.audio)."""
    import copy

    import yaml
    from conftest import REPO

    from affectube.config import apply_overrides, expand_experiments, merge_params, validate

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    read = lambda name: yaml.safe_load((REPO / "config" / name).read_text())  # noqa: E731
    visual = {("masked", "videomae"), ("masked", "svfap"), ("byol", "videomae"), ("dino", "videomae")}
    runs = {"pretext_demo.yaml": ([read("pretext_demo.yaml")], visual | {("audio", "videomae")}),
            "pretext_realdata.yaml": ([read("realdata.yaml"), read("pretext_realdata.yaml")], visual | {("audio", "videomae")})}
    for name, (overs, pretexts) in runs.items():
        cfg = copy.deepcopy(params)
        for over in overs:
            cfg = merge_params(cfg, over)
        cfg = validate(cfg, name)
        assert cfg["clips"]["audio_mels"] == 40, name  # the audio rows' targets
        rows = set()
        for o in expand_experiments(cfg["experiments"]).values():
            e = apply_overrides(copy.deepcopy(cfg), o)
            pretext = ("none", "scratch") if e["finetune"]["init"] == "scratch" else (e["pretrain"]["method"], e["pretrain"]["model"])
            rows.add((pretext, e["finetune"]["mode"]))
        expected = {(p, m) for p in pretexts for m in ("finetune", "frozen")} | {(("none", "scratch"), "finetune")}
        assert rows == expected, (name, sorted(rows ^ expected))
    assert cfg["clips"]["audio_mels"] == 40 and cfg["data"]["pretrain"] == ["grid"]  # the real-clip run's audio targets
