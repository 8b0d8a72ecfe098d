"""Stage ``faces-qc``: a per-dataset face QC table and figure, from the tracks files alone.

Table ``results/faces/{dataset}/qc.csv``, one row per manifest video:
``status`` (ok / failed: the video could not be decoded, ``error`` says why / missing:
no tracks file), decode facts (codec, source and kept fps, VFR, rotation, sample aspect
ratio, duration, frames; ``truncated``: the frames stop before the duration the file
announces and were kept (``decode.on_truncated: keep``), with ``duration_announced`` and
``duration_decoded``), face facts (``coverage`` = fraction of frames with a face, frames detected /
tracked / interpolated / lost, number of lost-face gaps and the longest, face/no-face
``switches``, first and last time with a face, faces per keyframe: mean, max, share of
keyframes with more than one face, detector score mean / 5th percentile, median face
size as a fraction of the frame height), adaptive detection (keyframes ``retried`` at a larger
detector size, ``rescued`` by it, ``det_size_final``, ``retry_seconds``: its cost) and the
processing speed. ``short_clip``: the video has fewer frames than one clip spans
(``clip_span`` = (pretrain.num_frames - 1) x pretrain.sample_stride + 1, the schema defaults where the
cfg leaves them out): its clips repeat the last frame (:mod:`affectube.clips.sampling`).

Figure ``qc.png``: coverage per video (failed videos marked), the face status of every
video over time (so face/no-face switches show at a glance), the detector score
distribution and the number of faces per keyframe.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from affectube.config import parse_cfg, sections
from affectube.errors import DataError
from affectube.faces.tracks import FaceStatus, load_tracks
from affectube.faces.tracking import runs
from affectube.io import atomic_path

log = logging.getLogger(__name__)
STATUS_COLORS = {FaceStatus.NONE: "#d9d9d9", FaceStatus.DETECTED: "#2c7fb8", FaceStatus.TRACKED: "#7fcdbb", FaceStatus.INTERPOLATED: "#fdae61"}
STATUS_LABELS = {FaceStatus.NONE: "no face", FaceStatus.DETECTED: "detected", FaceStatus.TRACKED: "tracked", FaceStatus.INTERPOLATED: "interpolated"}
RASTER_COLUMNS = 200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", required=True, help="JSON with the 'figures' and 'pretrain' sections")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--tracks-dir", required=True)
    parser.add_argument("--table", required=True, help="QC table (.csv) to write")
    parser.add_argument("--figure", required=True, help="QC figure (.png) to write")


def video_row(row: dict, path: Path, clip_span: int | None = None) -> tuple[dict, object]:
    out = {"dataset": row.get("dataset"), "video_id": row["video_id"], "subject": row.get("subject"), "path": row.get("path")}
    if not path.exists():
        out.update({"status": "missing", "error": f"no tracks file {path}", "coverage": 0.0})
        return out, None
    try:
        tr = load_tracks(path)
    except DataError as exc:
        out.update({"status": "failed", "error": str(exc), "coverage": 0.0})
        return out, None
    meta = tr.meta
    info = meta.get("info") or {}
    if tr.error:
        out.update({"status": "failed", "error": tr.error, "frames": 0, "coverage": 0.0})
        return out, tr
    st = tr.status
    found = st > 0
    gaps = runs(~found)
    det = tr.num_faces[tr.num_faces >= 0]
    scores = tr.scores[st == 1]
    h = float(tr.frame_size[0]) or 1.0
    sizes = (tr.boxes[found, 3] - tr.boxes[found, 1]) / h
    out.update(
        {
            "status": "ok",
            "error": "",
            "codec": info.get("codec"),
            "source_fps": info.get("source_fps"),
            "kept_fps": info.get("kept_fps"),
            "vfr": info.get("vfr"),
            "rotation": info.get("rotation"),
            "duration": info.get("duration"),
            "sar": info.get("sar", 1.0),
            "truncated": bool(info.get("truncated", False)),
            "duration_announced": info.get("duration_announced", info.get("duration")),
            "duration_decoded": info.get("duration_decoded"),
            "width": int(tr.frame_size[1]),
            "height": int(tr.frame_size[0]),
            "frames": int(len(st)),
            "coverage": float(found.mean()) if len(st) else 0.0,
            "detected": int((st == 1).sum()),
            "tracked": int((st == 2).sum()),
            "interpolated": int((st == 3).sum()),
            "lost": int((~found).sum()),
            "gaps": len(gaps),
            "longest_gap": int(max((b - a for a, b in gaps), default=0)),
            "switches": int(np.count_nonzero(np.diff(found.astype(np.int8)))),
            "face_first_time": float(tr.timestamps[found][0]) if found.any() else None,
            "face_last_time": float(tr.timestamps[found][-1]) if found.any() else None,
            "keyframes": int(det.size),
            "faces_mean": float(det.mean()) if det.size else 0.0,
            "faces_max": int(det.max()) if det.size else 0,
            "multi_face_share": float((det > 1).mean()) if det.size else 0.0,
            "score_mean": float(scores.mean()) if scores.size else None,
            "score_p05": float(np.percentile(scores, 5)) if scores.size else None,
            "face_height_median": float(np.median(sizes)) if sizes.size else None,
            "retried": (meta.get("adaptive") or {}).get("retried", 0),
            "rescued": (meta.get("adaptive") or {}).get("rescued", 0),
            "det_size_final": (meta.get("adaptive") or {}).get("final_size"),
            "retry_seconds": (meta.get("adaptive") or {}).get("retry_seconds", 0.0),
            "backend": (meta.get("detector") or {}).get("backend"),
            "seconds": meta.get("seconds"),
            "frames_per_second": meta.get("frames_per_second"),
        }
    )
    if clip_span:
        out["clip_span"] = int(clip_span)
        out["short_clip"] = bool(len(st) < clip_span)
    return out, tr


def clip_span_of(pretrain_cfg: dict) -> int:
    """Frames one clip spans, from the (validated) ``pretrain`` section."""
    from affectube.clips.sampling import clip_span

    return clip_span(int(pretrain_cfg["num_frames"]), int(pretrain_cfg["sample_stride"]))


def build_table(manifest: pd.DataFrame, tracks_dir: Path, clip_span: int | None = None) -> tuple[pd.DataFrame, dict]:
    rows, tracks = [], {}
    for row in manifest.to_dict("records"):
        r, tr = video_row(row, tracks_dir / f"{row['video_id']}.npz", clip_span)
        rows.append(r)
        if tr is not None and not tr.error:
            tracks[row["video_id"]] = tr
    return pd.DataFrame(rows, columns=None if rows else ["dataset", "video_id", "subject", "path", "status", "error", "coverage"]), tracks


def draw(table: pd.DataFrame, tracks: dict, figures_cfg: dict, out: Path, dataset: str) -> None:
    from matplotlib.colors import ListedColormap

    from affectube.report.style import Style

    style = Style(figures_cfg)
    n = len(table)
    with style.figure(2, 2, scale=(1.6, 1.4 + 0.01 * min(n, 200))) as (fig, ax):
        # (a) coverage per video
        a = ax[0, 0]
        order = table.sort_values("coverage", kind="stable").reset_index(drop=True)
        colors = ["#d7191c" if s != "ok" else style.colors(1)[0] for s in order["status"]]
        a.barh(np.arange(n), order["coverage"].fillna(0), color=colors)
        for i, st in enumerate(order["status"]):
            if st != "ok":
                a.text(0.01, i, st, color="#d7191c", va="center", fontsize=6)
        a.set_xlim(0, 1)
        a.set_xlabel("fraction of frames with a face")
        a.set_title(f"coverage per video (red: failed/missing, {int((table['status'] != 'ok').sum())})")
        if n <= 40:
            a.set_yticks(np.arange(n), order["video_id"], fontsize=6)
        else:
            a.set_yticks([])
        # (b) status over time
        b = ax[0, 1]
        ids = [v for v in table["video_id"] if v in tracks]
        raster = np.zeros((max(1, len(ids)), RASTER_COLUMNS), np.uint8)
        for i, v in enumerate(ids):
            st = tracks[v].status
            if len(st):
                raster[i] = st[np.minimum((np.arange(RASTER_COLUMNS) * len(st)) // RASTER_COLUMNS, len(st) - 1)]
        b.imshow(raster, aspect="auto", interpolation="nearest", cmap=ListedColormap([STATUS_COLORS[s] for s in FaceStatus]),
                 vmin=int(min(FaceStatus)), vmax=int(max(FaceStatus)))
        b.set_xlabel("position in video (start to end)")
        b.set_xticks([])
        b.set_title("face status over time")
        if len(ids) <= 40:
            b.set_yticks(np.arange(len(ids)), ids, fontsize=6)
        else:
            b.set_yticks([])
        b.grid(False)
        from matplotlib.patches import Patch

        b.legend(handles=[Patch(color=STATUS_COLORS[s], label=STATUS_LABELS[s]) for s in FaceStatus], loc="upper center",
                 bbox_to_anchor=(0.5, -0.08), ncol=4, fontsize=7, frameon=False)
        # (c) detector scores
        c = ax[1, 0]
        scores = np.concatenate([t.scores[t.status == FaceStatus.DETECTED] for t in tracks.values()] or [np.zeros(0)])
        if scores.size:
            c.hist(scores, bins=40, range=(0, 1), color=style.colors(1)[0])
        c.set_xlabel("detector score (detected frames)")
        c.set_ylabel("frames")
        c.set_title(f"score distribution ({scores.size} detections)")
        # (d) faces per keyframe
        d = ax[1, 1]
        counts = np.concatenate([t.num_faces[t.num_faces >= 0] for t in tracks.values()] or [np.zeros(0, np.int16)])
        if counts.size:
            k = int(counts.max())
            d.bar(np.arange(k + 1), np.bincount(counts, minlength=k + 1), color=style.colors(1)[0])
            d.set_xticks(np.arange(k + 1))
        d.set_xlabel("faces found on a keyframe")
        d.set_ylabel("keyframes")
        ok = table[table["status"] == "ok"]
        d.set_title(f"faces per keyframe; lost-face gaps: {int(ok['gaps'].sum()) if 'gaps' in ok else 0}")
        fig.suptitle(f"Face QC: {dataset}: {n} videos, mean coverage {table['coverage'].mean():.1%}")
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=style.dpi)


def run(args: argparse.Namespace) -> int:
    cfg = sections(parse_cfg(args.cfg), "figures", "pretrain")
    manifest = pd.read_csv(args.manifest, dtype={"video_id": str, "subject": str})
    table, tracks = build_table(manifest, Path(args.tracks_dir), clip_span_of(cfg["pretrain"]))
    dataset = str(manifest["dataset"].iloc[0]) if len(manifest) else Path(args.tracks_dir).parent.name
    with atomic_path(args.table) as tmp:
        table.to_csv(tmp, index=False)
    draw(table, tracks, cfg["figures"], Path(args.figure), dataset)
    ok = table[table["status"] == "ok"]
    print(
        f"faces-qc {dataset}: {len(table)} videos, {len(ok)} ok, {int((table['status'] == 'failed').sum())} failed,"
        f" {int((table['status'] == 'missing').sum())} missing; mean coverage {table['coverage'].mean():.1%}"
        f" (min {table['coverage'].min():.1%}) -> {args.table}"
    )
    for r in table[table["status"] != "ok"].itertuples():
        print(f"  {r.status}: {r.video_id}: {r.error}")
    if "truncated" in table.columns:
        for r in table[table["truncated"].fillna(False).astype(bool)].itertuples():
            print(f"  truncated (frames kept): {r.video_id}: {r.duration_decoded:.2f} s of the {r.duration_announced:.2f} s announced")
    if "short_clip" in table.columns:
        short = table[table["short_clip"].fillna(False).astype(bool)]
        if len(short):
            print(f"  {len(short)} video(s) shorter than one clip ({int(short['clip_span'].iloc[0])} frames): their clips repeat the last frame:"
                  f" {', '.join(short['video_id'].astype(str).head(10))}")
    if "retried" in table.columns and table["retried"].fillna(0).sum():
        print(f"  adaptive detection: {int(table['retried'].fillna(0).sum())} keyframes retried larger, {int(table['rescued'].fillna(0).sum())} rescued,"
              f" {table['retry_seconds'].fillna(0).sum():.2f} s")
    return 0
