"""Smoke test of benchmarks/cache_codecs.py (quick mode) and its helpers (no timings checked)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cache_codecs.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("cache_codecs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_quick_run_prints_a_row_per_codec_and_dtype(bench, capsys, tmp_path):
    threads = torch.get_num_threads()
    try:
        rows = bench.main(["--quick", "--scales", "64", "--windows", "20",
                           "--markdown", str(tmp_path / "report.md")])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    table = [line for line in lines if line.startswith("| ")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header == ["codec", "dtype", *bench.COLUMNS]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table[1:]]
    try:
        import hdf5plugin  # noqa: F401
        codecs = [c.label for c in bench.CODECS]
    except ImportError:
        codecs = [c.label for c in bench.CODECS if not c.plugin]
    assert [(c[0], c[1]) for c in cells] == [(codec, dtype) for dtype in bench.DTYPES
                                             for codec in codecs]
    for row in cells:
        assert len(row) == 2 + len(bench.COLUMNS)
        values = dict(zip(bench.COLUMNS, map(float, row[2:])))
        # sizes are never zero; a time printed to 0.1 ms can round to 0.0 on a quick run
        assert values["MB / image"] > 0 and values["ratio"] > 0, row
        assert all(value >= 0 for value in values.values()), row
    assert lines[-1] == "check: ok (every codec returned the written maps bit for bit)"
    assert "1 VOC2007 photos" in out or "synthetic" in out
    assert (tmp_path / "report.md").read_text().count("\n| ") == len(table)
    # the artifact of an uncompressed float32 cache is the maps plus a few kB of HDF5 layout
    none32 = next(r for r in rows if (r.codec, r.dtype) == ("none", "float32"))
    assert none32.values["ratio"] < 1.0
    assert all(r.identical for r in rows)


def test_uncompressed_size_per_image_matches_the_map_shapes(bench, tmp_path):
    from sppdet.backbones import build_backbone
    from sppdet.ops.scales import resized_size

    backbone = build_backbone("zf5").eval()
    image = np.random.default_rng(0).integers(0, 255, (375, 500, 3), dtype=np.uint8)
    images = [("a", image)]
    _, maps, centers = bench.time_compute(backbone, images, (64,))
    windows = [bench.random_windows(np.random.default_rng(1), 5, 375, 500)]
    row, method = bench.measure_codec(bench.CODECS[0], "float16", tmp_path / "c", backbone,
                                      (64,), images, maps, centers, windows, 1, "fadvise")
    h, w = backbone.output_size(*resized_size(375, 500, 64))
    raw = 256 * h * w * 2
    assert maps[0]["s64"].shape == (256, h, w)
    assert row.values["ratio"] == pytest.approx(raw / (row.values["MB / image"] * 1e6))
    assert 0 < raw / 1e6 < row.values["MB / image"] < raw / 1e6 + 0.05  # HDF5 overhead only
    assert method == "fadvise" and row.identical
    assert not (tmp_path / "c").exists()  # the test cache is removed


def test_byte_entropy_ratio_by_hand(bench):
    # constant values: every byte plane has entropy 0 except where forced; use two planes
    # with known entropies: uint16 values 0..255 uniformly -> low byte 8 bits, high byte 0
    low = np.arange(256, dtype=np.uint16).view(np.float16)
    assert bench.byte_entropy_ratio([low]) == pytest.approx(16 / 8)
    # both bytes uniform over 256 values -> 16 bits, ratio 1
    both = (np.arange(65536, dtype=np.uint32).astype(np.uint16)).view(np.float16)
    assert bench.byte_entropy_ratio([both]) == pytest.approx(1.0)


def test_random_windows_lie_inside_the_image(bench):
    boxes = bench.random_windows(np.random.default_rng(3), 200, 375, 500)
    assert boxes.shape == (200, 4) and boxes.dtype == np.float32
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 500 + 1e-3).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= 375 + 1e-3).all()
    assert (boxes[:, 2:] - boxes[:, :2] >= 10 - 1e-3).all()


def test_evict_drops_the_file_pages_or_falls_back(bench, tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(os.urandom(1 << 16))
    assert bench.evict(path, "fadvise") == "fadvise"
    assert bench.evict(path, "none") == "none"
    assert bench.evict(path, "drop-caches") in ("drop-caches", "fadvise")


def test_missing_images_are_made_synthetic(bench, tmp_path):
    images, label = bench.load_images(str(tmp_path / "absent"), 2)
    assert [i for i, _ in images] == ["synthetic0", "synthetic1"]
    assert all(image.shape == (375, 500, 3) and image.dtype == np.uint8 for _, image in images)
    assert "2 synthetic" in label


def test_bad_arguments_are_refused(bench):
    for argv in (["--images", "0"], ["--scales", "8"], ["--codecs", "brotli"],
                 ["--repeats", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_args(argv)
    quick = bench.parse_args(["--quick"])
    assert (quick.images, quick.scales, quick.repeats) == (1, [bench.QUICK_SCALE], 1)
