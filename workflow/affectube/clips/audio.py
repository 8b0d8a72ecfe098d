"""Audio features aligned to the stored frames: log-mel energies of the video's own audio track.

The audio pretext (``pretrain.method: audio``, LiRA-style) predicts them from the visual encoder.
The track is decoded with ffmpeg (mono, ``SAMPLE_RATE`` Hz, float32), cut into 25 ms Hann windows
every 10 ms, mapped onto ``n_mels`` HTK-mel triangular filters (0 Hz to Nyquist) and log-compressed
(``log(energy + 1e-6)``). Each stored frame at time ``t`` (its timestamp in the source timeline, as the
frames' ``timestamps``) gets the mean of the windows centred in ``[t - d/2, t + d/2)``, ``d`` = the
frame interval (the nearest window when none falls inside; frames past the end of the track get the
silence floor ``log(1e-6)``). Audio time 0 is taken as the timeline's 0 (the decoder's timestamps of
frames start there too).

:func:`frame_logmel` returns None for a video without an audio stream: the clips stage then writes no
``audio_logmel`` array and the audio pretext skips the store with a message.
"""

from __future__ import annotations

import subprocess

import numpy as np

from affectube.errors import DataError

SAMPLE_RATE = 16000
WIN, HOP, NFFT = 400, 160, 512  # 25 ms windows every 10 ms
FLOOR = 1e-6


def decode_audio(path, sample_rate: int = SAMPLE_RATE) -> np.ndarray | None:
    """Mono float32 samples of the first audio stream of ``path``, or None if it has none."""
    from affectube.video.decode import ffmpeg_exe

    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0?", "-vn", "-ac", "1",
           "-ar", str(sample_rate), "-f", "f32le", "-"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True)
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        if "does not contain any stream" in err or "Output file is empty" in err:
            return None
        raise DataError(f"{path}: ffmpeg could not decode the audio track: {err.strip()[-500:]}")
    if not proc.stdout:
        return None  # the optional map matched no audio stream
    return np.frombuffer(proc.stdout, np.float32).copy()


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """``[n_mels, n_fft // 2 + 1]`` triangular filters equally spaced on the HTK mel scale."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(0.0), mel(sample_rate / 2), n_mels + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / np.maximum(mid - lo, 1e-9)
    down = (hi - freqs[None]) / np.maximum(hi - mid, 1e-9)
    return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


def log_mel(samples: np.ndarray, n_mels: int, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
    """``(features [F, n_mels], centre times [F] s)`` of 25 ms windows every 10 ms."""
    x = np.asarray(samples, np.float32)
    if len(x) < WIN:
        x = np.pad(x, (0, WIN - len(x)))
    n = 1 + (len(x) - WIN) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(x, WIN)[::HOP][:n] * np.hanning(WIN).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, NFFT, axis=1)) ** 2
    mel = power @ mel_filterbank(sample_rate, NFFT, n_mels).T
    times = (np.arange(n) * HOP + WIN / 2) / sample_rate
    return np.log(mel + FLOOR).astype(np.float32), times


def align(features: np.ndarray, times: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Mean of the feature rows centred within half a frame interval of each timestamp -> ``[N, n_mels]``."""
    ts = np.asarray(timestamps, np.float64)
    d = float(np.median(np.diff(ts))) if len(ts) > 1 else 0.04
    lo = np.searchsorted(times, ts - d / 2, side="left")
    hi = np.searchsorted(times, ts + d / 2, side="left")
    out = np.full((len(ts), features.shape[1]), np.log(FLOOR), np.float32)
    end = times[-1] + HOP / SAMPLE_RATE if len(times) else 0.0
    for i, (a, b) in enumerate(zip(lo, hi)):
        if ts[i] > end:
            continue  # past the end of the track: silence
        out[i] = features[a:b].mean(0) if b > a else features[min(int(a), len(features) - 1)]
    return out


def frame_logmel(path, timestamps: np.ndarray, n_mels: int) -> np.ndarray | None:
    """float32 ``[N, n_mels]`` log-mel features at the frames' ``timestamps``, or None without audio."""
    samples = decode_audio(path)
    if samples is None:
        return None
    feats, times = log_mel(samples, n_mels)
    return align(feats, times, timestamps)
