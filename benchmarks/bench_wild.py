"""Robustness of the faces stage on in-the-wild clips that are not in ../shared/realdata (issue 18).

    .venv/bin/python benchmarks/bench_wild.py            # -> benchmarks/results/wild.json

The clips are real videos from public GitHub repositories, never committed here: :data:`SOURCES`
records ``repo@commit:path`` and the sha256 of each; at run time each is read out of the fetched
repository snapshot (``--mirrors``, default /work/.mirror/<owner>+<name>/repo, e.g. made by the
session ``fetch`` tool or ``git clone``), checked against its sha256 and written to ``--cache``.
:data:`DERIVED` makes the kinds no repository had at hand (MPEG-4 Part 2, variable frame rate,
8- and 12-frame clips, a 320x240 interview, a dim stage, a wide shot, a truncated file) from those
clips with ffmpeg, by a recorded command.

For every clip: decode only (ffmpeg to the null muxer, one thread: the stage's physical limit),
the faces stage with the params.yaml defaults and the insightface SCRFD-500M detector of the real
test material (``decode`` + ``faces``, ``adaptive_max_size`` as in params.yaml), the same with
the fallbacks off (adaptive sizes, region re-detection, refined edges: the stage before issue 18),
and the reference: the same detector at det_size 640 on 640-px frames,
every frame, no adaptive retries. Per clip and per kind: coverage (fraction of frames with a face)
of each, the reference's coverage, time per frame (CPU-seconds of this process and its ffmpeg
children, one thread) and the cost of the fallbacks apart (``fallback_cpu_s``: faces CPU minus
faces CPU with them off; the wall seconds of retries, re-detection and refined edges). Target: coverage >= 0.95 on
every clip where the reference finds a face in >= 95% of its frames, at >= 0.5x decode-only speed
overall.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_faces import cpu_now, null_decode  # noqa: E402

from affectube.config import load_params  # noqa: E402
from affectube.faces.detect import build_detector  # noqa: E402
from affectube.faces.pipeline import track_video  # noqa: E402
from affectube.io import write_json  # noqa: E402
from affectube.video.decode import ffmpeg_exe  # noqa: E402
from affectube.video.probe import probe  # noqa: E402

LP = "KwaiVGI/LivePortrait@1986663be3b6902605d32200c01f4bfd36cda83d"  # MIT (code); example videos shipped in the repo
# name -> (kind, "owner/repo@commit:path", sha256)
SOURCES = {
    "hamilton": ("stage", "ageitgey/face_recognition@2e2dccea9dd0ce730c8d464d0f67c6eebb40c9d1:examples/short_hamilton_clip.mp4",
                 "0b5ff4c55a4cd69f79956f312681730881fe1e2a9e6146e75c31636dffcc7e28"),
    "crowd_1080p": ("crowd", "timesler/facenet-pytorch@787da06156087cd6b616fe6608213722bddc30cd:examples/video.mp4",
                    "d4c0b7a4e385e11ee3cfe7fbdfd0d01d319e16944441bba747a897eed33d115f"),
    "dinner_group": ("several people", "yjwong1999/SimpleFR@08a586d5a2e6b5ccfc52fa452c1a93a47785881d:videos/Video_2.mp4",
                     "92da277d78a1d8c3ada38f54aad64d0d96537a6556cf99d304201375ecf61264"),
    "lp_s18": ("interview (medium shot)", f"{LP}:assets/examples/source/s18.mp4", "47cc9cdc93adf36263c86367ddd2e7374e6a8a45ca2467e3e2ee86c18de4ca9c"),
    "lp_s32": ("interview (medium shot)", f"{LP}:assets/examples/source/s32.mp4", "e4e1da5a4447fad117d426e0a0bf18b56acf1a3b942c51e3051280010b82c793"),
    "lp_d9": ("webcam, non-square pixels", f"{LP}:assets/examples/driving/d9.mp4", "9a414aa1d547be35306d692065a2157434bf40a6025ba8e30ce12e5bb322cc33"),
    "lp_d0": ("tight face crop", f"{LP}:assets/examples/driving/d0.mp4", "63f6f9962e1fdf6e6722172e7a18155204858d5d5ce3b1e0646c150360c33bed"),
    "lp_d12": ("tight face crop", f"{LP}:assets/examples/driving/d12.mp4", "2895169e5aa2a882d39dfc80a17a3eab1cf6ec23b9b6f6be76bae48deda15219"),
    "lp_d18": ("tight face crop", f"{LP}:assets/examples/driving/d18.mp4", "1dc94c1fec7ef7dc831c8a49f0e1788ae568812cb68e62f6875d9070f573d02a"),
    "lp_d13": ("portrait phone video", f"{LP}:assets/examples/driving/d13.mp4", "d03e39c28323cde1c5fc6c5629aa83fe6c834fa7c9ed2dac969e1247eaafdb60"),
    "lp_s13": ("portrait, full body", f"{LP}:assets/examples/source/s13.mp4", "a6e4a80cc0eb856db5b4a46368fa0d7d9410b6a9276a8eefaa36a3da1c1b080a"),
    "lp_s20": ("portrait, full body", f"{LP}:assets/examples/source/s20.mp4", "90a45bf880e20b4250d04c71092e6920770d7f52725660c84561d5658cd17556"),
    "lp_s29": ("portrait phone video", f"{LP}:assets/examples/source/s29.mp4", "6e474b846e008461d4d8d02783817d071e9181fd4982be0af8f587be6f3a94dd"),
}
# name -> (kind, source clip, ffmpeg output args); "{in}" is the source file, written to <name><ext>
DERIVED = {
    "dinner_10s": ("several people", "dinner_group", ".mp4", ["-t", "10", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-an"]),
    "stage_dim": ("dim stage", "hamilton", ".mp4", ["-vf", "eq=brightness=-0.25:contrast=0.6", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-an"]),
    "interview_320x240_mpeg4": ("320x240, MPEG-4 Part 2", "lp_s18", ".avi",
                                ["-vf", "scale=320:240", "-c:v", "mpeg4", "-q:v", "5", "-an"]),
    "wide_shot": ("wide shot (small face)", "lp_s32", ".mp4",
                  ["-vf", "scale=480:270,pad=1920:1080:1100:600:color=0x303030", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-an"]),
    "vfr": ("variable frame rate", "lp_d13", ".mp4",
            ["-vf", "select='not(mod(n,3))+not(mod(n,7))'", "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-an"]),
    "short_8": ("8-15 frames", "lp_d9", ".mp4", ["-frames:v", "8", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-an"]),
    "short_12": ("8-15 frames", "lp_s32", ".mp4", ["-frames:v", "12", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-an"]),
    "truncated": ("truncated file", "lp_d12", ".mp4", ["-c", "copy", "-movflags", "+faststart"]),  # then cut to 60% of its bytes
}


def git_blob(mirrors: Path, spec: str) -> bytes:
    repo, rest = spec.split("@", 1)
    commit, path = rest.split(":", 1)
    git_dir = mirrors / repo.replace("/", "+") / "repo"
    if not git_dir.exists():
        raise SystemExit(f"{git_dir}: no snapshot of {repo}; fetch it first (e.g. git clone --mirror https://github.com/{repo} {git_dir})")
    proc = subprocess.run(["git", "-C", str(git_dir), "show", f"{commit}:{path}"], capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"{spec}: not in {git_dir}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def materialise(mirrors: Path, cache: Path) -> list[dict]:
    cache.mkdir(parents=True, exist_ok=True)
    clips = []
    for name, (kind, spec, sha) in SOURCES.items():
        out = cache / f"{name}.mp4"
        if not out.exists() or hashlib.sha256(out.read_bytes()).hexdigest() != sha:
            data = git_blob(mirrors, spec)
            got = hashlib.sha256(data).hexdigest()
            if got != sha:
                raise SystemExit(f"{spec}: sha256 {got}, expected {sha}")
            out.write_bytes(data)
        clips.append({"name": name, "kind": kind, "source": spec, "sha256": sha, "path": out})
    by_name = {c["name"]: c for c in clips}
    for name, (kind, src, ext, args) in DERIVED.items():
        out = cache / f"{name}{ext}"
        cmd = [ffmpeg_exe(), "-v", "error", "-y", "-i", str(by_name[src]["path"]), *args, str(out)]
        if not out.exists():
            subprocess.run(cmd, check=True)
            if name == "truncated":
                data = out.read_bytes()
                out.write_bytes(data[: int(len(data) * 0.6)])
        clips.append({"name": name, "kind": kind, "source": f"derived from {src}: ffmpeg -i {src} {' '.join(args)}"
                      + (" (then cut to 60% of its bytes)" if name == "truncated" else ""), "path": out})
    for name in ("dinner_group",):  # 82 s: only its 10-s cut is measured
        clips = [c for c in clips if c["name"] != name]
    return clips


def run(path: Path, decode_cfg: dict, faces_cfg: dict, det) -> dict:
    c0 = cpu_now()
    tr = track_video(path, decode_cfg, faces_cfg, det, threads=1)
    cpu = cpu_now() - c0
    found = tr.status > 0
    return {"frames": len(tr), "coverage": float(found.mean()) if len(tr) else 0.0, "cpu_s": cpu,
            "adaptive": tr.meta.get("adaptive"), "truncated": bool(tr.meta["info"].get("truncated"))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mirrors", default=os.environ.get("AFFECTUBE_MIRRORS", "/work/.mirror"))
    ap.add_argument("--cache", default="/tmp/affectube_wild")
    ap.add_argument("--realdata", default=os.environ.get("AFFECTUBE_REALDATA", str(REPO.parent / "shared" / "realdata")))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "wild.json"))
    ap.add_argument("--reader", choices=["ffmpeg", "pyav"], help="decode.reader (default: params.yaml's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a faces param (YAML value)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    clips = materialise(Path(args.mirrors), Path(args.cache))
    model = Path(args.realdata) / "models" / "insightface" / "buffalo_sc" / "det_500m.onnx"
    params = load_params(REPO / "params.yaml")
    decode_cfg = {**params["decode"], **({"reader": args.reader} if args.reader else {})}
    faces_cfg = {**params["faces"], "backend": "insightface", "model": str(model),
                 **{k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}}
    fallbacks_off = {"adaptive_max_size": None, "redetect_context": 0, "refine_edges": False}
    # the reference keeps insightface's own square letterbox (as before faces.det_shape)
    ref_cfg = {**faces_cfg, "every_k": 1, "det_size": 640, "analysis_side": 640, "smooth": 0.0, "det_shape": "square", **fallbacks_off}
    off_cfg = {**faces_cfg, **fallbacks_off}
    det = build_detector(faces_cfg, threads=1)
    ref_det = build_detector(ref_cfg, threads=1)  # its own det_size (a detector runs at the sizes it was built with)
    rows = []
    for c in clips:
        p = c["path"]
        info = probe(p)
        t0 = time.perf_counter()
        null = null_decode(p, 2)
        on = run(p, decode_cfg, faces_cfg, det)
        off = run(p, decode_cfg, off_cfg, det)
        ref = run(p, decode_cfg, ref_cfg, ref_det)
        a = on["adaptive"] or {}
        row = {
            "name": c["name"], "kind": c["kind"], "source": c["source"], "sha256": c.get("sha256"),
            "codec": info["codec"], "width": info["width"], "height": info["height"], "sar": info["sar"],
            "rotation": info["rotation"], "fps": info["fps"], "vfr": info["vfr"], "source_frames": info["packets"],
            "frames": on["frames"], "truncated": on["truncated"],
            "coverage": round(on["coverage"], 4), "coverage_adaptive_off": round(off["coverage"], 4),
            "coverage_reference_640": round(ref["coverage"], 4),
            "target_applies": ref["coverage"] >= 0.95, "target_met": (on["coverage"] >= 0.95) if ref["coverage"] >= 0.95 else None,
            "decode_only_cpu_s": round(null["cpu_s"], 4), "faces_cpu_s": round(on["cpu_s"], 4),
            "faces_cpu_s_adaptive_off": round(off["cpu_s"], 4),
            "ms_per_frame": round(1000 * on["cpu_s"] / max(1, info["packets"]), 3),
            "retried_keyframes": a.get("retried"), "rescued_keyframes": a.get("rescued"), "keyframes": a.get("keyframes"),
            "retry_seconds": a.get("retry_seconds"), "det_size_final": a.get("final_size"), "sizes": a.get("sizes"),
            "backfilled_keyframes": a.get("backfilled"), "redetect_calls": a.get("redetect_calls"), "redetected_faces": a.get("redetected"),
            "redetect_seconds": a.get("redetect_seconds"), "restart": a.get("restart"), "refine": a.get("refine"),
        }
        rows.append(row)
        print(f"{c['name']:24s} {c['kind']:28s} cov {row['coverage']:.3f} (off {row['coverage_adaptive_off']:.3f}, ref640 {row['coverage_reference_640']:.3f})"
              f" faces/decode {null['cpu_s'] / max(on['cpu_s'], 1e-9):.2f}x retries {a.get('retried')}/{a.get('keyframes')} ({time.perf_counter() - t0:.0f} s)", flush=True)

    def summary(sel: list[dict]) -> dict:
        frames = sum(r["source_frames"] for r in sel)
        null_cpu, on_cpu, off_cpu = (sum(r[k] for r in sel) for k in ("decode_only_cpu_s", "faces_cpu_s", "faces_cpu_s_adaptive_off"))
        applies = [r for r in sel if r["target_applies"]]
        return {
            "clips": len(sel), "source_frames": frames,
            "coverage_mean": round(float(np.mean([r["coverage"] for r in sel])), 4),
            "coverage_adaptive_off_mean": round(float(np.mean([r["coverage_adaptive_off"] for r in sel])), 4),
            "coverage_reference_640_mean": round(float(np.mean([r["coverage_reference_640"] for r in sel])), 4),
            "target_clips": len(applies), "target_met": sum(bool(r["target_met"]) for r in applies),
            "faces_ratio": round(null_cpu / on_cpu, 3), "faces_ratio_adaptive_off": round(null_cpu / off_cpu, 3),
            "ms_per_frame": round(1000 * on_cpu / frames, 3), "ms_per_frame_adaptive_off": round(1000 * off_cpu / frames, 3),
            "retry_seconds": round(sum(r["retry_seconds"] or 0.0 for r in sel), 3),
            "retried_keyframes": sum(r["retried_keyframes"] or 0 for r in sel), "rescued_keyframes": sum(r["rescued_keyframes"] or 0 for r in sel),
            "redetect_seconds": round(sum(r["redetect_seconds"] or 0.0 for r in sel), 3),
            "restarts": sum(bool(r["restart"]) for r in sel),
            "restart_seconds": round(sum((r["restart"] or {}).get("seconds", 0.0) for r in sel), 3),
            "refine_frames": sum((r["refine"] or {}).get("frames", 0) for r in sel),
            "refine_seconds": round(sum((r["refine"] or {}).get("seconds", 0.0) for r in sel), 3),
            "fallback_cpu_s": round(on_cpu - off_cpu, 3),
        }

    kinds = {k: summary([r for r in rows if r["kind"] == k]) for k in dict.fromkeys(r["kind"] for r in rows)}
    result = {
        "command": " ".join(["python benchmarks/bench_wild.py", *([f"--reader {args.reader}"] if args.reader else []),
                             *(f"--set {kv}" for kv in args.set)]),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
        "unit": "CPU-seconds (user+sys, this process + ffmpeg children), one thread; ratio = decode-only / faces CPU",
        "decode": decode_cfg,
        "faces": {k: v for k, v in faces_cfg.items() if k != "model"},
        "reference": "the same detector at det_size 640 on 640-px frames, every frame, no adaptive retries",
        "adaptive_off": "the same params with the fallbacks off: " + ", ".join(f"{k}: {v}" for k, v in fallbacks_off.items()),
        "fallback_cost": "fallback_cpu_s = faces CPU - faces CPU with the fallbacks off; *_seconds: wall time of each fallback inside the run",
        "target": "coverage >= 0.95 where the reference finds a face in >= 95% of frames; faces >= 0.5x decode-only overall",
        "all": summary(rows),
        "kinds": kinds,
        "clips": rows,
    }
    write_json(args.out, result)
    s = result["all"]
    print(f"all: coverage {s['coverage_mean']} (adaptive off {s['coverage_adaptive_off_mean']}, reference {s['coverage_reference_640_mean']});"
          f" target met on {s['target_met']} of {s['target_clips']} clips; faces {s['faces_ratio']}x decode-only"
          f" ({s['faces_ratio_adaptive_off']}x without adaptive); retries {s['retry_seconds']} s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
