"""What Dask's ``MALLOC_TRIM_THRESHOLD_=65536`` costs selective search, in CPU time.

Dask's nannies start workers with that glibc setting (``distributed.nanny.pre-spawn-environ``)
so that freed memory goes back to the OS at once. This runs ``ss-fast`` on the same images in a
fresh process with glibc's default and with Dask's value, alternating, one thread each, and
prints the user and system CPU time and the minor page faults of the loop (the first image is
a warm-up). CPU time moves far less with the machine's load than wall time does, so the ratio
holds on a busy machine. ``--dask local`` starts its workers without the setting
(:mod:`sppdet.parallel.dask_cluster`).

Usage (results in BENCHMARKS.md, "Scaling out"):
    PYTHONPATH=. python3 benchmarks/malloc_trim_cost.py ../shared/data/bccd --split test \
        --images 8 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = """
import json, resource, sys
from sppdet.data.voc import VOCDataset
from sppdet.proposals import params_from_dict
from sppdet.stages.propose import _propose_one
data = VOCDataset(sys.argv[1], sys.argv[2])
ids = data.image_ids[:int(sys.argv[3]) + 1]
params = params_from_dict("ss-fast", {})
_propose_one(str(data[ids[0]].image_path), "ss-fast", params)  # warm-up
before = resource.getrusage(resource.RUSAGE_SELF)
for image_id in ids[1:]:
    _propose_one(str(data[image_id].image_path), "ss-fast", params)
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"user": after.ru_utime - before.ru_utime,
                  "system": after.ru_stime - before.ru_stime,
                  "faults": after.ru_minflt - before.ru_minflt}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--split", default="test")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    settings = {"glibc default": None, "Dask's 65536": "65536"}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in settings}
    for round_ in range(args.rounds):
        names = list(settings) if round_ % 2 == 0 else list(settings)[::-1]
        for name in names:
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            env.pop("MALLOC_TRIM_THRESHOLD_", None)
            if settings[name] is not None:
                env["MALLOC_TRIM_THRESHOLD_"] = settings[name]
            out = subprocess.run([sys.executable, "-c", CHILD, args.dataset, args.split,
                                  str(args.images)], env=env, check=True, text=True,
                                 capture_output=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            results[name].append(row)
            print(f"round {round_} {name:14s} user {row['user']:6.2f} s  system "
                  f"{row['system']:5.2f} s  minor faults {row['faults']:9d}  "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    base = None
    for name, rows in results.items():
        cpu = statistics.median(r["user"] + r["system"] for r in rows)
        system = statistics.median(r["system"] for r in rows)
        base = cpu if base is None else base
        print(f"{name:14s} median CPU {cpu:6.2f} s ({cpu / args.images:.2f} s per image; "
              f"system {system:.2f} s): {cpu / base:.2f}x the glibc default")


if __name__ == "__main__":
    main()
