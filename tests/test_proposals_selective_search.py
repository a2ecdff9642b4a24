"""Selective search: box conversion, determinism, the max_boxes rule, max_size mapping."""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import sppdet
from tests.proposals_images import RECTANGLE_XYXY, blocks_image, rectangle_image
from sppdet.ops.boxes import box_iou, xywh_to_xyxy
from sppdet.errors import ConfigError
from sppdet.proposals import ProposalError, SelectiveSearchParams, selective_search
from sppdet.proposals.selective_search import (
    colour_image,
    hierarchy_rank_order,
    similarity_strategy,
)

ALL_BOXES = SelectiveSearchParams(max_boxes=None, min_size=0)


def test_rectangle_is_found_exactly():
    # Pixels 50..119 x 30..79 -> OpenCV (x, y, w, h) = (50, 30, 70, 50) -> [50, 30, 120, 80].
    for mode in ("fast", "quality"):
        result = selective_search(rectangle_image(noise=True), mode=mode)
        assert result.scores is None
        assert result.boxes.dtype == np.float32 and result.boxes.shape[1] == 4
        assert np.any(np.all(result.boxes == RECTANGLE_XYXY, axis=1)), mode


def _opencv_fast_mode_in_one_run(image_rgb: np.ndarray) -> np.ndarray:
    """The paper's fast mode as a single OpenCV run (every image, scale and strategy added to
    one SelectiveSearchSegmentation): the same set of boxes by another path."""
    segmentation = cv2.ximgproc.segmentation
    bgr = np.ascontiguousarray(image_rgb[:, :, ::-1])
    search = segmentation.createSelectiveSearchSegmentation()
    search.addImage(cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV_FULL))
    search.addImage(cv2.cvtColor(bgr, cv2.COLOR_BGR2Lab))
    for k in (50, 100):
        search.addGraphSegmentation(segmentation.createGraphSegmentation(0.8, k, k))
    search.addStrategy(segmentation.createSelectiveSearchSegmentationStrategyMultiple(
        segmentation.createSelectiveSearchSegmentationStrategyColor(),
        segmentation.createSelectiveSearchSegmentationStrategyTexture(),
        segmentation.createSelectiveSearchSegmentationStrategySize(),
        segmentation.createSelectiveSearchSegmentationStrategyFill()))
    search.addStrategy(segmentation.createSelectiveSearchSegmentationStrategyMultiple(
        segmentation.createSelectiveSearchSegmentationStrategyTexture(),
        segmentation.createSelectiveSearchSegmentationStrategySize(),
        segmentation.createSelectiveSearchSegmentationStrategyFill()))
    return xywh_to_xyxy(search.process())


def test_boxes_equal_the_fast_mode_run_by_opencv_in_one_go():
    image = blocks_image(seed=3)
    opencv_boxes = _opencv_fast_mode_in_one_run(image)
    ours = selective_search(image, ALL_BOXES).boxes
    # Same set of boxes (OpenCV already removes duplicates), converted x2 = x + w.
    assert ours.shape == opencv_boxes.shape
    np.testing.assert_array_equal(np.unique(ours, axis=0), np.unique(opencv_boxes, axis=0))
    assert ours.min() >= 0 and ours[:, 2].max() <= 160 and ours[:, 3].max() <= 120
    # OpenCV's own fast mode (k = 150, 300, 450, HSV hue over 0-179) finds fewer boxes.
    segmenter = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    segmenter.setBaseImage(np.ascontiguousarray(image[:, :, ::-1]))
    segmenter.switchToSelectiveSearchFast()
    assert segmenter.process().shape[0] < ours.shape[0]


def test_same_boxes_same_order_across_runs():
    image = blocks_image(seed=1)
    first = selective_search(image, ALL_BOXES).boxes
    second = selective_search(image, ALL_BOXES).boxes
    np.testing.assert_array_equal(first, second)


def test_order_ignores_the_c_library_rand_state():
    # OpenCV ranks its output with rand(); the order here must not depend on it.
    srand = ctypes.CDLL(None).srand
    srand.argtypes = [ctypes.c_uint]
    image = blocks_image(seed=1)
    srand(7)
    first = selective_search(image, ALL_BOXES).boxes
    srand(12345)
    second = selective_search(image, ALL_BOXES).boxes
    np.testing.assert_array_equal(first, second)


