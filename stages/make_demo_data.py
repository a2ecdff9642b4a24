"""Stage ``make-demo-data``: the synthetic VOC-layout dataset the demo and the tests use."""

from __future__ import annotations

import time
from pathlib import Path

from sppdet.data.synthetic.config import DemoDataConfig
from sppdet.data.synthetic.dataset import DemoDataSummary, make_demo_data
from sppdet.progress import get_logger

log = get_logger("make-demo-data")


def run(out: str | Path, config: DemoDataConfig, *, overwrite: bool = False,
        jobs: int = 1) -> tuple[DemoDataSummary, float]:
    """Write the dataset and return its summary and the seconds it took."""
    start = time.perf_counter()
    summary = make_demo_data(out, config, overwrite=overwrite, jobs=jobs)
    return summary, time.perf_counter() - start
