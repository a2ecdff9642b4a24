"""The machine a benchmark ran on, for the header of its results: CPU model and load."""

from __future__ import annotations

import os
import platform
import subprocess


def machine_name() -> str:
    """The CPU model (``lscpu``), else what :mod:`platform` knows."""
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in output.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``"1.52 1.31 0.98"``."""
    try:
        with open("/proc/loadavg") as handle:
            return " ".join(handle.read().split()[:3])
    except OSError:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
