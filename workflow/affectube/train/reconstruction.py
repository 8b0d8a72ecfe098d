"""The end-of-pretraining figure: original clip, what the encoder saw, and the reconstruction.

Predictions are per-patch standardised pixels; they are mapped back to pixels with the
mean/std of the corresponding original patch (as VideoMAE's visualisation does), so the
figure shows structure recovered by the model, not its guess of each patch's brightness.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from affectube.io import atomic_path
from affectube.models.layers import patchify, unpatchify


@torch.no_grad()
def reconstruct(model, video: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(original, masked, reconstruction)`` as float arrays ``[B, T, H, W, C]`` in display units."""
    spec = model.spec
    was_training = model.training
    model.eval()
    pred = model(video, mask).float()
    model.train(was_training)
    x = video.float()
    mean, std = model.target_mean, model.target_std
    if mean is not None and std is not None:
        x = x * std.to(x).view(1, -1, 1, 1, 1) + mean.to(x).view(1, -1, 1, 1, 1)
    b, c = x.shape[:2]
    patches = patchify(x, spec.tubelet, spec.patch).reshape(b, -1, spec.tubelet * spec.patch**2, c)
    if spec.norm_target:
        mu = patches.mean(dim=-2, keepdim=True)
        sd = patches.var(dim=-2, unbiased=True, keepdim=True).sqrt()
        masked_mu, masked_sd = mu[mask], sd[mask]
        pred = pred.reshape(-1, spec.tubelet * spec.patch**2, c) * (masked_sd + 1e-6) + masked_mu
    recon = patches.clone()
    recon[mask] = pred.reshape(-1, spec.tubelet * spec.patch**2, c)
    shown = patches.clone()
    shown[mask] = 0.5 if mean is not None else patches.min()
    grid = model.grid

    def back(p):
        return unpatchify(p.reshape(b, p.shape[1], -1), grid, spec.tubelet, spec.patch, c).permute(0, 2, 3, 4, 1).cpu().numpy()

    return back(patches), back(shown), back(recon)


def _display(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    a = np.clip((a - lo) / max(hi - lo, 1e-8), 0, 1)
    return a[..., 0] if a.shape[-1] == 1 else a


def save_reconstruction_figure(
    path: str | os.PathLike, model, video: torch.Tensor, mask: torch.Tensor, frames: int = 4, dpi: int = 100
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    original, masked, recon = reconstruct(model, video, mask)
    b, t = original.shape[:2]
    cols = np.linspace(0, t - 1, min(frames, t)).round().astype(int)
    rows = [("original", original), ("masked input", masked), ("reconstruction", recon)]
    fig, axes = plt.subplots(3 * b, len(cols), figsize=(1.6 * len(cols), 1.6 * 3 * b), squeeze=False)
    for i in range(b):
        lo, hi = (0.0, 1.0) if model.target_mean is not None else (float(original[i].min()), float(original[i].max()))
        for r, (name, arr) in enumerate(rows):
            for j, f in enumerate(cols):
                ax = axes[3 * i + r, j]
                ax.imshow(_display(arr[i, f], lo, hi), cmap="gray" if arr.shape[-1] == 1 else None)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(f"clip {i}\n{name}", fontsize=7)
                if i == 0 and r == 0:
                    ax.set_title(f"frame {f}", fontsize=7)
    fig.suptitle(f"{model.spec.model}: {float(mask[0].float().mean()) * 100:.0f}% of tubelets masked", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
