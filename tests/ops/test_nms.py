"""Per-class NMS against a slow while-loop reference, plus the hand cases that matter."""

from __future__ import annotations

import numpy as np
import pytest

from sppdet.detector.detections import ImageDetections
from sppdet.errors import ConfigError, DataError
from sppdet.ops.nms import class_nms_indices, detections_from_class_scores, nms_image_detections


def reference_nms(boxes, scores, labels, iou_threshold, score_threshold, max_per_image):
    """Greedy NMS, one box at a time: take the best remaining box (ties: input order), drop the
    remaining boxes of its label whose IoU with it is > iou_threshold; repeat."""

    def iou(i, j):
        xx1, yy1 = max(boxes[i][0], boxes[j][0]), max(boxes[i][1], boxes[j][1])
        xx2, yy2 = min(boxes[i][2], boxes[j][2]), min(boxes[i][3], boxes[j][3])
        inter = max(0.0, xx2 - xx1) * max(0.0, yy2 - yy1)
        area_i = (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1])
        area_j = (boxes[j][2] - boxes[j][0]) * (boxes[j][3] - boxes[j][1])
        union = area_i + area_j - inter
        return inter / union if union != 0 else float("nan")  # NaN never suppresses

    remaining = [
        i for i in range(len(scores)) if score_threshold is None or scores[i] > score_threshold
    ]
    remaining = sorted(remaining, key=lambda i: -scores[i])
    keep = []
    while remaining:
        best = remaining.pop(0)
        keep.append(best)
        remaining = [
            j for j in remaining if labels[j] != labels[best] or not iou(best, j) > iou_threshold
        ]
    return keep if max_per_image is None else keep[:max_per_image]


def random_windows(rng, n, *, grid, n_labels):
    if grid:
        # Small integer boxes: many exact IoU ties, IoU exactly at the threshold, equal scores.
        xy = rng.integers(-5, 20, (n, 2)).astype(np.float64)
        wh = rng.integers(1, 12, (n, 2)).astype(np.float64)
        scores = rng.integers(0, 5, n).astype(np.float32) / 2 - 1.5
    else:
        xy = rng.uniform(0, 1000, (n, 2))
        wh = rng.uniform(1, 300, (n, 2))
        scores = rng.normal(0, 1, n).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    labels = rng.integers(0, n_labels, n)
    return boxes, scores, labels


@pytest.mark.parametrize("grid", [True, False])
def test_matches_while_loop_reference(grid):
    for seed in range(150):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(0, 400 if seed % 10 == 0 else 60))  # some above batched_nms' 1000
        boxes, scores, labels = random_windows(rng, n, grid=grid, n_labels=21)
        for iou_threshold, score_threshold, max_per_image in (
            (0.3, -1.5, 100), (0.5, None, None), (0.0, None, 7), (1.0, 0.0, None)
        ):
            expected = reference_nms(
                boxes.astype(np.float64).tolist(), scores.astype(np.float64).tolist(),
                labels.tolist(), iou_threshold, score_threshold, max_per_image,
            )
            got = class_nms_indices(
                boxes, scores, labels, iou_threshold=iou_threshold,
                score_threshold=score_threshold, max_per_image=max_per_image,
            )
            assert got.dtype == np.int64
            assert got.tolist() == expected, (seed, iou_threshold)


def test_iou_exactly_at_threshold_is_kept():
    # [0,0,10,10] and [0,0,10,3]: IoU = 30 / 100 = 0.3 exactly -> not > 0.3, both kept.
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 3], [0, 0, 10, 3.5]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    keep = class_nms_indices(boxes, scores, np.zeros(3, np.int64))
    # The third box has IoU 0.35 with the first -> suppressed.
    assert keep.tolist() == [0, 1]


def test_equal_scores_first_listed_wins():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10]], np.float32)
    scores = np.zeros(3, np.float32)
    assert class_nms_indices(boxes, scores, [0, 0, 0]).tolist() == [0]
    assert class_nms_indices(boxes[::-1].copy(), scores, [0, 0, 0]).tolist() == [0]
    # Different labels never suppress each other.
    assert class_nms_indices(boxes, scores, [0, 1, 2]).tolist() == [0, 1, 2]


def test_score_threshold_is_strict_and_cap_is_over_all_classes():
    boxes = np.array([[10 * k, 0, 10 * k + 5, 5] for k in range(6)], np.float32)
    scores = np.array([-1.5, -1.4, 3.0, 2.0, 1.0, 0.0], np.float32)
    labels = np.array([0, 0, 1, 2, 1, 2])
    assert class_nms_indices(boxes, scores, labels).tolist() == [2, 3, 4, 5, 1]
    assert class_nms_indices(boxes, scores, labels, max_per_image=2).tolist() == [2, 3]
    assert class_nms_indices(boxes, scores, labels, score_threshold=None).tolist() == [
        2, 3, 4, 5, 1, 0]


def test_negative_coordinates_and_large_labels():
    # batched_nms' coordinate offset would let classes 0 and 1 overlap for negative boxes
    # (offset = max + 1); sppdet shifts boxes first.
    boxes = np.array([[-100, -100, -10, -10], [-100, -100, -10, -10]], np.float32)
    assert class_nms_indices(boxes, [1.0, 0.5], [0, 1]).tolist() == [0, 1]
    assert class_nms_indices(boxes, [1.0, 0.5], [0, 0]).tolist() == [0]


def test_empty_inputs():
    keep = class_nms_indices(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
    assert keep.shape == (0,) and keep.dtype == np.int64
    out = nms_image_detections(ImageDetections.empty("x"))
    assert out.boxes.shape == (0, 4) and out.scores.shape == (0,) and out.labels.shape == (0,)
    # Everything under the score threshold.
    out = nms_image_detections(ImageDetections("x", [[0, 0, 1, 1]], [-3.0], [0]))
    assert len(out) == 0 and out.boxes.shape == (0, 4)


def test_nms_image_detections_keeps_records_in_score_order():
    d = ImageDetections(
        "img", [[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], [0.5, 0.9, 0.7], [3, 3, 3]
    )
    out = nms_image_detections(d)
    assert out.image_id == "img"
    np.testing.assert_array_equal(out.scores, np.array([0.9, 0.7], np.float32))
    np.testing.assert_array_equal(out.boxes, [[0, 0, 10, 10], [50, 50, 60, 60]])


def test_invalid_inputs():
    with pytest.raises(ConfigError):
        class_nms_indices(np.zeros((1, 4)), [1.0], [0], iou_threshold=1.5)
    with pytest.raises(ConfigError):
        class_nms_indices(np.zeros((1, 4)), [1.0], [0], max_per_image=-1)
    with pytest.raises(DataError, match="same length"):
        class_nms_indices(np.zeros((2, 4)), [1.0], [0, 0])
    with pytest.raises(DataError, match="finite"):
        class_nms_indices(np.zeros((1, 4)), [np.nan], [0])


def test_detections_from_class_scores():
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32)
    scores = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], np.float32)
    d = detections_from_class_scores("im", boxes, scores)
    assert len(d) == 6
    np.testing.assert_array_equal(d.labels, [0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(d.scores, scores.reshape(-1))
    np.testing.assert_array_equal(d.boxes[3], boxes[1])
    per_class = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    d = detections_from_class_scores("im", per_class, scores)
    np.testing.assert_array_equal(d.boxes[4], per_class[1, 1])
    with pytest.raises(DataError, match="must have shape"):
        detections_from_class_scores("im", np.zeros((3, 4)), scores)
