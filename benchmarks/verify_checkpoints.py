"""Checkpoint import verified against the publishers' own model code.

For each publisher the reference model is built from its public repository (checked out
outside this repository, loaded at run time, never committed) at a tiny width with random
weights, saved in that publisher's checkpoint layout, imported with
:func:`affectube.models.checkpoints.import_checkpoint`, and both models' features are compared on
the same clip (fp32; pass: max abs difference < 1e-4)::

    python benchmarks/verify_checkpoints.py --videomae DIR --videomaev2 DIR --marlin DIR --svfap DIR \
        [--transformers] [--golden tests/data/checkpoints]

Reference commits used for benchmarks/results/checkpoints.json: MCG-NJU/VideoMAE 14ef8d8,
OpenGVLab/VideoMAEv2 29eab1e, ControlNet/MARLIN c9d5698, sunlicai/SVFAP 8e386b9. The MARLIN and
SVFAP code imports ``einops`` (not an affectube dependency: put it on PYTHONPATH);
``--transformers`` uses the locked ``transformers`` (envs/requirements.txt). Features compared:

* VideoMAE/VideoMAEv2 pretraining: ``encoder.forward_features(x, mask=none masked)`` (final norm);
* VideoMAE/VideoMAEv2 fine-tuned: ``forward_features(x)`` = ``fc_norm(mean of tokens)``;
* MARLIN: ``extract_features(x, seq_mean_pool=False)``;
* SVFAP: the released pretraining checkpoint loaded as SVFAP's ``run_class_finetuning`` does
  (``encoder.`` stripped) into SVFAP's fine-tuning ``TPSBT``: the tokens after stage 1 and after
  the last stage (affectube's SVFAP adds a multi-scale fusion on top: not in that model);
* transformers: ``VideoMAEModel(config)(pixel_values).last_hidden_state``, and the round trip
  affectube -> ``affectube export`` -> ``VideoMAEModel.from_pretrained``.

``--golden DIR`` also writes each checkpoint with its input and reference features
(``input.safetensors``, ``{case}.expected.safetensors``) and ``cases.json``: the CI golden tests read them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import tempfile
import types
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

WIDTH, HEADS, DEPTH, PATCH, SIZE, FRAMES, TUBELET = 32, 2, 2, 8, 32, 16, 2
TOL = 1e-4
COMMITS = {"MCG-NJU/VideoMAE": "14ef8d856287c94ef1f985fe30f958eb4ec2c55d",
           "OpenGVLab/VideoMAEv2": "29eab1e8a588d1b3ec0cdec7b03a86cca491b74b",
           "ControlNet/MARLIN": "c9d5698f98799828b5bcd0528e408a06e3f58502",
           "sunlicai/SVFAP": "8e386b93af801da0113f54b4f8a30f2608f1d4e0"}


def randomise(model: nn.Module, seed: int) -> None:
    from affectube.models.checkpoints.features import randomise as shared  # one definition, shared with the CI tests

    shared(model, seed)


def clip(seed: int = 0) -> torch.Tensor:
    """One clip, rounded to float16 values (stored as float16 in the golden files, exactly)."""
    return torch.randn(1, 3, FRAMES, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)).half().float()


def load_module(directory: Path, name: str, alias: str):
    """Import ``directory/name.py`` (its own imports resolved from ``directory``)."""
    sys.path.insert(0, str(directory))
    try:
        for m in ("modeling_finetune", "modeling_pretrain"):
            sys.modules.pop(m, None)
        module = importlib.import_module(name)
    finally:
        sys.path.remove(str(directory))
    sys.modules[alias] = module
    return module


def package_module(directory: Path, package: str, name: str):
    """``package.name`` from ``directory/name.py`` (relative imports work, ``__init__`` is not run)."""
    if package not in sys.modules:
        pkg = types.ModuleType(package)
        pkg.__path__ = [str(directory)]
        sys.modules[package] = pkg
    return importlib.import_module(f"{package}.{name}")


# ---------------------------------------------------------------- cases


def videomae_cases(root: Path, tag: str, v2: bool) -> list[dict]:
    if v2:  # a package with relative imports: load its modules without its __init__
        mf, mp = (package_module(root / "models", "videomaev2_ref", m) for m in ("modeling_finetune", "modeling_pretrain"))
    else:
        mf = load_module(root, "modeling_finetune", f"{tag}_finetune")
        mp = load_module(root, "modeling_pretrain", f"{tag}_pretrain")
    norm = partial(nn.LayerNorm, eps=1e-6)
    extra = {"all_frames": FRAMES} if v2 else {}
    pre = mp.PretrainVisionTransformer(img_size=SIZE, patch_size=PATCH, encoder_embed_dim=WIDTH, encoder_depth=DEPTH,
                                       encoder_num_heads=HEADS, decoder_num_classes=3 * TUBELET * PATCH * PATCH,
                                       decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=1, mlp_ratio=4,
                                       qkv_bias=True, norm_layer=norm, tubelet_size=TUBELET, **extra).eval()
    randomise(pre, 1)
    x = clip()
    mask = torch.zeros(x.shape[0], pre.encoder.patch_embed.num_patches, dtype=torch.bool)
    with torch.no_grad():
        ref_pre = pre.encoder.forward_features(x, mask)
    ft = mf.VisionTransformer(img_size=SIZE, patch_size=PATCH, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS,
                              mlp_ratio=4, qkv_bias=True, norm_layer=norm, num_classes=5, all_frames=FRAMES,
                              tubelet_size=TUBELET, use_mean_pooling=True).eval()
    randomise(ft, 2)
    with torch.no_grad():
        ref_ft = ft.forward_features(x)
    return [
        {"case": f"{tag}-pretrain", "file": f"{tag}_pretrain.pth", "obj": {"model": pre.state_dict()},
         "input": x, "expected": ref_pre, "features": "tokens"},
        {"case": f"{tag}-finetune", "file": f"{tag}_finetune.pth", "obj": {"module": ft.state_dict()},
         "input": x, "expected": ref_ft, "features": "fc_norm_pooled"},
    ]


def marlin_case(root: Path) -> list[dict]:
    # the package __init__ pulls cv2/ffmpeg: load the model modules alone
    enc_mod, dec_mod = (package_module(root / "src" / "marlin_pytorch" / "model", "marlin_ref", m) for m in ("encoder", "decoder"))
    enc = enc_mod.MarlinEncoder(img_size=SIZE, patch_size=PATCH, n_frames=FRAMES, embed_dim=WIDTH, depth=DEPTH,
                                num_heads=HEADS, qkv_bias=True, tubelet_size=TUBELET).eval()
    dec = dec_mod.MarlinDecoder(img_size=SIZE, patch_size=PATCH, n_frames=FRAMES, embed_dim=16, depth=1, num_heads=1,
                                qkv_bias=True, tubelet_size=TUBELET)
    randomise(enc, 3)
    x = clip()
    with torch.no_grad():
        ref = enc.extract_features(x, seq_mean_pool=False)
    state = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    state.update({f"decoder.{k}": v for k, v in dec.state_dict().items()})
    state["enc_dec_proj.weight"] = torch.randn(16, WIDTH)
    return [{"case": "marlin", "file": "marlin_full.pt", "obj": state, "input": x, "expected": ref, "features": "tokens"}]


def svfap_case(root: Path) -> list[dict]:
    mf = load_module(root, "modeling_finetune", "svfap_finetune")
    mp = load_module(root, "modeling_pretrain", "svfap_pretrain")
    norm = partial(nn.LayerNorm, eps=1e-6)
    stages = (1, 1, 1)
    pre = mp.PretrainVisionTransformer(img_size=SIZE, patch_size=PATCH, encoder_embed_dim=WIDTH, encoder_num_heads=HEADS,
                                       decoder_num_classes=3 * TUBELET * PATCH * PATCH, decoder_embed_dim=16,
                                       decoder_depth=1, decoder_num_heads=1, mlp_ratio=4, qkv_bias=True,
                                       norm_layer=norm, tubelet_size=TUBELET, stage_depths=stages,
                                       num_bottleneck_tokens=(4,))
    randomise(pre, 4)
    # SVFAP's run_class_finetuning: the pretraining checkpoint's encoder.* into the fine-tuning TPSBT
    ft = mf.TPSBT(img_size=SIZE, patch_size=PATCH, embed_dim=WIDTH, num_heads=HEADS, mlp_ratio=4, qkv_bias=True,
                  norm_layer=norm, num_classes=5, all_frames=FRAMES, tubelet_size=TUBELET, stage_depths=stages,
                  num_bottleneck_tokens=(4,), use_mean_pooling=True).eval()
    enc_state = {k.removeprefix("encoder."): v for k, v in pre.state_dict().items() if k.startswith("encoder.")}
    missing, unexpected = ft.load_state_dict(enc_state, strict=False)
    assert not [k for k in missing if not k.startswith(("fc_norm", "head"))], missing
    x = clip()
    seen = {}
    hooks = [ft.blocks[i].register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out)) for i in (0, len(ft.blocks) - 1)]
    with torch.no_grad():
        ft.forward_features(x)
    for h in hooks:
        h.remove()
    expected = torch.cat([seen[0].flatten(1), seen[len(ft.blocks) - 1].flatten(1)], 1)
    return [{"case": "svfap-pretrain", "file": "svfap_pretrain.pth", "obj": {"model": pre.state_dict()}, "input": x,
             "expected": expected, "features": "svfap_stage_tokens"}]


# ---------------------------------------------------------------- affectube side


def affectube_features(encoder: nn.Module, x: torch.Tensor, kind: str) -> torch.Tensor:
    from affectube.models.checkpoints.features import reference_features  # one definition, shared with the CI golden tests

    return reference_features(encoder, x, kind)


def check(case: dict, directory: Path) -> dict:
    from affectube.models.checkpoints import import_checkpoint

    path = directory / case["file"]
    torch.save(case["obj"], path)
    encoder, report = import_checkpoint(path, num_heads=HEADS, input_size=SIZE, num_frames=FRAMES)
    encoder.eval()
    ours = affectube_features(encoder, case["input"], case["features"])
    diff = float((ours - case["expected"]).abs().max())
    return {"case": case["case"], "format": report.format, "features": case["features"], "shape": list(ours.shape),
            "max_abs_diff": diff, "pass": diff < TOL, "loaded": len(report.loaded), "dropped": len(report.dropped),
            "initialised": report.initialised, "notes": report.notes}


def transformers_check(directory: Path) -> list[dict]:
    """transformers VideoMAEModel (random init, built offline) -> import -> same features; and
    affectube encoder -> export -> VideoMAEModel.from_pretrained -> same features."""
    import transformers
    from transformers import VideoMAEConfig, VideoMAEModel

    from affectube.export import export_encoder
    from affectube.models.checkpoints import import_checkpoint

    torch.manual_seed(5)
    cfg = VideoMAEConfig(image_size=SIZE, patch_size=PATCH, num_channels=3, num_frames=FRAMES, tubelet_size=TUBELET,
                         hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=4 * WIDTH,
                         qkv_bias=True, use_mean_pooling=False, layer_norm_eps=1e-6)
    hf = VideoMAEModel(cfg).eval()
    randomise(hf, 5)
    x = clip()
    with torch.no_grad():
        ref = hf(pixel_values=x.transpose(1, 2)).last_hidden_state
    src = directory / "hf_src"
    hf.save_pretrained(src)
    encoder, report = import_checkpoint(src)
    ours = affectube_features(encoder.eval(), x, "tokens")
    out = [{"case": "transformers-import", "format": report.format, "transformers": transformers.__version__,
            "max_abs_diff": float((ours - ref).abs().max()), "notes": report.notes}]
    dst = directory / "hf_export"
    export_encoder(encoder, dst)
    back = VideoMAEModel.from_pretrained(dst).eval()
    with torch.no_grad():
        again = back(pixel_values=x.transpose(1, 2)).last_hidden_state
    out.append({"case": "transformers-export-roundtrip", "transformers": transformers.__version__,
                "max_abs_diff": float((again - ours).abs().max())})
    # an encoder trained by affectube (its own LayerNorm eps: 1e-5 in blocks, 1e-6 final)
    from affectube.models import create_encoder

    native = create_encoder("videomae", width=WIDTH, depth=DEPTH, input_size=SIZE, num_frames=FRAMES, patch=PATCH,
                            tubelet=TUBELET).eval()
    randomise(native, 6)
    export_encoder(native, directory / "native_export")
    back = VideoMAEModel.from_pretrained(directory / "native_export").eval()
    with torch.no_grad():
        theirs = back(pixel_values=x.transpose(1, 2)).last_hidden_state
        mine = native.forward_features(x)
    out.append({"case": "transformers-export-affectube-encoder", "transformers": transformers.__version__,
                "max_abs_diff": float((theirs - mine).abs().max()),
                "notes": ["final LayerNorm eps 1e-6 exported as transformers' single layer_norm_eps 1e-5"]})
    for r in out:
        r["pass"] = r["max_abs_diff"] < TOL
    return out


def write_golden(cases: list[dict], directory: Path) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    index = []
    save_file({"input": clip().half().contiguous()}, str(directory / "input.safetensors"))
    for c in cases:
        assert torch.equal(c["input"], clip())
        torch.save(c["obj"], directory / c["file"])
        save_file({"expected": c["expected"].contiguous()}, str(directory / f"{c['case']}.expected.safetensors"))
        index.append({"case": c["case"], "file": c["file"], "features": c["features"], "num_heads": HEADS})
    (directory / "cases.json").write_text(json.dumps(index, indent=1) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videomae", type=Path, help="checkout of MCG-NJU/VideoMAE")
    p.add_argument("--videomaev2", type=Path, help="checkout of OpenGVLab/VideoMAEv2")
    p.add_argument("--marlin", type=Path, help="checkout of ControlNet/MARLIN")
    p.add_argument("--svfap", type=Path, help="checkout of sunlicai/SVFAP")
    p.add_argument("--transformers", action="store_true", help="also check the transformers import/export round trip")
    p.add_argument("--golden", type=Path, help="write the CI golden files here")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "checkpoints.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    cases: list[dict] = []
    errors = {}
    for name, root, build in (("videomae", args.videomae, lambda r: videomae_cases(r, "videomae", False)),
                              ("videomaev2", args.videomaev2, lambda r: videomae_cases(r, "videomaev2", True)),
                              ("marlin", args.marlin, marlin_case), ("svfap", args.svfap, svfap_case)):
        if root is None:
            errors[name] = "not given"
            continue
        cases += build(root)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in cases:
            results.append(check(c, Path(tmp)))
        if args.transformers:
            results += transformers_check(Path(tmp))
    if args.golden:
        write_golden(cases, args.golden)
    doc = {"reference_commits": COMMITS, "tolerance": TOL, "dtype": "float32", "sizes": {"width": WIDTH, "heads": HEADS, "depth": DEPTH, "patch": PATCH,
           "input_size": SIZE, "num_frames": FRAMES, "tubelet": TUBELET}, "torch": torch.__version__,
           "python": platform.python_version(), "results": results, "not_run": errors,
           "all_pass": all(r["pass"] for r in results)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    for r in results:
        print(f"{r['case']:32s} max|diff| {r['max_abs_diff']:.2e} {'PASS' if r['pass'] else 'FAIL'}")
    return 0 if doc["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
