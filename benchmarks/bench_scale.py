"""Planning at scale: `snakemake -n` wall time and peak memory, per-video jobs vs shards (data.shard_size).

For each size N it builds, in a temporary directory (never in the repo), a copy of the workflow and a
``folder`` dataset of N videos: symbolic links to one tiny real video (ffmpeg, 0.2 s), spread over
subject folders. The dataset is the pretraining set (data.pretrain); the demo stays the fine-tuning
set, so the DAG is the default target's full DAG (demo, manifests, faces, clips, pretrain, folds,
finetune, report). Measured per mode (per-video: shard_size null; sharded: shard_size S):

- ``snakemake -n --cores 1 --nolock`` wall time and the peak resident memory of its process tree
  (psutil, polled every 50 ms), and the number of jobs it plans;
- the size of the generated ``dvc.yaml`` (lines, bytes) and its generation time (``--dvc-max`` and below:
  the generator builds the same DAG once more).

Writes benchmarks/results/scale.json. Usage:

    .venv/bin/python benchmarks/bench_scale.py [--sizes 1000 10000 100000] [--shard-size 1000] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _workflow import copy_workflow  # benchmarks/ (the script's folder) is on sys.path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ["Snakefile", "rules", "workflow", "params.yaml", "envs", "slurm"]
VENV_BIN = Path(sys.executable).parent


def make_video(path: Path) -> None:
    import imageio_ffmpeg  # the static ffmpeg the package decodes with

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=25", "-t", "0.2",
                    "-pix_fmt", "yuv420p", str(path)], check=True)


def make_dataset(root: Path, n: int, video: Path, per_subject: int = 100) -> None:
    for i in range(n):
        d = root / f"s{i // per_subject:05d}"
        if i % per_subject == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"v{i:07d}.mp4").symlink_to(video)


def make_workflow(dest: Path, data_root: Path, shard_size: int | None) -> None:
    dest.mkdir(parents=True)
    copy_workflow(dest, WORKFLOW_FILES)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["data"]["datasets"]["bench"] = {"adapter": "folder", "root": str(data_root)}
    params["data"]["pretrain"] = ["bench"]
    params["data"]["shard_size"] = shard_size
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def measure(cmd: list[str], cwd: Path, timeout: float) -> dict:
    """Wall time, peak RSS of the process tree (sum over live processes, polled) and the output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    peak = [0]

    def poll() -> None:
        p = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                rss = sum(q.memory_info().rss for q in [p, *p.children(recursive=True)])
                peak[0] = max(peak[0], rss)
            except psutil.Error:
                pass
            time.sleep(0.05)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return {"timeout": True, "wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(cpu, 2), "peak_rss_gb": round(peak[0] / 2**30, 3)}
    wall = time.perf_counter() - t0
    th.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # the machine may be shared: cpu_s (user + sys of the process tree) is the load-independent number
    return {"returncode": proc.returncode, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "peak_rss_gb": round(peak[0] / 2**30, 3), "output": out}


def plan(wf: Path, timeout: float) -> dict:
    r = measure([str(VENV_BIN / "snakemake"), "-n", "--cores", "1", "--nolock", "--quiet", "rules"], wf, timeout)
    out = r.pop("output", "")
    if r.get("returncode"):
        raise RuntimeError(f"snakemake -n failed in {wf}:\n{out[-3000:]}")
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", out, re.M)}
    r["jobs"] = jobs.pop("total", None)
    r["jobs_per_rule"] = {k: v for k, v in jobs.items() if k in ("faces", "clips", "faces_shard", "clips_shard")}
    return r


def dvc_yaml(wf: Path, timeout: float) -> dict:
    r = measure([sys.executable, "-m", "affectube", "dvc-yaml", "--out", "dvc.yaml"], wf, timeout)
    out = r.pop("output", "")
    if r.get("returncode"):
        raise RuntimeError(f"dvc-yaml failed in {wf}:\n{out[-3000:]}")
    text = (wf / "dvc.yaml").read_text()
    return {"lines": text.count("\n"), "bytes": len(text.encode()), "wall_s": r["wall_s"], "peak_rss_gb": r["peak_rss_gb"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--per-video-max", type=int, default=10000, help="largest size planned with per-video jobs (slow)")
    ap.add_argument("--dvc-max", type=int, default=10000, help="largest size whose dvc.yaml is generated")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/scale.json"))
    args = ap.parse_args(argv)

    results = []
    load0 = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        tmp = Path(tmp)
        video = tmp / "one.mp4"
        make_video(video)
        for n in args.sizes:
            data = tmp / f"data{n}"
            t0 = time.perf_counter()
            make_dataset(data, n, video)
            made = time.perf_counter() - t0
            for mode, size in (("per_video", None), ("sharded", args.shard_size)):
                if mode == "per_video" and n > args.per_video_max:
                    continue
                wf = tmp / f"wf{n}_{mode}"
                make_workflow(wf, data, size)
                row = {"videos": n, "mode": mode, "shard_size": size, "dataset_created_s": round(made, 2)}
                row["plan"] = plan(wf, args.timeout)
                if n <= args.dvc_max and not row["plan"].get("timeout"):
                    row["dvc_yaml"] = dvc_yaml(wf, args.timeout)
                print(json.dumps(row), flush=True)
                results.append(row)
                shutil.rmtree(wf)
            shutil.rmtree(data)
    doc = {
        "what": "snakemake -n (default target) wall time and peak RSS of its process tree; dvc.yaml size; "
                "folder dataset of N symlinked 0.2-s videos as data.pretrain, the demo as the fine-tuning set",
        "command": " ".join([Path(sys.argv[0]).name if sys.argv else "bench_scale.py", *(argv if argv is not None else sys.argv[1:])]),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip() or None,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_1min_at_start": load0,
                 "load_1min_at_end": round(os.getloadavg()[0], 2)},
        "note": "cpu_s (user + sys of the snakemake process tree) is the load-independent number; wall_s grows with the "
                "machine's load (see host)",
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