def test_seed_controls_the_order():
    # Proves the determinism tests can fail: another seed gives the same set in another order.
    image = blocks_image(seed=1)
    seed0 = selective_search(image, ALL_BOXES).boxes
    seed1 = selective_search(image, SelectiveSearchParams(max_boxes=None, min_size=0,
                                                          seed=1)).boxes
    np.testing.assert_array_equal(np.unique(seed0, axis=0), np.unique(seed1, axis=0))
    assert not np.array_equal(seed0, seed1)


_CHILD_SCRIPT = """
import hashlib, sys
sys.path[:0] = sys.argv[1:3]
from tests.proposals_images import blocks_image
from sppdet.proposals import SelectiveSearchParams, selective_search
params = SelectiveSearchParams(max_boxes=None, min_size=0)
for seed in (1, 2):
    boxes = selective_search(blocks_image(seed=seed), params).boxes
    print(boxes.shape[0], hashlib.sha256(boxes.tobytes()).hexdigest())
"""


def test_same_boxes_same_order_across_processes():
    # A fresh interpreter has its own C library rand() state, untouched by this process.
    project_root = str(Path(sppdet.__file__).resolve().parents[1])
    tests_dir = str(Path(__file__).resolve().parent)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD_SCRIPT, project_root, tests_dir],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert child.returncode == 0, child.stderr
    here = []
    for seed in (1, 2):
        boxes = selective_search(blocks_image(seed=seed), ALL_BOXES).boxes
        here.append(f"{boxes.shape[0]} {hashlib.sha256(boxes.tobytes()).hexdigest()}")
    assert child.stdout.split("\n")[:2] == here


def _reference_hierarchy_rank(groups: list[np.ndarray], seed: int) -> list[tuple]:
    """Slow version: per group, sort by (-area, x1, y1, x2, y2); draw one uniform number per
    box in that order; priority = position * number; pool with a stable sort on priority."""
    rng = np.random.default_rng(seed)
    entries = []
    for group in groups:
        rows = sorted((tuple(float(v) for v in box) for box in group),
                      key=lambda b: (-(b[2] - b[0]) * (b[3] - b[1]), b[0], b[1], b[2], b[3]))
        draws = rng.random(len(rows))
        entries.extend(((position + 1) * draws[position], row)
                       for position, row in enumerate(rows))
    return [row for _, row in sorted(entries, key=lambda entry: entry[0])]


def test_hierarchy_rank_order_matches_reference():
    hand = [np.array([[0, 0, 10, 10], [0, 0, 100, 100], [5, 5, 6, 6]]),
            np.array([[0, 0, 100, 100], [2, 2, 4, 4]])]
    boxes, origin = hierarchy_rank_order(hand, seed=0)
    assert [tuple(b) for b in boxes.tolist()] == _reference_hierarchy_rank(hand, 0)
    assert sorted(origin.tolist()) == [0, 0, 0, 1, 1]
    rng = np.random.default_rng(0)
    for seed in range(20):
        groups = []
        for _ in range(int(rng.integers(1, 5))):
            xy = rng.integers(0, 50, size=(int(rng.integers(0, 40)), 2))
            wh = rng.integers(1, 50, size=xy.shape)
            groups.append(np.concatenate([xy, xy + wh], axis=1))
        boxes, _ = hierarchy_rank_order(groups, seed)
        assert [tuple(b) for b in boxes.tolist()] == _reference_hierarchy_rank(groups, seed)
    empty, origin = hierarchy_rank_order([], seed=0)
    assert empty.shape == (0, 4) and origin.shape == (0,)


def test_max_boxes_keeps_large_boxes_and_is_a_prefix():
    image = blocks_image(seed=4)
    full = selective_search(image, ALL_BOXES).boxes
    cap = 50
    assert full.shape[0] > 4 * cap
    capped = selective_search(image, SelectiveSearchParams(max_boxes=cap, min_size=0)).boxes
    np.testing.assert_array_equal(capped, full[:cap])
    areas = (full[:, 2] - full[:, 0]) * (full[:, 3] - full[:, 1])
    # The whole image (position 1 of every grouping) survives, and the prefix leans to large
    # boxes without leaving the small ones out.
    assert np.any(np.all(capped == np.array([0, 0, 160, 120], np.float32), axis=1))
    assert np.median(areas[:cap]) > 2 * np.median(areas)
    assert areas[:cap].min() < np.percentile(areas, 25)
    # A cap on OpenCV's own order (low hierarchy levels first) keeps mostly small boxes.
    srand = ctypes.CDLL(None).srand
    srand.argtypes = [ctypes.c_uint]
    srand(0)
    opencv_first = _opencv_fast_mode_in_one_run(image)[:cap]
    opencv_areas = ((opencv_first[:, 2] - opencv_first[:, 0])
                    * (opencv_first[:, 3] - opencv_first[:, 1]))
    assert np.median(opencv_areas) < np.median(areas[:cap])


