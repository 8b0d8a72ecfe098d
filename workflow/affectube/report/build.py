"""Stage ``report``: one HTML and one Markdown report per run, from saved results alone.

``python -m affectube report --cfg JSON --results results --out-dir results/report``

It reads the folds, the per-fold predictions and logs, the evaluate stage's metrics,
the face QC tables, the pretraining summary and the figures (``figures/index.json``),
never a model. It recomputes every metric from the saved predictions with the
evaluation's own code and says so when the saved metrics disagree. It states the data,
the folds, the params and the code version (``git describe``), and lists problems
first: failed folds, low face coverage, classes missing from a fold, diverging losses, chance-level
folds, models selected inside the warmup or underfitting their training data, pretraining/test
overlap. For each experiment (experiments differing only in ``finetune.seed`` are one seed
group) it gives the mean and the sample sd (ddof 1) over folds and over seeds, a permutation
p-value of the main metric against chance and a bootstrap 95% interval over test subjects; a
*Validity* section says whether the folds are subject-independent and whether pretraining saw
test subjects or test videos.

A failed or missing fold does not stop it: the report is built from the folds that
have predictions and names the ones that do not (run it by hand after
``snakemake --keep-going`` left a fold failed).

Outputs in ``--out-dir``: ``report.html`` (self-contained, figures embedded),
``report.md`` (figures linked), ``comparison.csv`` (every metric of every experiment
side by side) and ``summary.json`` (the main numbers, for ``dvc metrics``).
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import subprocess
from pathlib import Path

import pandas as pd
import yaml

from affectube.config import apply_overrides, experiment_variants, parse_cfg
from affectube.lineage import lineage
from affectube.errors import DataError
from affectube.io import atomic_path, read_json, write_json, write_text
from affectube.report import compare as C
from affectube.report import document as D
from affectube.eval import overlap as O
from affectube.eval.metrics import metric_label
from affectube.report.params import report_params
from affectube.report.checks import Run, coverage_column, run_checks, run_qc_tables
from affectube.report.results import Experiment, fmt, labelled_videos, load_experiment, read_csv, summarise

log = logging.getLogger(__name__)

KEY_METRICS = ["uar", "war", "accuracy", "f1_macro", "f1_weighted", "ccc", "pearson", "rmse", "mae"]
SHORT_METRICS = ["uar", "accuracy", "f1_macro", "ccc"]
CAPTIONS = {
    "confusion": "Confusion matrix over the test videos of all folds (left: counts; right: each row divided by its number of videos, i.e. recall; the diagonal's mean is the pooled UAR).",
    "per_subject": "Main metric of each test subject (each fold's test subject(s)); dashed: mean over folds; dotted: the chance / majority-class level.",
    "scatter": "Predicted vs true value per test video (clips averaged), all folds pooled; dashed: perfect prediction.",
    "label_efficiency": "Main metric vs the labelled fraction of each fold's training videos, one line per initialisation (mean, band: 95% t-interval over folds x seeds); right: the paired pretrained − scratch difference of the same seed and fold, with its 95% t-interval and the count of pairs above zero.",
    "traces": "Annotated (solid) vs predicted (dashed) per-frame values over time for a few test videos.",
    "learning_curves": "Fine-tuning loss (train solid, inner-validation dashed) and the metric per epoch (inner validation solid, training dotted), one colour per fold; warmup epochs shaded, star: the epoch kept.",
    "pretrain_curve": "Self-supervised pretraining loss (masked-patch reconstruction) per logged step.",
    "comparison": "Main metric per test subject in each experiment; lines join the same subject; black bars: mean over subjects present in every experiment.",
}


# ---------------------------------------------------------------- helpers


def code_version(where: Path | None = None) -> str:
    """``git describe --always --dirty --tags`` of the checkout, or a plain 'unknown'."""
    try:
        proc = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=where, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else "unknown (not a git checkout)"


def run_protocol(cfg: dict) -> str:
    """``finetune.protocol`` of (filled) params; ``?`` when they have no ``finetune`` section (not the default)."""
    return str(cfg["finetune"]["protocol"]) if cfg.get("finetune") else "?"


def resolved(cfg: dict, exp: str) -> dict:
    overrides = {v.name: v.overrides for v in experiment_variants(cfg.get("experiments"))}
    return apply_overrides(copy.deepcopy(cfg), overrides.get(exp, {}))


def key_columns(frame: pd.DataFrame, main: str, short: bool = False) -> list[str]:
    """Metric columns in reading order (main metric first); ``short``: the few a fold table shows."""
    cols = [main] if main in frame.columns else []
    keep = SHORT_METRICS if short else KEY_METRICS
    for m in keep:
        cols += [c for c in frame.columns if (c == m or c.startswith(f"{m}_") or c == f"frame_{m}") and c not in cols]
    return cols


def _figure_blocks(index: dict, fig_dir: Path, exp: str | None, kinds: tuple[str, ...] | None = None) -> list:
    """The figures of experiment ``exp`` (None: run-wide figures), optionally only some kinds."""
    blocks = []
    for entry in index.get("figures", []):
        if entry["experiment"] != exp or (kinds and entry["kind"] not in kinds):
            continue
        files = [fig_dir / f for f in entry["files"]]
        png = next((f for f in files if f.suffix == ".png"), None)
        if png is None:
            continue
        blocks.append(D.Figure(png, CAPTIONS.get(entry["kind"], entry["name"]), [f for f in files if f != png]))
    return blocks


# ---------------------------------------------------------------- sections


def _ci(st) -> str:
    if st is None or math.isnan(st.ci_low):
        return "n/a"
    return f"[{fmt(st.ci_low)}, {fmt(st.ci_high)}] ({st.units} {st.unit}s)"


def _p(p: float) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return f"{p:.2g}"


def overview(run: Run, experiments: list[Experiment], fold_text: str, table: pd.DataFrame | None = None,
             groups: list | None = None, stats: dict | None = None) -> list:
    main = run.main_metric
    by_name = {e.name: e for e in experiments}
    groups = groups or [C.Group(e.name, [e.name], [None]) for e in experiments]
    rows_of = table[table["metric"] == main].set_index("experiment") if table is not None and len(table) else pd.DataFrame()
    rows, multi = [], any(len(g.members) > 1 for g in groups)
    for g in groups:
        members = [by_name[m] for m in g.members if m in by_name]
        r = rows_of.loc[g.name] if g.name in rows_of.index else None
        st = (stats or {}).get(g.name)
        failed = [(e, f) for e in members for f in e.failed_folds]
        row = {"experiment": g.name}
        if multi:
            row["seeds"] = " ".join(str(x) for x in g.seeds) if len(g.members) > 1 else str(g.seeds[0] if g.seeds[0] is not None else "")
        row[f"{main} mean ± sd over folds"] = C.mean_std(r) if r is not None else "n/a"
        if multi:
            row["sd over seeds"] = fmt(r["sd_seeds"]) if r is not None else "n/a"
        row.update({
            f"{main} pooled": fmt(r["pooled"]) if r is not None else "n/a",
            "chance": fmt(st.chance) if st is not None else "n/a",
            "p vs chance": _p(st.p_value) if st is not None else "n/a",
            "95% CI (bootstrap)": _ci(st),
            "folds ok": sum(len(e.ok_folds) for e in members),
            "folds failed": ", ".join((f"{e.name}:{f.index}" if len(members) > 1 else str(f.index)) for e, f in failed)
            or ("none" if any(e.folds for e in members) else "no results"),
        })
        rows.append(row)
    level = float(run.cfg["report"]["ci_level"])
    perms = int(run.cfg["report"]["permutations"])
    text = (f"{len(groups)} experiment(s); {fold_text}. Main metric: {metric_label(main)}. "
            "'mean ± sd over folds' treats each fold as one result (sample sd, ddof 1"
            + (", over every fold of every seed; 'sd over seeds': sample sd, ddof 1, of each seed's mean over folds" if multi else "")
            + "); 'pooled' computes the metric once over all test videos of all folds"
            + (" (averaged over seeds)" if multi else "") + ". "
            f"'p vs chance': one-sided permutation test of the pooled {main} ({perms} permutations of the labels among each "
            f"test subject's videos; 'chance' is their mean); '{level:.0%} CI': percentile bootstrap interval of the pooled "
            f"{main}, resampling test subjects (test videos when there is a single test subject).")
    blocks = [D.Heading("Summary"), D.Text(text), D.Table(pd.DataFrame(rows).set_index("experiment"))]
    notes = [f"{name}: {st.note}" for name, st in (stats or {}).items() if st.note]
    if notes:
        blocks.append(D.Bullets(notes))
    return blocks


def problems_section(found: dict[str, list[str]]) -> list:
    blocks: list = [D.Heading("Problems")]
    if not found:
        return blocks + [D.Text("No problem found by the checks (failed folds, face coverage, missing classes, diverging losses, stale metrics).", "note")]
    for name, items in found.items():
        blocks += [D.Heading(name, 3), D.Bullets(items, "warn")]
    return blocks


def experiment_section(run: Run, exp: Experiment, index: dict, fig_dir: Path) -> list:
    main = run.main_metric
    metrics, per_fold, per_subject = exp.recompute(main)
    blocks: list = [D.Heading(f"Experiment {exp.name}")]
    variant = next((v for v in experiment_variants(run.cfg.get("experiments")) if v.name == exp.name), None)
    overrides = variant.overrides if variant else {}
    grid = f" (combination of grid entry '{variant.entry}')" if variant and variant.grid else ""
    blocks.append(D.Text("Overrides: " + (", ".join(f"{k} = {v}" for k, v in overrides.items()) or "none (the params as they are)") + f"{grid}."))
    blocks.append(D.Text("Encoder lineage: " + " -> ".join(lineage(run.cfg, exp.name)) + "."))
    if exp.failed_folds:
        blocks.append(D.Text(f"Fold(s) {', '.join(str(f.index) for f in exp.failed_folds)} failed: every number below is over the "
                             f"{len(exp.ok_folds)} fold(s) that have predictions.", "warn"))
    if not metrics:
        return blocks + [D.Text("No fold has predictions: nothing to report.", "warn")]
    summary = summarise(exp, main)
    pooled = C.scalar_metrics(metrics.get("pooled", {}))
    summary["pooled"] = [pooled.get(m, math.nan) for m in summary.index]
    summary.index.name = "metric"
    summary["n"] = summary["n"].astype(int).astype(str)
    summary = summary.rename(columns={"mean": "mean over folds", "std": "sd over folds", "n": "folds"})
    blocks.append(D.Table(summary.loc[[c for c in key_columns(summary.T, main)]], "every metric: mean and sd over folds, and pooled over all test videos"))
    cols = key_columns(per_fold, main, short=True)
    labelled = {f.index: labelled_videos(f.predictions) for f in exp.ok_folds}
    per_fold = per_fold.copy()
    extra = []
    if any(labelled.get(int(k)) != int(v) for k, v in zip(per_fold["fold"], per_fold["videos"])):
        per_fold["labelled"] = [labelled.get(int(k)) for k in per_fold["fold"]]  # unlabelled test videos are not scored
        extra = ["labelled"]
    blocks.append(D.Table(per_fold[["fold", "test_subjects", "videos", *extra, *cols]].set_index("fold"),
                          f"per fold (every metric: results/evaluate/{exp.name}/per_fold.csv)"))
    if len(per_subject) != len(per_fold):  # k-fold: several subjects per fold
        blocks.append(D.Table(per_subject[["subject", "fold", "videos", *key_columns(per_subject, main, short=True)]].set_index("subject"),
                              f"per test subject (every metric: results/evaluate/{exp.name}/per_subject.csv)"))
    blocks += _figure_blocks(index, fig_dir, exp.name)
    return blocks


def params_table(run: Run, table: pd.DataFrame, params: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment: the params it differs in, the main metric, its paired test against the baseline."""
    main = run.main_metric
    rows = table[table["metric"] == main].set_index("experiment") if not table.empty else pd.DataFrame()
    cols = [str(c) for c in params.columns]
    out = rows[cols].copy() if not rows.empty and all(c in rows.columns for c in cols) else params.copy()
    if not (out["grid"] != "").any():
        out = out.drop(columns=["grid"])
    out[f"{main} mean ± sd"] = [C.mean_std(rows.loc[n]) if n in rows.index else "n/a" for n in out.index]
    out[f"{main} pooled"] = [fmt(rows.loc[n, "pooled"]) if n in rows.index else "n/a" for n in out.index]
    tests = {t.other: t for t in run.tests}
    base = run.tests[0].baseline if run.tests else None
    out["vs baseline: mean difference"] = ["(baseline)" if n == base else fmt(tests[n].mean_diff) if n in tests else "" for n in out.index]
    out["better / worse / tied"] = ["" if n not in tests else f"{tests[n].wins} / {tests[n].losses} / {tests[n].n - tests[n].n_nonzero}"
                                    for n in out.index]
    out["Wilcoxon p"] = ["" if n not in tests else fmt(tests[n].p_value) for n in out.index]
    out.index.name = "experiment"
    return out


