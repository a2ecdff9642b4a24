"""Smoke test of benchmarks/spp_vs_rcnn.py (quick mode) and its FLOP counts (no timings)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch
from torch import nn

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "spp_vs_rcnn.py"
LAST_LINE = re.compile(
    r"^speedup_1scale=(\d+\.\d) speedup_5scale=(\d+\.\d) "
    r"conv_only_1scale=(\d+\.\d) conv_only_5scale=(\d+\.\d)$"
)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("spp_vs_rcnn", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("extra, pooled", [([], "each distinct footprint once"),
                                            (["--no-distinct"], "every window")])
def test_quick_run_prints_every_row_and_a_parsable_last_line(bench, capsys, extra, pooled):
    threads = torch.get_num_threads()
    try:
        result = bench.main(["--quick", "--threads", "1", "--allocator", "default", *extra])
    finally:
        torch.set_num_threads(threads)
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("windows:") and pooled in line for line in lines)
    # with distinct footprints, the same rounds also time every window, for a side-by-side ratio
    side_by_side = [line for line in lines if line.startswith("the same rounds with every")]
    assert len(side_by_side) == (0 if extra else 1)
    table = [line for line in lines if line.startswith("| ")]
    labels = [line[2:].split(" | ")[0].rstrip() for line in table[1:]]
    assert labels == list(bench.ROW_LABELS)
    assert all(len(line.split("|")) == 6 for line in table)  # step + 3 columns
    assert any(line.startswith("check: ok") for line in lines)
    match = LAST_LINE.match(lines[-1])
    assert match is not None, lines[-1]
    keys = ("speedup_1scale", "speedup_5scale", "conv_only_1scale", "conv_only_5scale")
    for key, text in zip(keys, match.groups()):
        assert float(text) == pytest.approx(result[key], abs=0.051)
        assert result[key] > 0


def test_conv_gflop_of_zf5_on_a_224_window_by_hand(bench):
    from sppdet.backbones import build_backbone

    features = build_backbone("zf5").features
    # 224 -> conv1 112 -> pool1 57 -> conv2 29 -> pool2 15 -> conv3..5 15 (ceil-mode pools).
    by_hand = 2 * (96 * 112 * 112 * 3 * 49 + 256 * 29 * 29 * 96 * 25
                   + 384 * 15 * 15 * 256 * 9 + 384 * 15 * 15 * 384 * 9
                   + 256 * 15 * 15 * 384 * 9)
    assert bench.conv_gflop(features, 1, 224, 224) == pytest.approx(by_hand / 1e9, rel=1e-12)
    assert bench.conv_gflop(features, 3, 224, 224) == pytest.approx(3 * by_hand / 1e9,
                                                                    rel=1e-12)


def test_conv_gflop_counts_grouped_and_strided_convs(bench):
    trunk = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), nn.ReLU(),
                          nn.MaxPool2d(2))
    # Output 6 x 5 x 5; each output sums (4 / 2) * 3 * 3 = 18 products.
    expected = 2 * 6 * 5 * 5 * 18 / 1e9
    assert bench.conv_gflop(trunk, 1, 10, 9, in_channels=4) == pytest.approx(expected)


def test_fc_gflop_matches_the_reference_figure(bench):
    # REFERENCE 12: fc6 + fc7 on 2,000 SPP vectors of 12,800 values is about 277 GFLOPs.
    assert bench.fc_gflop(2000, 12800) == pytest.approx(2 * 2000 * (12800 + 4096) * 4096 / 1e9)
    assert round(bench.fc_gflop(2000, 12800)) == 277


def test_windows_top_up_and_lie_inside_the_image(bench):
    import numpy as np

    image = np.zeros((375, 500, 3), dtype=np.uint8)
    boxes, label = bench.make_windows(image, 50, "random", seed=3)
    assert boxes.shape == (50, 4) and "random" in label
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 500 + 1e-9).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= 375 + 1e-9).all()
    assert (boxes[:, 2] - boxes[:, 0] >= 10 - 1e-9).all()
    again, _ = bench.make_windows(image, 50, "random", seed=3)
    np.testing.assert_array_equal(boxes, again)


def test_bad_arguments_are_refused(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--windows", "0"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--warmup", "-1"])
