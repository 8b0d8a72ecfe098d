"""train/runtime.py: one device/autocast/seed/parameter-count definition for both trainers."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from affectube.train import finetune, pretrain, runtime, supervised


def test_cpu_runs_fp32_without_autocast_and_both_trainers_use_the_shared_definition():
    cpu = torch.device("cpu")
    assert isinstance(runtime.autocast(cpu), contextlib.nullcontext) and runtime.precision(cpu) == "fp32"
    assert supervised.autocast is runtime.autocast and finetune.seed_everything is runtime.seed_everything
    assert "runtime.autocast" in open(pretrain.__file__).read()  # Pretrainer._autocast delegates
    if not torch.cuda.is_available():
        assert runtime.training_device(3) == cpu


def test_seed_everything_and_param_counts():
    runtime.seed_everything(5)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    runtime.seed_everything(5)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    model[0].requires_grad_(False)
    assert runtime.param_counts(model) == (8 + 3, 3)
