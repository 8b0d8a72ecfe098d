"""`affectube predict` on real clips with a model trained by the pipeline's own stage code.

Three MEAD subjects x 2 emotions are preprocessed with the real decode + MTCNN + crop +
store code, one LOSO fold is fine-tuned (train/val on M030/W009), and the held-out
subject's video is predicted through the CLI and the Python API. A broken file and a
video without a face give empty-but-valid outputs, not a crash.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from affectube.config import load_params

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SUBJECTS = ["M030", "W009", "W011"]
EMOTIONS = ["happy", "sad"]
PRE = {"decode": {"fps": 5, "max_side": 256}, "crop": {"size": 48}}


@pytest.fixture(scope="module")
def trained_run(realdata, tmp_path_factory):
    from affectube.clips.build import build_store
    from affectube.eval import folds as F
    from affectube.faces.detect import build_detector
    from affectube.faces.pipeline import track_video
    from affectube.faces.tracks import save_tracks
    from affectube.train.finetune import finetune_fold

    root = tmp_path_factory.mktemp("predict")
    cfg = load_params(REPO / "params.yaml")
    cfg["decode"].update(PRE["decode"])
    cfg["crop"].update(PRE["crop"])
    cfg["faces"].update({"backend": "mtcnn", "det_size": 160, "every_k": 4})
    cfg["pretrain"].update({"size": "tiny", "depth": 1, "width": 64, "input_size": 32, "num_frames": 4, "sample_stride": 2})
    cfg["finetune"].update({"init": "scratch", "epochs": 2, "batch_size": 4, "test_clips": 1, "patience": 2, "threads": 1,
                            "task": "categorical"})
    detector = build_detector(cfg["faces"])
    rows = []
    for s in SUBJECTS:
        for e in EMOTIONS:
            vid = f"{s}_{e}"
            path = realdata / "videos" / "mead" / f"{s}_front_{e}_level3_001.mp4"
            rows.append({"dataset": "mead", "video_id": vid, "path": str(path), "subject": f"MEAD_{s}", "emotion": e})
    table = pd.DataFrame(rows)
    manifest = root / "manifest.csv"
    table.to_csv(manifest, index=False)
    stores = root / "stores"
    for r in rows:
        tracks = track_video(r["path"], cfg["decode"], cfg["faces"], detector, meta={"dataset": "mead", "video_id": r["video_id"]})
        save_tracks(root / f"{r['video_id']}.npz", tracks)
        build_store(r["path"], root / f"{r['video_id']}.npz", manifest, r["video_id"],
                    {"decode": cfg["decode"], "crop": cfg["crop"], "clips": cfg["clips"]}, stores / f"{r['video_id']}.h5")
    folds = F.plan_folds(table, cfg["finetune"])
    fold = next(f for f in folds if f.test == ["MEAD_W011"])
    run_dir = root / "run"
    finetune_fold(cfg, fold, stores, None, run_dir / f"fold{fold.index}", threads=1)
    return run_dir, cfg


def test_predict_cli_on_held_out_video(trained_run, realdata, tmp_path):
    run_dir, cfg = trained_run
    video = realdata / "videos" / "mead" / "W011_front_happy_level3_001.mp4"
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "affectube", "predict", str(video), "--model", str(run_dir), "--out-dir", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(REPO / "workflow"), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    frames = pd.read_csv(out / f"{video.stem}.frames.csv")
    clips = pd.read_csv(out / f"{video.stem}.clips.csv")
    assert (out / f"{video.stem}.timeline.png").stat().st_size > 0
    # timestamps span the video: MEAD clips are 25 fps, decoded at 5 fps
    import av

    with av.open(str(video)) as c:
        duration = float(c.streams.video[0].duration * c.streams.video[0].time_base)
    assert frames["time"].iloc[0] < 0.25 and duration - 0.5 < frames["time"].iloc[-1] <= duration
    assert clips["start_time"].min() == frames["time"].iloc[0] and clips["end_time"].max() == frames["time"].iloc[-1]
    probs = frames[[f"prob_{e}" for e in EMOTIONS]].to_numpy()
    assert abs(probs.sum(1) - 1).max() < 1e-5 and frames["face"].mean() > 0.9
    # the run's own preprocessing, not params.yaml's (whose crop.size is different)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preprocessing"]["crop"]["size"] == PRE["crop"]["size"] != load_params(REPO / "params.yaml")["crop"]["size"]
    assert summary["preprocessing"]["decode"]["fps"] == PRE["decode"]["fps"]
    assert summary["videos"][str(video)]["problem"] is None


def test_predict_api_bad_and_faceless_videos(trained_run, realdata, tmp_path):
    import affectube

    run_dir, _ = trained_run
    broken = tmp_path / "empty file.mp4"
    broken.write_bytes(b"")
    no_face = realdata / "videos" / "pyfeat" / "no_face.mp4"
    good = realdata / "videos" / "mead" / "W011_front_sad_level3_001.mp4"
    table = affectube.predict([broken, no_face, good], model=run_dir, fold="all", out_dir=tmp_path / "out", progress=False)
    assert set(table["video"]) == {good.name}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "empty file.mp4" in summary["videos"][str(broken)]["problem"]
    assert "no face" in summary["videos"][str(no_face)]["problem"]
    for v in (broken, no_face):  # empty-but-valid: a header, no rows
        df = pd.read_csv(tmp_path / "out" / f"{v.stem}.frames.csv")
        assert len(df) == 0 and "time" in df.columns
