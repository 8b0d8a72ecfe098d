"""``benchmarks/gpu_check.sh`` cannot rot between GPU loans: its ``--dry`` mode (CPU, tiny sizes,
the same code paths) runs here and must write the JSON a GPU run writes, every section passing;
without a GPU and without ``--dry`` every section fails with its own error and the others still run.

``--dry`` takes about 1 minute of CPU (2 min wall on a loaded 2-core machine): the gpu tests on
the CPU (``AFFECTUBE_GPU_DRY=1``), both pretraining benchmark sections (cpu-small preset), the
loader section (the real ``Pretrainer.fit`` on synthetic stores) and the environment report.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
SECTIONS = ["env", "tests", "pretrain_vit_b_224", "pretrain_vit_b_160", "loader"]


def gpu_test_names() -> set[str]:
    tree = ast.parse((REPO / "tests" / "test_gpu.py").read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def run_check(*args: str, tmp_path: Path, timeout: int = 600) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, PYTHON=sys.executable, TMPDIR=str(tmp_path))
    for key in ("OUT", "AFFECTUBE_GPU_CHECK", "AFFECTUBE_GPU_DRY"):
        env.pop(key, None)
    proc = subprocess.run(["bash", str(SCRIPT), *args, "--out", str(out)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert out.exists(), proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


@pytest.mark.slow
def test_dry_run_writes_every_section(tmp_path):
    proc, report = run_check("--dry", "--reference", str(tmp_path / "no_reference"), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report["format"] == "affectube-gpu-check/1" and report["dry"] is True and report["ok"] is True
    assert report["section_order"] == SECTIONS and set(report["sections"]) == set(SECTIONS)
    for name, sec in report["sections"].items():
        assert sec["ok"] is True and "error" not in sec and sec["seconds"] > 0, (name, sec)
    env = report["sections"]["env"]["result"]
    assert env["cuda_available"] in (True, False) and env["packages"]["timm"]["version"]
    assert all(v == "ok" for v in env["affectube_imports"].values()) and env["matmul_tflops"] > 0
    tests = report["sections"]["tests"]["result"]
    assert set(tests["tests"]) == gpu_test_names() and tests["passed"] == len(gpu_test_names())
    assert tests["mode"].startswith("cpu") and all(t["outcome"] == "passed" for t in tests["tests"].values())
    for name in ("pretrain_vit_b_224", "pretrain_vit_b_160"):
        bench = report["sections"][name]["result"]
        assert bench["preset"] == "cpu-small" and bench["affectube"]["median_step_s"] > 0
        assert bench["reference"]["error"].startswith("reference not available") and bench["speedup_clips_per_s"] is None
    loader = report["sections"]["loader"]["result"]
    assert loader["returncode"] == 0 and loader["steps_timed"] == 3 and 0 <= loader["data_wait_fraction"] <= 1
    assert loader["loader_output"] == "float" and loader["clips_per_s"] > 0
    summary = report["summary"]
    assert summary["tests_passed"] == len(gpu_test_names()) and summary["tests_failed"] == 0
    assert summary["pretrain_vit_b_224"]["clips_per_s"] > 0 and summary["loader"]["data_wait_fraction"] is not None


def test_without_a_gpu_each_section_fails_on_its_own(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc, report = run_check("--only", "pretrain_vit_b_224,loader", tmp_path=tmp_path, timeout=300)
    assert proc.returncode == 1 and report["ok"] is False and report["dry"] is False
    assert report["section_order"] == ["pretrain_vit_b_224", "loader"]
    assert set(report["sections"]) == {"pretrain_vit_b_224", "loader"}  # the first failure did not stop the second
    for sec in report["sections"].values():
        assert sec["ok"] is False and "no CUDA device" in sec["error"] and "traceback" in sec
    assert report["summary"]["pretrain_vit_b_224"]["clips_per_s"] is None

