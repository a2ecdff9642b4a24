"""Start-up time of the command line, as ratios to ``python -c "import click"``.

Issue 13 asks ``sppdet --help`` and ``sppdet <command> --help`` to answer within 5x the
start-up of Python importing Click. Each case is a fresh process; the cases are run in turn,
``--repeats`` rounds, so that a change of machine load hits them all alike; the median
wall-clock time of each is reported with its ratio to the Click import. The cumulative import
time of ``sppdet.cli`` comes from ``python -X importtime``, which also lists any heavy library
(torch, torchvision, cv2, h5py, matplotlib, sklearn) that the import loaded.

Usage (any interpreter and ``sppdet`` script; ``--compare`` times another checkout's venv in the
same rounds, for a before/after):
    python benchmarks/cli_startup.py [--repeats 15] [--python PYTHON] [--sppdet SPPDET]
        [--compare OTHER_PYTHON]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
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


#: Commands run from here: ``python -c`` puts its working folder first on sys.path, and a
#: checkout's own sppdet/ folder there would shadow the interpreter's installed one.
NEUTRAL_DIR = tempfile.gettempdir()


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   cwd=NEUTRAL_DIR)
    return time.perf_counter() - start


def import_time(python: str) -> tuple[float, list[str]]:
    """Cumulative import time of sppdet.cli (s) and the heavy modules it imported."""
    result = subprocess.run([python, "-X", "importtime", "-c", "import sppdet.cli"],
                            capture_output=True, text=True, check=True, cwd=NEUTRAL_DIR)
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


def _sppdet(python: str, script: str | None) -> list[str]:
    script = script or str(Path(python).with_name("sppdet"))
    return [script] if os.access(script, os.X_OK) else [python, "-m", "sppdet.cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--sppdet", default=None,
                        help="the sppdet script (default: the one beside --python, else "
                             "PYTHON -m sppdet.cli)")
    parser.add_argument("--compare", default=None, metavar="PYTHON",
                        help="also time this interpreter (e.g. another checkout's venv, with "
                             "the sppdet script beside it), in the same rounds")
    args = parser.parse_args()
    targets = {args.python: cases(args.python, _sppdet(args.python, args.sppdet))}
    if args.compare:
        targets[args.compare] = cases(args.compare, _sppdet(args.compare, None))
    runs = [(python, name, command) for python, named in targets.items()
            for name, command in named.items()]
    for _, _, command in runs:  # warm the file cache once
        seconds(command)
    times: dict[tuple[str, str], list[float]] = {(p, n): [] for p, n, _ in runs}
    for _ in range(args.repeats):  # round-robin: load changes hit every case alike
        for python, name, command in runs:
            times[python, name].append(seconds(command))
    load = os.getloadavg()
    print(f"{args.repeats} rounds; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"{os.cpu_count()} CPUs")
    for python in targets:
        base = statistics.median(times[python, 'python -c "import click"'])
        print(f"\n{python}")
        print(f"{'case':<34} {'median s':>9} {'min s':>7} {'x click':>8}")
        for (target, name), values in times.items():
            if target == python:
                median = statistics.median(values)
                print(f"{name:<34} {median:9.3f} {min(values):7.3f} {median / base:8.1f}")
        total, heavy = import_time(python)
        print(f"python -X importtime: sppdet.cli cumulative {total:.3f} s; heavy modules "
              f"imported: {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()