def comparison_section(run: Run, experiments: list[Experiment], index: dict, fig_dir: Path, table: pd.DataFrame,
                       params: pd.DataFrame | None = None) -> list:
    if len(table["experiment"].unique() if len(table) else []) < 2:
        return []
    main = run.main_metric
    wide = C.wide(table)
    wide = wide.loc[[m for m in key_columns(wide.T, main)]]
    wide.index.name = "metric (mean ± sd over folds)"
    blocks: list = [D.Heading("Comparison across experiments")]
    if params is not None and len(params.columns) > 1:
        blocks.append(D.Table(params_table(run, table, params),
                              f"what each experiment changes (params it overrides; the others' values as in params.yaml), {main} "
                              "over folds and pooled, and the paired per-subject test against the baseline"))
    for entry, grid in C.grid_tables(table, run.cfg, main).items():
        blocks.append(D.Table(grid, f"grid '{entry}': {main} mean ± sd over folds for each combination of its values"))
    from affectube.report.pretext import pretext_table

    pretexts = pretext_table(table, run.cfg, key_columns(wide.T, main, short=True), main, run.tests)
    if pretexts is not None:  # SS-VAERR's Table II layout
        blocks.append(D.Table(pretexts, f"pretexts compared (rows: pretext x frozen / fine-tuned encoder; metrics mean ± sd over "
                                        f"folds; the paired per-subject Wilcoxon test of {main} against the baseline)"))
    blocks.append(D.Table(wide, "every experiment side by side (full table, with the params above as columns: comparison.csv)"))
    if run.tests:
        rows = [{
            "comparison": f"{t.other} − {t.baseline}",
            "subjects (n)": t.n,
            "mean difference": t.mean_diff,
            "better / worse / tied": f"{t.wins} / {t.losses} / {t.n - t.n_nonzero}",
            "Wilcoxon p": fmt(t.p_value),
            "smallest possible p": fmt(t.min_p),
        } for t in run.tests]
        blocks.append(D.Table(pd.DataFrame(rows).set_index("comparison"), f"paired per-subject test of {main} (Wilcoxon signed-rank, two-sided, uncorrected)"))
        blocks.append(D.Bullets([f"{t.other} vs {t.baseline}: {t.note}" for t in run.tests]))
    blocks += label_efficiency_blocks(index, main)
    return blocks + _figure_blocks(index, fig_dir, None, ("comparison", "label_efficiency"))


