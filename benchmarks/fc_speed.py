"""Time the fc layers (fc6 + fc7) of one image's windows: float32 vs truncated SVD vs int8.

The detector's fc cost per image (REFERENCE section 12): the SPP vectors of ~2,000 windows go
through fc6 and fc7 (``FcHead.features(..., "fc7")``, in batches of 1,024 like the detector).
The three heads are timed in turn (float32, svd, int8, float32, ...) so a change in machine
load hits them alike; the medians are reported with each head's difference from float32.

The head is a trained ``fc.pt`` (``--model DIR``) or, without one, a paper-size head
(12,800 -> 4,096 -> 4,096, or ``--in-dim``/``--hidden``) with random He-initialised
weights (whose flat singular spectrum is the worst case
for the SVD: report a trained head's ranks for real figures).

Usage:
    PYTHONPATH=. python3 benchmarks/fc_speed.py [--model WORK/models/NAME] [--windows 2000]
        [--svd-energy 0.99] [--svd-rank R] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from sppdet.features.fast_fc import fast_fc_head
from sppdet.features.fc_head import FcHead


def fc7_features(head: FcHead, pooled: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([head.features(pooled[i:i + batch], "fc7")
                          for i in range(0, pooled.shape[0], batch)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model dir holding fc.pt")
    parser.add_argument("--windows", type=int, default=2000)
    parser.add_argument("--svd-energy", type=float, default=0.99)
    parser.add_argument("--svd-rank", type=int, default=None,
                        help="a fixed rank for fc6 and fc7 instead of the energy rule")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--in-dim", type=int, default=12800,
                        help="without --model: SPP vector length (12800 = ZF-5, 5600 = "
                             "EfficientNet-Lite0)")
    parser.add_argument("--hidden", type=int, default=4096, help="without --model: fc width")
    args = parser.parse_args()

    if args.model is not None:
        head, _ = FcHead.load(args.model / "fc.pt")
        source = str(args.model / "fc.pt")
    else:
        head = FcHead(args.in_dim, 20, hidden=args.hidden, seed=0).eval()
        torch.nn.init.kaiming_normal_(head.fc6.weight)
        torch.nn.init.kaiming_normal_(head.fc7.weight)
        source = f"random head {args.in_dim}-{args.hidden}-{args.hidden}"
    head = head.eval()
    generator = torch.Generator().manual_seed(0)
    # post-ReLU SPP vectors: half zeros, like conv5 maps
    pooled = torch.relu(torch.randn(args.windows, head.in_dim, generator=generator))
    heads = {"float32": (head, "float32")}
    heads["svd"] = fast_fc_head(head, "svd", energy=args.svd_energy, rank=args.svd_rank)
    heads["int8"] = fast_fc_head(head, "int8")
    reference = fc7_features(head, pooled)
    errors = {}
    for name, (h, _) in heads.items():
        out = fc7_features(h, pooled)
        errors[name] = float((out - reference).norm() / reference.norm())

    times: dict[str, list[float]] = {name: [] for name in heads}
    for name, (h, _) in heads.items():
        fc7_features(h, pooled)  # warm-up
    for _ in range(args.repeats):
        for name, (h, _) in heads.items():
            start = time.perf_counter()
            fc7_features(h, pooled)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {source}, "
          f"{args.windows} windows, load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    for name, (_, text) in heads.items():
        print(f"{name:8s} {medians[name] * 1e3:8.1f} ms  "
              f"({medians[name] / medians['float32']:.2f}x float32; fc7 relative error "
              f"{errors[name]:.4f})  {text}")


if __name__ == "__main__":
    main()
