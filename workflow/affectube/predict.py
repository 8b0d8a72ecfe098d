"""Predict emotion and valence/arousal timelines for new videos with a trained run.

``affectube predict VIDEO... --model results/finetune/{exp} [--fold all|K] --out-dir DIR``
or, from Python, ``affectube.predict(videos, model=..., out_dir=...)`` (same table).

A video goes through exactly the training preprocessing of the run (decode, face
detection + tracking, crop), read from the run's model files -- never from the
current params.yaml -- then clips slide over the whole video and the model (or the
average of all fold models) predicts each clip. Outputs per video:

- ``{name}.clips.csv``: one row per clip: start/end time, class probabilities,
  predicted class, continuous predictions;
- ``{name}.frames.csv``: one row per decoded frame with its timestamp, the mean of the
  predictions of every clip covering it, and the face box;
- ``{name}.timeline.png``: probabilities over time, valence/arousal traces and the
  2-D valence/arousal path;
- optionally ``{name}.overlay.mp4``: the video with the face box and the current prediction.

A broken file or a video without a face gives a clear message and an empty-but-valid
CSV (header only); the batch goes on.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from affectube.errors import DataError, UserError
from affectube.io import atomic_path, write_json

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- the run's models


@dataclass
class RunModels:
    """The fold models of a run and everything needed to preprocess like training did."""

    paths: list[Path]
    models: list[torch.nn.Module]
    task: dict
    pretrain: dict
    finetune: dict
    preprocessing: dict  # decode, faces, crop sections used to build the training stores
    geometry: dict = field(default_factory=dict)  # num_frames, sample_stride, input_size

    @property
    def classes(self) -> list[str]:
        return list(self.task.get("classes") or []) if self.task["kind"] in ("categorical", "both") else []

    @property
    def targets(self) -> list[str]:
        return list(self.task.get("targets") or []) if self.task["kind"] in ("continuous", "both") else []


def model_files(model: str | Path, fold: str | int = "all") -> list[Path]:
    """``model.safetensors`` files of a run dir (all folds, or one) or a single file."""
    model = Path(model)
    if model.is_file():
        return [model]
    if not model.is_dir():
        raise UserError(f"--model {model}: no such run directory or model file")
    if str(fold) == "all":
        files = sorted(model.glob("fold*/model.safetensors"), key=lambda p: int(p.parent.name[4:]))
    else:
        files = [model / f"fold{int(fold)}" / "model.safetensors"]
        if not files[0].is_file():
            raise UserError(f"--model {model}: no model for fold {fold} ({files[0]} missing)")
    if not files:
        raise UserError(f"--model {model}: no fold*/model.safetensors inside (is it a finished finetune run?)")
    return files


def load_run(model: str | Path, fold: str | int = "all", device: str = "cpu") -> RunModels:
    from safetensors.torch import load_file

    from affectube.models.finetuned import read_finetuned
    from affectube.train import supervised as S

    paths = model_files(model, fold)
    models, first = [], None
    for path in paths:
        info = read_finetuned(path)
        if first is None:
            first = info
        elif info["task"] != first["task"] or info["preprocessing"] != first["preprocessing"]:
            raise DataError(f"{path}: its task or preprocessing differs from {paths[0]}: cannot ensemble these folds")
        ft = dict(info["finetune"], init="scratch")  # architecture only; the weights come from the file
        task = S.Task(kind=info["task"]["kind"], classes=info["task"]["classes"], targets=info["task"]["targets"],
                      bins=info["task"]["bins"], target_range=tuple(info["task"]["target_range"]))
        encoder = _encoder_from(info, ft)
        net = S.build_model(ft, task, encoder)
        state = load_file(str(path))
        result = net.load_state_dict(state, strict=True)
        del result
        models.append(net.to(device).eval())
    geometry = S.clip_geometry(models[0].encoder, first["pretrain"])
    return RunModels(paths, models, first["task"], first["pretrain"], first["finetune"], first["preprocessing"], geometry)


def _encoder_from(info: dict, ft: dict) -> torch.nn.Module:
    """The fold's encoder architecture (random weights): from its saved spec, else from the run's params."""
    from affectube.models import ModelSpec, create_encoder
    from affectube.train import supervised as S

    spec = info.get("encoder_spec")
    if spec and ft.get("backbone", "encoder") != "resnet_gru":
        spec = ModelSpec.from_cfg(spec).replace(drop_path=0.0)
        return create_encoder(spec.model, spec)
    return S.build_backbone(ft, info["pretrain"], None)


# ---------------------------------------------------------------- one video


def _empty_tables(run: RunModels) -> tuple[pd.DataFrame, pd.DataFrame]:
    clip_cols = ["video", "clip", "start_time", "end_time", "y_pred"]
    clip_cols += [f"prob_{c}" for c in run.classes] + [f"pred_{t}" for t in run.targets]
    frame_cols = ["video", "frame", "time", "face", "x1", "y1", "x2", "y2", "y_pred"]
    frame_cols += [f"prob_{c}" for c in run.classes] + [f"pred_{t}" for t in run.targets]
    return pd.DataFrame(columns=clip_cols), pd.DataFrame(columns=frame_cols)


def preprocess(video: Path, run: RunModels, work: Path, detector=None):
    """Tracks + clip store of ``video`` built with the run's own preprocessing params."""
    from affectube.clips.build import build_store
    from affectube.faces.detect import build_detector
    from affectube.faces.pipeline import track_video
    from affectube.faces.tracks import save_tracks

    pre = run.preprocessing
    detector = detector or build_detector(pre["faces"])
    tracks = track_video(video, pre["decode"], pre["faces"], detector, meta={"dataset": "predict", "video_id": "video"})
    tracks_path = work / "tracks.npz"
    save_tracks(tracks_path, tracks)
    manifest = work / "manifest.csv"
    pd.DataFrame([{"dataset": "predict", "video_id": "video", "path": str(video), "subject": "unknown"}]).to_csv(manifest, index=False)
    store = work / "video.h5"
    build_store(video, tracks_path, manifest, "video", {"decode": pre["decode"], "crop": pre["crop"], "clips": {"compression": "none"}}, store)
    return tracks, store


