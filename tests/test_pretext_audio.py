"""The audio-target pretext (``pretrain.method: audio``, LiRA-style): log-mel features of the video's own
audio track aligned to the frame timestamps (a real video given a tone with a known onset by real ffmpeg),
videos without audio reported and skipped, and the loss falling on real GRID clips (speech)."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pretext_util import grid_audio_stores, real_pretrain
from pretrain_util import one_thread  # noqa: F401  (fixture)

from affectube.clips.audio import FLOOR, HOP, SAMPLE_RATE, WIN, frame_logmel, mel_filterbank, NFFT
from affectube.errors import DataError
from affectube.video.decode import decode, ffmpeg_exe

pytestmark = pytest.mark.usefixtures("one_thread")
MEAD = "videos/mead/M030_front_angry_level3_001.mp4"  # MEAD's clips have no audio stream
ONSET, TONE = 1.2, 1000.0
STEPS, WINDOW = 40, 5
# measured at this commit (1 thread, 8 GRID videos): loss 1.28 (first 5 steps) -> 0.92 (last 10), -28%;
# the standardised targets make predicting their mean score 1.0
DROP = 0.2


@pytest.fixture(scope="module")
def onset_video(realdata, tmp_path_factory):
    out = tmp_path_factory.mktemp("onset") / "onset.mp4"
    cmd = [ffmpeg_exe(), "-v", "error", "-y", "-i", str(realdata / MEAD), "-f", "lavfi", "-i",
           f"sine=frequency={TONE:g}:sample_rate=16000:duration=3", "-filter_complex",
           f"[1:a]adelay={int(ONSET * 1000)}|{int(ONSET * 1000)}[a]", "-map", "0:v", "-map", "[a]", "-c:v", "copy",
           "-c:a", "aac", "-t", "3", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def test_log_mel_is_aligned_to_the_frame_timestamps(onset_video):
    frames = decode(onset_video, fps=8, max_side=128)
    ts = frames.timestamps
    feats = frame_logmel(onset_video, ts, 40)
    assert feats.shape == (len(ts), 40)
    d = float(np.median(np.diff(ts)))
    reach = d / 2 + WIN / SAMPLE_RATE / 2 + 0.03  # half a frame interval + half a window + AAC's pre-roll smear
    silent = ts < ONSET - reach
    loud = (ts > ONSET + reach) & (ts < 3.0 - reach)  # the track (and the tone) ends at 3 s
    assert silent.sum() >= 5 and loud.sum() >= 5
    assert np.allclose(feats[silent].max(1), np.log(FLOOR), atol=1.0)  # silence before the onset
    assert (feats[loud].max(1) > np.log(FLOOR) + 10).all()  # the tone after it
    # the loudest mel bin is the one whose filter peaks nearest 1 kHz
    fb = mel_filterbank(SAMPLE_RATE, NFFT, 40)
    freqs = np.linspace(0, SAMPLE_RATE / 2, NFFT // 2 + 1)
    centre = freqs[fb.argmax(1)]
    assert set(feats[loud].argmax(1)) <= {int(np.argmin(np.abs(centre - TONE))), int(np.argmin(np.abs(centre - TONE))) + 1,
                                          int(np.argmin(np.abs(centre - TONE))) - 1}
    assert HOP == SAMPLE_RATE // 100


def test_videos_without_audio_are_reported_and_skipped(realdata, tmp_path, caplog):
    from affectube.clips.build import audio_features
    from affectube.train.pretext.audio import AudioMethod

    ts = np.arange(10) / 8
    with caplog.at_level(logging.WARNING):
        assert audio_features(realdata / MEAD, ts, 40) is None
    assert "no audio stream" in caplog.text
    stores = grid_audio_stores(realdata, tmp_path / "grid", count=2)
    from realclips_util import mead_stores

    silent = mead_stores(realdata, tmp_path / "mead", ["M030"], ["angry"])
    pcfg = {"num_frames": 8, "sample_stride": 1, "input_size": 32, "augment": False, "seed": 0}
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        data, base = AudioMethod().build_dataset([*map(str, stores), str(silent[0])], pcfg, None)
    assert len(data) == 2 and len(data.notes) == 1 and "M030_angry" in data.notes[0] and "skipped" in caplog.text
    video, target = data.clips([0, 1])
    assert target.shape == (2, 8, 40) and abs(float(target.mean())) < 1.0
    with pytest.raises(DataError, match="audio_mels"):
        AudioMethod().build_dataset([str(silent[0])], pcfg, None)
    # on shards (data.shard_size) pretraining passes the clips shard indexes: they stand for their stores
    index = tmp_path / "shard-0.json"
    index.write_text(json.dumps({"videos": [{"video_id": Path(s).stem, "output": str(s)} for s in [*stores, silent[0]]]}))
    data, _ = AudioMethod().build_dataset([str(index)], pcfg, None)
    assert len(data) == 2 and len(data.notes) == 1 and "M030_angry" in data.notes[0]


def test_audio_target_loss_falls_on_real_clips(realdata, tmp_path):
    import pandas as pd

    from affectube.models import load_encoder

    stores = grid_audio_stores(realdata, tmp_path / "grid")
    real_pretrain(stores, tmp_path / "out", "audio", STEPS)
    log = pd.read_csv(tmp_path / "out" / "log.csv")
    first, last = log["loss"].head(WINDOW).mean(), log["loss"].tail(2 * WINDOW).mean()
    assert last <= (1 - DROP) * first, f"audio: loss {first:.4f} -> {last:.4f}"
    assert load_encoder(tmp_path / "out" / "encoder.safetensors").info["method"] == "audio"
    assert (tmp_path / "out" / "reconstruction.png").stat().st_size > 0  # the clips and their log-mel targets
