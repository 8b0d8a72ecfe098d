"""Which publisher's layout a state dict is in, from its keys alone (never guessed silently)."""

from __future__ import annotations

from affectube.errors import DataError

FORMATS = {
    "affectube": "affectube encoder.safetensors (metadata format affectube-encoder/1)",
    "videomae-pretrain": "MCG-NJU/VideoMAE or OpenGVLab/VideoMAEv2 pretraining (encoder.*, decoder.*)",
    "videomae-finetune": "MCG-NJU/VideoMAE or OpenGVLab/VideoMAEv2 fine-tuned or distilled (blocks.*, fc_norm, head)",
    "marlin": "ControlNet/MARLIN (encoder.patch_embedding.*, encoder.pos_embedding.emb)",
    "svfap-pretrain": "sunlicai/SVFAP pretraining (encoder.temporal_downsamples.*, encoder.spatial_downsamples.*)",
    "transformers-videomae": "Hugging Face transformers VideoMAE (videomae.embeddings.*, videomae.encoder.layer.N.*)",
}


def detect(keys, meta: dict | None = None, source: str = "") -> str:
    keys = set(keys)
    if (meta or {}).get("format") == "affectube-encoder/1":
        return "affectube"

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has("encoder.temporal_downsamples.") or has("encoder.spatial_downsamples."):
        return "svfap-pretrain"
    if has("encoder.patch_embedding.projection."):
        return "marlin"
    if has("videomae.embeddings.") or has("embeddings.patch_embeddings.projection."):
        return "transformers-videomae"
    if has("encoder.patch_embed.proj.") and has("encoder.blocks."):
        return "videomae-pretrain"
    if has("patch_embed.proj.") and has("blocks.") and not has("encoder."):
        if has("temporal_downsamples."):
            raise DataError(f"{source}: an SVFAP fine-tuned model (blocks.* + temporal_downsamples.*): only SVFAP "
                            "pretraining checkpoints (encoder.*) are supported")
        return "videomae-finetune"
    sample = sorted(keys)[:6]
    raise DataError(f"{source}: unknown checkpoint layout (first keys {sample}); supported: " +
                    "; ".join(f"{k}: {v}" for k, v in FORMATS.items()))
