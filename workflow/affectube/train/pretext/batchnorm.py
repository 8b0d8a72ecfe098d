"""BatchNorm over the global batch (all ranks) for the heads of BYOL and DINO.

BYOL normalises its projector/predictor over the global batch (its TPU implementation; SyncBatchNorm in the
PyTorch ports) and DINO's ``use_bn`` head uses ``SyncBatchNorm``. ``torch.nn.SyncBatchNorm`` runs on CUDA
only, so :class:`GlobalBatchNorm1d` does it here on any device: in training the mean and the (biased)
variance are sums over every rank's rows through ``torch.distributed.nn.functional.all_reduce`` (which
back-propagates: its backward all-reduces the gradients, so with DDP's gradient averaging the step equals
that of one process on the whole batch), two passes (mean, then the squared deviations). One process:
the same two passes without the collectives. Evaluation uses the running statistics as ``BatchNorm1d``
does, whose parameter and buffer names it keeps (checkpoints and ``load_state_dict`` are unchanged).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn


def _sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(x, op=dist.ReduceOp.SUM)
    return x


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` on ``[N, C]`` whose training statistics are those of the batch of all ranks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        if x.dim() != 2:
            raise ValueError(f"GlobalBatchNorm1d expects [N, C], got {tuple(x.shape)}")
        xf = x.float()
        count = _sum_over_ranks(torch.tensor([float(x.shape[0])], device=x.device))
        mean = _sum_over_ranks(xf.sum(0)) / count
        var = _sum_over_ranks((xf - mean).pow(2).sum(0)) / count  # biased, as BatchNorm normalises
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        if self.track_running_stats:
            with torch.no_grad():
                n = float(count)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1.0, 1.0)), alpha=m)
                self.num_batches_tracked.add_(1)
        return y.to(x.dtype)
