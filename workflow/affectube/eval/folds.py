"""Subject-disjoint cross-validation folds (stage ``folds``).

Protocols (``finetune.protocol``), each a function in :data:`PROTOCOLS`:

- ``loso``          leave one subject out: one fold per subject.
- ``group_kfold``   k folds of subjects, stratified by the clip label where possible
                    (sklearn ``StratifiedGroupKFold``; plain ``GroupKFold`` without labels).
- ``session_kfold`` k folds of sessions (the manifest's ``session`` column), stratified likewise.
- ``video_kfold``   k folds of videos, stratified by the class (``finetune.label``): for one
                    speaker/subject (GRID s1 words). WITHIN-SUBJECT: the same person is on both
                    sides, so a result says how well a model reads this person, not a new one
                    (``"scope": "within-subject"`` in the folds file and the report).
- ``official``      the dataset's own test lists (DFEW and MAFW ship 5), read from
                    ``finetune.official_folds``: a CSV with columns ``video_id,fold`` or a
                    directory of per-fold test lists ``*set_<k>*.csv|txt`` (first column = video id).

In every fold an inner validation set is carved from the *training* groups only
(``finetune.inner_val`` of them, at least one when there are two or more), chosen with
``finetune.seed``; it drives early stopping and model selection. The test groups are never
used to select anything.

No group (subject, or session for ``session_kfold``, video for ``video_kfold``) may appear on
two sides of a fold, and no video on two sides: :func:`check_fold` asserts it when folds are built, and the
fine-tuning stage asserts it again on the data it actually loads (:func:`check_loaded`).

Label budgets: ``finetune.label_fraction`` < 1 keeps that fraction of each fold's TRAINING videos,
per class (at least one video of each class), drawn with ``finetune.seed``; the inner validation
and test sides are never touched, so test sets are identical across fractions and seeds and a grid
over ``finetune.label_fraction`` gives label-efficiency curves. The videos left out are listed
under ``"unlabelled"`` in the fold.

Output ``results/folds/{exp}.json``: a JSON list, one object per fold::

    {"index": 0, "protocol": "loso", "group": "subject", "scope": "cross-subject", "label_fraction": 1.0,
     "train": {"subjects": [...], "groups": [...], "video_ids": [...]},
     "val": {...}, "test": {...}}
"""

from __future__ import annotations

import argparse
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from affectube.errors import DataError, UserError

log = logging.getLogger(__name__)
SIDES = ("train", "val", "test")
WITHIN_SUBJECT = ("session", "video_id")  # fold groups that may put one subject on both sides, by design


@dataclass
class Fold:
    index: int
    train: list[str]  # subjects
    val: list[str]
    test: list[str]
    extra: dict = field(default_factory=dict)  # protocol, group, per-side groups and video ids

    def videos(self, side: str) -> list[str]:
        return self.extra["videos"][side]

    def groups(self, side: str) -> list[str]:
        return self.extra["groups"][side]

    def to_json(self) -> dict:
        out = {"index": self.index, "protocol": self.extra["protocol"], "group": self.extra["group"],
               "scope": "within-subject" if self.extra["group"] in WITHIN_SUBJECT else "cross-subject",
               "label_fraction": self.extra.get("label_fraction", 1.0), "unlabelled": self.extra.get("unlabelled", [])}
        for side in SIDES:
            out[side] = {"subjects": getattr(self, side), "groups": self.groups(side), "video_ids": self.videos(side)}
        return out

    @classmethod
    def from_json(cls, obj: dict) -> "Fold":
        extra = {
            "protocol": obj["protocol"],
            "group": obj["group"],
            "groups": {s: list(obj[s]["groups"]) for s in SIDES},
            "videos": {s: list(obj[s]["video_ids"]) for s in SIDES},
            "label_fraction": float(obj.get("label_fraction", 1.0)),
            "unlabelled": list(obj.get("unlabelled", [])),
        }
        return cls(int(obj["index"]), *(list(obj[s]["subjects"]) for s in SIDES), extra=extra)


# ---------------------------------------------------------------- protocols
# Each returns a list of test-group lists (or, for `official`, test video-id lists).


def _labels(table: pd.DataFrame, groups: pd.Series, column: str = "emotion"):
    """Per-row labels (column ``finetune.label``) for stratification, or None when there is nothing to stratify on."""
    if column not in table.columns or table[column].isna().all():
        return None
    y = table[column].fillna("").astype(str)
    return y if y.nunique() > 1 else None


def _loso(table: pd.DataFrame, cfg: dict, group: str) -> list[list[str]]:
    return [[g] for g in sorted(table[group].astype(str).unique())]


def _kfold(table: pd.DataFrame, cfg: dict, group: str) -> list[list[str]]:
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    groups = table[group].astype(str)
    k = int(cfg.get("k", 5))
    n = groups.nunique()
    if n < k:
        raise DataError(f"finetune.k = {k} folds but the manifest has only {n} distinct {group}s")
    y = _labels(table, groups, cfg.get("label", "emotion"))
    if y is not None:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=int(cfg.get("seed", 0)))
        splits = splitter.split(table, y, groups)
    else:
        splits = GroupKFold(n_splits=k).split(table, groups=groups)
    return [sorted(groups.iloc[test].unique()) for _, test in splits]


