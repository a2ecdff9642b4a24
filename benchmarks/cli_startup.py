"""Start-up time of the command line, as ratios to ``python -c "import click"``.

Issue 13 asks ``sppdet --help`` and ``sppdet <command> --help`` to answer within 5x the
start-up of Python importing Click. Each case is a fresh process; the cases are run in turn,
``--repeats`` rounds, so that a change of machine load hits them all alike; the median
wall-clock time of each is reported with its ratio to the Click import. The cumulative import
time of ``sppdet.cli`` comes from ``python -X importtime``, which also lists any heavy library
(torch, torchvision, cv2, h5py, matplotlib, sklearn) that the import loaded.

Usage (any interpreter and ``sppdet`` script: e.g. another checkout's, for a before/after):
    python benchmarks/cli_startup.py [--repeats 15] [--python PYTHON] [--sppdet SPPDET]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("torch", "torchvision", "cv2", "h5py", "matplotlib", "sklearn")


def cases(python: str, sppdet: list[str]) -> dict[str, list[str]]:
    return {
        'python -c "import click"': [python, "-c", "import click"],
        'python -c "import sppdet.cli"': [python, "-c", "import sppdet.cli"],
        "sppdet --help": [*sppdet, "--help"],
        "sppdet detect --help": [*sppdet, "detect", "--help"],
        "sppdet pipeline --help": [*sppdet, "pipeline", "--help"],
    }


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def import_time(python: str) -> tuple[float, list[str]]:
    """Cumulative import time of sppdet.cli (s) and the heavy modules it imported."""
    result = subprocess.run([python, "-X", "importtime", "-c", "import sppdet.cli"],
                            capture_output=True, text=True, check=True)
    total, heavy = 0.0, set()
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if not match:
            continue
        module = match.group(3)
        if module == "sppdet.cli":
            total = int(match.group(1)) / 1e6
        if module.split(".")[0] in HEAVY:
            heavy.add(module.split(".")[0])
    return total, sorted(heavy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--sppdet", default=None,
                        help="the sppdet script (default: the one beside --python, else "
                             "PYTHON -m sppdet.cli)")
    args = parser.parse_args()
    script = args.sppdet or str(Path(args.python).with_name("sppdet"))
    sppdet = [script] if os.access(script, os.X_OK) else [args.python, "-m", "sppdet.cli"]
    if shutil.which(sppdet[0]) is None and not Path(sppdet[0]).exists():
        sys.exit(f"no sppdet at {sppdet[0]}")
    runs = cases(args.python, sppdet)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for name, command in runs.items():  # warm the file cache once
        seconds(command)
    for _ in range(args.repeats):
        for name, command in runs.items():
            times[name].append(seconds(command))
    base = statistics.median(times['python -c "import click"'])
    load = os.getloadavg()
    print(f"{args.python}; {args.repeats} rounds; load average {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} CPUs")
    print(f"{'case':<34} {'median s':>9} {'min s':>7} {'x click':>8}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<34} {median:9.3f} {min(values):7.3f} {median / base:8.1f}")
    total, heavy = import_time(args.python)
    print(f"python -X importtime: sppdet.cli cumulative {total:.3f} s; heavy modules "
          f"imported: {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()
