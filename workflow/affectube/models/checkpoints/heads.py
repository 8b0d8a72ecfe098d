"""How many attention heads a released checkpoint's encoder has.

The weights do not determine it (``qkv`` is ``[3 x width, width]`` for any number of heads), so
it is taken, in this order, from: the caller (``finetune.init_heads``, ``--num-heads``,
``import_checkpoint(num_heads=...)``), the checkpoint's own config (transformers ``config.json``
``num_attention_heads``; the training config saved in the file: VideoMAE/SVFAP ``args.num_heads``,
MARLIN ``hyper_parameters.encoder_num_heads``), the publishers' named sizes (ViT-S 6, B 12, L 16,
H 16, VideoMAEv2 g 16). Any other width with none of these is an error naming the ambiguity:
width / 64 is never assumed.
"""

from __future__ import annotations

from affectube.errors import DataError

# heads of the publishers' named sizes (width -> heads): ViT-S/B/L/H and VideoMAEv2's ViT-g
PUBLISHED_HEADS = {384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}


def resolve_heads(width: int, explicit: int | None, meta: dict, source: str, fmt: str) -> tuple[int, str]:
    """``(heads, note)``; ``note`` says where the number came from when it was not the published size."""
    from affectube.models.checkpoints.source import config_heads

    own, where = config_heads(meta)
    if explicit is not None:
        explicit = int(explicit)
        if own is not None and own != explicit:
            return explicit, f"heads: {explicit} as given, although the checkpoint's {where} says {own}"
        return explicit, "" if explicit == PUBLISHED_HEADS.get(width) else f"heads: {explicit} as given"
    if own is not None:
        return own, f"heads: {own} from the checkpoint's {where}"
    if width in PUBLISHED_HEADS:
        return PUBLISHED_HEADS[width], ""
    sizes = ", ".join(f"{w}: {h}" for w, h in PUBLISHED_HEADS.items())
    raise DataError(f"{source}: the number of attention heads is ambiguous: the {fmt} encoder is {width} wide, not a "
                    f"published ViT size (width: heads {sizes}), the weights do not determine the heads and the file "
                    "carries no config naming them (num_heads / encoder_num_heads / num_attention_heads). Give them: "
                    "finetune.init_heads in params.yaml, --num-heads on the command line, or "
                    "import_checkpoint(path, num_heads=...)")
