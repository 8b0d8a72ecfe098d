"""The demo's cost (issue 14): the whole pipeline on params.yaml's defaults, as `bash .ci/run demo` runs it.

Copies the workflow (not results/) into a temporary directory, runs ``snakemake --cores N --nolock``
there (the repository's results/ is untouched) and writes ``benchmarks/results/demo.json``:

- ``wall_s``: the Snakemake run's wall time; ``load_start`` / ``load_end``: the 1/5/15-min load
  averages before and after (a shared machine's wall time is not an idle machine's);
- ``cpu_s``: user + sys CPU seconds of the whole run (Snakemake and every job: getrusage of the
  children), and ``per_rule``: per rule, the jobs, their summed CPU seconds (``cpu_time`` of the
  Snakemake benchmark files where a rule has one, else the job's wall time from the log, marked),
  the summed and the longest job wall seconds;
- ``critical_path_s``: the longest chain of job wall times through the DAG's stages
  (demo_data -> faces -> clips -> pretrain -> finetune -> evaluate -> figures -> report), and
  ``idle_estimate_s``: max(critical path in CPU-s at one core per job, total job CPU-s / cores);
- ``pooled``: the report's comparison table (pooled UAR and valence CCC, p_perm per experiment).

    python benchmarks/bench_demo.py                 # 2 cores, like CI's `bash .ci/run demo`
    python benchmarks/bench_demo.py --cores 4 --keep /tmp/demo_run
    python benchmarks/bench_demo.py --from-run /tmp/pt/demo0/wf   # summarize a finished run (e.g. the test's)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from _workflow import copy_workflow  # benchmarks/ (the script's folder) is on sys.path

REPO = Path(__file__).resolve().parents[1]
STAGES = ["demo_data", "faces", "clips", "pretrain", "finetune", "evaluate", "figures", "report"]
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
DONE = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def job_walls(log_text: str) -> list[dict]:
    """(rule, start, end) of every job from the Snakemake log's time stamps."""
    jobs: dict[str, dict] = {}
    stamp = None
    pending_rule = None
    for line in log_text.splitlines():
        if m := STAMP.match(line.strip()):
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y").timestamp()
            continue
        if m := START.match(line.strip()):
            pending_rule = (m.group(1), stamp)
            continue
        if pending_rule and (m := JOBID.match(line)):
            jobs[m.group(1)] = {"rule": pending_rule[0], "start": pending_rule[1], "end": None}
            pending_rule = None
            continue
        if m := DONE.match(line.strip()):
            jobs.setdefault(m.group(1), {"rule": m.group(2), "start": None})["end"] = stamp
    return [j for j in jobs.values() if j["start"] is not None and j["end"] is not None]


def read_benchmarks(root: Path) -> dict[str, list[float]]:
    """rule -> cpu_time of each job with a benchmark file (results/benchmarks/<rule>[/...].tsv)."""
    out: dict[str, list[float]] = {}
    for tsv in sorted((root / "benchmarks").rglob("*.tsv")):
        rel = tsv.relative_to(root / "benchmarks")
        rule = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        header, *rows = [line.split("\t") for line in tsv.read_text().splitlines() if line.strip()]
        col = header.index("cpu_time")
        out.setdefault(rule, []).extend(float(r[col]) for r in rows[-1:])  # the last run's row
    return out


def per_rule(jobs: list[dict], bench: dict[str, list[float]]) -> dict:
    rules: dict[str, dict] = {}
    for j in jobs:
        r = rules.setdefault(j["rule"], {"jobs": 0, "wall_s_sum": 0.0, "wall_s_max": 0.0})
        w = j["end"] - j["start"]
        r["jobs"] += 1
        r["wall_s_sum"] += w
        r["wall_s_max"] = max(r["wall_s_max"], w)
    for name, r in rules.items():
        if name in bench:
            r["cpu_s"] = round(sum(bench[name]), 1)
            r["cpu_s_max"] = round(max(bench[name]), 1)
            r["cpu_source"] = "benchmark cpu_time"
        else:
            r["cpu_s"] = None
            r["cpu_source"] = "no benchmark directive (see wall_s_sum)"
        r["wall_s_sum"] = round(r["wall_s_sum"], 1)
        r["wall_s_max"] = round(r["wall_s_max"], 1)
    return dict(sorted(rules.items(), key=lambda kv: -(kv[1]["cpu_s"] or kv[1]["wall_s_sum"])))


