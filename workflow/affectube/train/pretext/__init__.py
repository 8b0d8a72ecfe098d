"""Pretext tasks of the ``pretrain`` stage, chosen by ``pretrain.method``.

Every method trains the encoder of ``pretrain.model`` (VideoMAE's ViT or SVFAP's TPSBT) inside
one :class:`torch.nn.Module` whose ``encoder`` attribute is what ``encoder.safetensors`` keeps, so
fine-tuning starts from any of them alike. The training loop (:class:`affectube.train.pretrain.Pretrainer`:
checkpoint/resume, NaN guard, DDP, preemption) is shared; a method supplies

* ``build_model(spec, pcfg, dataset)``: the module (encoder + heads; EMA targets as frozen parameters, so
  they are in the checkpoint),
* ``build_dataset(stores, pcfg, grid, datasets, output)``: ``(dataset, ClipDataset)``; the dataset
  has ``to_device(batch, device)`` and ``clips(indices, device)``,
* ``loss(forward, model, batch, dataset, device, autocast)``: the step's loss (one call of
  ``forward``, the possibly DDP-wrapped model, so gradients are synchronised),
* ``after_step(model, done, total)``: e.g. the EMA update of a target network,
* ``figure`` (bool): the reconstruction figure applies.

Methods: ``masked`` (VideoMAE/SVFAP masked reconstruction, :mod:`.masked`), ``byol`` (:mod:`.byol`),
``dino`` (:mod:`.dino`), ``audio`` (LiRA-style audio targets, :mod:`.audio`).
"""

from __future__ import annotations

from affectube.errors import UserError


def get(name: str):
    """The pretext method object named ``name`` (``pretrain.method``)."""
    if name == "masked":
        from affectube.train.pretext.masked import MaskedReconstruction

        return MaskedReconstruction()
    if name == "byol":
        from affectube.train.pretext.byol import BYOLMethod

        return BYOLMethod()
    if name == "dino":
        from affectube.train.pretext.dino import DINOMethod

        return DINOMethod()
    if name == "audio":
        from affectube.train.pretext.audio import AudioMethod

        return AudioMethod()
    raise UserError(f"pretrain.method={name!r}: expected one of {METHODS}")


METHODS = ["masked", "byol", "dino", "audio"]
