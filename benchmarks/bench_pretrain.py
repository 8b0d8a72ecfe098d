"""One VideoMAE pretraining step: affectube's model vs the reference MCG-NJU/VideoMAE code.

Both models are built in this process with the same sizes, get the same weights (ours
are copied into the reference), the same clips and the same tube masks, and are timed
on a full training step: forward, loss (MSE on masked, per-patch normalised pixels),
backward and AdamW. The reference code is NOT part of this repository: pass the
directory of a checkout (``modeling_pretrain.py`` + ``modeling_finetune.py``)::

    git clone https://github.com/MCG-NJU/VideoMAE /tmp/VideoMAE
    python benchmarks/bench_pretrain.py --reference /tmp/VideoMAE            # CPU preset
    python benchmarks/bench_pretrain.py --reference /tmp/VideoMAE --device cuda --preset vit-b

On CUDA the reference runs as its scripts do (fp16 autocast + GradScaler, foreach AdamW)
and ours with bf16 autocast and fused AdamW; the JSON also reports our model FLOPs
utilisation (FLOPs counted by ``torch.utils.flop_counter`` for forward + backward).
Steps of the two models are interleaved in rounds so that load drift on a shared machine
hits both alike; the medians are reported. On CUDA each model's memory is reported too:
``peak_step_gib`` (the most a training step allocated above what was allocated when it began:
activations, gradients, temporaries) and ``state_gib`` (weights + AdamW state). Without
``--reference`` (or with a directory that lacks the code) only our model is timed and the JSON
says ``"reference": {"error": "reference not available: ..."}``. Writes
``benchmarks/results/pretrain.json`` (or ``--out``).

``"pretexts"`` (unless ``--no-pretexts``): one training step of each other ``pretrain.method`` on the
same encoder, batch and precision (BYOL: 2 views; DINO: 2 global + 2 local views, K 1024; audio: 40
mels; face masking costs what tube masking does), timed like ours (median step, clips/s).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from affectube.clips.masking import TubeMaskGenerator  # noqa: E402
from affectube.io import write_json  # noqa: E402
from affectube.models import ModelSpec, create_model  # noqa: E402
from affectube.models.flops import pretrain_step_flops  # noqa: E402
from affectube.models.layers import mask_index, patchify  # noqa: E402
from affectube.train.optim import build_optimizer, param_groups  # noqa: E402

# name -> (ModelSpec keys, batch); the reference fixes 16 frames
PRESETS = {
    # the size measured in ../shared/notes/anchors.md (reference ~32 clips/s on 2 cores)
    "cpu-small": (dict(size="tiny", depth=4, input_size=112, decoder_width=96, decoder_depth=2), 8),
    # VideoMAE-B as published (16x224, decoder 384 x 4)
    "vit-b": (dict(size="base", input_size=224, decoder_width=384, decoder_depth=4), 32),
    # the SVFAP / MAE-DFER face setting (16x160)
    "vit-b-160": (dict(size="base", input_size=160, decoder_width=384, decoder_depth=4), 64),
}
# dense bf16 peak (TFLOP/s) by device name fragment, for MFU
PEAK_BF16 = {"H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "A100": 312.0}


def load_reference(path: Path):
    if not (path / "modeling_pretrain.py").exists():
        raise FileNotFoundError(f"{path}: no modeling_pretrain.py (pass a checkout of github.com/MCG-NJU/VideoMAE)")
    sys.path.insert(0, str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import modeling_pretrain  # noqa: PLC0415  (the reference, from the given path)
    return modeling_pretrain


def build_reference(mod, spec: ModelSpec):
    from functools import partial

    return mod.PretrainVisionTransformer(
        img_size=spec.input_size,
        patch_size=spec.patch,
        encoder_embed_dim=spec.dim,
        encoder_depth=spec.encoder_depth,
        encoder_num_heads=spec.heads,
        decoder_num_classes=spec.patch_dim,
        decoder_embed_dim=spec.decoder_width,
        decoder_depth=spec.decoder_depth,
        decoder_num_heads=spec.decoder_heads,
        mlp_ratio=4.0,
        qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        tubelet_size=spec.tubelet,
    )


def copy_weights(ours, ref) -> None:
    """Our state dict -> the reference's names (timm's fused qkv bias -> q_bias/v_bias; k bias is 0)."""
    src = ours.state_dict()
    dst = ref.state_dict()
    out = {}
    for name in dst:
        if name.endswith("attn.q_bias") or name.endswith("attn.v_bias"):
            bias = src[name.replace("q_bias", "qkv.bias").replace("v_bias", "qkv.bias")]
            d = bias.shape[0] // 3
            if name.endswith("q_bias"):
                out[name] = bias[:d]
            else:
                assert torch.all(bias[d : 2 * d] == 0), "key bias must be zero to be expressible in the reference"
                out[name] = bias[2 * d :]
        elif name.startswith("decoder.") and name.split(".")[1] in ("norm", "head", "blocks"):
            out[name] = src[name]
        elif name in ("encoder_to_decoder.weight", "mask_token"):
            out[name] = src[f"decoder.{name}"]
        else:
            out[name] = src[name]
    ref.load_state_dict(out)


def reference_targets(x: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """VideoMAE's engine_for_pretraining.py targets (its einops rearranges written with reshape/permute):
    ``b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c``, standardised over dim -2, unbiased std."""
    with torch.no_grad():
        b, c = x.shape[:2]
        squeeze = patchify(x, tubelet, patch, channels_last=True).reshape(b, -1, tubelet * patch * patch, c)
        norm = (squeeze - squeeze.mean(dim=-2, keepdim=True)) / (squeeze.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
        return norm.reshape(b, norm.shape[1], -1)


class Runner:
    """One model's training step on fixed inputs."""

    def __init__(self, name, model, x, mask, device, fused: bool, amp: str | None, spec):
        self.name, self.model, self.x, self.mask, self.device, self.spec = name, model, x, mask, device, spec
        self.opt = build_optimizer(param_groups(model, 1e-4, 0.05), 1e-4, fused=fused)
        self.amp = amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
        self.times: list[float] = []
        self.peak_step_bytes = 0

    def step(self) -> float:
        cuda = self.device.type == "cuda"
        if cuda:
            start_bytes = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        mask_cpu = self.mask
        if self.name == "affectube":
            index = mask_index(mask_cpu).to(self.device, non_blocking=True)
            with self._autocast():
                pred = self.model(self.x, index)
            target = self.model.targets(self.x, index)  # our loss: targets of the masked tokens only
        else:  # the reference: targets of all tokens, then the boolean mask on the device (its engine)
            mask = mask_cpu.to(self.device, non_blocking=True)
            with self._autocast():
                pred = self.model(self.x, mask)
            b = self.x.shape[0]
            target = reference_targets(self.x, self.spec.tubelet, self.spec.patch)[mask].reshape(b, -1, pred.shape[-1])
        loss = F.mse_loss(pred.float(), target)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        self.times.append(dt)
        if cuda:
            self.peak_step_bytes = max(self.peak_step_bytes, torch.cuda.max_memory_allocated(self.device) - start_bytes)
        return float(loss.detach())

    def state_bytes(self) -> int:
        """Weights + optimizer state (after a step: AdamW's moments exist)."""
        tensors = list(self.model.parameters()) + [v for s in self.opt.state.values() for v in s.values() if torch.is_tensor(v)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def _autocast(self):
        if self.amp is None:
            return torch.autocast("cpu", enabled=False)
        return torch.autocast("cuda", dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16)


def pretext_steps(spec: ModelSpec, batch: int, device: torch.device, amp: str | None, steps: int, warmup: int) -> dict:
    """Median step time and clips/s of BYOL, DINO and the audio pretext (forward + loss + backward + AdamW + EMA)."""
    from affectube.models import create_encoder
    from affectube.train.pretext.audio import AudioTarget
    from affectube.train.pretext.byol import BYOL
    from affectube.train.pretext.dino import DINO

    g = torch.Generator().manual_seed(1)
    shape = (batch, 3, spec.num_frames, spec.input_size, spec.input_size)
    views = [torch.randn(shape, generator=g).to(device) for _ in range(4)]
    target = torch.randn(batch, spec.num_frames, 40, generator=g).to(device)
    cases = {
        "byol": (BYOL(create_encoder("videomae", spec), 512, 128), lambda m: m(views[0], views[1])),
        "dino": (DINO(create_encoder("videomae", spec), 512, 128, 1024), lambda m: m(*views)),
        "audio": (AudioTarget(create_encoder("videomae", spec), 40), lambda m: F.mse_loss(m(views[0]).float(), target)),
    }
    out = {}
    for name, (model, loss_fn) in cases.items():
        model = model.to(device).train()
        opt = build_optimizer(param_groups(model, 1e-4, 0.05), 1e-4, fused=device.type == "cuda")
        times = []
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
                loss = loss_fn(model)
            opt.zero_grad(set_to_none=True)
            loss.float().backward()
            opt.step()
            if hasattr(model, "update_target"):
                model.update_target(0.99)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        out[name] = {"median_step_s": med, "clips_per_s": batch / med, "views": {"byol": 2, "dino": 4, "audio": 1}[name]}
        del model, opt
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=None,
                        help="directory of a MCG-NJU/VideoMAE checkout (modeling_pretrain.py + modeling_finetune.py); "
                             "without it only our model is timed")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--preset", default=None, choices=sorted(PRESETS), help="default: cpu-small on CPU, vit-b on CUDA")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--mask-ratio", type=float, default=0.9)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak for MFU (default: by device name)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "pretrain.json")
    parser.add_argument("--no-pretexts", action="store_true", help="time only the VideoMAE step (not BYOL, DINO, audio)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = args.preset or ("cpu-small" if device.type == "cpu" else "vit-b")
    keys, batch = PRESETS[preset]
    batch = args.batch or batch
    spec = ModelSpec(model="videomae", num_frames=16, tubelet=2, patch=16, **keys)
    ref_mod, ref_error = None, None
    try:
        if args.reference is None:
            raise FileNotFoundError("no --reference given")
        ref_mod = load_reference(args.reference)
    except (FileNotFoundError, ImportError) as e:
        ref_error = f"reference not available: {e}"
        print(ref_error, file=sys.stderr)

    torch.manual_seed(0)
    ours = create_model("videomae", spec).to(device)
    ref = None
    if ref_mod is not None:
        ref = build_reference(ref_mod, spec)
        copy_weights(ours, ref)
        ref = ref.to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, spec.num_frames, spec.input_size, spec.input_size, generator=g).to(device)
    mask = TubeMaskGenerator(spec.grid, args.mask_ratio).batch(batch, np.random.default_rng(0))

    # same weights, same input, same mask -> same predictions (fp32, before any step)
    max_diff = None
    if ref is not None:
        with torch.no_grad():
            p_ours = ours(x, mask_index(mask).to(device)).float()
            p_ref = ref(x, mask.to(device)).float()
        max_diff = float((p_ours - p_ref).abs().max())
        del p_ours, p_ref

    cuda = device.type == "cuda"
    runners = [Runner("affectube", ours, x, mask, device, fused=cuda, amp="bf16" if cuda else None, spec=spec)]
    if ref is not None:
        runners.append(Runner("reference", ref, x, mask, device, fused=False, amp="fp16" if cuda else None, spec=spec))
    for r in runners:
        for _ in range(args.warmup):
            r.step()
        r.times.clear()
    for _ in range(args.rounds):
        for r in runners:
            for _ in range(args.steps):
                r.step()

    result = {
        "what": "one pretraining step (forward + loss + backward + AdamW), same sizes/weights/input/mask",
        "preset": preset,
        "spec": spec.to_dict(),
        "batch": batch,
        "mask_ratio": args.mask_ratio,
        "tokens_per_clip": ours.num_tokens,
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "max_abs_diff_predictions_same_weights": max_diff,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "command": "python " + " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    }
    for r in runners:
        med = statistics.median(r.times)
        result[r.name] = {
            "median_step_s": med,
            "clips_per_s": batch / med,
            "precision": r.amp or "fp32",
            "optimizer": "AdamW fused" if (cuda and r.name == "affectube") else "AdamW foreach",
            "step_times_s": [round(t, 5) for t in r.times],
        }
        if cuda:
            result[r.name]["peak_step_gib"] = r.peak_step_bytes / 2**30
            result[r.name]["state_gib"] = r.state_bytes() / 2**30
    if ref_error:
        result["reference"] = {"error": ref_error}
        result["speedup_clips_per_s"] = None
    else:
        result["speedup_clips_per_s"] = result["affectube"]["clips_per_s"] / result["reference"]["clips_per_s"]
    if cuda:
        flops = pretrain_step_flops(spec, batch, args.mask_ratio)
        name = torch.cuda.get_device_name(device)
        peak = args.peak_tflops or next((v for k, v in PEAK_BF16.items() if k in name), None)
        result["flops_per_step"] = flops
        result["peak_bf16_tflops"] = peak
        for name in [r.name for r in runners]:
            achieved = flops / result[name]["median_step_s"]
            result[name]["achieved_tflops"] = achieved / 1e12
            if peak:
                result[name]["mfu"] = achieved / (peak * 1e12)
    if not args.no_pretexts:
        result["pretexts"] = pretext_steps(spec, batch, device, "bf16" if cuda else None, args.steps * 2, args.warmup)
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("spec",)}, indent=1, default=str)[:4000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