def label_efficiency_blocks(index: dict, main: str) -> list:
    """The label-efficiency figure's numbers as tables (:mod:`affectube.report.label_efficiency`)."""
    entry = next((e for e in index.get("figures", []) if e["kind"] == "label_efficiency"), None)
    if entry is None:
        return []
    blocks = []
    curves = pd.DataFrame(entry["data"]["curves"])
    if len(curves):
        cells = [f"{fmt(m)} [{fmt(lo)}, {fmt(hi)}]" for m, lo, hi in zip(curves["mean"], curves["ci_low"], curves["ci_high"])]
        table = curves.assign(cell=cells).pivot(index="line", columns="fraction", values="cell")
        table.columns = [f"{main} at {c:g} of the labels" for c in table.columns]
        blocks.append(D.Table(table, f"label efficiency: {main} mean over folds x seeds [95% t-interval] per labelled fraction"))
    paired = pd.DataFrame(entry["data"]["paired"])
    if len(paired):
        rows = [{"comparison": r["comparison"], "labelled fraction": f"{r['fraction']:g}", "pairs (seed x fold)": r["n"],
                 "mean difference": fmt(r["mean_diff"]), "95% t-interval": f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]",
                 "better / worse": f"{r['better']} / {r['worse']}"} for r in paired.to_dict("records")]
        blocks.append(D.Table(pd.DataFrame(rows).set_index("comparison"),
                              f"paired difference of {main}, pretrained − scratch, same seed and fold (the folds of a seed share "
                              "training videos: the interval shows the spread, it is not a test)"))
    return blocks


