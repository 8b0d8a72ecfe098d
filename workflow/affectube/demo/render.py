"""Render one demo video: a real face photograph animated with an expression-like warp.

Every frame is one ``cv2.remap`` of the photograph: output pixel -> (inverse head
motion) -> (inverse expression warp) -> (inverse eye alignment) -> photograph pixel.
The expression warp is a sum of Gaussian displacement fields anchored on the five
facial landmarks (mouth corners up and out = smile, down = frown, brows up + eyes
wider + jaw drop = surprise), scaled by the clip's intensity times an onset/apex
envelope over time. The same envelope scales the per-frame valence/arousal targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Canonical eye positions as fractions of the frame side: the face box is ~half the frame.
CANON_EYES = ((0.38, 0.42), (0.62, 0.42))

# A control: (anchor landmark, offset from it, displacement, Gaussian radius); lengths in eye distances.
# Anchors: le, re (eyes), nose, ml, mr (mouth corners), mc (mouth centre). x grows right, y grows down.
Control = tuple[str, tuple[float, float], tuple[float, float], float]

EXPRESSIONS: dict[str, list[Control]] = {
    "happy": [  # smile: corners up and out, cheeks up, lower lids up a little
        ("ml", (0.0, 0.0), (-0.12, -0.20), 0.22),
        ("mr", (0.0, 0.0), (0.12, -0.20), 0.22),
        ("ml", (-0.05, -0.35), (0.0, -0.08), 0.25),
        ("mr", (0.05, -0.35), (0.0, -0.08), 0.25),
        ("le", (0.0, 0.14), (0.0, -0.05), 0.10),
        ("re", (0.0, 0.14), (0.0, -0.05), 0.10),
    ],
    "sad": [  # frown: corners down and in, inner brows up and together
        ("ml", (0.0, 0.0), (0.05, 0.20), 0.22),
        ("mr", (0.0, 0.0), (-0.05, 0.20), 0.22),
        ("le", (0.18, -0.35), (0.05, -0.10), 0.16),
        ("re", (-0.18, -0.35), (-0.05, -0.10), 0.16),
    ],
    "surprise": [  # brows up, eyes wider, jaw drop
        ("le", (0.0, -0.40), (0.0, -0.16), 0.28),
        ("re", (0.0, -0.40), (0.0, -0.16), 0.28),
        ("le", (0.0, -0.10), (0.0, -0.06), 0.10),
        ("re", (0.0, -0.10), (0.0, -0.06), 0.10),
        ("mc", (0.0, 0.45), (0.0, 0.22), 0.45),
        ("mc", (0.0, 0.10), (0.0, 0.12), 0.18),
    ],
    "neutral": [],
}

# The mouth opening that goes with an expression: (shade 0-255, half-height, half-width), lengths in eye
# distances, drawn as a soft ellipse between the lips at the mouth centre, scaled in height by the
# expression's amount: the teeth of a broad smile (bright), the open jaw of surprise (dark). Real smiles
# show the teeth; it is the demo's most visible cue of the class, and the same for every face.
MOUTH_OPENING: dict[str, tuple[float, float, float]] = {
    "happy": (235.0, 0.07, 0.36),
    "surprise": (40.0, 0.16, 0.22),
}


@dataclass(frozen=True)
class Envelope:
    """Expression intensity over time: 0 before the onset, smooth rise to the apex (1), partial offset."""

    onset: float
    rise: float
    offset: float
    floor: float  # level reached at the end of the clip after the offset starts
    duration: float

    def __call__(self, t: np.ndarray | float) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        up = _smoothstep((t - self.onset) / self.rise)
        down = 1.0 - (1.0 - self.floor) * _smoothstep((t - self.offset) / max(self.duration - self.offset, 1e-6))
        return up * down

    @classmethod
    def draw(cls, rng: np.random.Generator, duration: float) -> "Envelope":
        onset = rng.uniform(0.10, 0.25) * duration
        rise = rng.uniform(0.25, 0.35) * duration
        offset = rng.uniform(0.75, 0.90) * duration
        return cls(onset, rise, max(offset, onset + rise), float(rng.uniform(0.6, 0.8)), duration)


@dataclass(frozen=True)
class HeadMotion:
    """Small smooth head sway: rotation (deg), translation (fraction of side), zoom, as sinusoids."""

    rot: float
    tx: float
    ty: float
    zoom: float
    freq: tuple[float, float, float, float]
    phase: tuple[float, float, float, float]

    def matrix(self, t: float, size: int) -> np.ndarray:
        """2x3 affine: canonical frame -> displayed frame at time ``t``."""
        import cv2

        s = np.sin(2 * np.pi * np.asarray(self.freq) * t + np.asarray(self.phase))
        m = cv2.getRotationMatrix2D((size / 2, size / 2), self.rot * s[0], 1.0 + self.zoom * s[3])
        m[:, 2] += (self.tx * s[1] * size, self.ty * s[2] * size)
        return m

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "HeadMotion":
        return cls(
            rot=float(rng.uniform(1.0, 4.0)),
            tx=float(rng.uniform(0.01, 0.04)),
            ty=float(rng.uniform(0.01, 0.03)),
            zoom=float(rng.uniform(0.0, 0.04)),
            freq=tuple(float(f) for f in rng.uniform(0.2, 0.9, 4)),
            phase=tuple(float(p) for p in rng.uniform(0, 2 * np.pi, 4)),
        )


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def similarity_from_eyes(src_eyes: np.ndarray, dst_eyes: np.ndarray) -> np.ndarray:
    """2x3 similarity mapping the two source eye centres onto the two destination ones."""
    a, b = (complex(*p) for p in src_eyes)
    A, B = (complex(*p) for p in dst_eyes)
    s = (B - A) / (b - a)
    t = A - s * a
    return np.array([[s.real, -s.imag, t.real], [s.imag, s.real, t.imag]], dtype=np.float64)


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def invert_affine(m: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.invertAffineTransform(m)


def anchors(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    le, re, nose, ml, mr = np.asarray(landmarks, dtype=np.float64)
    return {"le": le, "re": re, "nose": nose, "ml": ml, "mr": mr, "mc": (ml + mr) / 2}


def displacement_field(expression: str, landmarks: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Full-intensity displacement (dx, dy) of ``expression`` at points (xs, ys), in pixels."""
    pts = anchors(landmarks)
    eye_dist = float(np.linalg.norm(pts["re"] - pts["le"]))
    dx = np.zeros_like(xs, dtype=np.float64)
    dy = np.zeros_like(ys, dtype=np.float64)
    for anchor, offset, disp, radius in EXPRESSIONS[expression]:
        cx, cy = pts[anchor] + np.asarray(offset) * eye_dist
        sigma = radius * eye_dist
        w = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
        dx += w * disp[0] * eye_dist
        dy += w * disp[1] * eye_dist
    return dx, dy


