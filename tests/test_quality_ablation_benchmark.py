"""benchmarks/quality_ablation.py: the table it prints (the detection runs are the CLI's)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality_ablation.py"


def _module():
    spec = importlib.util.spec_from_file_location("quality_ablation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_averages_classes_over_seeds_and_lists_each_seed():
    bench = _module()
    results = {"paper": {"s0": {"a": 80.0, "b": 60.0}, "s1": {"a": 90.0, "b": 70.0}},
               "soft": {"s0": {"a": 50.0, "b": 50.0}}}
    lines = bench.format_table(results).splitlines()
    assert lines[0] == "| test-time setting | a | b | mAP (mean) | mAP per seed |"
    # a: (80 + 90) / 2, b: (60 + 70) / 2; seeds' mAPs 70 and 80, their mean 75
    assert lines[2] == "| hard NMS 0.3 (paper) | 85.0 | 65.0 | **75.0** | 70.0 / 80.0 |"
    assert lines[3] == "| Soft-NMS Gaussian 0.5 | 50.0 | 50.0 | **50.0** | 50.0 |"


def test_every_row_has_options_and_a_label():
    bench = _module()
    assert set(bench.ROWS) == set(bench.LABELS)
    assert bench.ROWS["tuned"] == []  # the model's own test settings: no NMS option