PROTOCOL_LABELS = {
    "loso": "subject-independent (leave one subject out)",
    "group_kfold": "subject-independent (k folds of subjects)",
    "official": "the dataset's official split (subjects kept apart)",
    "session_kfold": "subject-dependent (k folds of sessions: test subjects are also trained on, in other sessions)",
    "video_kfold": "within-subject (k folds of each subject's videos: the test subject is also trained on; subject-dependent)",
}


def protocol_label(protocol: str, folds: list) -> str:
    """What a fold protocol's results mean; decided from the folds themselves when they share subjects."""
    shared = any(set(f.test_subjects) & (set(f.train_subjects) | set(f.val_subjects)) for f in folds)
    label = PROTOCOL_LABELS.get(protocol, protocol)
    if shared and "subject-dependent" not in label:
        label += "; subject-dependent: test subjects also appear in training or validation"
    return label


def validity_section(run: Run, experiments: list[Experiment]) -> list:
    blocks: list = [D.Heading("Validity")]
    items = []
    for exp in experiments:
        folds = exp.folds
        protos = {f.fold.extra.get("protocol") for f in folds if f.fold is not None} - {None}
        protocol = ", ".join(sorted(protos)) or run_protocol(resolved(run.cfg, exp.name))
        items.append(f"{exp.name}: protocol {protocol}: {protocol_label(protocol, folds)}.")
    # one line per distinct statement
    seen: dict[str, list[str]] = {}
    for it in items:
        name, _, rest = it.partition(": ")
        seen.setdefault(rest, []).append(name)
    blocks.append(D.Bullets([f"{', '.join(names)}: {rest}" for rest, names in seen.items()]))
    dependent = [rest for rest in seen if "subject-dependent" in rest]
    if dependent:
        blocks.append(D.Text("Subject-dependent results measure recognition of people the model was trained on; they are not "
                             "comparable with subject-independent (leave-one-subject-out) results.", "warn"))
    if run.overlap is not None:
        kind = "warn" if run.overlap.any() or not run.overlap.checked else "p"
        blocks.append(D.Text(run.overlap.sentence(), kind))
    elif C_uses_pretrain(run.cfg):
        blocks.append(D.Text("Pretraining/test overlap not checked: no results/pretrain/summary.json.", "warn"))
    else:
        blocks.append(D.Text("No experiment starts from the pretrained encoder: no pretraining/test overlap to check.", "note"))
    return blocks


