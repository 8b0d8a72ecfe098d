"""``pretrain.method: audio``: the visual encoder predicts the video's own audio features, in the spirit of
LiRA (Ma et al. 2021, "LiRA: Learning visual speech representations from audio through self-supervision").

Each clip's target is the log-mel energies of its video's audio track at the clip's frames (stored by the
clips stage as ``audio_logmel`` when ``clips.audio_mels`` > 0: :mod:`affectube.clips.audio`), standardised
per mel bin over the training stores. The encoder's tokens are averaged over space at each tubelet time step
(the ResNet-18 trunk: one feature per frame) and a linear head predicts the ``tubelet x mels`` values of that
step; the loss is their MSE.

Stores without ``audio_logmel`` (videos without an audio stream, or built with ``clips.audio_mels: 0``) are
reported (a warning and ``summary.json`` ``pretext_notes``) and skipped by this method only.

Differences from LiRA: LiRA regresses PASE+ features (L1) from a ResNet-18 + conformer, whose PASE+ weights
cannot be downloaded here; here the targets are log-mel energies (MSE) and the encoder is pretrain.model's.
"""

from __future__ import annotations

import logging

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset, default_collate

from affectube.clips import sampling
from affectube.errors import DataError
from affectube.models import create_encoder

log = logging.getLogger(__name__)
ARRAY = "audio_logmel"


class AudioTarget(nn.Module):
    def __init__(self, encoder: nn.Module, n_mels: int):
        super().__init__()
        self.spec = encoder.spec
        self.encoder = encoder
        self.n_mels = int(n_mels)
        self.frames_per_step = self.spec.num_frames // encoder.grid[0]  # ViT: the tubelet; ResNet-18 trunk: 1 (per frame)
        self.head = nn.Sequential(nn.LayerNorm(encoder.embed_dim), nn.Linear(encoder.embed_dim, self.frames_per_step * self.n_mels))

    @property
    def num_tokens(self) -> int:
        return self.encoder.num_tokens

    def no_weight_decay(self) -> set[str]:
        return {f"encoder.{n}" for n in self.encoder.no_weight_decay()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted audio features ``[B, T, mels]`` of clips ``x`` [B,C,T,H,W]."""
        tokens = self.encoder.forward_features(x)
        t = self.encoder.grid[0]
        steps = tokens.reshape(tokens.shape[0], t, -1, tokens.shape[-1]).mean(2)  # [B, T', D]
        return self.head(steps).reshape(tokens.shape[0], t * self.frames_per_step, self.n_mels)


def audio_stores(stores) -> tuple[list[str], list[str]]:
    """``(stores with audio_logmel, notes on the others)``."""
    keep, notes = [], []
    for s in stores:
        with h5py.File(s, "r") as f:
            if ARRAY in f and f[ARRAY].shape[0] > 0:
                keep.append(str(s))
            elif int(f.attrs.get("num_frames", 0)) > 0:
                notes.append(f"{s}: no audio features (no audio stream, or clips.audio_mels: 0): skipped by the audio pretext")
    return keep, notes


class AudioClips(Dataset):
    """``code -> (video, target [T, mels])`` (uint8 path: ``(crops, window, target)``) over a ``ClipDataset``."""

    def __init__(self, base, notes: list[str] | None = None):
        self.base = base
        self.n = len(base)
        self.notes = list(notes or [])
        self.uint8 = base.output == "uint8"
        self.feats = {}
        for e in base.entries:
            with h5py.File(e.path, "r") as f:
                self.feats[(e.dataset, e.video_id)] = np.asarray(f[ARRAY], np.float32)
        allf = np.concatenate(list(self.feats.values()))
        mels = {a.shape[1] for a in self.feats.values()}
        if len(mels) > 1:
            raise DataError(f"audio pretext: the stores have audio features of {sorted(mels)} mel bins: rebuild them with one clips.audio_mels")
        self.mean, self.std = allf.mean(0), allf.std(0) + 1e-6
        self.n_mels = allf.shape[1]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, code: int) -> tuple:
        item = self.base[int(code)]
        feats = self.feats[(item["dataset"], item["video_id"])]
        idx = sampling.frame_indices(item["start"], self.base.num_frames, self.base.sample_stride, len(feats))
        target = torch.from_numpy((feats[idx] - self.mean) / self.std)
        if self.uint8:
            return item["video"], item["window"], target
        return torch.as_tensor(item["video"], dtype=torch.float32), target

    def to_device(self, batch, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        if self.uint8:
            video = self.base.transform.apply(batch[0].to(device, non_blocking=True), batch[1])
        else:
            video = batch[0].to(device, non_blocking=True)
        return video, batch[-1].to(device, non_blocking=True)

    def clips(self, indices, device="cpu"):
        return self.to_device(default_collate([self[int(i)] for i in indices]), device)


class AudioMethod:
    name = "audio"
    figure = False

    def build_model(self, spec, pcfg: dict, dataset=None) -> nn.Module:
        if not isinstance(dataset, AudioClips):
            raise TypeError("audio pretext: the dataset must be AudioClips (the mel bins come from the stores)")
        return AudioTarget(create_encoder(spec.model, spec), dataset.n_mels)

    def build_dataset(self, stores, pcfg: dict, grid, datasets=None, output: str = "float"):
        from affectube.shards.index import expand_stores
        from affectube.train.pretext.data import clip_dataset

        stores = expand_stores(stores)  # clips shard indexes (data.shard_size) stand for their stores, read one by one here
        keep, notes = audio_stores(stores)
        for note in notes:
            log.warning("%s", note)
        if not keep:
            raise DataError(
                f"pretrain.method=audio: none of the {len(stores)} clip stores has audio features: set clips.audio_mels "
                "(e.g. 40) and rebuild the clip stores of videos with an audio track"
            )
        base = clip_dataset(keep, pcfg, datasets, output)
        return AudioClips(base, notes), base

    def loss(self, forward, model, batch, dataset, device, autocast) -> torch.Tensor:
        video, target = dataset.to_device(batch, device)
        with autocast():
            pred = forward(video)
        return F.mse_loss(pred.float(), target)

    def after_step(self, model, done: int, total: int) -> None:
        pass

    def visible_tokens(self, dataset) -> int:
        return 0
