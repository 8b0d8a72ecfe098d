"""The embedded demo dataset: short animated face videos made offline from real face photographs.

It is a smoke demo, not a benchmark. :func:`plan` lists the videos and their labels
(deterministic from the ``demo`` params, so the DAG knows them before they exist);
:func:`run` (CLI ``affectube demo-data``) renders them:

- ``<root>/videos/<video_id>.mp4``: H.264, ``size`` x ``size`` px, ``fps``, ``seconds`` long; subject k
  is the k-th photograph of :mod:`affectube.demo.sources` (astronaut, Grace Hopper, faces of a group
  photo), animated with the class's expression warp (:mod:`affectube.demo.render`) and a small head sway;
  with an AAC audio track, a synthetic voice whose loudness and pitch follow the same expression amount
  that moves the face (:mod:`affectube.demo.audio`: the audio pretext's target);
- ``<root>/annotations/<video_id>.csv``: per-frame targets ``time, valence, arousal`` sampled at
  ``annotation_hz`` on their own time grid (not the video's frames): the clip's targets times the
  expression envelope (0 before the onset, 1 at the apex);
- ``<root>/labels.csv``: the plan's rows plus the photograph each subject comes from.

The clip-level ``valence``/``arousal`` are the apex values. Everything is deterministic under ``seed``:
each video's random stream depends only on (seed, subject, class, repetition).
"""

from __future__ import annotations

import argparse
import logging

# Clip-level targets per class: (valence, arousal) in [-1, 1].
AFFECT = {"happy": (0.7, 0.5), "sad": (-0.6, -0.4), "surprise": (0.2, 0.8), "neutral": (0.0, -0.2)}

log = logging.getLogger(__name__)


def intensity(rep: int, videos_per_class: int) -> float:
    """Expression intensity of repetition ``rep``: varies so the continuous targets are not constant per class."""
    return 0.6 + 0.4 * (rep + 1) / videos_per_class


# Keys of a dataset spec (data.datasets.<name>) that sit beside the demo params in ``spec``.
DATASET_KEYS = ("adapter", "root")


def params(spec: dict) -> tuple[dict, str]:
    """The ``demo`` params in ``spec`` (the demo dataset's spec merged over the ``demo`` section)
    validated and filled with the schema's defaults, and ``root``, the folder its files go under."""
    from affectube.config import sections
    from affectube.errors import ConfigError

    if not spec.get("root"):
        raise ConfigError("demo: no 'root' (the demo dataset's folder, data.datasets.<name>.root) given")
    demo = {k: v for k, v in spec.items() if k not in DATASET_KEYS}
    return sections({"demo": demo}, "demo", source="demo params")["demo"], str(spec["root"]).rstrip("/")


def plan(spec: dict) -> list[dict]:
    """One row per demo video: id, path, subject, session, emotion, valence, arousal, annotation."""
    return [row for _, _, _, row in _items(*params(spec))]


def _items(cfg: dict, root: str):
    """(subject index, class, repetition, manifest row) for every planned video (``cfg``: filled demo params)."""
    n_rep = cfg["videos_per_class"]
    for s in range(cfg["subjects"]):
        for cls in cfg["classes"]:
            for r in range(n_rep):
                vid = f"s{s + 1:02d}_{cls}_{r:02d}"
                val, aro = AFFECT[cls]
                k = intensity(r, n_rep)
                yield s, cls, r, (
                    {
                        "video_id": vid,
                        "path": f"{root}/videos/{vid}.mp4",
                        "subject": f"demo_s{s + 1:02d}",
                        "session": f"demo_s{s + 1:02d}",
                        "emotion": cls,
                        "valence": round(val * k, 4),
                        "arousal": round(aro * k, 4),
                        "annotation": f"{root}/annotations/{vid}.csv",
                    }
                )


