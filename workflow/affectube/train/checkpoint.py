"""Training checkpoints: atomic, complete, and loadable with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain Python values only:

* ``model``, ``optimizer``, ``scheduler``, ``scaler``: the ``state_dict()`` of each,
* ``rng``: a list (one entry per rank) of RNG states stored as tensors/numbers
  (Python ``random``, NumPy's legacy global generator, torch CPU and every CUDA device),
* ``step`` (optimizer steps done) and ``meta`` (e.g. ``params_hash``, ``data_hash``),
* whatever else the caller adds (``extra``; fine-tuning: :mod:`affectube.train.fold_checkpoint`).

It is written through :func:`affectube.io.atomic_path`, so a job killed while saving
leaves the previous checkpoint intact. Resuming = building the same objects, then
:func:`restore` (weights, optimizer moments, schedule position, RNG streams).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from affectube.errors import DataError
from affectube.io import atomic_path

FORMAT = "affectube-checkpoint/1"


# ---------------------------------------------------------------- RNG states as tensors
def rng_state() -> dict[str, Any]:
    version, keys, gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    cuda = [s.clone() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    return {
        "python_version": int(version),
        "python": torch.tensor(keys, dtype=torch.int64),
        "python_gauss": gauss,
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
        "torch": torch.get_rng_state().clone(),
        "cuda": cuda,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"].tolist()), state["python_gauss"]))
    np.random.set_state(
        (
            "MT19937",
            state["numpy"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:  # a different number of visible devices: restore the current one
            torch.cuda.set_rng_state(state["cuda"][0])


# ---------------------------------------------------------------- save / load
def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DistributedDataParallel and/or torch.compile."""
    while True:
        if hasattr(model, "module") and isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler,
    step: int,
    rng: list[dict[str, Any]] | None = None,
    meta: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """``extra``: more entries of the same kinds (e.g. a fine-tuning fold's epoch, log and selection)."""
    state = {
        "format": FORMAT,
        "step": int(step),
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
        "scaler": scaler.state_dict() if scaler is not None else {},
        "rng": rng if rng is not None else [rng_state()],
        "meta": dict(meta or {}),
    }
    clash = set(extra or {}) & set(state)
    if clash:
        raise ValueError(f"checkpoint extra entries {sorted(clash)} would replace the standard ones")
    state.update(extra or {})
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load with ``weights_only=True`` (nothing is unpickled but tensors and plain values)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/foreign files
        raise DataError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DataError(f"{path}: not an affectube checkpoint (expected format {FORMAT})")
    return state


def restore(
    state: dict[str, Any],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    scaler=None,
    rank: int = 0,
    restore_rng: bool = True,
) -> int:
    """Load every part of ``state`` into the live objects; return the step to continue from."""
    unwrap(model).load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"]:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    if restore_rng and state["rng"]:
        rngs = state["rng"]
        set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])
    return int(state["step"])