def hop_clips(n: int, span: int, hop: int) -> int:
    """Number of uniformly spaced clips so consecutive starts are at most ``hop`` frames apart."""
    last = max(n - span, 0)
    return max(1, math.ceil(last / max(hop, 1)) + 1)


@torch.no_grad()
def predict_video(video: Path, run: RunModels, hop: int | None = None, batch_size: int = 8, device: str = "cpu",
                  detector=None) -> tuple[pd.DataFrame, pd.DataFrame, str | None]:
    """(clips, frames, problem) for one video; ``problem`` is None when all went well."""
    from affectube.clips import sampling
    from affectube.clips.dataset import ClipDataset

    clips_df, frames_df = _empty_tables(run)
    g = run.geometry
    span = sampling.clip_span(g["num_frames"], g["sample_stride"])
    with tempfile.TemporaryDirectory(prefix="affectube-predict-") as tmp:
        try:
            tracks, store = preprocess(video, run, Path(tmp), detector)
        except DataError as exc:
            return clips_df, frames_df, str(exc)
        n = len(tracks)
        face = np.asarray(tracks.status) > 0
        if n == 0 or not face.any():
            return clips_df, frames_df, f"{video}: no face found in {n} decoded frames"
        k = hop_clips(n, span, hop or max(1, span // 2))
        ds = ClipDataset([store], num_frames=g["num_frames"], sample_stride=g["sample_stride"], input_size=g["input_size"],
                         mode="test", test_clips=k, classes=run.classes or None, targets=run.targets,
                         **{key: g[key] for key in ("mean", "std") if key in g})
        starts = sampling.uniform_starts(n, span, k)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)
        probs, regs = [], []
        for batch in loader:
            x = batch["video"].to(device)
            p_sum, r_sum = 0.0, 0.0
            for m in run.models:  # fold ensemble: mean of probabilities / continuous predictions
                out = m(x)
                if run.classes:
                    p_sum = p_sum + torch.softmax(out["logits"].float(), -1).cpu()
                if run.targets:
                    r_sum = r_sum + out["reg"].float().mean(1).cpu()
            if run.classes:
                probs.append(p_sum / len(run.models))
            if run.targets:
                regs.append(r_sum / len(run.models))
        ds.close()
    times = np.asarray(tracks.timestamps, float)
    P = torch.cat(probs).numpy() if probs else np.zeros((k, 0))
    R = torch.cat(regs).numpy() if regs else np.zeros((k, 0))
    rows = []
    for i, s in enumerate(starts):
        end = min(s + span - 1, n - 1)
        row = {"video": video.name, "clip": i, "start_time": times[s], "end_time": times[end]}
        if run.classes:
            row["y_pred"] = run.classes[int(P[i].argmax())]
            row.update({f"prob_{c}": float(P[i, j]) for j, c in enumerate(run.classes)})
        row.update({f"pred_{t}": float(R[i, j]) for j, t in enumerate(run.targets)})
        rows.append(row)
    clips_df = pd.DataFrame(rows, columns=clips_df.columns)
    # per frame: mean over the clips covering it (every frame is covered: starts reach n - span)
    acc_p, acc_r, cnt = np.zeros((n, P.shape[1])), np.zeros((n, R.shape[1])), np.zeros(n)
    for i, s in enumerate(starts):
        e = min(s + span, n)
        acc_p[s:e] += P[i]
        acc_r[s:e] += R[i]
        cnt[s:e] += 1
    cnt = np.maximum(cnt, 1)
    acc_p /= cnt[:, None]
    acc_r /= cnt[:, None]
    boxes = np.asarray(tracks.boxes, float)
    frame = {"video": video.name, "frame": np.arange(n), "time": times, "face": face.astype(int),
             "x1": boxes[:, 0], "y1": boxes[:, 1], "x2": boxes[:, 2], "y2": boxes[:, 3]}
    if run.classes:
        frame["y_pred"] = [run.classes[j] for j in acc_p.argmax(1)]
        frame.update({f"prob_{c}": acc_p[:, j] for j, c in enumerate(run.classes)})
    else:
        frame["y_pred"] = None
    frame.update({f"pred_{t}": acc_r[:, j] for j, t in enumerate(run.targets)})
    frames_df = pd.DataFrame(frame, columns=frames_df.columns)
    return clips_df, frames_df, None


# ---------------------------------------------------------------- figures and overlay


def timeline_figure(frames: pd.DataFrame, run: RunModels, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    va = [t for t in ("valence", "arousal") if t in run.targets]
    ncols = 2 if len(va) == 2 else 1
    nrows = int(bool(run.classes)) + int(bool(run.targets))
    fig = plt.figure(figsize=(10, 3.2 * max(nrows, 1)), dpi=120)
    gs = fig.add_gridspec(max(nrows, 1), ncols, width_ratios=[3, 1.3] if ncols == 2 else [1])
    row = 0
    t = frames["time"].to_numpy(float)
    if run.classes:
        ax = fig.add_subplot(gs[row, :])
        for c in run.classes:
            ax.plot(t, frames[f"prob_{c}"], label=c, lw=1.5)
        lost = frames["face"].to_numpy() == 0
        if lost.any():
            ax.fill_between(t, 0, 1, where=lost, color="0.85", step="mid", label="no face", zorder=0)
        ax.set(xlim=(t.min(), t.max()) if len(t) > 1 else None, ylim=(0, 1), xlabel="time (s)", ylabel="probability",
               title="class probabilities over time")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        row += 1
    if run.targets:
        ax = fig.add_subplot(gs[row, 0])
        for tname in run.targets:
            ax.plot(t, frames[f"pred_{tname}"], label=tname, lw=1.5)
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set(xlabel="time (s)", ylabel="prediction", title="continuous predictions over time")
        ax.legend(fontsize=8)
        if ncols == 2:
            ax2 = fig.add_subplot(gs[row, 1])
            v, a = frames["pred_valence"].to_numpy(float), frames["pred_arousal"].to_numpy(float)
            sc = ax2.scatter(v, a, c=t, cmap="viridis", s=6)
            ax2.plot(v, a, color="0.5", lw=0.6)
            lim = max(1.0, float(np.nanmax(np.abs(np.r_[v, a]))) if len(v) else 1.0)
            ax2.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="valence", ylabel="arousal", title="valence/arousal path")
            ax2.axhline(0, color="0.7", lw=0.6)
            ax2.axvline(0, color="0.7", lw=0.6)
            ax2.set_aspect("equal")
            fig.colorbar(sc, ax=ax2, label="time (s)", fraction=0.046)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def overlay_video(video: Path, frames: pd.DataFrame, run: RunModels, path: Path) -> None:
    """Re-encode the decoded frames with the face box and the current prediction drawn on them."""
    import cv2
    import ffmpeg

    from affectube.video.decode import ffmpeg_exe, FrameStream

    dec = run.preprocessing["decode"]
    stream = FrameStream(video, fps=dec.get("fps", 25), max_side=dec.get("max_side", 640), chunk=64,
                         reader=dec.get("reader", "ffmpeg"))  # a model from before decode.reader: the CLI
    proc, i = None, 0
    with atomic_path(path, suffix=".mp4") as tmp:
        for block, _times in stream:
            for img in block:
                if proc is None:
                    h, w = img.shape[:2]
                    proc = (ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", r=dec.get("fps", 25))
                            .output(str(tmp), vcodec="libx264", pix_fmt="yuv420p", format="mp4", loglevel="error")
                            .overwrite_output().run_async(pipe_stdin=True, cmd=ffmpeg_exe()))
                img = np.ascontiguousarray(img)
                if i < len(frames):
                    r = frames.iloc[i]
                    if r["face"]:
                        cv2.rectangle(img, (int(r["x1"]), int(r["y1"])), (int(r["x2"]), int(r["y2"])), (0, 255, 0), 2)
                    text = []
                    if run.classes:
                        text.append(f"{r['y_pred']} {r[f'prob_{r.y_pred}']:.2f}")
                    text += [f"{t[:3]} {r[f'pred_{t}']:+.2f}" for t in run.targets]
                    cv2.putText(img, "  ".join(text), (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 0), 2)
                proc.stdin.write(img.tobytes())
                i += 1
        if proc is not None:
            proc.stdin.close()
            if proc.wait() != 0:
                raise DataError(f"{path}: ffmpeg failed to encode the overlay video")


# ---------------------------------------------------------------- API + CLI


def predict(videos, model, fold="all", out_dir=None, device=None, hop=None, overlay=False, batch_size=8,
            progress=True) -> pd.DataFrame:
    """Predict every video; returns the per-frame table of all videos (columns as in ``{name}.frames.csv``).

    ``out_dir`` (optional) receives the CSVs, timeline figures, an optional overlay video
    per video and ``summary.json`` (problems per video).
    """
    from tqdm import tqdm

    from affectube.faces.detect import build_detector

    videos = [Path(v) for v in ([videos] if isinstance(videos, (str, Path)) else videos)]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    run = load_run(model, fold, device)
    detector = build_detector(run.preprocessing["faces"])
    out = Path(out_dir) if out_dir else None
    tables, summary = [], {"model": [str(p) for p in run.paths], "preprocessing": run.preprocessing, "videos": {}}
    for video in tqdm(videos, desc="predict", unit="video", disable=not progress):
        clips, frames, problem = predict_video(video, run, hop=hop, batch_size=batch_size, device=device, detector=detector)
        if problem:
            log.warning("%s", problem)
        summary["videos"][str(video)] = {"frames": len(frames), "clips": len(clips), "problem": problem}
        tables.append(frames)
        if out is not None:
            stem = video.stem
            for name, df in ((f"{stem}.clips.csv", clips), (f"{stem}.frames.csv", frames)):
                with atomic_path(out / name) as tmp:
                    df.to_csv(tmp, index=False)
            if len(frames):
                timeline_figure(frames, run, out / f"{stem}.timeline.png", f"{video.name} ({len(run.models)} model(s))")
                if overlay:
                    overlay_video(video, frames, run, out / f"{stem}.overlay.mp4")
    if out is not None:
        write_json(out / "summary.json", summary)
    nonempty = [t for t in tables if len(t)]
    return pd.concat(nonempty, ignore_index=True) if nonempty else _empty_tables(run)[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", help="video files")
    parser.add_argument("--model", required=True, help="a finetune run dir (results/finetune/EXP) or one model.safetensors")
    parser.add_argument("--fold", default="all", help="'all' (average every fold's model) or a fold index")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    parser.add_argument("--hop", type=int, default=None, help="frames between clip starts (default: half a clip)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--overlay", action="store_true", help="also write a video with the face box and prediction")


def run(args: argparse.Namespace) -> int:
    table = predict(args.videos, args.model, fold=args.fold, out_dir=args.out_dir, device=args.device, hop=args.hop,
                    overlay=args.overlay, batch_size=args.batch_size)
    print(f"predict: {len(args.videos)} video(s), {len(table)} frame rows -> {args.out_dir}")
    return 0


class _CallableModule(types.ModuleType):
    """``affectube.predict(...)`` calls :func:`predict` even once this submodule is imported (importing
    ``affectube.predict`` sets the package attribute ``predict`` to the module, hiding the function)."""

    def __call__(self, *args, **kwargs):
        return predict(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