@dataclass
class FaceRenderer:
    """Renders frames of one photograph aligned to the canonical eye positions at ``size`` px."""

    photo: np.ndarray
    landmarks: np.ndarray  # 5x2 in photo pixels
    size: int

    def __post_init__(self) -> None:
        import cv2

        dst_eyes = np.asarray(CANON_EYES) * self.size
        align = similarity_from_eyes(self.landmarks[:2], dst_eyes)
        scale = float(np.hypot(align[0, 0], align[1, 0]))
        photo, lms = self.photo, np.asarray(self.landmarks, dtype=np.float64)
        if scale < 0.8:  # downscale once with area averaging (no aliasing), then align at ~1:1
            h, w = photo.shape[:2]
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            photo = cv2.resize(photo, (nw, nh), interpolation=cv2.INTER_AREA)
            lms = lms * (nw / w, nh / h)
            align = similarity_from_eyes(lms[:2], dst_eyes)
        self._photo = np.ascontiguousarray(photo)
        self._unalign = invert_affine(align)
        self.canonical_landmarks = apply_affine(align, lms)
        ys, xs = np.mgrid[0 : self.size, 0 : self.size].astype(np.float64)
        self._grid = np.stack([xs.ravel(), ys.ravel()], axis=1)

    def frame(self, expression: str, amount: float, head: np.ndarray) -> np.ndarray:
        """One RGB uint8 frame: ``amount`` (intensity x envelope) of ``expression``, head pose ``head`` (2x3)."""
        import cv2

        q = apply_affine(invert_affine(head), self._grid)  # displayed -> canonical
        if amount != 0.0 and EXPRESSIONS[expression]:
            dx, dy = displacement_field(expression, self.canonical_landmarks, q[:, 0], q[:, 1])
            q = q - amount * np.stack([dx, dy], axis=1)  # backward warp (small displacements)
        src = apply_affine(self._unalign, q).astype(np.float32)
        mx = src[:, 0].reshape(self.size, self.size)
        my = src[:, 1].reshape(self.size, self.size)
        img = cv2.remap(self._photo, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        if amount > 0.0 and expression in MOUTH_OPENING:
            img = self._mouth_opening(img, expression, amount, q)
        return img

    def _mouth_opening(self, img: np.ndarray, expression: str, amount: float, q: np.ndarray) -> np.ndarray:
        """Blend the expression's mouth opening into ``img``; ``q``: each pixel's canonical position."""
        shade, half_h, half_w = MOUTH_OPENING[expression]
        pts = anchors(self.canonical_landmarks)
        eye_dist = float(np.linalg.norm(pts["re"] - pts["le"]))
        d = (q - pts["mc"]) / (np.array([half_w, max(half_h * min(amount, 2.0), 1e-3)]) * eye_dist)
        r2 = (d**2).sum(axis=1).reshape(self.size, self.size)
        alpha = (np.clip(1.0 - r2, 0.0, 1.0) ** 0.5 * min(amount, 1.0))[..., None]  # soft edge
        return np.clip(img * (1.0 - alpha) + shade * alpha, 0, 255).astype(np.uint8)


def render_video(
    renderer: FaceRenderer,
    expression: str,
    intensity: float,
    num_frames: int,
    fps: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, Envelope]:
    """Frames uint8 [N, S, S, 3] of one clip and the envelope used (for the per-frame targets)."""
    duration = num_frames / fps
    env = Envelope.draw(rng, duration)
    head = HeadMotion.draw(rng)
    gain = rng.uniform(0.9, 1.1)
    frames = np.empty((num_frames, renderer.size, renderer.size, 3), dtype=np.uint8)
    for i in range(num_frames):
        t = i / fps
        img = renderer.frame(expression, intensity * float(env(t)), head.matrix(t, renderer.size)).astype(np.float32)
        img = img * gain + rng.normal(0.0, 2.0, img.shape)  # exposure and sensor noise
        frames[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return frames, env