def test_max_size_maps_boxes_back_to_original_pixels():
    # 320x240 image whose 2x-downscaled version is exactly the 160x120 test image.
    small = blocks_image(seed=5)
    large = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
    assert np.array_equal(cv2.resize(large, (160, 120), interpolation=cv2.INTER_AREA), small)
    on_small = selective_search(small, ALL_BOXES).boxes
    on_large = selective_search(
        large, SelectiveSearchParams(max_boxes=None, min_size=0, max_size=160)
    ).boxes
    np.testing.assert_array_equal(on_large, on_small * 2.0)
    assert on_large[:, 2].max() <= 320 and on_large[:, 3].max() <= 240


def test_min_size_drops_small_boxes_in_original_pixels():
    image = blocks_image(seed=6)
    full = selective_search(image, ALL_BOXES).boxes
    filtered = selective_search(image, SelectiveSearchParams(max_boxes=None, min_size=12)).boxes
    widths, heights = full[:, 2] - full[:, 0], full[:, 3] - full[:, 1]
    expected = full[(widths >= 12) & (heights >= 12)]
    np.testing.assert_array_equal(filtered, expected)
    assert expected.shape[0] < full.shape[0]


def test_rectangle_survives_in_the_default_settings():
    result = selective_search(rectangle_image(noise=True))
    assert box_iou(RECTANGLE_XYXY, result.boxes).max() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "bad_image",
    [
        np.zeros((120, 160), np.uint8),
        np.zeros((120, 160, 3), np.float32),
        np.zeros((1, 5, 3), np.uint8),
    ],
)
def test_bad_images_raise_proposal_error(bad_image):
    with pytest.raises(ProposalError, match="expected an RGB image|too small"):
        selective_search(bad_image)


def test_opencv_failure_becomes_proposal_error(monkeypatch):
    class Failing:
        def addImage(self, image):  # noqa: N802 - OpenCV's name
            pass

        def addGraphSegmentation(self, segmentation):  # noqa: N802
            pass

        def addStrategy(self, strategy):  # noqa: N802
            pass

        def process(self):
            raise cv2.error("simulated failure inside OpenCV")

    monkeypatch.setattr(cv2.ximgproc.segmentation, "createSelectiveSearchSegmentation", Failing)
    with pytest.raises(ProposalError, match="simulated failure inside OpenCV") as info:
        selective_search(rectangle_image())
    assert "160x120" in str(info.value)


@pytest.mark.parametrize(
    "kwargs", [{"max_boxes": 0}, {"max_size": 8}, {"min_size": -1}, {"seed": -1}, {"k": 0},
               {"sigma": -1}]
)
def test_invalid_parameters_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        SelectiveSearchParams(**kwargs)


def test_unknown_mode_raises_config_error():
    with pytest.raises(ConfigError, match="fast"):
        selective_search(rectangle_image(), mode="slow")


def test_colour_images():
    bgr = np.array([[[0, 0, 255], [255, 0, 0], [0, 0, 0], [30, 60, 90]]], np.uint8)  # 1x4
    hsv = colour_image(bgr, "hsv")
    # Full-range hue: red 0, blue 240 degrees -> 240 / 360 * 256 = 171 (OpenCV's HSV: 120).
    assert hsv[0, 0, 0] == 0 and hsv[0, 1, 0] == 171
    assert colour_image(bgr, "lab").shape == (1, 4, 3)
    assert colour_image(bgr, "h").shape == (1, 4)
    assert colour_image(bgr, "intensity").shape == (1, 4)
    rgi = colour_image(bgr, "rgi")
    # Red: r = 1, g = 0; black: 1/3 each; (R, G, B) = (90, 60, 30): r = 0.5, g = 1/3.
    assert rgi[0, 0, :2].tolist() == [255, 0]
    assert rgi[0, 2, :2].tolist() == [85, 85] and rgi[0, 2, 2] == 0
    assert rgi[0, 3, :2].tolist() == [128, 85]
    with pytest.raises(ConfigError, match="colour space"):
        colour_image(bgr, "xyz")


def test_similarity_strategy_names():
    assert similarity_strategy("fill") is not None
    assert similarity_strategy("colour+texture+size+fill") is not None
    for bad in ("color", "colour+colour+size+fill+texture", ""):
        with pytest.raises(ConfigError, match="similarity"):
            similarity_strategy(bad)
