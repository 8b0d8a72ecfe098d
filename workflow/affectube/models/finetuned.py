"""The fine-tuned model file (``results/finetune/{exp}/fold{k}/model.safetensors``): its one writer
and its one reader (as :mod:`affectube.models.build` is for ``encoder.safetensors``).

Tensors: the whole supervised model's state dict (``encoder.*`` + head). Metadata, each a JSON
string under ``affectube.{key}``:

* ``finetune``, ``pretrain``: the run's params sections;
* ``encoder_spec``: the encoder's :class:`~affectube.models.spec.ModelSpec` (null for the
  ResNet-GRU baseline);
* ``preprocessing``: the decode, faces and crop sections the training stores were built with;
* ``task``: kind, classes, targets, bins, target_range.

plus ``format`` = :data:`FORMAT`. Predict, embed and export read it back with :func:`decode`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from affectube.errors import DataError
from affectube.io import atomic_path

FORMAT = "affectube-finetuned/1"
PREFIX = "affectube."
REQUIRED = ("task", "finetune", "pretrain", "preprocessing")


def save_finetuned(path: str | os.PathLike, state: dict, *, finetune: dict, pretrain: dict, encoder_spec: dict | None,
                   preprocessing: dict | None, task) -> None:
    """Write the model's tensors ``state`` and its metadata atomically to ``path``
    (``task``: a :class:`affectube.train.supervised.Task`)."""
    from safetensors.torch import save_file

    metadata = {
        "format": FORMAT,
        PREFIX + "finetune": json.dumps(finetune, sort_keys=True),
        PREFIX + "pretrain": json.dumps(pretrain, sort_keys=True),
        PREFIX + "encoder_spec": json.dumps(encoder_spec, sort_keys=True),
        PREFIX + "preprocessing": json.dumps(preprocessing, sort_keys=True),
        PREFIX + "task": json.dumps(task_dict(task)),
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def task_dict(task) -> dict:
    """The ``task`` metadata of a :class:`affectube.train.supervised.Task`."""
    return {"kind": task.kind, "classes": task.classes, "targets": task.targets, "bins": task.bins,
            "target_range": list(task.target_range)}


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The raw safetensors metadata of ``path`` (``{}`` when it has none)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        return fh.metadata() or {}


def is_finetuned(meta: dict[str, str]) -> bool:
    return meta.get("format") == FORMAT


def decode(meta: dict[str, str], path: str | os.PathLike, required: tuple[str, ...] = REQUIRED) -> dict:
    """``{key: value}`` of every ``affectube.{key}`` entry; ``required`` keys missing -> DataError."""
    missing = [PREFIX + k for k in required if PREFIX + k not in meta]
    if missing:
        raise DataError(f"{path}: not an affectube fine-tuned model (metadata {', '.join(missing)} missing)")
    return {k[len(PREFIX):]: json.loads(v) for k, v in meta.items() if k.startswith(PREFIX)}


def read_finetuned(path: str | os.PathLike, required: tuple[str, ...] = REQUIRED) -> dict:
    """The decoded metadata of the fine-tuned model file ``path``."""
    return decode(read_metadata(Path(path)), path, required)
