"""The clip datasets of the view-based pretexts (BYOL, DINO): a ``ClipDataset`` over the stores, wrapped
in :class:`affectube.train.pretext.views.ViewClips`."""

from __future__ import annotations

from affectube.errors import DataError


def clip_dataset(stores, pcfg: dict, datasets=None, output: str = "float", **over):
    from affectube.clips.dataset import ClipDataset

    kwargs = dict(num_frames=pcfg["num_frames"], sample_stride=pcfg["sample_stride"], input_size=pcfg["input_size"],
                  mode="train", augment=pcfg["augment"], seed=pcfg["seed"], datasets=datasets, output=output,
                  order="video")  # the same batches whether the stores come per video or from clips shard indexes
    kwargs.update(over)
    base = ClipDataset(stores, **kwargs)
    if len(base) == 0:
        raise DataError(
            f"no clips to pretrain on: {len(stores)} stores given, datasets allowed: {datasets or 'all'}, "
            f"{len(base.skipped)} without frames (e.g. {base.skipped[:2]})"
        )
    return base


def view_dataset(stores, pcfg: dict, views: int = 2, datasets=None, output: str = "float"):
    """``(ViewClips, ClipDataset)``: ``views`` augmented clips of each video per sample."""
    from affectube.train.pretext.views import ViewClips

    base = clip_dataset(stores, pcfg, datasets, output)
    return ViewClips(base, views=views, seed=pcfg["seed"]), base
