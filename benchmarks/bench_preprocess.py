"""Preprocessing throughput of the shard jobs vs decode-only, side by side, on the real clips (issue 17).

    .venv/bin/python benchmarks/bench_preprocess.py [--rounds 2] [--out benchmarks/results/preprocess.json]

The videos and settings of the real-data run (config/realdata.yaml: its datasets grid, grid_s1 and the
labelled MEAD + CREMA-D clips; decode fps 8 / max side 320, SCRFD-500M at det_size 160 every 4th frame, 64-px
crops). Per dataset, in this process, one thread, all in source-video frames per CPU-second (user + sys of
this process and its ffmpeg children: robust to the machine's other load):

- ``decode_only``: ffmpeg decoding each video's stream to the null muxer (the stage's physical limit);
- ``two_decodes``: the faces shard job (decode, detect, track) then the clips shard job (decode again, crop,
  pack), as with ``--clips-dir`` unset (the per-video path's cost too);
- ``one_decode``: the faces shard job with ``--clips-rows``/``--clips-dir`` (decode once, detect, track, crop,
  pack: :mod:`affectube.shards.onepass`) then the clips shard job (it finds every store fresh).

Each round runs the three on fresh output folders, in a rotated order; the best (least CPU) round per
mode is reported beside every round's numbers. The ratio ``decode_only_cpu / mode_cpu`` is the issue's
"x the decode-only frame rate" (target >= 0.5 for the whole preprocessing).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from affectube.config import load_params  # noqa: E402
from affectube.data.manifest import build_manifest  # noqa: E402
from affectube.shards import clips as clips_shard  # noqa: E402
from affectube.shards import faces as faces_shard  # noqa: E402
from affectube.video.decode import ffmpeg_exe  # noqa: E402
from affectube.video.probe import probe  # noqa: E402

REALDATA = Path(os.environ.get("AFFECTUBE_REALDATA", REPO.parent / "shared" / "realdata"))


def cpu_now() -> float:
    me, ch = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime


def realdata_params() -> dict:
    """params.yaml with config/realdata.yaml merged over it (as snakemake --configfile does), paths resolved."""
    params = load_params()
    over = yaml.safe_load((REPO / "config/realdata.yaml").read_text())
    for section in ("decode", "faces", "crop", "clips"):
        params[section] = {**params[section], **(over.get(section) or {})}
    params["faces"]["model"] = str((REPO / params["faces"]["model"]).resolve())
    datasets = {name: {**spec, **{k: str((REPO / spec[k]).resolve()) for k in ("root", "file") if k in spec}}
                for name, spec in over["data"]["datasets"].items()}
    return params, datasets


def manifest_rows(name: str, spec: dict) -> list[dict]:
    table = build_manifest(name, spec).table
    return [{k: v for k, v in r.items() if not (isinstance(v, float) and v != v)} for r in table.to_dict("records")]


def decode_only(rows: list[dict]) -> float:
    c0 = cpu_now()
    for r in rows:
        subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "1", "-i", r["path"],
                        "-map", "0:v:0", "-f", "null", "-"], check=True, capture_output=True)
    return cpu_now() - c0


def shard_jobs(rows: list[dict], cfg: dict, work: Path, one_decode: bool) -> dict:
    work.mkdir(parents=True)
    (work / "rows.json").write_text(json.dumps(rows, default=str))
    common = dict(cfg=json.dumps(cfg), rows=str(work / "rows.json"), dataset="bench", shard="0")
    c0, w0 = cpu_now(), time.perf_counter()
    faces_shard.run(argparse.Namespace(**common, threads=1, out=str(work / "faces.json"), stage_dir=str(work / "faces"),
                                       clips_rows=common["rows"] if one_decode else None,
                                       clips_dir=str(work / "clips") if one_decode else None))
    c1 = cpu_now()
    clips_shard.run(argparse.Namespace(**common, out=str(work / "clips.json"), faces_dir=str(work / "faces"), stage_dir=str(work / "clips")))
    c2, w2 = cpu_now(), time.perf_counter()
    status = [e["status"] for e in json.loads((work / "clips.json").read_text())["videos"]]
    return {"cpu_s": round(c2 - c0, 3), "faces_job_cpu_s": round(c1 - c0, 3), "clips_job_cpu_s": round(c2 - c1, 3),
            "wall_s": round(w2 - w0, 3), "clips_status": {s: status.count(s) for s in sorted(set(status))}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/preprocess.json"))
    ap.add_argument("--reader", choices=["ffmpeg", "pyav"], help="decode.reader (default: params.yaml's)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not (REALDATA / "README.md").exists():
        raise SystemExit(f"real test material not found at {REALDATA} (set AFFECTUBE_REALDATA)")
    params, datasets = realdata_params()
    if args.reader:
        params["decode"]["reader"] = args.reader
    cfg = {k: params[k] for k in ("decode", "faces", "crop", "clips")}
    load0 = round(os.getloadavg()[0], 2)
    per_dataset = {}
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp:
        tmp = Path(tmp)
        for name, spec in datasets.items():
            rows = manifest_rows(name, spec)
            frames = sum(int(probe(r["path"])["packets"]) for r in rows)
            rounds = []
            for i in range(args.rounds):
                modes = ["decode_only", "two_decodes", "one_decode"]
                res = {}
                for mode in modes[i % 3:] + modes[: i % 3]:
                    if mode == "decode_only":
                        res[mode] = {"cpu_s": round(decode_only(rows), 3)}
                    else:
                        res[mode] = shard_jobs(rows, cfg, tmp / f"{name}-{i}-{mode}", one_decode=mode == "one_decode")
                rounds.append(res)
                print(name, i, json.dumps(res), flush=True)
            best = {m: min(r[m]["cpu_s"] for r in rounds) for m in rounds[0]}
            per_dataset[name] = {
                "videos": len(rows), "source_frames": frames, "rounds": rounds,
                "fps_per_core": {m: round(frames / best[m], 1) for m in best},
                "ratio_vs_decode_only": {m: round(best["decode_only"] / best[m], 3) for m in best if m != "decode_only"},
            }
    total = {m: sum(min(r[m]["cpu_s"] for r in d["rounds"]) for d in per_dataset.values()) for m in ("decode_only", "two_decodes", "one_decode")}
    frames = sum(d["source_frames"] for d in per_dataset.values())
    doc = {
        "what": "whole preprocessing (faces + clips shard jobs: decode, detect, track, crop, pack) vs ffmpeg decode-only, "
                "source frames per CPU-second (user+sys, this process + ffmpeg children), one thread, the real-data run's settings",
        "command": " ".join(["benchmarks/bench_preprocess.py", *(argv if argv is not None else sys.argv[1:])]),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip() or None,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_1min_at_start": load0,
                 "load_1min_at_end": round(os.getloadavg()[0], 2)},
        "settings": cfg,
        "all": {"videos": sum(d["videos"] for d in per_dataset.values()), "source_frames": frames,
                "fps_per_core": {m: round(frames / total[m], 1) for m in total},
                "ratio_vs_decode_only": {m: round(total["decode_only"] / total[m], 3) for m in ("two_decodes", "one_decode")}},
        "datasets": per_dataset,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc["all"]), f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
