"""GPU checks (marker ``gpu``): what no CPU test can show, run by ``benchmarks/gpu_check.sh``.

- bf16 fine-tuning of one fold through the stage's own fold function: on CUDA the batches take the
  uint8 loader path (the transform runs on the GPU) and the model runs under bf16 autocast; it must
  learn a separable synthetic task and write its outputs;
- the uint8 loader path with the transform on the device gives the CPU float path's pixels
  (bilinear: exactly; area: at most one grey level off in a few pixels, as on the CPU);
- determinism flags (``torch.use_deterministic_algorithms``, ``CUBLAS_WORKSPACE_CONFIG``, no cuDNN
  autotuning): every op of a pretraining run has a deterministic kernel, and two runs from one
  seed give bit-identical losses, gradient norms and weights;
- ``torch.compile`` of the pretraining model (``pretrain.compile``) and of the fine-tuning encoder
  matches eager mode (forward and gradients, within bf16 rounding);
- the encoder runs with fused attention kernels alone (flash / memory-efficient / cuDNN SDPA).

Where they run (:func:`device`): on CUDA when there is a GPU. Without one they SKIP, except
- ``AFFECTUBE_GPU_CHECK=1`` (set by ``gpu_check.sh`` on the GPU machine): they FAIL, so a GPU
  check that silently ran on the CPU cannot pass;
- ``AFFECTUBE_GPU_DRY=1`` (set by ``gpu_check.sh --dry``, which CI runs): they run on the CPU at
  the same tiny sizes, so the code paths cannot rot (compile uses the ``aot_eager`` backend there:
  inductor's C++ build would take minutes on a CI machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["happy", "sad"]
# a small ViT: the code paths, not the speed (benchmarks/bench_pretrain.py times ViT-B)
TINY = {"model": "videomae", "size": "tiny", "depth": 2, "width": 96, "input_size": 32, "num_frames": 8,
        "sample_stride": 1, "tubelet": 2, "patch": 16, "decoder_width": 64, "decoder_depth": 1}


@pytest.fixture(scope="module")
def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if os.environ.get("AFFECTUBE_GPU_CHECK") == "1":
        pytest.fail("AFFECTUBE_GPU_CHECK=1 but torch sees no CUDA device "
                    f"(torch {torch.__version__}, CUDA build {torch.version.cuda})")
    if os.environ.get("AFFECTUBE_GPU_DRY") == "1":
        return torch.device("cpu")
    pytest.skip("no CUDA device (set AFFECTUBE_GPU_DRY=1 to run these on the CPU)")


def write_stores(root: Path, subjects: int = 4, per: int = 4, frames: int = 24, size: int = 40) -> list[dict]:
    """Uncompressed stores written by the real writer: the class shows as brightness (a task any
    working training loop fits in a few steps), on per-pixel noise (so resampling is exercised)."""
    from affectube.clips.store import StoreContent, write_store

    rng = np.random.default_rng(0)
    rows = []
    root.mkdir(parents=True, exist_ok=True)
    for s in range(subjects):
        for v in range(per):
            emotion = CLASSES[v % 2]
            vid = f"S{s}_v{v}"
            base = 170 if emotion == "happy" else 80
            img = np.clip(rng.normal(base, 30, (frames, size, size, 3)), 0, 255).astype(np.uint8)
            content = StoreContent(frames=img, timestamps=np.arange(frames) / 25.0, dataset="syn", video_id=vid,
                                   subject=f"S{s}", labels={"emotion": emotion}, fps=25.0)
            write_store(root / f"{vid}.h5", content)
            rows.append({"dataset": "syn", "video_id": vid, "path": f"{vid}.mp4", "subject": f"S{s}", "emotion": emotion})
    return rows


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_stores")
    return root, write_stores(root)


# ---------------------------------------------------------------- fine-tuning


def test_bf16_finetune_of_one_fold_learns_on_the_device(device, stores, tmp_path, monkeypatch, one_thread):
    """Spies (robust to how the trainer is organised): the batched uint8 transform's input, and
    every attention call's query (bf16 on the GPU = the model ran under bf16 autocast)."""
    import pandas as pd
    import torch.nn.functional as F

    from affectube.clips import transforms
    from affectube.config import load_params
    from affectube.eval import folds
    from affectube.train.finetune import finetune_fold

    root, rows = stores
    cfg = load_params(REPO / "params.yaml")
    cfg["pretrain"].update(TINY)
    cfg["finetune"].update({"init": "scratch", "epochs": 6, "warmup_epochs": 1, "batch_size": 4, "lr": 0.5, "input": "frames",
                            "inner_val": 0.0, "select_on": "last", "test_clips": 1, "num_workers": 0, "threads": 1,
                            "classes": CLASSES, "task": "categorical"})
    seen = []  # the devices and dtypes the batched (uint8 path) transform ran on
    apply = transforms.TubeTransform.apply

    def spy(self, video, windows):
        seen.append((video.device.type, video.dtype))
        return apply(self, video, windows)

    monkeypatch.setattr(transforms.TubeTransform, "apply", spy)
    attention = []  # (device, dtype) of each attention call's query
    sdpa = F.scaled_dot_product_attention

    def sdpa_spy(q, *args, **kwargs):
        attention.append((q.device.type, q.dtype))
        return sdpa(q, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", sdpa_spy)
    fold = folds.plan_folds(pd.DataFrame(rows), cfg["finetune"])[0]
    summary = finetune_fold(cfg, fold, root, None, tmp_path, threads=1)

    log = pd.read_csv(tmp_path / "log.csv")
    assert len(log) == 6, log
    for name in ("predictions.csv", "metrics.json", "model.safetensors"):
        assert (tmp_path / name).exists(), name
    assert attention, "the encoder's attention was never called through F.scaled_dot_product_attention"
    if device.type == "cuda":
        assert seen and set(seen) == {("cuda", torch.uint8)}, seen[:3]  # uint8 crops, transformed on the GPU
        assert set(attention) == {("cuda", torch.bfloat16)}, set(attention)  # training and prediction under bf16
    else:
        assert not seen  # the CPU keeps the float path (transform in the loader)
        assert set(attention) == {("cpu", torch.float32)}, set(attention)
    # it learns: brightness separates the classes
    assert log["train_loss"].iloc[-1] < 0.5 * log["train_loss"].iloc[0], log["train_loss"].tolist()
    assert log["train_accuracy"].iloc[-3:].min() == 1.0, log["train_accuracy"].tolist()
    assert summary["test"]["accuracy"] == 1.0, summary["test"]
    assert np.isfinite(summary["test_loss"])


# ---------------------------------------------------------------- the uint8 loader path


def test_uint8_path_on_the_device_gives_the_cpu_pixels(device, stores):
    from affectube.clips.dataset import ClipDataset

    root, _ = stores
    paths = sorted(str(p) for p in root.glob("*.h5"))
    kw = dict(num_frames=8, sample_stride=2, input_size=32, mode="train", augment=True, seed=5, scale=(0.3, 1.0))
    flt, u8 = ClipDataset(paths, **kw), ClipDataset(paths, output="uint8", **kw)
    for epoch in (0, 1, 2):
        flt.set_epoch(epoch)
        u8.set_epoch(epoch)
        fb = torch.utils.data.default_collate([flt[i] for i in range(len(flt))])
        ub = torch.utils.data.default_collate([u8[i] for i in range(len(u8))])
        assert ub["video"].dtype == torch.uint8 and "window" in ub
        video = ub["video"].to(device, non_blocking=True)
        got = u8.transform.apply(video, ub["window"])
        assert got.device.type == device.type and got.dtype == torch.float32
        ref = fb["video"]
        assert got.shape == ref.shape
        levels = ((got.cpu() - ref) * torch.tensor(flt.std).view(1, 3, 1, 1, 1) * 255).abs()  # in grey levels
        assert float(levels.max()) <= 1.0 + 1e-3, float(levels.max())
        assert float((levels > 0.5).float().mean()) < 1e-3  # area averaging: rare ties round the other way


# ---------------------------------------------------------------- determinism

DETERMINISM_SCRIPT = textwrap.dedent("""
    import csv, hashlib, json, os, sys
    import torch
    sys.path.insert(0, {workflow!r})
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.set_num_threads(1)
    from affectube.config import load_params
    from affectube.models import ModelSpec
    from affectube.clips.dataset import loader_output
    from affectube.train.pretrain import Pretrainer, build_dataset

    device = torch.device({device!r})
    pcfg = load_params({params!r})["pretrain"]
    pcfg.update(json.loads({tiny!r}))
    pcfg.update({{"steps": 3, "warmup_steps": 1, "checkpoint_every": 100, "batch_size": 4, "recon_clips": 1,
                  "augment": True, "seed": 1}})
    stores = json.loads({stores!r})
    out = {{}}
    for run in ("a", "b"):
        data, base = build_dataset(stores, pcfg, ModelSpec.from_cfg(pcfg).grid, output=loader_output(device))
        trainer = Pretrainer(pcfg, data, os.path.join({tmp!r}, run), device=device, target_norm=(base.mean, base.std))
        assert trainer.fit() == 0
        with open(os.path.join({tmp!r}, run, "log.csv"), newline="") as fh:
            log = [(r["loss"], r["grad_norm"]) for r in csv.DictReader(fh)]
        digest = hashlib.sha256()
        for name, p in sorted(trainer.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(p.detach().float().cpu().numpy().tobytes())
        out[run] = {{"log": log, "weights": digest.hexdigest()}}
    print("RESULT " + json.dumps(out))
""")


def test_determinism_flags_make_a_pretraining_run_repeatable(device, stores, tmp_path):
    root, _ = stores
    script = DETERMINISM_SCRIPT.format(workflow=str(REPO / "workflow"), device=device.type, params=str(REPO / "params.yaml"),
                                       tiny=json.dumps({**TINY, "num_frames": 8, "input_size": 32}),
                                       stores=json.dumps(sorted(str(p) for p in root.glob("*.h5"))), tmp=str(tmp_path))
    # cuBLAS reads its workspace setting at initialisation: a fresh process, the variable set before
    env = dict(os.environ, CUBLAS_WORKSPACE_CONFIG=":4096:8", PYTHONHASHSEED="0")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]  # a nondeterministic kernel raises under the flags
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    assert len(out["a"]["log"]) == 3
    assert out["a"] == out["b"], out


