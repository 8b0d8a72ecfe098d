"""Tube-consistent clip transforms: ONE random spatial transform per clip, applied to every frame.

A clip is uint8 ``[T,H,W,C]`` (as stored); the output is float32 ``[C,T,S,S]`` normalised by
``mean``/``std`` (ImageNet statistics by default, as VideoMAE). With ``augment``: a random
resized crop (area fraction in ``scale``, aspect ratio in ``ratio``, torchvision's rule; none with
``crop=False``) and a horizontal flip with probability ``flip``, drawn once and shared by all T frames, so a tubelet
keeps following the same face region. Without: the whole crop resized to S (no-op when equal).
Resizing works on the uint8 frames (OpenCV; area filter when shrinking, bilinear when
enlarging), then one pass converts to float, transposes and normalises.

GPU path: a loader can instead ship the stored uint8 crops and each clip's :class:`Window`
(``Window.as_tensor``); :func:`apply_windows` then does the same crop/resize/flip/normalise on
the accelerator for a whole batch (4x fewer bytes through the loader, no float work on the CPU).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Window:
    y: int
    x: int
    h: int
    w: int
    flip: bool = False

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([self.y, self.x, self.h, self.w, int(self.flip)], dtype=torch.int64)


class TubeTransform:
    def __init__(self, size: int, augment: bool = False, scale=(0.6, 1.0), ratio=(3 / 4, 4 / 3), flip: float = 0.5,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, crop: bool = True):
        self.size = int(size)
        self.augment = bool(augment)
        self.crop = bool(crop)  # False: augmentation is the flip alone (the whole crop, resized)
        self.scale = tuple(map(float, scale))
        self.ratio = tuple(map(float, ratio))
        self.flip = float(flip)
        self.mean = tuple(map(float, mean))
        self.std = tuple(map(float, std))

    def window(self, h: int, w: int, rng: np.random.Generator) -> Window:
        """The clip's crop window (and flip), torchvision RandomResizedCrop's sampling rule."""
        if not self.augment:
            return Window(0, 0, h, w, False)
        flip = bool(rng.random() < self.flip)
        if not self.crop:
            return Window(0, 0, h, w, flip)
        area = h * w
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                return Window(int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw, flip)
        side = min(h, w)  # fallback: centred square, as torchvision
        return Window((h - side) // 2, (w - side) // 2, side, side, flip)

    def __call__(self, frames: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        h, w = frames.shape[1:3]
        return self.crop_window(frames, self.window(h, w, rng if rng is not None else np.random.default_rng()))

    def points(self, xy: np.ndarray, win: Window) -> np.ndarray:
        """Pixel coordinates ``[..., 2]`` (x, y) in the stored crop -> in the output clip (``size`` px)
        under ``win`` (crop, resize, flip): where e.g. a face landmark lands in the model's input."""
        xy = np.asarray(xy, np.float64)
        x = (xy[..., 0] - win.x) * self.size / win.w
        y = (xy[..., 1] - win.y) * self.size / win.h
        if win.flip:
            x = self.size - x
        return np.stack([x, y], axis=-1)

    def crop_window(self, frames: np.ndarray, win: Window) -> torch.Tensor:
        """uint8 ``[T,H,W,C]`` -> float32 ``[C,T,S,S]`` under the window ``win`` (what ``__call__`` does)."""
        t, h, w, c = frames.shape
        x = frames[:, win.y : win.y + win.h, win.x : win.x + win.w]
        if (win.h, win.w) != (self.size, self.size):
            x = resize(x, self.size)
        if win.flip:
            x = x[:, :, ::-1]
        u = torch.from_numpy(np.ascontiguousarray(x)).permute(3, 0, 1, 2)  # [C,T,S,S] view of uint8
        out = torch.empty(u.shape, dtype=torch.float32)
        out.copy_(u)  # uint8 -> float32 and [T,S,S,C] -> [C,T,S,S] in one pass
        mean, std = self.stats(c)
        return out.mul_((1.0 / (255.0 * std)).view(c, 1, 1, 1)).sub_((mean / std).view(c, 1, 1, 1))

    def apply(self, video: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """The same transform on a batch already on its device: see :func:`apply_windows`."""
        mean, std = self.stats(video.shape[-1])
        return apply_windows(video, windows, self.size, mean, std)

    def stats(self, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) per channel in [0, 1] units; grayscale stores use the channel average."""
        mean, std = torch.tensor(self.mean), torch.tensor(self.std)
        if channels == 1:
            mean, std = mean.mean().view(1), std.mean().view(1)
        return mean, std


def resize(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 [T,h,w,C] (a crop window view is fine: no copy) -> [T,size,size,C]:
    area filter when shrinking, bilinear when enlarging."""
    t, h, w, c = frames.shape
    interp = cv2.INTER_AREA if h >= size and w >= size else cv2.INTER_LINEAR
    out = np.empty((t, size, size, c), np.uint8)
    for i in range(t):
        cv2.resize(frames[i], (size, size), dst=out[i], interpolation=interp)
    return out


def apply_windows(video: torch.Tensor, windows: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """Batched tube transform on any device: uint8 ``[B,T,H,W,C]`` (as stored) + windows int64
    ``[B,5]`` (y, x, h, w, flip) -> float32 ``[B,C,T,size,size]`` normalised by ``mean``/``std`` ([0,1] units).

    The same window on every frame of a clip, resampled exactly as the CPU path (:func:`resize`,
    OpenCV on uint8): bilinear with OpenCV's fixed-point arithmetic (integer ops: the same pixels),
    or, when the window is at least ``size`` both ways, area averaging (float64, rounded half up:
    the same pixels but for about 1 in 20,000, one grey level off where OpenCV's float sums round
    the other way); then the CPU path's normalisation. ``tests/test_clips_training_path.py``.
    """
    b, t, c = video.shape[0], video.shape[1], video.shape[4]
    dev = video.device
    out = torch.empty((b, c, t, size, size), dtype=torch.float32, device=dev)
    for i, (y, x, h, w, flip) in enumerate(windows.tolist()):
        clip = video[i, :, y : y + h, x : x + w]  # [T,h,w,C] uint8
        if (h, w) != (size, size):
            clip = _resize_area(clip, size) if h >= size and w >= size else _resize_linear(clip, size)
        if flip:
            clip = clip.flip(2)
        out[i] = clip.permute(3, 0, 1, 2)  # uint8 -> float32, [T,S,S,C] -> [C,T,S,S]
    mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
    scale, shift = (1.0 / (255.0 * std)).view(1, c, 1, 1, 1), (mean / std).view(1, c, 1, 1, 1)  # as TubeTransform.__call__
    return out.mul_(scale.to(dev)).sub_(shift.to(dev))


@functools.lru_cache(maxsize=4096)
def _linear_taps(n_in: int, n_out: int, clamp: bool, device: torch.device) -> tuple[torch.Tensor, ...]:
    """OpenCV's INTER_LINEAR taps for uint8 images: source indices and 11-bit fixed-point weights
    (cached per size and device: no host-to-device copy per clip).
    ``clamp`` (the x axis): border outputs take the border pixel alone; along y OpenCV keeps the
    fraction and clamps the source rows instead."""
    scale = 1.0 / (n_out / n_in)
    f = ((np.arange(n_out) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f)
    frac = (f - s).astype(np.float32)
    s = s.astype(np.int64)
    if clamp:
        frac = np.where(s < 0, np.float32(0), frac)
        s = np.maximum(s, 0)
        frac = np.where(s >= n_in - 1, np.float32(0), frac)
        s = np.minimum(s, n_in - 1)
    w0, w1 = np.round((np.float32(1) - frac) * 2048), np.round(frac * 2048)
    index = [torch.as_tensor(np.clip(i, 0, n_in - 1), dtype=torch.int64, device=device) for i in (s, s + 1)]
    return (*index, *(torch.as_tensor(w.astype(np.int32), device=device) for w in (w0, w1)))


def _resize_linear(clip: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [T,h,w,C] -> [T,size,size,C], bit-exact with ``cv2.resize(..., INTER_LINEAR)`` (its
    vectorised fixed-point path: horizontal pass x2048, vertical pass in 16-bit steps)."""
    t, h, w, c = clip.shape
    x0, x1, a0, a1 = _linear_taps(w, size, True, clip.device)
    y0, y1, b0, b1 = _linear_taps(h, size, False, clip.device)
    src = clip.to(torch.int32)
    rows = src[:, :, x0] * a0.view(1, 1, -1, 1) + src[:, :, x1] * a1.view(1, 1, -1, 1)  # [T,h,S,C]
    out = (((rows[:, y0] >> 4) * b0.view(1, -1, 1, 1)) >> 16) + (((rows[:, y1] >> 4) * b1.view(1, -1, 1, 1)) >> 16)
    return ((out + 2) >> 2).clamp_(0, 255).to(torch.uint8)


def _resize_area(clip: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [T,h,w,C] -> [T,size,size,C] (h, w >= size): ``cv2.resize(..., INTER_AREA)``, each output
    pixel the mean of the source area it covers (float64: no TF32 on GPUs), rounded half up."""
    wy = _area_weights(clip.shape[1], size, clip.device)
    wx = _area_weights(clip.shape[2], size, clip.device)
    out = torch.einsum("oh,thwc,pw->topc", wy, clip.to(torch.float64), wx)
    return out.add_(0.5).floor_().clamp_(0, 255).to(torch.uint8)


@functools.lru_cache(maxsize=4096)
def _area_weights(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """[n_out, n_in] weights of area resampling (shrinking): the fraction of each output cell that
    each source pixel covers."""
    scale = n_in / n_out
    edges = torch.arange(n_out + 1, dtype=torch.float64) * scale
    j = torch.arange(n_in, dtype=torch.float64)
    cover = torch.minimum(edges[1:, None], j[None] + 1) - torch.maximum(edges[:-1, None], j[None])
    return (cover.clamp_(min=0) / scale).to(device)
