"""The embedded demo dataset: short animated face videos made offline from real face photographs.

It is a smoke demo, not a benchmark. :func:`plan` lists the videos and their labels
(deterministic from the ``demo`` params, so the DAG knows them before they exist);
:func:`generate` (CLI ``affectube demo-data``) renders them.
"""

from __future__ import annotations

import argparse

# Clip-level targets per class: (valence, arousal) in [-1, 1].
AFFECT = {"happy": (0.7, 0.5), "sad": (-0.6, -0.4), "surprise": (0.2, 0.8), "neutral": (0.0, -0.2)}


def plan(cfg: dict) -> list[dict]:
    """One row per demo video: id, path, subject, emotion, valence, arousal."""
    root = cfg.get("root", "results/demo")
    rows = []
    for s in range(cfg.get("subjects", 4)):
        for cls in cfg.get("classes", ["happy", "sad"]):
            for r in range(cfg.get("videos_per_class", 2)):
                vid = f"s{s + 1:02d}_{cls}_{r:02d}"
                val, aro = AFFECT[cls]
                # intensity varies with the repetition so the continuous targets are not constant per class
                k = 0.6 + 0.4 * (r + 1) / cfg.get("videos_per_class", 2)
                rows.append(
                    {
                        "video_id": vid,
                        "path": f"{root}/videos/{vid}.mp4",
                        "subject": f"demo_s{s + 1:02d}",
                        "session": f"demo_s{s + 1:02d}",
                        "emotion": cls,
                        "valence": round(val * k, 4),
                        "arousal": round(aro * k, 4),
                    }
                )
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", required=True, help="JSON with the 'demo' section")
    parser.add_argument("--out", required=True, help="output root (videos/ and labels.csv)")


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("demo generation is implemented in the foundation work")
