"""Does featurizing the mining pass image by image on Dask workers pay? (train-svm)

train-svm's mining pass computes every image's candidate negatives' features (SPP pooling +
fc6/fc7) and feeds them to each class's hard-negative miner. Three ways to spread it:

- ``joblib``: ``--jobs N`` splits the classes into N groups, each group's process
  featurizing every image itself (today's path);
- ``dask-classes``: the same groups as Dask tasks;
- ``dask-images``: Dask workers featurize the images (each image once), the miners of every
  class run in this process and take the images in order.

All runs must give the same SVMs (checked); the script prints the wall time of each and the
features shipped per image. Input: a split made by ``benchmarks/train_svm_speed.py make``.

Usage (results in BENCHMARKS.md, "Scaling out"):
    PYTHONPATH=. python3 benchmarks/train_svm_speed.py make /tmp/svm_small --images 24
    PYTHONPATH=. python3 benchmarks/dask_svm_mining.py /tmp/svm_small --jobs 2 --rounds 1
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dir")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--ways", nargs="+",
                        default=["one-process", "joblib", "dask-classes", "dask-images"])
    args = parser.parse_args()

    from sppdet.parallel.dask_cluster import connect
    from sppdet.progress import configure_logging
    from sppdet.stages import train_svm
    from sppdet.training.svm.weights import SVMWeights

    configure_logging(quiet=True)
    root = Path(args.dir)
    executor = connect("local", jobs=args.jobs) if any(
        w.startswith("dask") for w in args.ways) else None
    print(f"load before: {os.getloadavg()}; {executor.description if executor else ''}")
    weights: dict[str, SVMWeights] = {}
    for round_ in range(args.rounds):
        for way in args.ways:
            out = root / "runs" / way / "svm.npz"
            kwargs = {"jobs": 1}
            if way == "joblib":
                kwargs = {"jobs": args.jobs}
            elif way.startswith("dask"):
                kwargs = {"jobs": args.jobs, "executor": executor,
                          "mining": way.split("-")[1]}
            start = time.perf_counter()
            summary = train_svm.run(root / "data", "trainval", out,
                                    proposals=root / "proposals.h5",
                                    features=root / "features.h5",
                                    fc=root / "models" / "bench" / "fc.pt", device="cpu",
                                    force=True, **kwargs)
            wall = time.perf_counter() - start
            weights[way] = SVMWeights.load(out)
            print(f"round {round_} {way:13s} wall {wall:7.1f} s, mining pass "
                  f"{summary.mining_seconds:7.1f} s, featurized windows "
                  f"{summary.featurized_windows}, load {os.getloadavg()[0]:.1f}", flush=True)
    first = next(iter(weights.values()))
    for way, w in weights.items():
        same = np.array_equal(w.weights, first.weights) and np.array_equal(w.bias, first.bias)
        print(f"{way}: SVMs equal to {next(iter(weights))}: {same}")
    if executor is not None:
        executor.close()


if __name__ == "__main__":
    main()
