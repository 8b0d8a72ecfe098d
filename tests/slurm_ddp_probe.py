"""Run under torchrun (by tests/test_slurm_cluster.py): one process group on gloo, three DDP steps.

``python -m slurm_ddp_probe OUT_DIR`` writes ``OUT_DIR/rank{R}.json`` with what the process saw
(rank, world size, where the ranks came from, the all-reduced mean of rank+1) and the
weights after three DDP steps in which rank R trains on batches drawn with seed R.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import torch

from affectube.train import distributed


def batches(rank: int, steps: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(rank)
    return [torch.randn(8, 4, generator=g) for _ in range(steps)]


def model() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 1)


def main(out_dir: str) -> int:
    env, device = distributed.init()
    mean = float(distributed.all_reduce_mean(torch.tensor([float(env.rank + 1)])))
    net = model()
    ddp = torch.nn.parallel.DistributedDataParallel(net) if env.distributed else net
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    for x in batches(env.rank):
        opt.zero_grad()
        ddp(x).pow(2).mean().backward()
        opt.step()
    result = {
        "rank": env.rank,
        "world_size": env.world_size,
        "local_rank": env.local_rank,
        "source": env.source,
        "backend": torch.distributed.get_backend() if env.distributed else None,
        "mean_rank_plus_1": mean,
        "weight": net.weight.detach().flatten().tolist(),
        "bias": net.bias.detach().flatten().tolist(),
        "host": socket.gethostname(),
        "master_addr": os.environ.get("MASTER_ADDR"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_procid": os.environ.get("SLURM_PROCID"),
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / f"rank{env.rank}.json").write_text(json.dumps(result))
    distributed.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