def pooled(root: Path) -> dict:
    import pandas as pd

    if not (root / "report/comparison.csv").exists():
        return {"experiments": None, "report_warnings": None, "error": "no report/comparison.csv (the run did not finish)"}
    comp = pd.read_csv(root / "report/comparison.csv")
    out = {}
    for _, row in comp.iterrows():
        if row["metric"] in ("uar", "ccc_valence", "ccc_arousal"):
            e = out.setdefault(row["experiment"], {})
            e[row["metric"]] = round(float(row["pooled"]), 4)
            if row["metric"] == "uar":
                e["p_perm"] = float(row["p_perm"])
    md = (root / "report/report.md").read_text()
    warnings = [w for w in ("single class", "single-class predictions", "chance-level test predictions",
                            "underfitting at the selected epoch", "selected epoch inside the warmup") if w in md]
    return {"experiments": out, "report_warnings": warnings}


def summarize(wf: Path, log: str, cores: int, wall: float | None, cpu_total: float | None,
              load_start, load_end, command: str) -> dict:
    root = wf / "results"
    jobs = job_walls(log)
    rules = per_rule(jobs, read_benchmarks(root))
    stage_wall = {s: rules[s]["wall_s_max"] for s in STAGES if s in rules}
    stage_cpu = {s: rules[s].get("cpu_s_max") for s in STAGES if s in rules}
    job_cpu = sum(r["cpu_s"] for r in rules.values() if r["cpu_s"] is not None)
    unbenchmarked_wall = sum(r["wall_s_sum"] for r in rules.values() if r["cpu_s"] is None)
    if wall is None and jobs:  # --from-run: first job start to last job end, from the log's time stamps
        wall = max(j["end"] for j in jobs) - min(j["start"] for j in jobs)
    return {
        "command": command,
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip(),
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "cores": cores,
        "wall_s": round(wall, 1),
        "load_start": [round(x, 2) for x in load_start] if load_start else None,
        "load_end": [round(x, 2) for x in load_end] if load_end else None,
        "cpu_s": round(cpu_total, 1) if cpu_total is not None else None,
        "cpu_s_jobs_with_benchmarks": round(job_cpu, 1),
        "wall_s_jobs_without_benchmarks": round(unbenchmarked_wall, 1),
        "jobs": len(jobs),
        "critical_path_wall_s": round(sum(stage_wall.values()), 1),
        "critical_path_stage_wall_s": stage_wall,
        "critical_path_stage_cpu_s": stage_cpu,
        "idle_estimate_s": round(cpu_total / cores, 1) if cpu_total is not None else None,
        "per_rule": rules,
        "pooled": pooled(root),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="run here (kept) instead of a temporary directory")
    ap.add_argument("--from-run", type=Path, default=None,
                    help="summarize a finished run's workflow directory (its .snakemake/log, benchmarks and report; "
                         "e.g. tests/test_demo_learns.py's) instead of running: no load averages, and cpu_s only "
                         "with --cpu-s (e.g. the Snakemake process's own + children's CPU, read from /proc)")
    ap.add_argument("--cpu-s", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--note", default=None, help="a note stored in the JSON (e.g. how --cpu-s and the load were read)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/demo.json")
    args = ap.parse_args(argv)
    if args.from_run is not None:
        logs = sorted((args.from_run / ".snakemake/log").glob("*.snakemake.log"))
        if not logs:
            raise SystemExit(f"bench_demo: {args.from_run}/.snakemake/log has no Snakemake log")
        result = summarize(args.from_run, logs[-1].read_text(), args.cores, None, args.cpu_s, None, None,
                           f"summary of a finished run in {args.from_run} (snakemake --cores {args.cores} --nolock)")
    else:
        tmp = None
        if args.keep is None:
            tmp = tempfile.TemporaryDirectory(prefix="bench_demo_")
            wf = Path(tmp.name) / "wf"
        else:
            wf = args.keep
        copy_workflow(wf)
        snakemake = Path(sys.executable).parent / "snakemake"
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
        load_start = os.getloadavg()
        t0 = time.time()
        proc = subprocess.run([str(snakemake), "--cores", str(args.cores), "--nolock"], cwd=wf, env=env,
                              capture_output=True, text=True)
        wall = time.time() - t0
        load_end = os.getloadavg()
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        log = proc.stdout + proc.stderr
        (wf / "snakemake.log").write_text(log)
        if proc.returncode != 0:
            print(log[-6000:], file=sys.stderr)
            raise SystemExit(f"bench_demo: snakemake failed ({proc.returncode}) in {wf}")
        result = summarize(wf, log, args.cores, wall, ru.ru_utime + ru.ru_stime, load_start, load_end,
                           f"snakemake --cores {args.cores} --nolock (a copy of the workflow, params.yaml as committed)")
    if args.note:
        result["note"] = args.note
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("wall_s", "cpu_s", "cpu_s_jobs_with_benchmarks", "load_start", "load_end",
                                             "idle_estimate_s")}))
    print(json.dumps(result["pooled"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
