"""Helpers for the pretext tests (tests/test_pretext_*.py): tiny view-based configs and datasets."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

# a tiny ViT at 32 px for the real-clip pretext tests (one block: the learning tests stay a few seconds)
TINY_VIEWS = {"size": "tiny", "depth": 1, "width": 64, "input_size": 32, "num_frames": 8, "sample_stride": 1, "tubelet": 2,
              "patch": 8, "model": "videomae", "batch_size": 8, "num_workers": 0, "head_hidden": 128, "head_dim": 64}


def synthetic_views(pcfg: dict, n: int = 16, views: int = 2):
    from affectube.models import ModelSpec
    from synthetic_clips import SyntheticClips
    from affectube.train.pretext.views import ViewClips

    spec = ModelSpec.from_cfg(pcfg)
    return ViewClips(SyntheticClips(n, frames=spec.num_frames, size=spec.input_size), views=views, seed=pcfg["seed"])


def real_pretrain(stores, out: Path, method: str, steps: int, **over):
    """A Pretrainer of ``method`` over real clip stores with the real-clip recipe (config/realdata.yaml's
    lr, batch, augmentation) and :data:`TINY_VIEWS`; returns ``(trainer, dataset)`` after ``fit``."""
    from realclips_util import realdata_pretrain

    from affectube.models import ModelSpec
    from affectube.config import sections
    from affectube.train.pretrain import Pretrainer, build_dataset

    raw = realdata_pretrain()
    raw.update({**TINY_VIEWS, "method": method, "steps": steps, "warmup_steps": max(1, steps // 10),
                "checkpoint_every": steps, **over})
    pcfg = sections({"pretrain": raw}, "pretrain")["pretrain"]
    dataset, base = build_dataset([str(p) for p in stores], pcfg, ModelSpec.from_cfg(pcfg).grid)
    trainer = Pretrainer(pcfg, dataset, out, target_norm=(base.mean, base.std))
    assert trainer.fit() == 0
    return trainer, dataset


def embedding_spread(vectors: torch.Tensor) -> float:
    """Mean over dimensions of the std across the batch of the L2-normalised ``vectors`` [B, D]
    (0 = collapsed to one point; about 1/sqrt(D) when spread over the sphere)."""
    return float(F.normalize(vectors.float(), dim=-1).std(dim=0).mean())


def grid_audio_stores(realdata: Path, root: Path, n_mels: int = 40, size: int = 64, step: int = 3, count: int = 8) -> list[Path]:
    """Clip stores of ``count`` real GRID videos (speech: a talking face with its audio track) with
    ``audio_logmel`` from :func:`affectube.clips.audio.frame_logmel`: every ``step``-th frame, the centre
    square resized to ``size`` px (GRID faces are near the centre; no detector: this is pretext data)."""
    import cv2
    import numpy as np

    from affectube.clips.audio import frame_logmel
    from affectube.clips.store import StoreContent, write_store

    root.mkdir(parents=True, exist_ok=True)
    videos = sorted((realdata / "videos" / "grid").glob("*.mpg"))[:count]
    paths = []
    for v in videos:
        cap = cv2.VideoCapture(str(v))
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        frames, i = [], 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if i % step == 0:
                h, w = bgr.shape[:2]
                s = min(h, w)
                sq = bgr[(h - s) // 2 : (h + s) // 2, (w - s) // 2 : (w + s) // 2]
                frames.append(cv2.resize(cv2.cvtColor(sq, cv2.COLOR_BGR2RGB), (size, size), interpolation=cv2.INTER_AREA))
            i += 1
        cap.release()
        frames = np.ascontiguousarray(np.stack(frames))
        times = np.arange(len(frames)) * step / fps
        audio = frame_logmel(v, times, n_mels)
        c = StoreContent(frames=frames, timestamps=times, dataset="grid", video_id=v.stem, subject="grid_s", fps=fps / step,
                         valid=np.ones(len(frames), bool), audio_logmel=audio, provenance="0" * 64)
        paths.append(write_store(root / f"{v.stem}.h5", c, "none", 0))
    return paths


def synthetic_audio_stores(root: Path, n: int = 8, frames: int = 24, size: int = 32, n_mels: int = 8) -> list[Path]:
    """``n`` clip stores (real HDF5 through :func:`write_store`) of moving-bar videos whose ``audio_logmel`` follows
    the bar's position (a learnable audio target): the audio pretext's data without decoding real videos."""
    import numpy as np

    from affectube.clips.store import StoreContent, write_store

    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for v in range(n):
        rng = np.random.default_rng(v)
        pos = (np.arange(frames) * (v % 3 + 1) + 5 * v) % size
        video = rng.integers(0, 40, (frames, size, size, 3), dtype=np.uint8)
        for t, x in enumerate(pos):
            video[t, :, x : x + 4] = 220
        mels = np.stack([np.cos(2 * np.pi * pos / size * (k + 1)) for k in range(n_mels)], 1).astype(np.float32)
        c = StoreContent(frames=video, timestamps=np.arange(frames) / 25.0, dataset="synth", video_id=f"v{v}",
                         subject=f"s{v % 4}", fps=25.0, valid=np.ones(frames, bool), audio_logmel=mels, provenance="0" * 64)
        paths.append(write_store(root / f"v{v}.h5", c, "none", 0))
    return paths
