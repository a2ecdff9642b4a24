"""Selective search: box conversion, determinism, the max_boxes rule, max_size mapping."""

from __future__ import annotations

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
from sppdet.proposals.selective_search import _libc_srand, scale_interleaved_order

ALL_BOXES = SelectiveSearchParams(max_boxes=None, min_size=0)


def test_rectangle_is_found_exactly():
    # Pixels 50..119 x 30..79 -> OpenCV (x, y, w, h) = (50, 30, 70, 50) -> [50, 30, 120, 80].
    for mode in ("fast", "quality"):
        result = selective_search(rectangle_image(noise=True), mode=mode)
        assert result.scores is None
        assert result.boxes.dtype == np.float32 and result.boxes.shape[1] == 4
        assert np.any(np.all(result.boxes == RECTANGLE_XYXY, axis=1)), mode


def test_boxes_equal_opencv_output_converted():
    image = blocks_image(seed=3)
    segmenter = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    segmenter.setBaseImage(np.ascontiguousarray(image[:, :, ::-1]))
    segmenter.switchToSelectiveSearchFast()
    opencv_boxes = xywh_to_xyxy(segmenter.process())
    ours = selective_search(image, ALL_BOXES).boxes
    # Same set of boxes (OpenCV already removes duplicates), converted x2 = x + w.
    assert ours.shape == opencv_boxes.shape
    np.testing.assert_array_equal(np.unique(ours, axis=0), np.unique(opencv_boxes, axis=0))
    assert ours.min() >= 0 and ours[:, 2].max() <= 160 and ours[:, 3].max() <= 120


def test_same_boxes_same_order_across_runs():
    image = blocks_image(seed=1)
    first = selective_search(image, ALL_BOXES).boxes
    second = selective_search(image, ALL_BOXES).boxes
    np.testing.assert_array_equal(first, second)


def test_seed_controls_the_order():
    # Proves the determinism test can fail: OpenCV's rank uses rand(), so another seed gives
    # the same set in another order (glibc treats seeds 0 and 1 alike, hence 2).
    image = blocks_image(seed=1)
    seed0 = selective_search(image, ALL_BOXES).boxes
    seed2 = selective_search(image, SelectiveSearchParams(max_boxes=None, min_size=0, seed=2)).boxes
    np.testing.assert_array_equal(np.unique(seed0, axis=0), np.unique(seed2, axis=0))
    assert not np.array_equal(seed0, seed2)


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


def _reference_interleave(boxes: np.ndarray) -> list[int]:
    """Slow round-robin over octave strata, larger strata first in each round."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    strata: dict[int, list[int]] = {}
    for index, area in enumerate(areas):
        strata.setdefault(int(np.floor(0.5 * np.log2(max(area, 1.0)))), []).append(index)
    order: list[int] = []
    round_index = 0
    while len(order) < len(boxes):
        for stratum in sorted(strata, reverse=True):
            if round_index < len(strata[stratum]):
                order.append(strata[stratum][round_index])
        round_index += 1
    return order


def test_scale_interleaved_order_matches_reference():
    hand = np.array(
        [
            [0, 0, 2, 2],
            [0, 0, 3, 3],
            [0, 0, 100, 100],
            [0, 0, 2, 3],
            [0, 0, 40, 40],
            [0, 0, 0.5, 1],
        ],
        dtype=np.float32,
    )
    # Strata: 1, 1, 6, 1, 5, 0  ->  round 0: 6, 5, 1(first), 0; round 1: 1(second); round 2.
    assert scale_interleaved_order(hand).tolist() == [2, 4, 0, 5, 1, 3]
    rng = np.random.default_rng(0)
    for _ in range(20):
        xy = rng.uniform(0, 300, size=(50, 2))
        wh = rng.uniform(0, 300, size=(50, 2)) ** rng.uniform(0.3, 1.0)
        boxes = np.concatenate([xy, xy + wh], axis=1)
        assert scale_interleaved_order(boxes).tolist() == _reference_interleave(boxes)
    assert scale_interleaved_order(np.zeros((0, 4))).shape == (0,)


def _strata(boxes: np.ndarray) -> np.ndarray:
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.floor(0.5 * np.log2(np.maximum(areas, 1.0))).astype(int)


def test_max_boxes_keeps_large_boxes_and_is_a_prefix():
    image = blocks_image(seed=4)
    full = selective_search(image, ALL_BOXES).boxes
    cap = 50
    assert full.shape[0] > 4 * cap
    capped = selective_search(image, SelectiveSearchParams(max_boxes=cap, min_size=0)).boxes
    np.testing.assert_array_equal(capped, full[:cap])
    full_strata, capped_strata = _strata(full), _strata(capped)
    # Round robin over scale strata: each stratum keeps min(its size, cap // #strata) or more.
    rounds = cap // len(set(full_strata))
    for stratum in set(full_strata):
        available = int((full_strata == stratum).sum())
        assert (capped_strata == stratum).sum() >= min(available, rounds), stratum
    # Here the whole largest-scale stratum survives, the whole image among it.
    top = full_strata.max()
    assert (capped_strata == top).sum() == (full_strata == top).sum() <= rounds
    assert np.any(np.all(capped == np.array([0, 0, 160, 120], np.float32), axis=1))
    # A cap on OpenCV's own order (low hierarchy levels first) would lose large boxes.
    segmenter = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    segmenter.setBaseImage(np.ascontiguousarray(image[:, :, ::-1]))
    segmenter.switchToSelectiveSearchFast()
    _libc_srand()(0)
    opencv_first = xywh_to_xyxy(segmenter.process())[:cap]
    assert (_strata(opencv_first) == top).sum() < (capped_strata == top).sum()


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
        def setBaseImage(self, image):  # noqa: N802 - OpenCV's name
            pass

        def switchToSelectiveSearchFast(self, *args):  # noqa: N802
            pass

        def process(self):
            raise cv2.error("simulated failure inside OpenCV")

    monkeypatch.setattr(cv2.ximgproc.segmentation, "createSelectiveSearchSegmentation", Failing)
    with pytest.raises(ProposalError, match="simulated failure inside OpenCV") as info:
        selective_search(rectangle_image())
    assert "160x120" in str(info.value)


@pytest.mark.parametrize(
    "kwargs", [{"max_boxes": 0}, {"max_size": 8}, {"min_size": -1}, {"seed": -1}, {"base_k": 0}]
)
def test_invalid_parameters_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        SelectiveSearchParams(**kwargs)


def test_unknown_mode_raises_config_error():
    with pytest.raises(ConfigError, match="fast"):
        selective_search(rectangle_image(), mode="slow")
