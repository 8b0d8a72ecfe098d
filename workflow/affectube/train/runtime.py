"""What pretraining and fine-tuning share about where and how they run: the device, autocast,
seeding and parameter counts (one definition each; issue 19).

- :func:`training_device`: the process's GPU (``local_rank`` modulo the visible GPUs) when CUDA is
  available, else the CPU;
- :func:`autocast`: bf16 autocast on CUDA (no loss scaling needed), nothing on the CPU (fp32);
  :func:`precision` names it for summaries;
- :func:`seed_everything`: Python's, NumPy's and torch's generators (torch seeds every CUDA device);
- :func:`param_counts`: (all, trainable) parameters of a model.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch


def training_device(local_rank: int = 0) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def autocast(device: torch.device):
    """bf16 autocast on CUDA, a no-op context elsewhere."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def precision(device: torch.device) -> str:
    return "bf16 autocast" if torch.device(device).type == "cuda" else "fp32"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def param_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)
