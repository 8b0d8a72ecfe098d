"""Clip stores of real MEAD videos (../shared/realdata) for the learning tests, built in seconds.

MEAD's clips are tight 256x256 face crops, so they go into stores without face detection:
every ``step``-th frame (25 fps / 3 = 8.3 fps), resized to ``size`` px (OpenCV area filter).
Nothing is copied into the repository; the stores live in pytest's temporary directory.

Each store carries its emotion and, for the continuous-target tests, a clip-level valence and
arousal placed by emotion on the circumplex (:data:`CIRCUMPLEX`: a label derived from the
emotion, not an annotation of the clip).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from affectube.clips.store import StoreContent, write_store

REPO = Path(__file__).resolve().parents[1]
# the realdata recipe's model (config/realdata.yaml: a 96-wide, 2-block ViT at 64 px, 8 frames)
TINY = {"size": "tiny", "depth": 2, "width": 96, "input_size": 64, "num_frames": 8, "sample_stride": 1, "tubelet": 2,
        "patch": 16, "decoder_width": 64, "decoder_depth": 1}
TINY_BY_MODEL = {"videomae": TINY, "svfap": {**TINY, "svfap_stages": [1, 1], "svfap_tokens": 4}}

# emotion -> (valence, arousal), roughly Russell's circumplex
CIRCUMPLEX = {"angry": (-0.6, 0.7), "happy": (0.8, 0.5), "sad": (-0.7, -0.5), "surprise": (0.3, 0.8),
              "neutral": (0.0, -0.2), "disgust": (-0.7, 0.3), "fear": (-0.5, 0.7), "contempt": (-0.4, 0.1)}
MEAD_NAME = {"surprise": "surprised", "disgust": "disgusted"}


def mead_video(realdata: Path, subject: str, emotion: str) -> Path:
    folder = realdata / "videos" / "mead"
    name = MEAD_NAME.get(emotion, emotion)
    hits = sorted(folder.glob(f"{subject}_front_{name}_level*_001.mp4"))
    if not hits:
        raise FileNotFoundError(f"{folder}: no MEAD clip of {subject} {emotion}")
    return hits[-1]


def read_frames(path: Path, size: int, step: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    out, i = [], 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if i % step == 0:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            out.append(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA))
        i += 1
    cap.release()
    if not out:
        raise RuntimeError(f"{path}: no frames decoded")
    return np.ascontiguousarray(np.stack(out))


def mead_stores(realdata: Path, root: Path, subjects, emotions, size: int = 64, step: int = 3) -> list[Path]:
    """One store per (subject, emotion) under ``root`` (``MEAD_<subject>`` subjects, dataset ``mead``)."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in subjects:
        for e in emotions:
            frames = read_frames(mead_video(realdata, s, e), size, step)
            n = len(frames)
            fps = 25.0 / step
            valence, arousal = CIRCUMPLEX[e]
            c = StoreContent(
                frames=frames, timestamps=np.arange(n) / fps, dataset="mead", video_id=f"{s}_{e}",
                subject=f"MEAD_{s}", session=f"MEAD_{s}", labels={"emotion": e, "valence": valence, "arousal": arousal},
                fps=fps, face_status=np.ones(n, np.uint8), face_score=np.ones(n, np.float32),
                face_boxes=np.tile(np.array([0, 0, size, size], np.float32), (n, 1)), valid=np.ones(n, bool),
                decode={"fps": fps, "max_side": 256}, crop={"strategy": "box", "scale": 1.0, "size": size,
                                                            "grayscale": False, "pad_mode": "edge"},
                clips={"compression": "none", "chunk_frames": 0}, source={"codec": "h264"}, provenance="0" * 64,
            )  # fmt: skip
            paths.append(write_store(root / f"{s}_{e}.h5", c, "none", 0))
    return paths


def realdata_pretrain() -> dict:
    """The real-clip pretraining recipe: params.yaml merged with config/realdata.yaml (what
    ``snakemake --configfile config/realdata.yaml`` runs)."""
    import yaml

    from affectube.config import merge_params

    base = yaml.safe_load((REPO / "params.yaml").read_text())
    over = yaml.safe_load((REPO / "config" / "realdata.yaml").read_text())
    return dict(merge_params(base, over)["pretrain"])


def pretrain(stores, out: Path, model: str, steps: int):
    """Pretrain with the real-clip recipe of config/realdata.yaml (lr, batch, masking ratio,
    augmentation), a tiny model and ``steps`` steps (warmup a tenth); returns log.csv."""
    from affectube.models import ModelSpec
    from affectube.config import sections
    from affectube.train.pretrain import Pretrainer, build_dataset

    raw = realdata_pretrain()
    raw.update({**TINY_BY_MODEL[model], "model": model, "steps": steps, "warmup_steps": max(1, steps // 10),
                "checkpoint_every": steps, "num_workers": 0})
    pcfg = sections({"pretrain": raw}, "pretrain")["pretrain"]
    dataset, base = build_dataset([str(p) for p in stores], pcfg, ModelSpec.from_cfg(pcfg).grid)
    assert Pretrainer(pcfg, dataset, out, target_norm=(base.mean, base.std)).fit() == 0
    import pandas as pd

    return pd.read_csv(out / "log.csv")
