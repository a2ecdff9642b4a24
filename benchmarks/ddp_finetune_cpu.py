"""Would fine-tuning gain from DistributedDataParallel on this CPU? (fc6/fc7/fc8 step)

The fine-tuning step of ``sppdet finetune`` is fc6 -> fc7 -> fc8 forward and backward on a
mini-batch of SPP vectors, then SGD. This times that step (a :class:`FcHead`, batch 128,
random vectors of the width EfficientNet-Lite0's SPP gives, 5,600) two ways on the same cores:

- one process with every core's thread (how ``sppdet finetune`` runs);
- ``torchrun --nproc-per-node=N`` ranks with one thread each, DistributedDataParallel over
  gloo, each rank 128 / N of the batch (the same global batch); DDP adds an all-reduce of
  every gradient (fc6 + fc7 + fc8: 4 bytes per weight) per step.

Usage (results in BENCHMARKS.md, "Scaling out"):
    PYTHONPATH=. python3 benchmarks/ddp_finetune_cpu.py --hidden 1024
    OMP_NUM_THREADS=1 PYTHONPATH=. python3 -m torch.distributed.run --standalone \
        --nproc-per-node=2 benchmarks/ddp_finetune_cpu.py --hidden 1024
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from sppdet.features.fc_head import FcHead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--in-dim", type=int, default=5600)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=30)
    args = parser.parse_args()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    head = FcHead(args.in_dim, 21, hidden=args.hidden, seed=0).train()
    model: torch.nn.Module = head
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        model = torch.nn.parallel.DistributedDataParallel(head)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    generator = torch.Generator().manual_seed(rank)
    per_rank = args.batch // world
    x = torch.randn(per_rank, args.in_dim, generator=generator)
    y = torch.randint(0, 21, (per_rank,), generator=generator)
    times = []
    for _ in range(args.iterations):
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    if rank == 0:
        warm = times[5:]
        params = sum(p.numel() for p in head.parameters())
        print(f"world {world}, threads per process {torch.get_num_threads()}, hidden "
              f"{args.hidden}, batch {args.batch} ({per_rank} per rank), {params / 1e6:.1f} M "
              f"parameters: median step {1000 * statistics.median(warm):.0f} ms "
              f"(min {1000 * min(warm):.0f}); load {os.getloadavg()[0]:.1f}", flush=True)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