def _official(table: pd.DataFrame, cfg: dict, group: str) -> list[list[str]]:
    path = cfg.get("official_folds")
    if not path:
        raise UserError("params.yaml: finetune.official_folds: the official protocol needs a fold file or directory")
    assignment = read_official(Path(path))
    known = set(table["video_id"].astype(str))
    unknown = sorted(set(assignment) - known)
    if unknown:
        raise DataError(f"{path}: {len(unknown)} video id(s) not in the manifest, e.g. {unknown[:3]}")
    folds: dict[int, list[str]] = {}
    for vid, k in assignment.items():
        folds.setdefault(k, []).append(vid)
    return [sorted(folds[k]) for k in sorted(folds)]


def read_official(path: Path) -> dict[str, int]:
    """video id -> index of the fold whose test set holds it."""
    if path.is_file():
        df = pd.read_csv(path, dtype={"video_id": str})
        if not {"video_id", "fold"} <= set(df.columns):
            raise DataError(f"{path}: expected columns video_id,fold (have {', '.join(df.columns)})")
        dup = df["video_id"][df["video_id"].duplicated()]
        if not dup.empty:
            raise DataError(f"{path}: video {dup.iloc[0]!r} is in more than one test fold")
        return dict(zip(df["video_id"].astype(str), df["fold"].astype(int)))
    if path.is_dir():
        out: dict[str, int] = {}
        files = sorted(p for p in path.rglob("*") if p.suffix in (".csv", ".txt") and re.search(r"set_(\d+)", p.name))
        if not files:
            raise DataError(f"{path}: no per-fold test lists named *set_<k>*.csv|txt")
        for f in files:
            k = int(re.search(r"set_(\d+)", f.name).group(1))
            for line in f.read_text().splitlines():
                vid = re.split(r"[,\s]+", line.strip())[0] if line.strip() else ""
                if not vid or vid.lower() in ("video_id", "video_name", "name"):
                    continue
                if vid in out and out[vid] != k:
                    raise DataError(f"{f}: video {vid!r} is also in the test list of fold {out[vid]}")
                out[vid] = k
        return out
    raise DataError(f"{path}: official fold file/directory not found")


# name -> (function, group column)
PROTOCOLS: dict[str, tuple[Callable, str]] = {
    "loso": (_loso, "subject"),
    "group_kfold": (_kfold, "subject"),
    "session_kfold": (_kfold, "session"),
    "video_kfold": (_kfold, "video_id"),
    "official": (_official, "video_id"),
}


# ---------------------------------------------------------------- planning


