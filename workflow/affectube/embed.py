"""Stage ``embed``: per-clip encoder features of videos, with timestamps (as MARLIN's ``extract_video``).

``affectube embed VIDEO... --model RUN_OR_CHECKPOINT --out-dir DIR [--hop N] [--pool mean|none]``
or, from Python, ``affectube.embed.embed(videos, model=...)``.

``--model``: a finetune run directory or one fold's ``model.safetensors`` (its encoder, and the
run's own decode/face/crop preprocessing read from the model file), or an ``encoder.safetensors``
or a released checkpoint (:mod:`affectube.models.checkpoints`), preprocessed with the ``decode``,
``faces`` and ``crop`` sections of ``--params`` (default ``params.yaml``). Clips are read at the
encoder's own frames and input size, normalised with the checkpoint's own constants when it
has them (MARLIN: [0, 1] RGB), else ImageNet's; consecutive clip starts are ``--hop`` frames
apart (default: half a clip), and every frame is covered.

Writes ``{name}.embeddings.npz`` per video: ``features`` float32 ``[K, D]`` (``--pool mean``: the
mean of the clip's tokens; ``none``: ``[K, N, D]``), ``start_time``/``end_time`` (seconds) and
``start_frame``; and ``summary.json`` (model, preprocessing, problems per video).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from affectube.errors import DataError
from affectube.io import atomic_path, write_json

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", help="video files")
    parser.add_argument("--model", required=True, help="finetune run dir, model.safetensors, encoder.safetensors or a released checkpoint")
    parser.add_argument("--fold", type=int, default=0, help="fold of a run directory (default 0)")
    parser.add_argument("--params", default="params.yaml", help="decode/faces/crop for a model without a run (default params.yaml)")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--hop", type=int, default=None, help="frames between clip starts (default: half a clip)")
    parser.add_argument("--pool", choices=["mean", "none"], default="mean", help="mean of the tokens per clip, or all tokens")
    parser.add_argument("--sample-stride", type=int, default=None, help="frames between sampled clip frames (default: the run's, else params')")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=None)
    parser.add_argument("--num-heads", type=int, default=None,
                        help="attention heads of a released checkpoint of a non-published width that does not name them")


def run(args: argparse.Namespace) -> int:
    out = embed(args.videos, args.model, fold=args.fold, params=args.params, out_dir=args.out_dir, hop=args.hop,
                pool=args.pool, sample_stride=args.sample_stride, batch_size=args.batch_size, device=args.device,
                num_heads=args.num_heads)
    print(f"embed: {len(out)} video(s) -> {args.out_dir}")
    return 0


def load_source(model, fold: int = 0, params: str | Path = "params.yaml", sample_stride: int | None = None,
                num_heads: int | None = None):
    """``(encoder, preprocessing, geometry, normalisation)`` of a run or a checkpoint."""
    from affectube.export import load_any_encoder
    from affectube.models import finetuned

    encoder = load_any_encoder(model, fold=fold, num_heads=num_heads).eval()
    path = Path(model)
    run_file = path / f"fold{fold}" / "model.safetensors" if path.is_dir() else path
    meta = {}
    if run_file.suffix == ".safetensors" and run_file.is_file():
        meta = finetuned.read_metadata(run_file)
    if finetuned.is_finetuned(meta):
        info = finetuned.decode(meta, run_file, required=("preprocessing", "pretrain"))
        pre = info["preprocessing"]
        stride = info["pretrain"].get("sample_stride", 2)
    else:
        from affectube.config import load_params

        cfg = load_params(params)
        pre = {"decode": cfg["decode"], "faces": cfg["faces"], "crop": cfg["crop"]}
        stride = cfg["pretrain"]["sample_stride"]
    spec = encoder.spec
    geometry = {"num_frames": spec.num_frames, "input_size": spec.input_size, "sample_stride": int(sample_stride or stride)}
    normalisation = {"mean": list(spec.input_mean), "std": list(spec.input_std)} if spec.input_mean is not None else {}
    return encoder, pre, geometry, normalisation


@torch.no_grad()
def embed_video(video: Path, encoder, preprocessing: dict, geometry: dict, normalisation: dict | None = None,
                hop: int | None = None, pool: str = "mean", batch_size: int = 8, device: str = "cpu", detector=None):
    """``(arrays, problem)``: features and clip times of one video (``problem`` None when all went well)."""
    from affectube.clips import sampling
    from affectube.clips.dataset import ClipDataset
    from affectube.predict import hop_clips, preprocess

    span = sampling.clip_span(geometry["num_frames"], geometry["sample_stride"])
    with tempfile.TemporaryDirectory(prefix="affectube-embed-") as tmp:
        try:
            tracks, store = preprocess(video, SimpleNamespace(preprocessing=preprocessing), Path(tmp), detector)
        except DataError as exc:
            return None, str(exc)
        n = len(tracks)
        if n == 0 or not (np.asarray(tracks.status) > 0).any():
            return None, f"{video}: no face found in {n} decoded frames"
        k = hop_clips(n, span, hop or max(1, span // 2))
        ds = ClipDataset([store], num_frames=geometry["num_frames"], sample_stride=geometry["sample_stride"],
                         input_size=geometry["input_size"], mode="test", test_clips=k, **(normalisation or {}))
        feats = []
        for batch in torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False):
            x = batch["video"].to(device)
            if x.shape[1] != encoder.spec.in_chans:
                raise DataError(f"{video}: clips have {x.shape[1]} channel(s), the encoder expects {encoder.spec.in_chans}")
            tokens = encoder.forward_features(x).float()
            feats.append((tokens.mean(1) if pool == "mean" else tokens).cpu())
        ds.close()
    starts = np.asarray(sampling.uniform_starts(n, span, k))
    times = np.asarray(tracks.timestamps, float)
    ends = np.minimum(starts + span - 1, n - 1)
    return {"features": torch.cat(feats).numpy().astype(np.float32), "start_frame": starts,
            "start_time": times[starts], "end_time": times[ends]}, None


def embed(videos, model, fold: int = 0, params: str | Path = "params.yaml", out_dir=None, hop: int | None = None,
          pool: str = "mean", sample_stride: int | None = None, batch_size: int = 8, device: str | None = None,
          num_heads: int | None = None) -> dict:
    """Embed every video; returns ``{video path: arrays}`` (see the module doc; failed videos are left out)."""
    from affectube.faces.detect import build_detector

    videos = [Path(v) for v in ([videos] if isinstance(videos, (str, Path)) else videos)]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder, pre, geometry, normalisation = load_source(model, fold, params, sample_stride, num_heads)
    encoder.to(device)
    detector = build_detector(pre["faces"])
    results, summary = {}, {"model": str(model), "preprocessing": pre, "geometry": geometry,
                            "normalisation": normalisation or "imagenet", "pool": pool, "videos": {}}
    for video in videos:
        arrays, problem = embed_video(video, encoder, pre, geometry, normalisation, hop, pool, batch_size, device, detector)
        if problem:
            log.warning("%s", problem)
        summary["videos"][str(video)] = {"clips": 0 if arrays is None else len(arrays["features"]), "problem": problem}
        if arrays is None:
            continue
        results[str(video)] = arrays
        if out_dir is not None:
            with atomic_path(Path(out_dir) / f"{video.stem}.embeddings.npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **arrays)
    if out_dir is not None:
        write_json(Path(out_dir) / "summary.json", summary)
    return results