def C_uses_pretrain(cfg: dict) -> bool:
    from affectube.report.plan import uses_pretrain

    return uses_pretrain(cfg)


def check_overlap(cfg: dict, results: Path, experiments: list[Experiment]) -> O.Overlap | None:
    """Pretraining/test overlap from results/pretrain/summary.json and the test side of the folds."""
    if not C_uses_pretrain(cfg):
        return None
    summary_path = results / "pretrain" / "summary.json"
    if not summary_path.exists():
        return None
    try:
        summary = read_json(summary_path)
    except (ValueError, OSError):
        summary = None
    subjects, videos = set(), set()
    for exp in experiments:
        for f in exp.folds:
            subjects |= set(map(str, f.test_subjects))
            if f.fold is not None and "videos" in f.fold.extra:
                videos |= set(map(str, f.fold.videos("test")))
            elif f.predictions is not None:
                videos |= set(f.predictions["video_id"].astype(str))
    data = cfg.get("data") or {}  # read as given (report/params.py): an absent key is none / off
    return O.check(summary, str(data.get("finetune")), subjects, videos, results / "clips", bool(data.get("transductive")),
                   list(data.get("pretrain") or []))


def pretrain_section(run: Run, index: dict, fig_dir: Path) -> list:
    pre = run.results / "pretrain"
    if not pre.exists():
        return []
    blocks: list = [D.Heading("Pretraining")]
    summary = pre / "summary.json"
    if summary.exists():
        try:
            data = read_json(summary)
            flat = {k: v for k, v in data.items() if isinstance(v, (str, int, float, bool)) or v is None}
            dd = data.get("data") if isinstance(data.get("data"), dict) else {}
            flat.update({f"data.{k}": v for k, v in dd.items() if isinstance(v, (str, int, float, bool))})
            if flat:
                blocks.append(D.Table(pd.DataFrame({"value": {k: str(v) for k, v in flat.items()}}).rename_axis("key"), "pretraining summary.json"))
        except (ValueError, OSError) as exc:
            blocks.append(D.Text(f"{summary}: unreadable ({exc})", "warn"))
    blocks += _figure_blocks(index, fig_dir, None, ("pretrain_curve",))
    recon = pre / "reconstruction.png"
    if recon.exists():
        blocks.append(D.Figure(recon, "Masked-autoencoder reconstructions at the end of pretraining (original, masked input, reconstruction)."))
    return blocks