def plan_folds(table: pd.DataFrame, cfg: dict) -> list[Fold]:
    """Folds of ``table`` (a manifest) under ``cfg`` (the ``finetune`` section)."""
    protocol = cfg.get("protocol", "loso")
    if protocol not in PROTOCOLS:
        raise UserError(f"params.yaml: finetune.protocol: unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    fn, group = PROTOCOLS[protocol]
    table = table.copy()
    if group not in table.columns or table[group].isna().any() or (table[group].astype(str) == "").any():
        raise DataError(f"manifest: protocol {protocol!r} needs a {group!r} value on every row")
    for col in ("subject", "video_id", group):
        table[col] = table[col].astype(str)
    # official folds split videos; their subjects must still be disjoint -> validate by subject
    check_group = "subject" if protocol == "official" else group
    folds = []
    for i, test_groups in enumerate(fn(table, cfg, group)):
        test_mask = table[group].isin(test_groups)
        rest = table.loc[~test_mask]
        if protocol == "official":
            leaked = sorted(set(rest["subject"]) & set(table.loc[test_mask, "subject"]))
            rest = rest.loc[~rest["subject"].isin(leaked)]  # drop training videos of test subjects
            if leaked:
                log.warning("official fold %d: %d subject(s) also in the test list; their other videos are left out of training", i, len(leaked))
        val_groups = _inner_val(sorted(rest[check_group].unique()), cfg, i)
        val_mask = table[check_group].isin(val_groups) & table.index.isin(rest.index)
        train_mask = table.index.isin(rest.index) & ~val_mask
        fraction = float(cfg.get("label_fraction", 1.0))
        unlabelled = label_budget(table.loc[train_mask], cfg, i) if fraction < 1 else []
        train_mask &= ~table["video_id"].isin(unlabelled)
        sides = {"train": table.loc[train_mask], "val": table.loc[val_mask], "test": table.loc[test_mask]}
        fold = Fold(
            i,
            *(sorted(sides[s]["subject"].unique()) for s in SIDES),
            extra={
                "protocol": protocol,
                "group": check_group,
                "groups": {s: sorted(sides[s][check_group].unique()) for s in SIDES},
                "videos": {s: list(sides[s]["video_id"]) for s in SIDES},
                "label_fraction": fraction,
                "unlabelled": sorted(unlabelled),
            },
        )
        check_fold(fold)
        folds.append(fold)
    return folds


def label_budget(train: pd.DataFrame, cfg: dict, index: int) -> list[str]:
    """Video ids of the training side left OUT under ``finetune.label_fraction``: per class (column
    ``finetune.label``; videos without one form their own stratum) ``max(1, round(fraction * n))``
    videos are kept, drawn with ``finetune.seed`` and the fold index. Nested: a smaller fraction keeps
    a subset of what a larger one keeps (same seed), so label-efficiency curves differ only in labels."""
    fraction = float(cfg.get("label_fraction", 1.0))
    column = cfg.get("label", "emotion")
    y = train[column].fillna("").astype(str) if column in train.columns else pd.Series("", index=train.index)
    out = []
    for k, cls in enumerate(sorted(y.unique())):
        ids = sorted(train.loc[y == cls, "video_id"].astype(str))
        rng = np.random.default_rng([int(cfg.get("seed", 0)), index, 7919, k])
        order = rng.permutation(len(ids))
        keep = max(1, int(round(fraction * len(ids))))
        out += [ids[j] for j in order[keep:]]
    return out


def _inner_val(groups: list[str], cfg: dict, index: int) -> list[str]:
    frac = float(cfg.get("inner_val", 0.25))
    if frac <= 0 or len(groups) < 2:
        return []
    n = min(len(groups) - 1, max(1, int(round(frac * len(groups)))))
    rng = np.random.default_rng([int(cfg.get("seed", 0)), index])
    return sorted(rng.choice(groups, size=n, replace=False).tolist())


def check_fold(fold: Fold, source: str = "folds") -> None:
    """Raise DataError if a group, subject or video is on two sides of ``fold``."""
    what = fold.extra["group"]
    pairs = [("train", "test"), ("val", "test"), ("train", "val")]
    for a, b in pairs:
        for name, get in ((what, fold.groups), ("subject", lambda s: getattr(fold, s)), ("video", fold.videos)):
            if name == "subject" and what in WITHIN_SUBJECT:
                continue  # session/video folds may put one subject on both sides, by design
            both = sorted(set(get(a)) & set(get(b)))
            if both:
                raise DataError(f"{source}: fold {fold.index}: {name} {both[0]!r} is in both {a} and {b} (leaky split refused)")
    if not fold.test or not fold.videos("test"):
        raise DataError(f"{source}: fold {fold.index}: empty test side")
    if not fold.videos("train"):
        raise DataError(f"{source}: fold {fold.index}: empty training side")


def check_loaded(fold: Fold, side_subjects: dict[str, set], side_videos: dict[str, set], source: str) -> None:
    """Re-assert disjointness on the subjects/videos actually loaded for each side."""
    for side in SIDES:
        extra = sorted(side_videos.get(side, set()) - set(fold.videos(side)))
        if extra:
            raise DataError(f"{source}: fold {fold.index}: loaded {side} video {extra[0]!r} that the fold does not list on that side")
    for a, b in (("train", "test"), ("val", "test"), ("train", "val")):
        if fold.extra["group"] not in WITHIN_SUBJECT:
            both = sorted(side_subjects.get(a, set()) & side_subjects.get(b, set()))
            if both:
                raise DataError(f"{source}: fold {fold.index}: subject {both[0]!r} loaded on both {a} and {b} (leaky split refused)")
        both = sorted(side_videos.get(a, set()) & side_videos.get(b, set()))
        if both:
            raise DataError(f"{source}: fold {fold.index}: video {both[0]!r} loaded on both {a} and {b} (leaky split refused)")


def save_folds(path, folds: list[Fold]) -> None:
    from affectube.io import write_json

    write_json(path, [f.to_json() for f in folds])


def load_folds(path) -> list[Fold]:
    from affectube.io import read_json

    try:
        folds = [Fold.from_json(o) for o in read_json(path)]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a folds file: {exc}") from None
    for f in folds:
        check_fold(f, source=str(path))
    return folds


# ---------------------------------------------------------------- stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", required=True, help="JSON with the finetune section")
    parser.add_argument("--manifest", required=True, help="manifest CSV of the fine-tuning dataset")
    parser.add_argument("--out", required=True, help="results/folds/{exp}.json")


def run(args: argparse.Namespace) -> int:
    from affectube.config import parse_cfg, sections

    cfg = sections(parse_cfg(args.cfg), "finetune")["finetune"]
    try:
        table = pd.read_csv(args.manifest, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{args.manifest}: cannot read manifest: {exc}") from None
    folds = plan_folds(table, cfg)
    save_folds(args.out, folds)
    for f in folds:
        log.info("fold %d: train %s | val %s | test %s (%d/%d/%d videos; %d training videos left unlabelled by label_fraction %g)",
                 f.index, f.train, f.val, f.test, *(len(f.videos(s)) for s in SIDES), len(f.extra["unlabelled"]), f.extra["label_fraction"])
    return 0
