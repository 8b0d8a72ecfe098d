"""The architecture of a model as plain data: what the encoder metadata stores.

Named sizes are ViT's (width, depth, heads); ``tiny`` is ViT-Ti (192 x 12, 3 heads): tests
and the CPU demo override its depth with ``pretrain.depth``.

A :class:`ModelSpec` is built from the ``pretrain`` section of params.yaml (keys
below, defaults from the schema) and written as JSON into ``encoder.safetensors``,
so :func:`affectube.models.load_encoder` rebuilds the exact encoder without the
params file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from affectube.errors import UserError
from affectube.models.layers import heads_for, token_grid


@dataclass(frozen=True)
class Size:
    width: int
    depth: int
    heads: int


SIZES: dict[str, Size] = {
    "tiny": Size(192, 12, 3),  # ViT-Ti
    "small": Size(384, 12, 6),  # ViT-S
    "base": Size(768, 12, 12),  # ViT-B (VideoMAE-B, SVFAP-B)
    "large": Size(1024, 24, 16),  # ViT-L
}


def named_size(name: str) -> Size:
    if name not in SIZES:
        raise UserError(f"pretrain.size={name!r}: expected one of {sorted(SIZES)}")
    return SIZES[name]


@dataclass(frozen=True)
class ModelSpec:
    model: str = "videomae"
    size: str = "tiny"
    depth: int | None = None  # videomae: number of encoder blocks (null = the size's)
    width: int | None = None  # encoder width (null = the size's); heads = width / 64
    input_size: int = 112
    num_frames: int = 16
    tubelet: int = 2
    patch: int = 16
    in_chans: int = 3
    pos_embed: str = "sinusoidal"  # sinusoidal | learned
    decoder_width: int = 384
    decoder_depth: int = 4
    svfap_stages: tuple[int, ...] = (12, 6, 3)  # svfap: blocks per stage (time halves between stages)
    svfap_tokens: int = 8  # svfap: bottleneck tokens per time step
    drop_path: float = 0.0
    norm_target: bool = True
    # set by checkpoint import (affectube.models.checkpoints) for publishers' architectures
    num_heads: int | None = None  # attention heads (null = the size's, or width / 64)
    mlp_ratio: float = 4.0  # MLP hidden width / width (VideoMAEv2 ViT-g: 48/11)
    norm_eps: float | None = None  # LayerNorm eps everywhere (null: 1e-5 in blocks, 1e-6 final norm)
    input_mean: tuple[float, ...] | None = None  # the input normalisation it was trained with (null: ImageNet's)
    input_std: tuple[float, ...] | None = None

    # ---------------------------------------------------------------- derived
    @property
    def dim(self) -> int:
        """Encoder width: ``width`` if set, else the named size's."""
        return self.width if self.width is not None else named_size(self.size).width

    @property
    def heads(self) -> int:
        if self.num_heads is not None:
            return self.num_heads
        return named_size(self.size).heads if self.width is None else heads_for(self.width)

    @property
    def block_eps(self) -> float:
        return 1e-5 if self.norm_eps is None else float(self.norm_eps)

    @property
    def final_eps(self) -> float:
        return 1e-6 if self.norm_eps is None else float(self.norm_eps)

    @property
    def encoder_depth(self) -> int:
        return self.depth if self.depth is not None else named_size(self.size).depth

    @property
    def decoder_heads(self) -> int:
        return heads_for(self.decoder_width)

    @property
    def grid(self) -> tuple[int, int, int]:
        return token_grid(self.num_frames, self.input_size, self.tubelet, self.patch)

    @property
    def patch_dim(self) -> int:
        """Values predicted per token: tubelet x patch x patch x channels."""
        return self.tubelet * self.patch * self.patch * self.in_chans

    # ---------------------------------------------------------------- (de)serialise
    @classmethod
    def from_cfg(cls, cfg: dict, **overrides) -> "ModelSpec":
        """From a ``pretrain`` params section (or a dict with a ``pretrain`` key)."""
        section = dict(cfg.get("pretrain", cfg))
        section.update(overrides)
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in section.items() if k in names}
        if "svfap_stages" in kwargs:
            kwargs["svfap_stages"] = tuple(int(d) for d in kwargs["svfap_stages"])
        for key in ("input_mean", "input_std"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(float(v) for v in kwargs[key])
        spec = cls(**kwargs)
        spec.validate()
        return spec

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["svfap_stages"] = list(self.svfap_stages)
        for key in ("input_mean", "input_std"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    def replace(self, **changes) -> "ModelSpec":
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        named_size(self.size)
        self.grid  # noqa: B018  (raises UserError when sizes do not divide)
        if self.width is not None and (self.width < 16 or self.width % heads_for(self.width)):
            raise UserError(f"pretrain.width={self.width}: must be >= 16 (heads = width / 64)")
        if self.num_heads is not None and (self.num_heads < 1 or self.dim % self.num_heads):
            raise UserError(f"num_heads={self.num_heads} does not divide the width {self.dim}")
        if self.depth is not None and self.depth < 1:
            raise UserError(f"pretrain.depth={self.depth}: must be >= 1 or null")
        if self.model == "svfap":
            if not self.svfap_stages or min(self.svfap_stages) < 1:
                raise UserError(f"pretrain.svfap_stages={list(self.svfap_stages)}: every stage needs >= 1 block")
            t = self.grid[0]
            factor = 2 ** (len(self.svfap_stages) - 1)
            if t % factor:
                raise UserError(
                    f"svfap: {len(self.svfap_stages)} stages halve time {len(self.svfap_stages) - 1} times, so "
                    f"num_frames/tubelet = {t} must be a multiple of {factor}"
                )
