"""Dask's overhead on one machine: ``propose --dask local --jobs N`` against joblib ``--jobs N``.

Both run the whole command (interpreter start, cluster start and stop included) on the same
split, alternating in each round so that the machine's load hits both alike; each run
rebuilds the artifact (``--force``) in its own work dir, and every Dask artifact is checked
equal to the joblib one (boxes and scores, image by image). Prints one row per run with the
load average and the CPU time of all its processes, then the fastest and median wall times,
Dask's overhead as a share of the Dask wall time, and the median CPU times.

Usage (results in BENCHMARKS.md, "Scaling out"):
    PYTHONPATH=. python3 benchmarks/dask_overhead.py ../shared/data/bccd --split test \
        --jobs 2 --rounds 3 --work /tmp/dask_overhead
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _boxes(path: Path) -> dict[str, dict[str, np.ndarray]]:
    from sppdet.io.item_store import ItemReader

    with ItemReader(path) as reader:
        return {i: reader.read(i)[0] for i in reader.ids()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--split", default="test")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--method", default="ss-fast")
    parser.add_argument("--work", default="/tmp/dask_overhead")
    args = parser.parse_args()
    work = Path(args.work)
    walls: dict[str, list[float]] = {"joblib": [], "dask": []}
    cpus: dict[str, list[float]] = {"joblib": [], "dask": []}
    reference = None
    for round_ in range(args.rounds):
        for engine in ("joblib", "dask") if round_ % 2 == 0 else ("dask", "joblib"):
            out = work / engine / "proposals.h5"
            command = [sys.executable, "-m", "sppdet", "-q", "-w", str(work / engine),
                       "propose", args.dataset, "--split", args.split, "--method",
                       args.method, "--jobs", str(args.jobs), "--out", str(out), "--force"]
            if engine == "dask":
                command += ["--dask", "local"]
            load = os.getloadavg()[0]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
            walls[engine].append(wall)
            cpus[engine].append(user + system)
            boxes = _boxes(out)
            if reference is None:
                reference = boxes
            same = list(boxes) == list(reference) and all(
                set(boxes[i]) == set(reference[i]) and all(
                    np.array_equal(boxes[i][k], reference[i][k]) for k in boxes[i])
                for i in boxes)
            print(f"round {round_} {engine:6s} wall {wall:6.1f} s  CPU {user:6.1f} s user "
                  f"{system:5.1f} s system  load before {load:5.1f}  "
                  f"same as the first run: {same}", flush=True)
            if not same:
                raise SystemExit("the artifacts differ")
    # The fastest run of each is the least disturbed by the machine's other work (on a shared
    # 2-core VM a whole run's speed varies by 20 %); the median is printed beside it.
    for name, pick in (("fastest", min), ("median", statistics.median)):
        joblib_wall, dask_wall = (pick(walls[k]) for k in ("joblib", "dask"))
        print(f"{name} wall: joblib {joblib_wall:.1f} s, dask {dask_wall:.1f} s; Dask's "
              f"overhead {dask_wall - joblib_wall:+.1f} s = "
              f"{100 * (dask_wall - joblib_wall) / dask_wall:+.1f} % of its wall time")
    # CPU time (every process of the run: client, scheduler, nannies, workers) moves less
    # with the machine's load than wall time does.
    joblib_cpu, dask_cpu = (statistics.median(cpus[k]) for k in ("joblib", "dask"))
    print(f"median CPU time: joblib {joblib_cpu:.1f} s, dask {dask_cpu:.1f} s "
          f"({100 * (dask_cpu - joblib_cpu) / dask_cpu:+.1f} %)")
    print(f"load now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