def data_section(run: Run, experiments: list[Experiment]) -> list:
    data = run.cfg.get("data") or {}  # read as given (report/params.py): an absent key is none / off
    blocks: list = [D.Heading("Data and preprocessing")]
    blocks.append(D.Text(f"Fine-tuning and evaluation on '{data.get('finetune')}'; self-supervised pretraining on "
                         f"{', '.join(data.get('pretrain') or []) or 'nothing'} (transductive: {bool(data.get('transductive'))})."))
    man = run.manifest
    if man is not None and len(man):
        if "emotion" in man.columns and man["emotion"].notna().any():
            counts = pd.crosstab(man["subject"].astype(str), man["emotion"].fillna("(none)"), margins=True, margins_name="total")
            counts.index.name = "subject"
            blocks.append(D.Table(counts, f"videos per subject and class in the '{data.get('finetune')}' manifest"))
            used = list(dict.fromkeys(c for e in experiments for c in e.classes))
            unused = [c for c in counts.columns if c not in used and c != "total"]
            if used and unused:
                blocks.append(D.Text(f"Classes used for fine-tuning and evaluation: {', '.join(used)}; not used: "
                                     f"{', '.join(unused)} (finetune.classes).", "note"))
        else:
            counts = man.groupby(man["subject"].astype(str)).size().rename("videos").to_frame()
            counts.index.name = "subject"
            blocks.append(D.Table(counts, "videos per subject"))
    for qc in run_qc_tables(run):
        try:
            table = read_csv(qc)
        except DataError as exc:
            blocks.append(D.Text(str(exc), "warn"))
            continue
        col = coverage_column(table)
        if col is not None:
            cov = pd.to_numeric(table[col], errors="coerce")
            blocks.append(D.Text(f"Face QC of '{qc.parent.name}': {len(table)} videos, face coverage mean {cov.mean():.1%}, "
                                 f"min {cov.min():.1%} (threshold {run.cfg['report']['coverage_threshold']:.0%})."))
        png = qc.with_suffix(".png")
        if png.exists():
            blocks.append(D.Figure(png, f"Face-detection QC of dataset '{qc.parent.name}' (made by the faces_qc rule)."))
        sheet = qc.parent / "contact_sheet.png"
        if sheet.exists():
            blocks.append(D.Figure(sheet, f"Face crops of dataset '{qc.parent.name}' as the clip stores will see them (faces_sheet rule)."))
    return blocks


def folds_section(experiments: list[Experiment]) -> list:
    blocks: list = [D.Heading("Folds")]
    seen: dict[str, str] = {}
    for exp in experiments:
        rows = []
        for f in exp.folds:
            n = (lambda side: len(f.fold.videos(side)) if f.fold is not None and "videos" in f.fold.extra else "?")
            rows.append({"fold": f.index, "train subjects": " ".join(f.train_subjects), "val subjects": " ".join(f.val_subjects),
                         "test subjects": " ".join(f.test_subjects), "videos train/val/test": f"{n('train')}/{n('val')}/{n('test')}",
                         "status": f.status})
        if not rows:
            blocks.append(D.Text(f"{exp.name}: no folds file and no fold results", "warn"))
            continue
        table = pd.DataFrame(rows).set_index("fold")
        key = table.drop(columns=["status"], errors="ignore").to_json()
        if key in seen:
            blocks.append(D.Text(f"{exp.name}: the same folds as {seen[key]}" + (
                f" (failed: {', '.join(str(f.index) for f in exp.failed_folds)})" if exp.failed_folds else ""), "note"))
            continue
        seen[key] = exp.name
        protos = {f.fold.extra.get("protocol") for f in exp.folds if f.fold is not None} - {None}
        label = protocol_label(", ".join(sorted(protos)) or "?", exp.folds)
        disjoint = "subject-disjoint folds" if "subject-dependent" not in label else "subject-dependent folds"
        blocks.append(D.Table(table, f"{exp.name}: {disjoint} (inner validation selects the model; the test side selects nothing)"))
    return blocks