def outputs(spec: dict) -> dict[str, list[str]]:
    """Every file :func:`run` writes (the rule's outputs)."""
    rows = plan(spec)
    _, root = params(spec)
    return {
        "videos": [r["path"] for r in rows],
        "annotations": [r["annotation"] for r in rows],
        "labels": [f"{root}/labels.csv"],
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", required=True, help="JSON with the 'demo' section")
    parser.add_argument("--out", required=True, help="output root (videos/, annotations/ and labels.csv)")


def run(args: argparse.Namespace) -> int:
    from affectube.config import parse_cfg

    raw = parse_cfg(args.cfg)
    generate({**(raw.get("demo") or {}), "root": args.out})  # filled and validated by params()
    return 0


def generate(spec: dict) -> list[dict]:
    """Render every planned video, its annotation file and labels.csv under ``spec['root']``."""
    import numpy as np
    import pandas as pd

    from affectube.demo.audio import subject_f0, synthesize
    from affectube.demo.render import FaceRenderer, render_video
    from affectube.demo.sources import SOURCES, load_photo
    from affectube.io import atomic_path

    cfg, root = params(spec)
    items = list(_items(cfg, root))
    rows = [row for *_, row in items]
    fps, size, seed = cfg["fps"], cfg["size"], cfg["seed"]
    num_frames = round(cfg["seconds"] * fps)
    if num_frames < 2:
        from affectube.errors import ConfigError

        raise ConfigError(f"demo.seconds x demo.fps = {cfg['seconds']} x {fps} gives {num_frames} frame(s); need at least 2")
    classes = list(AFFECT)
    renderers: dict[int, FaceRenderer] = {}
    for i, (subj, cls, rep, row) in enumerate(items, 1):
        if subj not in renderers:
            renderers[subj] = FaceRenderer(load_photo(subj), np.asarray(SOURCES[subj].landmarks), size)
        rng = np.random.default_rng([seed, subj, classes.index(cls), rep])
        strength = cfg["expression_gain"] * intensity(rep, cfg["videos_per_class"])
        frames, env = render_video(renderers[subj], cls, strength, num_frames, fps, rng)
        voice = synthesize(cls, lambda t: strength * env(t), num_frames / fps, subject_f0(seed, subj),
                           np.random.default_rng([seed, subj, classes.index(cls), rep, 1]))  # its own stream
        encode_mp4(frames, fps, row["path"], audio=voice)
        times = np.arange(0.0, num_frames / fps, 1.0 / cfg["annotation_hz"])
        ann = pd.DataFrame({"time": np.round(times, 6), "valence": np.round(row["valence"] * env(times), 6),
                            "arousal": np.round(row["arousal"] * env(times), 6)})
        with atomic_path(row["annotation"]) as tmp:
            ann.to_csv(tmp, index=False)
        log.info("demo video %d/%d: %s (%s, %d frames)", i, len(rows), row["path"], SOURCES[subj].name, num_frames)
    table = pd.DataFrame(rows)
    table["source"] = [SOURCES[subj].origin for subj, *_ in items]
    with atomic_path(f"{root}/labels.csv") as tmp:
        table.to_csv(tmp, index=False)
    return rows


def encode_mp4(frames, fps: float, path: str, crf: int = 18, audio=None, sample_rate: int | None = None) -> None:
    """Write RGB uint8 frames [N,H,W,3] as H.264 mp4 (bit-exact flags: same frames -> same bytes), with
    ``audio`` (float32 mono samples at ``sample_rate``, default :data:`affectube.demo.audio.SAMPLE_RATE`) muxed
    as an AAC stream when given."""
    import tempfile
    from pathlib import Path

    import ffmpeg
    import imageio_ffmpeg
    import numpy as np

    from affectube.demo.audio import SAMPLE_RATE
    from affectube.io import atomic_path

    n, h, w, _ = frames.shape
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tempfile.TemporaryDirectory(prefix=".audio.", dir=Path(path).parent) as scratch:
        pcm = Path(scratch) / "audio.f32le"
        video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=fps)
        inputs, audio_args = [video], {}
        if audio is not None:
            pcm.write_bytes(np.asarray(audio, dtype="<f4").tobytes())
            inputs.append(ffmpeg.input(str(pcm), format="f32le", ar=sample_rate or SAMPLE_RATE, ac=1))
            audio_args = {"acodec": "aac", "audio_bitrate": "64k", "flags:a": "+bitexact"}
        stream = ffmpeg.output(
            *inputs, str(tmp), format="mp4", vcodec="libx264", pix_fmt="yuv420p", crf=crf, preset="medium",
            g=int(fps), threads=1, map_metadata=-1, fflags="+bitexact", **{"flags:v": "+bitexact"}, **audio_args,
        )
        try:
            stream.overwrite_output().run(cmd=imageio_ffmpeg.get_ffmpeg_exe(), input=frames.tobytes(),
                                          capture_stdout=True, capture_stderr=True)
        except ffmpeg.Error as exc:
            tail = exc.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"{path}: ffmpeg could not encode the demo video: {' | '.join(tail)}") from None
