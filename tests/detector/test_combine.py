"""Model combination (paper section 4.4): NMS over the union of two models' scored windows."""

from __future__ import annotations

import numpy as np
import pytest

from sppdet.detector.combine import combine_image_detections, combine_models
from sppdet.detector.detections import ImageDetections
from sppdet.errors import DataError
from sppdet.ops.nms import nms_image_detections


def test_two_models_hand_made():
    model_a = [
        ImageDetections("a", [[0, 0, 10, 10], [50, 50, 60, 60]], [2.0, 0.5], [0, 1]),
        ImageDetections.empty("b"),
    ]
    model_b = [
        ImageDetections(
            "a",
            [[1, 1, 11, 11], [51, 51, 61, 61], [1, 1, 11, 11], [30, 30, 40, 40]],
            [1.0, 0.9, 0.2, -2.0],
            [0, 1, 1, 0],
        ),
        ImageDetections("b", [[0, 0, 5, 5]], [0.3], [2]),
    ]
    combined = combine_models([model_a, model_b])
    assert [d.image_id for d in combined] == ["a", "b"]
    a = combined[0]
    # A's confident class-0 window suppresses B's overlapping one (IoU 81/119 > 0.3);
    # B's class-1 window at 0.9 suppresses A's at 0.5 (IoU 81/119); B's class-1 window on the
    # class-0 object survives (other class); B's -2.0 window is under the -1.5 threshold.
    np.testing.assert_array_equal(a.scores, np.array([2.0, 0.9, 0.2], np.float32))
    np.testing.assert_array_equal(a.labels, [0, 1, 1])
    np.testing.assert_array_equal(a.boxes, [[0, 0, 10, 10], [51, 51, 61, 61], [1, 1, 11, 11]])
    np.testing.assert_array_equal(combined[1].scores, np.array([0.3], np.float32))


def test_equal_scores_earlier_model_wins():
    a = ImageDetections("x", [[0, 0, 10, 10]], [1.0], [0])
    b = ImageDetections("x", [[0, 0, 10, 9]], [1.0], [0])
    np.testing.assert_array_equal(combine_image_detections([a, b]).boxes, [[0, 0, 10, 10]])
    np.testing.assert_array_equal(combine_image_detections([b, a]).boxes, [[0, 0, 10, 9]])


def test_one_model_is_plain_nms_and_order_of_images_follows_first_model():
    rng = np.random.default_rng(0)
    images = []
    for i in range(5):
        xy = rng.uniform(0, 50, (30, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 30, (30, 2))], axis=1)
        images.append(ImageDetections(f"i{i}", boxes, rng.normal(size=30), rng.integers(0, 3, 30)))
    combined = combine_models([images])
    for got, image in zip(combined, images):
        expected = nms_image_detections(image)
        np.testing.assert_array_equal(got.boxes, expected.boxes)
        np.testing.assert_array_equal(got.scores, expected.scores)
    shuffled = combine_models([images, images[::-1]])
    assert [d.image_id for d in shuffled] == [d.image_id for d in images]


def test_mismatched_inputs():
    a = [ImageDetections.empty("1"), ImageDetections.empty("2")]
    b = [ImageDetections.empty("1"), ImageDetections.empty("3")]
    with pytest.raises(DataError, match=r"model 1 covers other images.*'2'.*'3'"):
        combine_models([a, b])
    with pytest.raises(DataError, match="more than once"):
        combine_models([a + [ImageDetections.empty("1")]])
    with pytest.raises(DataError, match="at least one model"):
        combine_models([])
    with pytest.raises(DataError, match="cannot pool"):
        combine_image_detections([a[0], b[1]])