def dataset_provenance(cfg: dict, results: Path) -> pd.DataFrame:
    """Each dataset of the run: its role, manifest file, sha256 and number of videos."""
    import hashlib

    from affectube.layout import datasets_of

    data = cfg.get("data") or {}
    rows = []
    for name in datasets_of(cfg):
        role = " + ".join(r for r, on in (("pretrain", name in (data.get("pretrain") or [])), ("finetune", name == data.get("finetune"))) if on)
        path = results / "manifests" / f"{name}.csv"
        digest, videos = "(no manifest)", None
        if path.exists():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            try:
                videos = len(read_csv(path))
            except DataError:
                videos = None
        rows.append({"dataset": name, "role": role, "manifest": str(path), "sha256": digest, "videos": videos})
    return pd.DataFrame(rows, columns=["dataset", "role", "manifest", "sha256", "videos"])


def provenance_section(run: Run, params_files: str | None = None) -> list:
    from affectube.layout import datasets_of

    cfg = {k: v for k, v in run.cfg.items()}
    if isinstance(cfg.get("data"), dict) and isinstance(cfg["data"].get("datasets"), dict):
        used = datasets_of(cfg)  # definitions of datasets this run does not use are left out
        cfg["data"] = {**cfg["data"], "datasets": {k: v for k, v in cfg["data"]["datasets"].items() if k in used}}
    files = params_files or "(not given)"
    return [
        D.Heading("Params, datasets and code version"),
        D.Text(f"This report covers one run: results root {run.results}, params file(s) {files}, code version "
               f"{code_version()}. It reads only the datasets, experiments and folds these params name."),
        D.Table(dataset_provenance(run.cfg, run.results), "datasets of this run (manifest sha256 = the exact video list and labels)"),
        D.Text("Params as passed to the report (params files with the schema's defaults; experiments apply their "
               "overrides on top; only the datasets this run uses):"),
        D.Code(yaml.safe_dump(cfg, sort_keys=False)),
    ]


# ---------------------------------------------------------------- stage


def experiment_manifests(cfg: dict, results: Path) -> dict:
    """Dataset -> manifest of every dataset an experiment fine-tunes (``finetune.dataset``: cross-dataset chains)."""
    from affectube.lineage import chain_datasets

    paths = {d: results / "manifests" / f"{d}.csv" for d in chain_datasets(cfg)}
    return {d: read_csv(p) for d, p in paths.items() if p.exists()}


def build(cfg: dict, results: str | Path, out_dir: str | Path, fig_dir: str | Path | None = None,
          params_files: str | None = None) -> dict:
    """Write report.html, report.md, comparison.csv and summary.json; return the problems found."""
    results, out_dir = Path(results), Path(out_dir)
    fig_dir = Path(fig_dir) if fig_dir else out_dir / "figures"
    cfg = report_params(cfg)  # report, evaluate, figures filled; finetune, pretrain when given
    rcfg = cfg["report"]
    main = cfg["evaluate"]["main_metric"]
    params = C.experiment_params(cfg)  # grid entries expanded: one row per experiment
    names = list(params.index)
    experiments = [load_experiment(results, n) for n in names]
    index = read_json(fig_dir / "index.json") if (fig_dir / "index.json").exists() else {"figures": []}
    manifest = None
    dataset = cfg.get("data", {}).get("finetune")
    if dataset and (results / "manifests" / f"{dataset}.csv").exists():
        manifest = read_csv(results / "manifests" / f"{dataset}.csv")
    manifests = experiment_manifests(cfg, results)
    metric = main
    groups = C.seed_groups(cfg)
    by_name = {e.name: e for e in experiments}
    stats = {g.name: C.chance_stats([by_name[m] for m in g.members if m in by_name], main, cfg) for g in groups}
    tests = C.paired_tests(experiments, metric, C.default_baseline(cfg), float(rcfg["alpha"]), groups)
    run = Run(cfg, results, experiments, main, manifest, tests, check_overlap(cfg, results, experiments), manifests)
    found = run_checks(run)
    table = C.side_by_side(experiments, main, params, groups, stats)
    protocol = run_protocol(cfg)
    n_folds = max((len(e.folds) for e in experiments), default=0)
    blocks = [
        *overview(run, experiments, f"protocol {protocol}, {n_folds} folds{_dependence(experiments, protocol)}", table, groups, stats),
        *problems_section(found),
        *[b for exp in experiments for b in experiment_section(run, exp, index, fig_dir)],
        *comparison_section(run, experiments, index, fig_dir, table, params),
        *validity_section(run, experiments),
        *pretrain_section(run, index, fig_dir),
        *data_section(run, experiments),
        *folds_section(experiments),
        *provenance_section(run, params_files),
    ]
    title = rcfg["title"]
    write_text(out_dir / "report.html", D.to_html(title, blocks, out_dir, embed=bool(rcfg["embed_images"])))
    write_text(out_dir / "report.md", D.to_markdown(title, blocks, out_dir))
    with atomic_path(out_dir / "comparison.csv") as tmp:
        table.to_csv(tmp, index=False)
    write_json(out_dir / "summary.json", _summary(experiments, main, tests, found, table, groups, stats))
    return found


