"""The end-of-pretraining figure of the view-based and audio pretexts (the rule's ``reconstruction.png``):
what the method trains on, for ``pretrain.recon_clips`` clips: each view's frames (BYOL: 2 views, DINO:
global then local views; audio: the clip and its standardised log-mel target, mels x frames)."""

from __future__ import annotations

import os

import numpy as np
import torch

from affectube.io import atomic_path


def _display(video: torch.Tensor, mean, std) -> np.ndarray:
    """[C,T,H,W] normalised -> [T,H,W,C] in [0, 1]."""
    x = video.detach().float().cpu()
    c = x.shape[0]
    if mean is not None:
        x = x * torch.as_tensor(std).view(c, 1, 1, 1) + torch.as_tensor(mean).view(c, 1, 1, 1)
    else:
        x = (x - x.min()) / max(float(x.max() - x.min()), 1e-8)
    return x.clamp(0, 1).permute(1, 2, 3, 0).numpy()


def save_views_figure(path: str | os.PathLike, method: str, views: list[torch.Tensor], mean=None, std=None,
                      target: torch.Tensor | None = None, frames: int = 4, dpi: int = 100) -> None:
    """``views``: V tensors [B,C,T,H,W] (B clips); ``target`` [B,T,M] (audio) drawn as an extra row per clip."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b, t = views[0].shape[0], views[0].shape[2]
    cols = np.linspace(0, t - 1, min(frames, t)).round().astype(int)
    rows = len(views) + (1 if target is not None else 0)
    fig, axes = plt.subplots(rows * b, len(cols), figsize=(1.6 * len(cols), 1.6 * rows * b), squeeze=False)
    for i in range(b):
        for v, view in enumerate(views):
            arr = _display(view[i], mean, std)
            for j, f in enumerate(cols):
                ax = axes[rows * i + v, j]
                ax.imshow(arr[f][..., 0] if arr.shape[-1] == 1 else arr[f], cmap="gray" if arr.shape[-1] == 1 else None)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(f"clip {i}\nview {v}", fontsize=7)
                if i == 0 and v == 0:
                    ax.set_title(f"frame {f}", fontsize=7)
        if target is not None:
            row = axes[rows * i + len(views)]
            gs = row[0].get_gridspec()
            for ax in row:
                ax.remove()
            ax = fig.add_subplot(gs[rows * i + len(views), :])
            ax.imshow(target[i].detach().float().cpu().numpy().T, aspect="auto", origin="lower", cmap="magma")
            ax.set_ylabel(f"clip {i}\nlog-mel", fontsize=7)
            ax.set_xlabel("clip frame", fontsize=7)
    fig.suptitle(f"pretext {method}: the views it trains on", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