# ---------------------------------------------------------------- torch.compile and fused attention


def _compile(module, device):
    return torch.compile(module, backend="inductor" if device.type == "cuda" else "aot_eager")


def _close(got: torch.Tensor, ref: torch.Tensor, device: torch.device) -> float:
    """Relative L2 error; bf16 on CUDA (two kernel choices round differently: 2e-2), fp32 on the CPU (1e-4)."""
    rel = float((got.float() - ref.float()).norm() / ref.float().norm())
    assert rel < (2e-2 if device.type == "cuda" else 1e-4), rel
    return rel


def _autocast(device):
    import contextlib

    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def test_compiled_pretraining_model_matches_eager(device, one_thread):
    import copy

    from affectube.clips.masking import TubeMaskGenerator
    from affectube.models import ModelSpec, create_model
    from affectube.models.layers import mask_index

    torch.manual_seed(0)
    spec = ModelSpec(model="videomae", num_frames=8, tubelet=2, patch=16, size="tiny", depth=2, width=96,
                     input_size=32, decoder_width=64, decoder_depth=1)
    eager = create_model("videomae", spec).to(device)
    compiled_model = copy.deepcopy(eager)
    compiled = _compile(compiled_model, device)
    x = torch.randn(4, 3, 8, 32, 32, device=device)
    index = mask_index(TubeMaskGenerator(spec.grid, 0.75).batch(4, np.random.default_rng(0))).to(device)
    outs, grads = [], []
    for model, fwd in ((eager, eager), (compiled_model, compiled)):
        with _autocast(device):
            pred = fwd(x, index)
        loss = torch.nn.functional.mse_loss(pred.float(), model.targets(x, index))
        loss.backward()
        outs.append(pred.float().detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    _close(outs[1], outs[0], device)
    _close(grads[1], grads[0], device)


def test_compiled_finetuning_encoder_matches_eager(device, one_thread):
    from affectube.config import load_params
    from affectube.models import build_encoder

    pcfg = load_params(REPO / "params.yaml")["pretrain"]
    pcfg.update(TINY)
    torch.manual_seed(0)
    encoder = build_encoder(pcfg).to(device).eval()
    compiled = _compile(encoder.forward_features, device)
    x = torch.randn(2, 3, 8, 32, 32, device=device)
    with torch.no_grad(), _autocast(device):
        a = encoder.forward_features(x).float()
        b = compiled(x).float()
    assert a.shape == (2, encoder.grid[0] * encoder.grid[1] * encoder.grid[2], encoder.embed_dim)
    _close(b, a, device)


def test_encoder_runs_on_fused_attention_kernels(device, monkeypatch):
    """The encoder's attention goes through ``F.scaled_dot_product_attention`` (timm's fused path, not
    its written-out softmax), and on CUDA it runs with the math fallback disabled (flash /
    memory-efficient / cuDNN kernels only: a shape or dtype they refuse raises); on the CPU: any kernel."""
    import contextlib

    import torch.nn.functional as F

    from torch.nn.attention import SDPBackend, sdpa_kernel

    from affectube.config import load_params
    from affectube.models import build_encoder

    pcfg = load_params(REPO / "params.yaml")["pretrain"]
    pcfg.update({**TINY, "width": 128})  # head dim 64: what flash attention supports
    encoder = build_encoder(pcfg).to(device).train()
    calls = []
    sdpa = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(args[0].dtype)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    x = torch.randn(2, 3, 8, 32, 32, device=device)
    fused = sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION])
    with fused if device.type == "cuda" else contextlib.nullcontext(), _autocast(device):
        out = encoder.forward_features(x)
        out.float().square().mean().backward()
    assert len(calls) == len(encoder.blocks), calls  # one fused attention call per block
    if device.type == "cuda":
        assert set(calls) == {torch.bfloat16}, calls
    assert torch.isfinite(out.float()).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in encoder.parameters() if p.requires_grad)
