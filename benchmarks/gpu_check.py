"""The GPU check: everything a briefly lent GPU machine should measure, in one run, into one JSON.

Run through ``benchmarks/gpu_check.sh`` (it installs the carried wheels first); docs/gpu.md says how
a session runs it on a lent H100/H200. Sections, each in its own process with its own time limit,
so that one that fails, hangs or runs out of memory loses nothing of the others:

``env``                 python, torch, CUDA, the device, the packages affectube imports, a bf16
                        matrix product's TFLOP/s (what the MFU figures are relative to);
``tests``               ``pytest -m gpu tests/test_gpu.py`` (bf16 fine-tuning of one fold, the uint8
                        loader path on the device, determinism flags, torch.compile, fused attention)
                        with ``AFFECTUBE_GPU_CHECK=1``: every test's outcome and time;
``pretrain_vit_b_224``  ``bench_pretrain.py --preset vit-b`` (ViT-B 16x224, batch 32) against the
                        reference VideoMAE code: clips/s, speed-up, MFU, memory;
``pretrain_vit_b_160``  the same at 16x160 (``--preset vit-b-160``, batch 64, the face setting);
``loader``              the real pretraining loop (``Pretrainer.fit``: ClipDataset in DataLoader
                        workers, the uint8 path, bf16 ViT-B 16x160) on synthetic stores written
                        first (page cache dropped): the fraction of each step spent waiting for data.

``--dry``: the same sections and code paths on the CPU at tiny sizes (CI runs it, so none of this
rots between GPU loans): the tests run with ``AFFECTUBE_GPU_DRY=1``, the benchmarks with the
``cpu-small`` preset and a tiny ViT; to save interpreter start-ups the sections other than
``tests`` share one process there. The JSON has the same structure; its numbers mean nothing.

Writes ``$OUT/gpu_check.json`` when ``OUT`` is set (the device tool's output folder), else
``benchmarks/results/gpu_check.json``, or ``--out``; rewritten after every section. Each section:
``{"ok": bool, "seconds": float, "result": {...}}`` or ``{"ok": false, "error": "...", "log_tail": "..."}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from affectube.io import write_json  # noqa: E402  (stdlib only: the driver runs even if the rest of the package cannot)

# name -> seconds allowed on a GPU (sum 410 s: under 8 min with the wheel install) and in --dry (CI)
SECTIONS = {
    "env": (30, 60),
    "tests": (170, 240),
    "pretrain_vit_b_224": (70, 90),
    "pretrain_vit_b_160": (70, 90),
    "loader": (70, 90),
}
PRESETS = {"pretrain_vit_b_224": "vit-b", "pretrain_vit_b_160": "vit-b-160"}
PACKAGES = ["numpy", "torch", "torchvision", "timm", "h5py", "hdf5plugin", "jsonschema", "yaml", "pandas", "sklearn",
            "scipy", "cv2", "safetensors", "matplotlib", "triton", "pytest"]
FORMAT = "affectube-gpu-check/1"


def default_out() -> Path:
    out = os.environ.get("OUT")
    return Path(out) / "gpu_check.json" if out else REPO / "benchmarks" / "results" / "gpu_check.json"


def default_reference() -> Path:
    return Path(os.environ.get("AFFECTUBE_VIDEOMAE_REF", REPO / ".ref" / "VideoMAE"))


# ---------------------------------------------------------------- driver


def run_all(args) -> dict:
    names = list(SECTIONS) if not args.only else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise SystemExit(f"gpu_check.py: unknown section(s) {unknown} (have {list(SECTIONS)})")
    t_start = time.perf_counter()
    report = {
        "format": FORMAT,
        "dry": bool(args.dry),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "commit": _git_commit(),
        "command": " ".join(["benchmarks/gpu_check.sh", *sys.argv[1:]]),
        "reference": str(args.reference),
        "budget_s": args.budget_s,
        "section_order": names,
        "sections": {},
    }
    if args.dry:  # one process for all but the tests (CI time); on a GPU one process per section
        groups = [g for g in ([n for n in names if n == "tests"], [n for n in names if n != "tests"]) if g]
    else:
        groups = [[n] for n in names]
    log_fh = open(args.log, "a") if args.log else None
    try:
        for group in groups:
            limit = sum(SECTIONS[n][1 if args.dry else 0] for n in group)
            left = args.budget_s - (time.perf_counter() - t_start)
            if left < 10:
                for name in group:
                    report["sections"][name] = {"ok": False, "seconds": 0.0, "error": f"not run: the {args.budget_s:.0f} s budget was spent"}
                continue
            print(f"gpu_check: {','.join(group)} (limit {min(limit, left - 5):.0f} s)", file=sys.stderr, flush=True)
            report["sections"].update(run_sections(group, args, min(limit, left - 5), log_fh))
            for name in group:
                sec = report["sections"][name]
                print(f"gpu_check: {name}: {'ok' if sec['ok'] else 'FAILED: ' + sec.get('error', '')[:300]} "
                      f"({sec['seconds']:.0f} s)", file=sys.stderr, flush=True)
            report["seconds"] = round(time.perf_counter() - t_start, 1)
            report["summary"] = summarise(report["sections"])
            write_json(args.out, report)
    finally:
        if log_fh:
            log_fh.close()
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    report["summary"] = summarise(report["sections"])
    report["ok"] = all(s["ok"] for s in report["sections"].values())
    write_json(args.out, report)
    return report


def run_sections(names: list[str], args, timeout: float, log_fh) -> dict:
    """Sections in one child process (its own process group: a timeout kills pytest's children too);
    name -> its result, or the failure of the process for each section it did not report."""
    t0 = time.perf_counter()
    name = ",".join(names)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        out = Path(tmp) / "sections.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--section", name, "--section-out", str(out),
               "--reference", str(args.reference)] + (["--dry"] if args.dry else [])
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        try:
            text, _ = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            text, _ = proc.communicate()
            timed_out = True
        if log_fh:
            log_fh.write(f"===== {name} (rc {proc.returncode}) =====\n{text}\n")
            log_fh.flush()
        seconds = round(time.perf_counter() - t0, 1)
        tail = text[-3000:]
        done = json.loads(out.read_text()) if out.exists() else {}
    result = {}
    for n in names:
        if n in done:
            result[n] = done[n]
            if not result[n]["ok"]:
                result[n]["log_tail"] = tail
        elif timed_out:
            result[n] = {"ok": False, "seconds": seconds, "error": f"timed out after {timeout:.0f} s", "log_tail": tail}
        else:
            result[n] = {"ok": False, "seconds": seconds, "error": f"the section's process exited with {proc.returncode} "
                                                                  "and wrote no result", "log_tail": tail}
    return result


def summarise(sections: dict) -> dict:
    """The few numbers the README quotes, pulled out of the sections (None where a section failed)."""
    def get(name, *keys):
        cur = sections.get(name, {}).get("result")
        for k in keys:
            if not isinstance(cur, dict):
                return None
            cur = cur.get(k)
        return cur

    out = {"device": get("env", "device"), "matmul_tflops": get("env", "matmul_tflops"),
           "tests_passed": get("tests", "passed"), "tests_failed": (get("tests", "failed") or 0) + (get("tests", "errors") or 0)}
    for name in PRESETS:
        out[name] = {
            "clips_per_s": get(name, "affectube", "clips_per_s"),
            "reference_clips_per_s": get(name, "reference", "clips_per_s"),
            "speedup": get(name, "speedup_clips_per_s"),
            "mfu": get(name, "affectube", "mfu"),
            "peak_step_gib": get(name, "affectube", "peak_step_gib"),
        }
    out["loader"] = {"data_wait_fraction": get("loader", "data_wait_fraction"), "clips_per_s": get("loader", "clips_per_s")}
    return out


def _git_commit() -> str | None:
    """$AFFECTUBE_COMMIT (the device machine's copy of the tree has no .git: the session passes it), else git."""
    if os.environ.get("AFFECTUBE_COMMIT"):
        return os.environ["AFFECTUBE_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None  # the device machine's copy of the tree may have no .git


# ---------------------------------------------------------------- sections (child process)


def section_env(dry: bool, reference: Path) -> dict:
    import importlib

    import torch

    info = {"python": sys.version.split()[0], "executable": sys.executable, "machine": platform.machine(),
            "torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
            "cpu_count": os.cpu_count(), "pythonpath": os.environ.get("PYTHONPATH", "")}
    packages = {}
    for name in PACKAGES:
        try:
            mod = importlib.import_module(name)
            packages[name] = {"version": getattr(mod, "__version__", "?"), "file": getattr(mod, "__file__", None)}
        except Exception as e:  # noqa: BLE001  (report any import failure, carry on)
            packages[name] = {"error": f"{type(e).__name__}: {e}"}
    info["packages"] = packages
    for mod in ("affectube.train.finetune", "affectube.train.pretrain", "affectube.clips.dataset"):
        try:
            importlib.import_module(mod)
            info.setdefault("affectube_imports", {})[mod] = "ok"
        except Exception as e:  # noqa: BLE001
            info.setdefault("affectube_imports", {})[mod] = f"{type(e).__name__}: {e}"
    info["reference_present"] = (reference / "modeling_pretrain.py").exists() and (reference / "modeling_finetune.py").exists()
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update({"device": p.name, "capability": f"{p.major}.{p.minor}", "sm_count": p.multi_processor_count,
                     "memory_gib": round(p.total_memory / 2**30, 2), "cudnn": torch.backends.cudnn.version(),
                     "bf16_supported": torch.cuda.is_bf16_supported(),
                     "sdp_enabled": {k: getattr(torch.backends.cuda, f"{k}_sdp_enabled", lambda: None)()
                                     for k in ("flash", "mem_efficient", "cudnn", "math")}})
        dev, dtype, n, reps = torch.device("cuda"), torch.bfloat16, 8192, 10
    else:
        info["device"] = f"cpu ({platform.processor() or platform.machine()})"
        dev, dtype, n, reps = torch.device("cpu"), torch.float32, 256, 3
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(2):
        a @ b
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    info["matmul_tflops"] = 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12
    info["matmul"] = f"{n}x{n}x{n} {str(dtype).replace('torch.', '')}, random data, mean of {reps} after 2 warm-ups"
    ok = all("error" not in v for k, v in packages.items() if k not in ("hdf5plugin", "triton")) and all(
        v == "ok" for v in info["affectube_imports"].values()) and (dry or info["cuda_available"])
    return {"ok": ok, "result": info, **({} if ok else {"error": "a package or the CUDA device is missing (see result)"})}


def section_tests(dry: bool, reference: Path) -> dict:
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory(prefix="gpu_tests_") as tmp:
        xml = Path(tmp) / "junit.xml"
        env = dict(os.environ, **({"AFFECTUBE_GPU_DRY": "1"} if dry else {"AFFECTUBE_GPU_CHECK": "1"}))
        env.pop("AFFECTUBE_GPU_CHECK" if dry else "AFFECTUBE_GPU_DRY", None)
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py", "-p", "no:cacheprovider",
               f"--junitxml={xml}", "-o", "junit_logging=no"]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        print(proc.stdout[-20000:], proc.stderr[-5000:], sep="\n")
        if not xml.exists():
            return {"ok": False, "error": f"pytest exited with {proc.returncode} and wrote no report", "result": {"returncode": proc.returncode}}
        tests = {}
        for case in ET.parse(xml).getroot().iter("testcase"):
            outcome, message = "passed", None
            for tag in ("failure", "error", "skipped"):
                el = case.find(tag)
                if el is not None:
                    outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                    message = ((el.get("message") or "") + "\n" + (el.text or ""))[:2000]
                    break
            tests[case.get("name")] = {"outcome": outcome, "seconds": round(float(case.get("time", 0)), 2),
                                       **({"message": message} if message else {})}
    count = {k: sum(t["outcome"] == k for t in tests.values()) for k in ("passed", "failed", "error", "skipped")}
    result = {"returncode": proc.returncode, "passed": count["passed"], "failed": count["failed"], "errors": count["error"],
              "skipped": count["skipped"], "mode": "cpu (AFFECTUBE_GPU_DRY=1)" if dry else "cuda (AFFECTUBE_GPU_CHECK=1)",
              "tests": tests}
    ok = proc.returncode == 0 and count["passed"] > 0 and not count["failed"] and not count["error"] and not count["skipped"]
    return {"ok": ok, "result": result, **({} if ok else {"error": f"{count['failed']} failed, {count['error']} errors, "
                                                                  f"{count['skipped']} skipped (pytest rc {proc.returncode})"})}


def need_cuda(dry: bool) -> None:
    import torch

    if not dry and not torch.cuda.is_available():
        raise RuntimeError("torch sees no CUDA device: the GPU benchmarks need one (--dry runs them on the CPU at tiny sizes)")


def section_pretrain(name: str, dry: bool, reference: Path) -> dict:
    need_cuda(dry)
    import bench_pretrain  # benchmarks/ is this script's directory

    with tempfile.TemporaryDirectory(prefix="gpu_pretrain_") as tmp:
        out = Path(tmp) / "pretrain.json"
        if dry:
            argv = ["--device", "cpu", "--preset", "cpu-small", "--batch", "2", "--rounds", "1", "--steps", "1", "--warmup", "1",
                    "--threads", "1"]
        else:
            argv = ["--device", "cuda", "--preset", PRESETS[name], "--rounds", "3", "--steps", "4", "--warmup", "2"]
        if (reference / "modeling_pretrain.py").exists():
            argv += ["--reference", str(reference)]
        bench_pretrain.main(argv + ["--out", str(out)])
        result = json.loads(out.read_text())
    ok = "median_step_s" in result.get("affectube", {})
    return {"ok": ok, "result": result}


def section_loader(dry: bool, reference: Path) -> dict:
    """The pretraining loop on synthetic stores: the share of each step spent in ``next(loader)``."""
    import csv

    import numpy as np
    import torch

    from affectube.clips.dataset import loader_output
    from affectube.clips.store import StoreContent, write_store
    from affectube.config import load_params
    from affectube.models import ModelSpec
    from affectube.train.pretrain import Pretrainer, build_dataset

    need_cuda(dry)
    cuda = not dry
    device = torch.device("cuda" if cuda else "cpu")
    if dry:
        torch.set_num_threads(1)
        videos, frames, side = 8, 24, 40
        over = {"size": "tiny", "depth": 2, "width": 96, "input_size": 32, "num_frames": 8, "decoder_width": 64,
                "decoder_depth": 1, "batch_size": 4, "num_workers": 1, "steps": 4, "warmup_steps": 1}
        skip = 1
    else:  # ViT-B 16x160 (the SVFAP / MAE-DFER face setting), VideoMAE's per-GPU batch
        videos, frames, side = 96, 64, 180
        workers = min(8, max(1, (os.cpu_count() or 2) - 2))
        over = {"size": "base", "depth": None, "width": None, "input_size": 160, "num_frames": 16, "decoder_width": 384,
                "decoder_depth": 4, "batch_size": 32, "num_workers": workers, "steps": 40, "warmup_steps": 5}
        skip = 5
    pcfg = load_params(REPO / "params.yaml")["pretrain"]
    pcfg.update({"model": "videomae", "sample_stride": 2, "augment": True, "mask_ratio": 0.9, "checkpoint_every": 10**6,
                 "recon_clips": 1, "compile": False, **over})
    with tempfile.TemporaryDirectory(prefix="gpu_loader_") as tmp:
        root = Path(tmp) / "stores"
        root.mkdir()
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        paths = []
        for v in range(videos):  # a texture drifting one pixel per frame: cheap to make, not constant
            base = rng.integers(0, 256, (side, side + frames, 3), dtype=np.uint8)
            clip = np.stack([base[:, i : i + side] for i in range(frames)])
            content = StoreContent(frames=clip, timestamps=np.arange(frames) / 25.0, dataset="syn", video_id=f"v{v}",
                                   subject=f"s{v % 8}", labels={"emotion": None}, fps=25.0)
            paths.append(str(write_store(root / f"v{v}.h5", content)))
        write_s = time.perf_counter() - t0
        size = sum(os.path.getsize(p) for p in paths)
        dropped = _drop_page_cache(paths)
        grid = ModelSpec.from_cfg(pcfg).grid
        data, base = build_dataset(paths, pcfg, grid, output=loader_output(device))
        trainer = Pretrainer(pcfg, data, Path(tmp) / "run", device=device, target_norm=(base.mean, base.std))
        t0 = time.perf_counter()
        rc = trainer.fit()
        fit_s = time.perf_counter() - t0
        with open(Path(tmp) / "run" / "log.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
    steps = [(float(r["step_time"]), float(r["data_wait"]) * float(r["step_time"])) for r in rows][skip:]
    total, wait = sum(s for s, _ in steps), sum(w for _, w in steps)
    per_step_wait = sorted(w / s for s, w in steps)
    result = {
        "what": "Pretrainer.fit on synthetic uncompressed stores: data_wait = time in next(loader) / step time, "
                f"steps {skip + 1}-{len(rows)} (the first {skip} left out: workers starting)",
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "loader_output": base.output,
        "model": {k: pcfg[k] for k in ("model", "size", "depth", "width", "input_size", "num_frames", "decoder_width",
                                       "decoder_depth", "mask_ratio")},
        "batch_size": pcfg["batch_size"],
        "num_workers": pcfg["num_workers"],
        "stores": {"videos": videos, "frames": frames, "side": side, "bytes": size, "write_s": round(write_s, 2),
                   "page_cache_dropped": dropped},
        "returncode": rc,
        "fit_s": round(fit_s, 2),
        "steps_timed": len(steps),
        "data_wait_fraction": wait / total if total else None,
        "data_wait_fraction_median_step": per_step_wait[len(per_step_wait) // 2] if steps else None,
        "data_wait_fraction_max_step": per_step_wait[-1] if steps else None,
        "clips_per_s": pcfg["batch_size"] * len(steps) / total if total else None,
        "compute_clips_per_s": pcfg["batch_size"] * len(steps) / (total - wait) if total > wait else None,
        "median_step_s": sorted(s for s, _ in steps)[len(steps) // 2] if steps else None,
    }
    if cuda:
        result["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    ok = rc == 0 and bool(steps)
    return {"ok": ok, "result": result}


def _drop_page_cache(paths) -> bool:
    """posix_fadvise(DONTNEED) on each store (as bench_loader.py): the first reads come from disk."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def run_child(args) -> int:
    """Run the sections named in ``--section`` (comma-separated); after each, write all results so far."""
    done = {}
    for name in args.section.split(","):
        t0 = time.perf_counter()
        try:
            if name == "env":
                sec = section_env(args.dry, args.reference)
            elif name == "tests":
                sec = section_tests(args.dry, args.reference)
            elif name in PRESETS:
                sec = section_pretrain(name, args.dry, args.reference)
            elif name == "loader":
                sec = section_loader(args.dry, args.reference)
            else:
                raise ValueError(f"unknown section {name!r}")
        except BaseException as e:  # noqa: BLE001  (SystemExit from a benchmark too: recorded, not lost)
            traceback.print_exc()
            sec = {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000], "traceback": traceback.format_exc()[-4000:]}
        sec["seconds"] = round(time.perf_counter() - t0, 1)
        done[name] = sec
        write_json(args.section_out, done)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="CPU, tiny sizes, same code paths (CI)")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write (default: $OUT/gpu_check.json, else "
                                                               "benchmarks/results/gpu_check.json)")
    parser.add_argument("--reference", type=Path, default=default_reference(),
                        help="directory with MCG-NJU/VideoMAE's modeling_pretrain.py + modeling_finetune.py "
                             "(default: $AFFECTUBE_VIDEOMAE_REF or .ref/VideoMAE); missing: 'reference not available'")
    parser.add_argument("--only", default="", help=f"comma-separated sections (default all: {','.join(SECTIONS)})")
    parser.add_argument("--budget-s", type=float, default=None, help="wall-clock budget of all sections (default 420; --dry 300)")
    parser.add_argument("--log", type=Path, default=None, help="append every section's output here (default: $OUT/gpu_check.log when OUT is set)")
    parser.add_argument("--section", default=None, help=argparse.SUPPRESS)  # child process: run one section
    parser.add_argument("--section-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.reference = args.reference.resolve()
    if args.section:
        return run_child(args)
    args.out = args.out or default_out()
    if args.log is None and os.environ.get("OUT"):
        args.log = Path(os.environ["OUT"]) / "gpu_check.log"
    args.budget_s = args.budget_s or (300.0 if args.dry else 420.0)
    report = run_all(args)
    print(json.dumps(report["summary"], indent=1), flush=True)
    print(f"gpu_check: wrote {args.out} ({'all sections ok' if report['ok'] else 'SOME SECTIONS FAILED'}, {report['seconds']:.0f} s)",
          file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
