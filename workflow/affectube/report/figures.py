"""Stage ``figures``: every report figure, drawn from saved predictions and logs only.

``python -m affectube figures --cfg JSON --results results --out-dir results/report/figures``

The figures (see :mod:`affectube.report.plan` for which ones a run has):

- ``{exp}/confusion``: confusion matrix over the videos of every fold, counts and row-normalised;
- ``{exp}/per_subject``: the main metric per test subject, with the mean over folds;
- ``{exp}/scatter``: predicted vs true for each continuous target, CCC in the title;
- ``{exp}/traces``: predicted vs annotated per-frame traces for a few videos;
- ``{exp}/learning_curves``: train/val loss and the validation metric per fold (finetune ``log.csv``);
- ``pretrain_curve``: the pretraining loss (pretrain ``log.csv``);
- ``comparison``: the main metric per subject for every experiment, paired lines;
- ``label_efficiency``: the main metric against ``finetune.label_fraction``, one line per
  initialisation, and the paired pretrained − scratch difference (:mod:`affectube.report.label_efficiency`).

Each is written in every format of ``figures.formats``; ``index.json`` lists them with
the numbers they show (so tests and the report can check them against the metrics).
Metrics come from :mod:`affectube.eval.metrics`. Folds that failed are left out and
named in the figure titles and the index.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from affectube.config import expand_experiments, parse_cfg
from affectube.errors import ConfigError, DataError
from affectube.eval import metrics as M
from affectube.eval.metrics import metric_label
from affectube.io import write_json
from affectube.report import plan as P
from affectube.report.compare import default_baseline, paired_tests, subject_values
from affectube.report.results import (
    Experiment,
    load_experiment,
    labelled_videos,
    per_subject_metrics,
    read_csv,
    summarise,
)
from affectube.report.params import report_params
from affectube.report.style import Style, wrap_label

log = logging.getLogger(__name__)


class Context:
    """What every figure function gets: params, style, and the loaded experiments."""

    def __init__(self, cfg: dict, results: Path, out_dir: Path):
        self.cfg = cfg = report_params(cfg)
        self.fig_cfg = cfg["figures"]
        self.style = Style(self.fig_cfg)
        self.results = results
        self.out_dir = out_dir
        self.main_metric = cfg["evaluate"]["main_metric"]
        self.metric = self.fig_cfg["metric"] or self.main_metric
        self.subjects = self.fig_cfg["subjects"]
        self._experiments: dict[str, Experiment] = {}

    def experiment(self, name: str) -> Experiment:
        if name not in self._experiments:
            self._experiments[name] = load_experiment(self.results, name)
        return self._experiments[name]

    @property
    def experiments(self) -> list[Experiment]:
        return [self.experiment(n) for n in expand_experiments(self.cfg.get("experiments"))]

    def keep_subject(self, subject: str) -> bool:
        return self.subjects is None or str(subject) in {str(s) for s in self.subjects}


# ---------------------------------------------------------------- helpers


def _failed_note(exp: Experiment) -> str:
    bad = exp.failed_folds
    if not bad:
        return ""
    return f" — fold {', '.join(str(f.index) for f in bad)} FAILED, left out"


def _metric_column(table: pd.DataFrame, metric: str) -> str | None:
    for col in (metric, f"frame_{metric}"):
        if col in table.columns and table[col].notna().any():
            return col
    return None


def _metric_limits(metric: str, values) -> tuple[float, float] | None:
    """Fixed y-limits for bounded metrics, so bars of different runs compare by eye."""
    bounds = M.metric_range(metric)
    if bounds == (0.0, 1.0):
        return (0.0, 1.05)
    if bounds == (-1.0, 1.0):  # ccc, ccc_valence, frame_pearson ...
        finite = np.asarray(values, dtype=float)
        finite = finite[np.isfinite(finite)]
        lo = min(0.0, float(finite.min())) if len(finite) else 0.0
        return (lo - 0.05, 1.05)
    return None


def _empty(ax, text: str) -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes, fontsize=10)


def _chance(exp: Experiment, metric: str) -> tuple[float, str] | None:
    """A trivial-classifier reference line for categorical metrics."""
    if metric == "uar" and exp.classes:
        return 1.0 / len(exp.classes), f"chance (1/{len(exp.classes)} classes)"
    if metric in ("accuracy", "war"):
        video = M.per_video(exp.predictions())
        if "y_true" in video and video["y_true"].notna().any():
            share = video["y_true"].value_counts(normalize=True).iloc[0]
            return float(share), "majority-class baseline"
    return None


# ---------------------------------------------------------------- figures


def confusion(ctx: Context, spec: P.FigureSpec) -> dict:
    exp = ctx.experiment(spec.exp)
    table = exp.predictions()
    classes = exp.classes
    with ctx.style.figure(1, 2, scale=(1.6, 1.15)) as (fig, axes):
        if table.empty or not classes:
            for ax in axes[0]:
                _empty(ax, f"{exp.name}: no categorical predictions{_failed_note(exp)}")
            ctx.style.save(fig, ctx.out_dir / spec.name)
            return {"labels": classes, "counts": None}
        video = M.per_video(table)
        m = M.categorical_metrics(video["y_true"], video["y_pred"], classes)
        counts = np.asarray(m["confusion_matrix"], dtype=float)
        support = counts.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            norm = np.where(support > 0, counts / support, np.nan)
        labels = [wrap_label(c, 10) for c in classes]
        row_labels = [f"{lab}\n(n={int(n)})" for lab, n in zip(labels, support[:, 0])]
        titles = (
            f"counts (videos, {len(exp.ok_folds)} folds pooled)",
            f"row-normalised = recall; pooled UAR = {m['uar']:.3f} (chance {1 / len(classes):.3f})",
        )
        for ax, data, title, is_norm in zip(axes[0], (counts, norm), titles, (False, True)):
            shown = np.ma.masked_invalid(data)
            vmax = 1.0 if is_norm else max(1.0, np.nanmax(data))
            im = ax.imshow(shown, vmin=0, vmax=vmax, cmap=ctx.style.cmap)
            ax.grid(False)
            ax.set_xticks(range(len(classes)), labels, rotation=45, ha="right")
            ax.set_yticks(range(len(classes)), row_labels)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title(title)
            for i in range(len(classes)):
                for j in range(len(classes)):
                    v = data[i, j]
                    if np.isnan(v):
                        txt, color = "–", "0.4"
                    else:
                        txt = f"{v:.2f}" if is_norm else f"{int(v)}"
                        color = "white" if v > 0.6 * vmax else "black"
                    ax.text(j, i, txt, ha="center", va="center", color=color, fontsize=8)
            fig.colorbar(im, ax=ax, shrink=0.8, label="recall" if is_norm else "videos")
        absent = [c for c, s in zip(classes, support[:, 0]) if s == 0]
        extra = f"; no test videos of {', '.join(absent)} (rows '–')" if absent else ""
        fig.suptitle(f"{exp.name}: confusion matrix, {int(counts.sum())} test videos{extra}{_failed_note(exp)}")
        ctx.style.save(fig, ctx.out_dir / spec.name)
    return {"labels": classes, "counts": counts.astype(int).tolist(), "uar": m["uar"], "absent_classes": absent}


def per_subject(ctx: Context, spec: P.FigureSpec) -> dict:
    exp = ctx.experiment(spec.exp)
    subj = per_subject_metrics(exp, ctx.main_metric)
    col = _metric_column(subj, ctx.metric) if not subj.empty else None
    with ctx.style.figure(scale=(1.0, 1.1)) as (fig, axes):
        ax = axes[0, 0]
        if col is None:
            _empty(ax, f"{exp.name}: metric {ctx.metric!r} not available{_failed_note(exp)}")
            ctx.style.save(fig, ctx.out_dir / spec.name)
            return {"metric": ctx.metric, "subjects": {}}
        preds = exp.predictions()
        labelled = {str(s): labelled_videos(t) for s, t in preds.groupby(preds["subject"].astype(str))}
        rows = [(str(r.subject), int(r.fold), labelled.get(str(r.subject), int(r.videos)), float(r[col])) for _, r in subj.iterrows()]
        # a failed fold keeps its slot (hatched, "failed"), so no subject silently disappears
        rows += [(s, f.index, 0, math.nan) for f in exp.failed_folds for s in (f.test_subjects or [f"fold {f.index}"])]
        rows = sorted((r for r in rows if ctx.keep_subject(r[0]) or r[0].startswith("fold ")), key=lambda r: r[0])
        failed = {f.index for f in exp.failed_folds}
        x = np.arange(len(rows))
        values = np.array([r[3] for r in rows], dtype=float)
        color = ctx.style.colors(1)[0]
        limits = _metric_limits(col, values[np.isfinite(values)])
        top = limits[1] if limits else (np.nanmax(values) if np.isfinite(values).any() else 1.0)
        for xi, (s, k, n, v) in zip(x, rows):
            if k in failed:
                ax.bar(xi, top * 0.95, width=0.7, color="none", edgecolor="0.6", hatch="//", linewidth=0.8)
                ax.text(xi, top * 0.5, f"fold {k}\nFAILED", ha="center", va="center", color="0.35", fontsize=8)
            elif np.isfinite(v):
                ax.bar(xi, v, width=0.7, color=color)
                ax.text(xi, v, f"{v:.2f}", ha="center", va="bottom" if v >= 0 else "top", fontsize=8)
            else:
                ax.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=8)
        ticks = [f"{s}\nfold {k} · {n} vid" if k not in failed else f"{s}\nfold {k}" for s, k, n, _ in rows]
        many = len(x) > 6
        ax.set_xticks(x, ticks, rotation=45 if many else 0, ha="right" if many else "center")
        handles = [Patch(color=color, label=f"{metric_label(col)} of each test subject")]
        summary = summarise(exp, ctx.main_metric)
        n_folds = int(summary.loc[col, "n"]) if col in summary.index else 0
        mean = float(summary.loc[col, "mean"]) if n_folds else math.nan
        std = float(summary.loc[col, "std"]) if n_folds > 1 else math.nan
        if np.isfinite(mean):
            label = f"mean over {n_folds} folds = {mean:.3f}" + (f" ± {std:.3f} (sd)" if np.isfinite(std) else "")
            handles.append(ax.axhline(mean, color="black", linestyle="--", linewidth=1.2, label=label))
        chance = _chance(exp, col)
        if chance:
            handles.append(ax.axhline(chance[0], color="0.45", linestyle=":", linewidth=1.4, label=f"{chance[1]} = {chance[0]:.2f}"))
        if limits:
            ax.set_ylim(*limits)
        ax.axhline(0, color="0.3", linewidth=0.6)
        ax.set_ylabel(metric_label(col))
        ax.set_xlabel("test subject")
        shown = "" if ctx.subjects is None else " (selected subjects)"
        at_chance = " — at chance level" if chance and np.isfinite(mean) and abs(mean - chance[0]) < 0.01 else ""
        ax.set_title(f"{exp.name}: {metric_label(col)} per test subject{shown}{at_chance}{_failed_note(exp)}")
        fig.legend(handles=handles, loc="outside lower center", ncol=min(3, len(handles)), frameon=False)
        ctx.style.save(fig, ctx.out_dir / spec.name)
    return {
        "metric": col,
        "subjects": {s: v for s, k, _, v in rows if k not in failed},
        "failed_folds": sorted(failed),
        "fold_mean": mean,
        "fold_std": std,
    }


def scatter(ctx: Context, spec: P.FigureSpec) -> dict:
    exp = ctx.experiment(spec.exp)
    table = exp.predictions()
    targets = exp.targets
    out: dict = {"ccc": {}}
    n = max(1, len(targets))
    with ctx.style.figure(1, n, scale=(0.75 * n if n > 1 else 1.0, 1.15)) as (fig, axes):
        if table.empty or not targets:
            _empty(axes[0, 0], f"{exp.name}: no continuous predictions{_failed_note(exp)}")
            ctx.style.save(fig, ctx.out_dir / spec.name)
            return out
        video = M.per_video(table)
        subjects = sorted(video["subject"].astype(str).unique())
        colors = ctx.style.color_map(subjects)
        for ax, t in zip(axes[0], targets):
            y, p = video[f"true_{t}"].to_numpy(float), video[f"pred_{t}"].to_numpy(float)
            c, r = M.ccc(y, p), M.pearson(y, p)
            out["ccc"][t] = c
            for s in subjects:
                sel = (video["subject"].astype(str) == s).to_numpy()
                ax.scatter(y[sel], p[sel], s=18, alpha=0.8, color=colors[s], label=s, edgecolor="none")
            finite = np.concatenate([y[np.isfinite(y)], p[np.isfinite(p)]])
            lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (-1.0, 1.0)
            pad = 0.05 * (hi - lo or 1.0)
            lo, hi = lo - pad, hi + pad
            ax.plot([lo, hi], [lo, hi], color="0.4", linestyle="--", linewidth=1, label="y = x")
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            ax.set_aspect("equal", adjustable="box")
            ax.set_xlabel(f"true {t}")
            ax.set_ylabel(f"predicted {t}")
            n_ok = int((np.isfinite(y) & np.isfinite(p)).sum())
            ax.set_title(f"{t}: CCC = {c:.3f}, r = {r:.3f} (n = {n_ok} videos)")
        axes[0, -1].legend(title="subject", fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.suptitle(f"{exp.name}: predicted vs true (per video, {len(exp.ok_folds)} folds pooled){_failed_note(exp)}")
        ctx.style.save(fig, ctx.out_dir / spec.name)
    return out


def traces(ctx: Context, spec: P.FigureSpec) -> dict:
    exp = ctx.experiment(spec.exp)
    frames = exp.frames()
    targets = M.targets_of(frames) if frames is not None else []
    max_videos = int(ctx.fig_cfg["max_traces"])
    if frames is None or not targets:
        with ctx.style.figure() as (fig, axes):
            _empty(axes[0, 0], f"{exp.name}: no per-frame predictions (predictions_frames.csv) were saved{_failed_note(exp)}")
            ctx.style.save(fig, ctx.out_dir / spec.name)
        return {"videos": []}
    frames = frames[frames["subject"].astype(str).map(ctx.keep_subject)]
    videos = _pick_videos(frames, max_videos)
    n = max(1, len(videos))
    colors = ctx.style.colors(max(2, len(targets)))
    with ctx.style.figure(n, 1, scale=(1.2, 0.55 * n + 0.3), sharex=True, sharey=True) as (fig, axes):
        if not videos:
            _empty(axes[0, 0], f"{exp.name}: no frames for the selected subjects")
        for ax, (subject, video_id) in zip(axes[:, 0], videos):
            v = frames[(frames["subject"].astype(str) == subject) & (frames["video_id"].astype(str) == video_id)].sort_values("time")
            parts = []
            for t, color in zip(targets, colors):
                ax.plot(v["time"], v[f"true_{t}"], color=color, linewidth=1.6, label=f"annotated {t}")
                ax.plot(v["time"], v[f"pred_{t}"], color=color, linewidth=1.2, linestyle="--", label=f"predicted {t}")
                parts.append(f"CCC {t} = {M.ccc(v[f'true_{t}'], v[f'pred_{t}']):.2f}")
            ax.set_title(f"subject {subject}, video {video_id} (fold {int(v['fold'].iloc[0])}): " + ", ".join(parts), fontsize=9)
            ax.set_ylabel("value")
            ax.axhline(0, color="0.5", linewidth=0.6)
        axes[-1, 0].set_xlabel("time (s)")
        if videos:
            axes[0, 0].legend(ncol=2 * len(targets), fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.25))
        fig.suptitle(f"{exp.name}: annotated (solid) vs predicted (dashed) over time{_failed_note(exp)}")
        ctx.style.save(fig, ctx.out_dir / spec.name)
    return {"videos": [f"{s}/{v}" for s, v in videos]}


def _pick_videos(frames: pd.DataFrame, limit: int) -> list[tuple[str, str]]:
    """Up to ``limit`` videos, spread over subjects (round robin, sorted)."""
    by_subject: dict[str, list[str]] = {}
    pairs = frames[["subject", "video_id"]].astype(str).drop_duplicates().sort_values(["subject", "video_id"])
    for s, v in pairs.itertuples(index=False):
        by_subject.setdefault(s, []).append(v)
    out: list[tuple[str, str]] = []
    while len(out) < limit and any(by_subject.values()):
        for s in sorted(by_subject):
            if by_subject[s] and len(out) < limit:
                out.append((s, by_subject[s].pop(0)))
    return out


def learning_curves(ctx: Context, spec: P.FigureSpec) -> dict:
    exp = ctx.experiment(spec.exp)
    logged = [f for f in exp.ok_folds if f.log is not None and len(f.log)]
    colors = ctx.style.color_map([f.index for f in exp.folds])
    out: dict = {"folds": [f.index for f in logged]}
    with ctx.style.figure(1, 2, scale=(1.6, 1.0)) as (fig, axes):
        ax_loss, ax_val = axes[0]
        if not logged:
            _empty(ax_loss, f"{exp.name}: no training logs (log.csv){_failed_note(exp)}")
            ax_val.set_axis_off()
            ctx.style.save(fig, ctx.out_dir / spec.name)
            return out
        val_cols = [c for c in logged[0].log.columns if c.startswith("val_") and c != "val_loss"]
        val_col = f"val_{ctx.metric}" if f"val_{ctx.metric}" in val_cols else (val_cols[0] if val_cols else None)
        train_col = _train_column(logged[0].log, val_col)
        warmup = next((int(w) for f in logged if (w := ((f.metrics_file or {}).get("training") or {}).get("warmup_epochs")) is not None), 0)
        if warmup > 0:
            for ax in (ax_loss, ax_val):
                ax.axvspan(0.5, warmup + 0.5, color="0.9", zorder=0, label="_warmup")
        for f in logged:
            lg, c = f.log, colors[f.index]
            if "train_loss" in lg:
                ax_loss.plot(lg["epoch"], lg["train_loss"], color=c, marker="o", markersize=3, label=f"fold {f.index} train")
            if "val_loss" in lg:
                ax_loss.plot(lg["epoch"], lg["val_loss"], color=c, marker="s", markersize=3, linestyle="--", label=f"fold {f.index} val")
            if val_col and val_col in lg:
                ax_val.plot(lg["epoch"], lg[val_col], color=c, marker="o", markersize=3, label=f"fold {f.index}")
                if train_col and train_col in lg:
                    ax_val.plot(lg["epoch"], lg[train_col], color=c, linestyle=":", linewidth=1.2, label="_train")
                best = ((f.metrics_file or {}).get("training") or {}).get("best_epoch")
                sel = lg.loc[lg["epoch"] == best, val_col] if best is not None else []
                if len(sel):
                    ax_val.plot([best], [float(sel.iloc[0])], marker="*", markersize=11, color=c, markeredgecolor="black",
                                linestyle="none", label="_selected", zorder=5)
                    out.setdefault("selected_epochs", {})[f.index] = int(best)
            _mark_nonfinite(ax_loss, lg, ("train_loss", "val_loss"), f"fold {f.index}: ")
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("loss")
        ax_loss.set_title("loss (solid: train, dashed: inner validation)", fontsize=9)
        ax_loss.legend(fontsize=7, ncol=2)
        if val_col:
            ax_val.set_xlabel("epoch")
            ax_val.set_ylabel(f"inner-validation {metric_label(val_col.removeprefix('val_'))}")
            ax_val.set_title(f"{metric_label(val_col.removeprefix('val_'))}: inner validation (solid)"
                             + (f", training (dotted: {train_col})" if train_col else "") + (", warmup shaded" if warmup else ""),
                             fontsize=9)
            limits = _metric_limits(val_col.removeprefix("val_"), np.array([]))
            if limits:
                ax_val.set_ylim(*limits)
            handles, _ = ax_val.get_legend_handles_labels()
            if out.get("selected_epochs"):
                handles.append(Line2D([], [], marker="*", markersize=10, color="0.5", markeredgecolor="black", linestyle="none",
                                      label="selected epoch (model kept)"))
            ax_val.legend(handles=handles, fontsize=7)
        else:
            _empty(ax_val, "no validation metric in log.csv")
        epochs = sorted({int(e) for f in logged for e in f.log["epoch"]})
        for ax in (ax_loss, ax_val):
            _integer_ticks(ax, epochs)
        fig.suptitle(f"{exp.name}: fine-tuning curves per fold{_failed_note(exp)}")
        ctx.style.save(fig, ctx.out_dir / spec.name)
    out["val_metric"] = val_col
    out["train_metric"] = train_col
    out["warmup_epochs"] = warmup
    return out


def _train_column(log, val_col: str | None) -> str | None:
    """The training counterpart of the validation metric in log.csv (``train_uar`` for ``val_uar``;
    ``train_accuracy``/``train_ccc`` when only those were logged)."""
    if val_col is None:
        return None
    want = "train_" + val_col.removeprefix("val_")
    for col in (want, "train_accuracy" if M_is_categorical(val_col) else "train_ccc"):
        if col in log.columns:
            return col
    return None


def M_is_categorical(col: str) -> bool:
    from affectube.eval.metrics import CATEGORICAL

    return col.removeprefix("val_") in CATEGORICAL


def _integer_ticks(ax, values: list[int]) -> None:
    """Epoch/step axes: integer ticks (a 1-epoch run must not show 0.96 ... 1.04)."""
    if 0 < len(values) <= 12:
        ax.set_xticks(values)
        ax.set_xlim(values[0] - 0.5, values[-1] + 0.5)
    else:
        ax.xaxis.get_major_locator().set_params(integer=True)


def _mark_nonfinite(ax, lg: pd.DataFrame, cols, prefix: str = "") -> None:
    """A red dotted line (and a note) where a logged loss is NaN/inf: such points are not drawn."""
    for col in cols:
        if col in lg:
            values = pd.to_numeric(lg[col], errors="coerce")
            if col == "val_loss" and values.isna().all():
                continue  # no inner validation subjects (select_on: last / inner_val 0): never computed, not diverged
            bad = lg.loc[~np.isfinite(values), "epoch"]
            for e in bad:
                ax.axvline(e, color="red", linestyle=":", linewidth=1)
                ax.annotate(f"{prefix}{col} = {lg.loc[lg['epoch'] == e, col].iloc[0]}", (e, 1.0), xycoords=("data", "axes fraction"),
                            color="red", fontsize=7, rotation=90, va="top", ha="right")


def pretrain_curve(ctx: Context, spec: P.FigureSpec) -> dict:
    path = ctx.results / "pretrain" / "log.csv"
    with ctx.style.figure() as (fig, axes):
        ax = axes[0, 0]
        if not path.exists():
            _empty(ax, f"no pretraining log ({path})")
            ctx.style.save(fig, ctx.out_dir / spec.name)
            return {"steps": 0}
        lg = read_csv(path)
        xcol = next((c for c in ("step", "iteration", "epoch") if c in lg.columns), None)
        loss_cols = [c for c in lg.columns if "loss" in c]
        if xcol is None or not loss_cols:
            raise DataError(f"{path}: expected a step/epoch column and a loss column, found {list(lg.columns)}")
        colors = ctx.style.colors(len(loss_cols))
        for col, c in zip(loss_cols, colors):
            ax.plot(lg[xcol], lg[col], color=c, label=col, marker="o" if len(lg) <= 30 else None, markersize=3)
        _mark_nonfinite(ax, lg.rename(columns={xcol: "epoch"}), loss_cols)
        last_x = lg[xcol].iloc[-1] if len(lg) else 0
        vals = lg[loss_cols].to_numpy(float)
        vals = vals[np.isfinite(vals)]
        if len(vals) and vals.min() > 0 and vals.max() / vals.min() > 10:
            ax.set_yscale("log")
        elif len(vals):
            ax.set_ylim(bottom=0, top=float(vals.max()) * 1.08)  # from 0: a 0.2% change must not look like a plunge
        _integer_ticks(ax, [int(v) for v in lg[xcol]])
        ax.set_xlabel(xcol)
        ax.set_ylabel("reconstruction loss (masked patches)")
        first, last = (float(lg[loss_cols[0]].iloc[0]), float(lg[loss_cols[0]].iloc[-1])) if len(lg) else (math.nan, math.nan)
        change = f" ({(last - first) / first:+.1%})" if first else ""
        ax.set_title(f"self-supervised pretraining: {loss_cols[0]} {first:.4g} → {last:.4g}{change}\n"
                     f"up to {xcol} {last_x}, {len(lg)} log rows")
        if len(loss_cols) > 1:
            ax.legend()
        ctx.style.save(fig, ctx.out_dir / spec.name)
    return {"steps": int(len(lg)), "first": first, "last": last}


def comparison(ctx: Context, spec: P.FigureSpec) -> dict:
    exps = ctx.experiments
    metric = ctx.metric
    series = {e.name: subject_values(e, metric) for e in exps}
    if all(s.empty for s in series.values()):
        metric = f"frame_{ctx.metric}"
        series = {e.name: subject_values(e, metric) for e in exps}
    names = list(series)
    subjects = sorted({s for v in series.values() for s in v.index if ctx.keep_subject(s)})
    paired = [s for s in subjects if all(s in series[n].index and np.isfinite(series[n][s]) for n in names)]
    rcfg = ctx.cfg["report"]
    tests = paired_tests(exps, metric, default_baseline(ctx.cfg), rcfg["alpha"])
    colors = ctx.style.color_map(subjects)
    with ctx.style.figure(scale=(max(1.0, 0.3 * len(names) + 0.6), 1.1)) as (fig, axes):
        ax = axes[0, 0]
        if not subjects:
            _empty(ax, f"no per-subject {metric} in any experiment")
            ctx.style.save(fig, ctx.out_dir / spec.name)
            return {"metric": metric, "values": {}}
        x = np.arange(len(names))
        # spread the subjects a little sideways so equal values do not hide each other
        spread = np.linspace(-0.08, 0.08, len(subjects)) if len(subjects) > 1 else np.zeros(1)
        for s, dx in zip(subjects, spread):
            ys = np.array([series[n].get(s, np.nan) for n in names], dtype=float)
            style = {"marker": "o"} if s in paired else {"marker": "o", "markerfacecolor": "white", "linestyle": ":"}
            ax.plot(x + dx, ys, color=colors[s], linewidth=1, alpha=0.85, label=s if s in paired else f"{s} (unpaired)", **style)
        means = [float(series[n].reindex(paired).mean()) if paired else np.nan for n in names]
        for xi, m in zip(x, means):
            ax.hlines(m, xi - 0.18, xi + 0.18, color="black", linewidth=2.5, zorder=5)
        chance = next((c for e in exps if (c := _chance(e, metric)) is not None), None)
        if chance:
            ax.axhline(chance[0], color="0.45", linestyle=":", linewidth=1.4, label=f"{chance[1]} = {chance[0]:.2f}")
        handles, _ = ax.get_legend_handles_labels()
        handles.append(Line2D([], [], color="black", linewidth=2.5, label=f"mean over the {len(paired)} paired subjects"))
        ax.set_xticks(x, [wrap_label(n, 14) for n in names])
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_ylabel(metric_label(metric))
        limits = _metric_limits(metric, np.array([v for n in names for v in series[n].to_numpy(float)]))
        if limits:
            ax.set_ylim(*limits)
        if len(subjects) <= 15:
            ax.legend(handles=handles, title="test subject", fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        title = f"{metric_label(metric)} per test subject, paired across experiments"
        if len(tests) == 1:
            t = tests[0]
            ties = t.n - t.n_nonzero
            if t.n_nonzero == 0:
                detail = "identical values for every subject: nothing to test"
            elif t.min_p > rcfg["alpha"]:
                detail = f"too few subjects for a test (smallest possible p = {t.min_p:.3g})"
            else:
                detail = f"Wilcoxon p = {t.p_value:.3g}"
            title += (
                f"\n{t.other} − {t.baseline}: mean {t.mean_diff:+.3f}; better for {t.wins} of {t.n} subjects"
                + (f" ({ties} tied)" if ties else "")
                + f"\n{detail}"
            )
        elif tests:
            title += f"\npaired tests against {tests[0].baseline}: see the report's comparison table"
        ax.set_title(title)
        ctx.style.save(fig, ctx.out_dir / spec.name)
    return {"metric": metric, "paired_subjects": paired, "values": {n: {k: float(v) for k, v in series[n].items()} for n in names}}


def label_efficiency(ctx: Context, spec: P.FigureSpec) -> dict:
    """The main metric against the labelled fraction, one line per initialisation, and the paired
    pretrained − scratch difference (:mod:`affectube.report.label_efficiency`)."""
    from affectube.report import label_efficiency as LE

    chance = next((c for e in ctx.experiments if (c := _chance(e, ctx.metric)) is not None), None)
    return LE.draw(ctx, spec, metric_label, chance)


FIGURES = {
    "confusion": confusion,
    "per_subject": per_subject,
    "scatter": scatter,
    "traces": traces,
    "learning_curves": learning_curves,
    "pretrain_curve": pretrain_curve,
    "comparison": comparison,
    "label_efficiency": label_efficiency,
}


def draw_all(cfg: dict, results: str | Path, out_dir: str | Path) -> dict:
    """Draw every planned figure; return (and write) the index."""
    results, out_dir = Path(results), Path(out_dir)
    ctx = Context(cfg, results, out_dir)
    specs = P.figure_plan(cfg)
    if not specs:
        raise ConfigError("params.yaml: experiments: no experiment, so no figure to draw")
    index = {"metric": ctx.metric, "formats": ctx.style.formats, "figures": []}
    for i, spec in enumerate(specs, 1):
        log.info("figure %d/%d: %s", i, len(specs), spec.name)
        data = FIGURES[spec.kind](ctx, spec)
        index["figures"].append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "experiment": spec.exp,
                "files": [f"{spec.name}.{fmt}" for fmt in ctx.style.formats],
                "data": data,
            }
        )
    index["failed_folds"] = {e.name: [f.index for f in e.failed_folds] for e in ctx.experiments}
    write_json(out_dir / "index.json", index)
    return index


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", required=True, help="JSON with the figures, evaluate, finetune, experiments, report sections")
    parser.add_argument("--results", default="results", help="results directory to read (default: results)")
    parser.add_argument("--out-dir", default=P.FIGURE_DIR, help="where figures and index.json go")


def run(args: argparse.Namespace) -> int:
    cfg = parse_cfg(args.cfg)
    index = draw_all(cfg, args.results, args.out_dir)
    log.info("wrote %d figures to %s", len(index["figures"]), args.out_dir)
    return 0
