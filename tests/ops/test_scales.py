"""Resized sizes, box scaling and the choice of one scale per window."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sppdet.errors import ConfigError, DataError
from sppdet.ops.scales import (
    PAPER_SCALES,
    resize_image,
    resized_size,
    scale_boxes,
    scale_factors,
    select_scales,
)


@pytest.mark.parametrize(
    "height, width, scale, expected",
    [
        (375, 500, 688, (688, 917)),  # 500 * 688/375 = 917.33
        (375, 500, 480, (480, 640)),
        (375, 500, 1200, (1200, 1600)),
        (500, 375, 600, (800, 600)),  # portrait: the width is the shorter side
        (2, 5, 3, (3, 8)),  # 7.5 rounds half up
        (4, 5, 2, (2, 3)),  # 2.5 rounds half up
        (100, 100, 688, (688, 688)),
        (7, 3000, 1, (1, 429)),  # 428.57
    ],
)
def test_resized_size_hand_computed(height, width, scale, expected):
    assert resized_size(height, width, scale) == expected


def test_scale_factors_are_the_per_axis_ratios():
    fy, fx = scale_factors(375, 500, 688)
    assert fy == 688 / 375 and fx == 917 / 500
    assert fx != fy  # rounding the long side makes them differ


def test_scale_boxes_maps_the_image_extent_onto_the_resized_extent():
    boxes = np.array([[0.0, 0.0, 500.0, 375.0], [10.0, 20.0, 30.0, 40.0]])
    scaled = scale_boxes(boxes, (375, 500), 688)
    np.testing.assert_allclose(scaled[0], [0.0, 0.0, 917.0, 688.0], rtol=0, atol=1e-12)
    fy = 688 / 375
    np.testing.assert_allclose(scaled[1], [10 * 1.834, 20 * fy, 30 * 1.834, 40 * fy], rtol=1e-12)
    as_tensor = scale_boxes(torch.from_numpy(boxes), (375, 500), 688)
    assert isinstance(as_tensor, torch.Tensor)
    np.testing.assert_array_equal(as_tensor.numpy(), scaled)
    assert scale_boxes(np.zeros((0, 4)), (375, 500), 688).shape == (0, 4)


def test_resize_image_agrees_with_scale_boxes():
    image = np.zeros((375, 500, 3), dtype=np.uint8)
    image[50:100, 100:150] = 255  # box [100, 50, 150, 100]
    resized = resize_image(image, 750)  # factor exactly 2
    assert resized.shape == (750, 1000, 3) and resized.dtype == np.uint8
    box = np.array([[100.0, 50.0, 150.0, 100.0]])
    x1, y1, x2, y2 = scale_boxes(box, (375, 500), 750)[0].astype(int)
    assert (x1, y1, x2, y2) == (200, 100, 300, 200)
    # Bilinear upsampling blends only the one output pixel on each side of an edge.
    assert (resized[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1] == 255).all()
    assert (resized[:, : x1 - 1] == 0).all() and (resized[:, x2 + 1 :] == 0).all()
    assert (resized[: y1 - 1] == 0).all() and (resized[y2 + 1 :] == 0).all()
    with pytest.raises(DataError, match="shape"):
        resize_image(np.zeros((0, 4, 3), dtype=np.uint8), 10)


def reference_select(boxes, image_size, scales, rule):
    """Loops over windows and scales, straight from the two rules' text."""
    height, width = image_size
    chosen = []
    for x1, y1, x2, y2 in boxes:
        area = max(max(x2 - x1, 0.0) * max(y2 - y1, 0.0), 1.0)
        best, best_distance = None, math.inf
        for scale in scales:
            if rule == "paper":
                new_h, new_w = resized_size(height, width, scale)
                distance = abs(area * (new_w / width) * (new_h / height) - 224 * 224)
            else:
                expected = math.floor(208 * min(height, width) / math.sqrt(area) + 0.5)
                distance = abs(scale - expected)
            if distance < best_distance:
                best, best_distance = scale, distance
        chosen.append(best)
    return np.array(chosen, dtype=np.int64)


@pytest.mark.parametrize("rule", ["paper", "released"])
def test_select_scales_matches_loop_reference(rule):
    rng = np.random.default_rng(2)
    corners = rng.uniform(0, 500, size=(300, 2, 2))
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    boxes[:20, 2] = boxes[:20, 0]  # degenerate
    got = select_scales(boxes, (375, 500), PAPER_SCALES, rule=rule)
    np.testing.assert_array_equal(got, reference_select(boxes, (375, 500), PAPER_SCALES, rule))
    assert len(set(got.tolist())) >= 3  # the windows really spread over the scales


def test_select_scales_hand_computed():
    image_size = (375, 500)
    boxes = np.array(
        [
            [0.0, 0.0, 175.0, 175.0],  # 175 * 480/375 = 224 exactly -> 480
            [0.0, 0.0, 100.0, 100.0],  # 864: side 230.4 px (|53084 - 50176|) beats 688's 183.5
            [0.0, 0.0, 500.0, 375.0],  # whole image: smallest scale
            [5.0, 5.0, 5.0, 5.0],  # degenerate: counted as one pixel -> largest scale
        ]
    )
    assert select_scales(boxes, image_size).tolist() == [480, 864, 480, 1200]
    # Released: 208 * 375 / 175 = 445.7 -> 446 -> 480; 208 * 375 / 100 = 780 -> 864 (84 < 92);
    # whole image 208 * 375 / sqrt(187500) = 180 -> 480; one pixel -> 78000 -> 1200.
    assert select_scales(boxes, image_size, rule="released").tolist() == [480, 864, 480, 1200]


def test_rules_differ_between_224_and_208_targets():
    # A 105x105 window of a 375x500 image. Paper: at 688 it has 11025 * 1.8347 * 1.834 = 37097
    # pixels (|37097 - 50176| = 13079), at 864 11025 * 2.304**2 = 58525 (8349) -> 864.
    # Released: round(208 * 375 / 105) = 743, nearer 688 (55) than 864 (121) -> 688.
    box = np.array([[0.0, 0.0, 105.0, 105.0]])
    assert select_scales(box, (375, 500), rule="paper").tolist() == [864]
    assert select_scales(box, (375, 500), rule="released").tolist() == [688]


def test_ties_go_to_the_first_listed_scale():
    # Released rule: expected = round(208 * 100 / 100) = 208, exactly between 200 and 216.
    box = np.array([[0.0, 0.0, 100.0, 100.0]])
    assert select_scales(box, (100, 100), (216, 200), rule="released").tolist() == [216]
    assert select_scales(box, (100, 100), (200, 216), rule="released").tolist() == [200]


def test_select_scales_edge_cases_and_errors():
    assert select_scales(np.zeros((0, 4)), (375, 500)).shape == (0,)
    assert select_scales(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), (375, 500)).tolist() == [1200]
    with pytest.raises(ConfigError, match="rule"):
        select_scales(np.zeros((1, 4)), (375, 500), rule="random")
    with pytest.raises(ConfigError, match="distinct"):
        select_scales(np.zeros((1, 4)), (375, 500), (480, 480))
    with pytest.raises(ConfigError, match="at least one scale"):
        select_scales(np.zeros((1, 4)), (375, 500), ())
    with pytest.raises(ConfigError, match="positive integer"):
        resized_size(375, 500, 0)
    with pytest.raises(DataError, match="image size"):
        resized_size(0, 500, 688)