def _dependence(experiments: list[Experiment], protocol: str) -> str:
    """' (subject-dependent ...)' when some experiment's folds are not subject-independent, else ''."""
    labels = {protocol_label(p, e.folds) for e in experiments
              for p in ({f.fold.extra.get("protocol") for f in e.folds if f.fold is not None} - {None} or {protocol})}
    dependent = sorted(lb for lb in labels if "subject-dependent" in lb)
    return f" ({'; '.join(dependent)})" if dependent else ""


def _summary(experiments: list[Experiment], main: str, tests: list, found: dict, table: pd.DataFrame | None = None,
             groups: list | None = None, stats: dict | None = None) -> dict:
    """Small, flat-ish numbers for ``dvc metrics show``: the main metric per experiment (seed group) and the tests."""
    out: dict = {"main_metric": main, "experiments": {}, "problems": sum(len(v) for v in found.values())}
    by_name = {e.name: e for e in experiments}
    groups = groups or [C.Group(e.name, [e.name], [None]) for e in experiments]
    rows = table[table["metric"] == main].set_index("experiment") if table is not None and len(table) else pd.DataFrame()
    for g in groups:
        members = [by_name[m] for m in g.members if m in by_name]
        r = rows.loc[g.name] if g.name in rows.index else None
        st = (stats or {}).get(g.name)
        out["experiments"][g.name] = {
            "mean": _num(r["mean"]) if r is not None else None,
            "std": _num(r["std"]) if r is not None else None,
            "pooled": _num(r["pooled"]) if r is not None else None,
            "seeds": len(members),
            "sd_seeds": _num(r["sd_seeds"]) if r is not None else None,
            "folds_ok": sum(len(e.ok_folds) for e in members),
            "folds_failed": sum(len(e.failed_folds) for e in members),
            "chance": _num(st.chance) if st is not None else None,
            "p_perm": _num(st.p_value) if st is not None else None,
            "ci_low": _num(st.ci_low) if st is not None else None,
            "ci_high": _num(st.ci_high) if st is not None else None,
            "ci_unit": st.unit if st is not None else None,
        }
    out["paired_tests"] = {f"{t.other}_vs_{t.baseline}": {"n": t.n, "mean_diff": _num(t.mean_diff), "p": _num(t.p_value)} for t in tests}
    return out


def _num(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", required=True, help="JSON of the params sections (figures, report, evaluate, data, finetune, experiments ...)")
    parser.add_argument("--results", default="results", help="results directory to read (default: results)")
    parser.add_argument("--out-dir", default="results/report", help="where report.html/report.md go")
    parser.add_argument("--figures", default=None, help="figures directory with index.json (default: OUT_DIR/figures)")
    parser.add_argument("--params-files", default="", help="the params file(s) of the run, as the rule states them (shown in the report)")


def run(args: argparse.Namespace) -> int:
    cfg = parse_cfg(args.cfg)
    found = build(cfg, args.results, args.out_dir, args.figures, args.params_files or None)
    n = sum(len(v) for v in found.values())
    log.info("wrote %s/report.html and report.md (%d problem(s) flagged)", args.out_dir, n)
    for name, items in found.items():
        for item in items:
            log.warning("%s: %s", name, item)
    return 0
