"""Subject-disjoint cross-validation folds (LOSO first; more protocols in the finetune work)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Fold:
    index: int
    train: list[str]  # subjects
    val: list[str]
    test: list[str]
    extra: dict = field(default_factory=dict)


def plan_folds(table: pd.DataFrame, cfg: dict) -> list[Fold]:
    subjects = sorted(table["subject"].astype(str).unique())
    folds = []
    for i, test in enumerate(subjects):
        rest = [s for s in subjects if s != test]
        n_val = max(1, round(cfg.get("inner_val", 0.25) * len(rest))) if len(rest) > 1 else 0
        val = rest[(i % len(rest)) : (i % len(rest)) + n_val] if rest else []
        train = [s for s in rest if s not in val]
        folds.append(Fold(i, train, val, [test]))
    return folds
