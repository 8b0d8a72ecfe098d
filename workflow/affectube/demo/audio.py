"""The demo's synthetic voice: an audio track that follows the face, as speech follows the lips.

Every demo video gets one mono track (``SAMPLE_RATE`` Hz), muxed as AAC next to the H.264 frames
(:func:`affectube.demo.encode_mp4`). It is a voiced source, a harmonic series (``HARMONICS`` partials, 1/k
amplitudes) on a fundamental with some breath noise, over a quiet noise floor. Its loudness and pitch at time
``t`` follow ``amount(t)``, the expression amount that warps the face in that frame (the clip's intensity x
the onset/apex envelope, :func:`affectube.demo.render.render_video`):

- loudness: ``VOICE[class] x min(amount, 2) / 2`` (0 before the onset: the floor only; a neutral face is silent);
- pitch: the subject's fundamental (``F0_RANGE``, drawn per subject) x ``1 + PITCH[class] x min(amount, 2) / 2``
  (up for a smile, down for a frown, as emotional prosody tends to go).

So the track's log-mel energies rise and fall with the visible mouth movement frame by frame (what the audio
pretext, ``pretrain.method: audio``, learns to predict from the frames), and they carry the class the way
emotional speech does. It is not speech: no words, no syllable rhythm the face does not show. Deterministic
under the seed: the noise comes from its own random stream (the frames' stream is left as it was, so the
rendered frames do not change when the audio is added).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

SAMPLE_RATE = 16000
HARMONICS = 8
F0_RANGE = (100.0, 220.0)  # Hz: the subjects' fundamentals
VOICE = {"happy": 1.0, "surprise": 1.0, "sad": 0.6, "neutral": 0.0}  # loudness at full expression
PITCH = {"happy": 0.25, "surprise": 0.35, "sad": -0.15, "neutral": 0.0}  # relative pitch change at full expression
PEAK = 0.3  # voiced amplitude at full loudness (full scale 1.0)
BREATH = 0.08  # breath noise, relative to the voiced amplitude
FLOOR = 0.002  # background noise amplitude


def subject_f0(seed: int, subject: int) -> float:
    """The fundamental (Hz) of subject ``subject``'s voice: drawn from its own stream under ``seed``."""
    return float(np.random.default_rng([seed, subject, 7]).uniform(*F0_RANGE))


def synthesize(expression: str, amount: Callable[[np.ndarray], np.ndarray], duration: float, f0: float,
               rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """float32 mono samples of ``duration`` s: the voice whose loudness and pitch follow ``amount(t)`` (t in s)."""
    n = int(round(duration * sample_rate))
    t = np.arange(n) / sample_rate
    a = np.clip(np.asarray(amount(t), np.float64), 0.0, 2.0) / 2.0
    level = VOICE[expression] * a
    freq = f0 * (1.0 + PITCH[expression] * a)
    phase = 2.0 * np.pi * np.cumsum(freq) / sample_rate
    k = np.arange(1, HARMONICS + 1)
    voiced = (np.sin(phase[:, None] * k[None]) / k[None]).sum(1) / np.sum(1.0 / k)
    breath = rng.standard_normal(n)
    x = PEAK * level * (voiced + BREATH * breath) + FLOOR * rng.standard_normal(n)
    return np.clip(x, -1.0, 1.0).astype(np.float32)
