"""Per-class NMS and Soft-NMS against slow while-loop references, plus the hand cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sppdet.detector.detections import ImageDetections
from sppdet.errors import ConfigError, DataError
from sppdet.ops.nms import (
    class_nms,
    class_nms_indices,
    detections_from_class_scores,
    nms_image_detections,
    soft_nms,
)


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
        n = int(rng.integers(0, 400 if seed % 10 == 0 else 60))
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


def test_matches_reference_above_1000_boxes():
    # On the CPU, batched_nms offsets coordinates per class up to 1,000 boxes and loops over
    # the classes above that: both paths must give the reference's answer.
    for seed, n in ((0, 999), (1, 1000), (2, 1001), (3, 1500), (4, 3000)):
        rng = np.random.default_rng(1000 + seed)
        boxes, scores, labels = random_windows(rng, n, grid=seed % 2 == 1, n_labels=4)
        expected = reference_nms(
            boxes.astype(np.float64).tolist(), scores.astype(np.float64).tolist(),
            labels.tolist(), 0.3, None, None,
        )
        got = class_nms_indices(boxes, scores, labels, score_threshold=None, max_per_image=None)
        assert got.tolist() == expected, n


def plain_iou(a, b):
    """IoU of two xyxy boxes with torchvision's arithmetic; an empty union gives 0."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_soft_nms(boxes, scores, labels, method, nt, sigma, threshold, prune, cap):
    """Bodla et al.'s algorithm 1 written out: pick the best remaining box of any label (equal
    scores: input order), keep it, decay the margins (score - threshold) of the remaining boxes
    of its label, drop margins below prune; at the end sort by score, input order on ties, cap."""
    margin = {i: scores[i] - threshold for i in range(len(scores)) if scores[i] > threshold}
    kept = []
    while margin:
        best = max(margin, key=lambda i: (margin[i], -i))
        kept.append((best, margin.pop(best) + threshold))
        for j in list(margin):
            if labels[j] != labels[best]:
                continue
            iou = plain_iou(boxes[best], boxes[j])
            if method == "linear":
                weight = 1.0 - iou if iou > nt else 1.0
            else:
                weight = math.exp(-(iou * iou) / sigma)
            margin[j] = margin[j] * weight
            if margin[j] < prune:
                del margin[j]
    kept.sort(key=lambda pair: (-pair[1], pair[0]))
    kept = kept if cap is None else kept[:cap]
    return [i for i, _ in kept], [score for _, score in kept]


@pytest.mark.parametrize("method", ["linear", "gaussian"])
@pytest.mark.parametrize("grid", [True, False])
def test_soft_nms_matches_plain_loop_reference(method, grid):
    for seed in range(80):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(0, 150 if seed % 10 == 0 else 40))
        boxes, scores, labels = random_windows(rng, n, grid=grid, n_labels=3)
        for nt, sigma, threshold, prune, cap in (
            (0.3, 0.5, -1.5, 1e-3, 100), (0.5, 0.1, -2.0, 0.0, None), (0.0, 2.0, -1.0, 0.3, 5),
            (1.0, 0.5, 0.0, 1e-3, 1),
        ):
            expected, expected_scores = reference_soft_nms(
                boxes.astype(np.float64).tolist(), scores.astype(np.float64).tolist(),
                labels.tolist(), method, nt, sigma, threshold, prune, cap,
            )
            got, got_scores = soft_nms(
                boxes, scores, labels, method=method, iou_threshold=nt, sigma=sigma,
                score_threshold=threshold, prune_threshold=prune, max_per_image=cap,
            )
            assert got.dtype == np.int64 and got_scores.dtype == np.float64
            assert got.tolist() == expected, (seed, nt, sigma)
            np.testing.assert_allclose(got_scores, expected_scores, rtol=1e-12, atol=1e-12)


def test_soft_nms_hand_computed():
    # Box 1 covers half of box 0 (IoU 0.5); box 2 is far away. Threshold 0: margins = scores.
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [50, 50, 60, 60]], np.float64)
    scores = np.array([0.9, 0.8, 0.7])
    keep, decayed = soft_nms(boxes, scores, [0, 0, 0], method="linear", iou_threshold=0.3,
                             score_threshold=0.0)
    # 0.8 * (1 - 0.5) = 0.4 falls below the far box's 0.7.
    assert keep.tolist() == [0, 2, 1]
    np.testing.assert_allclose(decayed, [0.9, 0.7, 0.4])
    keep, decayed = soft_nms(boxes, scores, [0, 0, 0], method="gaussian", sigma=0.5,
                             score_threshold=0.0)
    # 0.8 * exp(-0.5**2 / 0.5) = 0.485: below the far box again.
    assert keep.tolist() == [0, 2, 1]
    np.testing.assert_allclose(decayed, [0.9, 0.7, 0.8 * math.exp(-0.25 / 0.5)])
    # Linear: IoU at or under N_t leaves the score alone (suppression needs IoU > N_t).
    keep, decayed = soft_nms(boxes, scores, [0, 0, 0], method="linear", iou_threshold=0.5,
                             score_threshold=0.0)
    np.testing.assert_allclose(decayed, [0.9, 0.8, 0.7])
    # SVM-like negative scores decay towards the threshold, never past it: margin 1.0 -> 0.5.
    keep, decayed = soft_nms(boxes[:2], [0.5, -0.5], [0, 0], method="linear",
                             iou_threshold=0.3, score_threshold=-1.5)
    np.testing.assert_allclose(decayed, [0.5, -1.0])


def test_soft_nms_prunes_after_decay_and_keeps_labels_apart():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], np.float64)
    # Identical boxes: linear weight 1 - 1 = 0, the copy's margin drops to 0 < 1e-3: pruned.
    keep, _ = soft_nms(boxes, [2.0, 1.0, 1.0], [0, 0, 1], method="linear", score_threshold=0.0)
    assert keep.tolist() == [0, 2]  # the label-1 copy is untouched
    keep, decayed = soft_nms(boxes, [2.0, 1.0, 1.0], [0, 0, 1], method="linear",
                             score_threshold=0.0, prune_threshold=0.0)
    assert keep.tolist() == [0, 2, 1] and decayed.tolist() == [2.0, 1.0, 0.0]
    # Gaussian with a margin that falls under the prune threshold: 0.1 * exp(-2) = 0.0135.
    keep, _ = soft_nms(boxes[:2], [1.0, 0.1], [0, 0], method="gaussian", sigma=0.5,
                       score_threshold=0.0, prune_threshold=0.02)
    assert keep.tolist() == [0]


def test_soft_nms_ties_empty_one_box_and_border():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10]], np.float64)
    keep, _ = soft_nms(boxes, np.zeros(3), [0, 0, 0], score_threshold=-1.0)
    assert keep[0] == 0
    keep, _ = soft_nms(boxes[::-1].copy(), np.zeros(3), [0, 0, 0], score_threshold=-1.0)
    assert keep[0] == 0
    keep, decayed = soft_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
    assert keep.shape == (0,) and keep.dtype == np.int64 and decayed.shape == (0,)
    keep, decayed = soft_nms([[3, 4, 5, 6]], [0.25], [7])
    assert keep.tolist() == [0] and decayed.tolist() == [0.25]
    keep, _ = soft_nms([[3, 4, 5, 6]], [-2.0], [7])  # under the score threshold
    assert keep.shape == (0,)
    # Boxes on the image border and a degenerate one (zero area: IoU 0, no decay, no NaN).
    border = np.array([[0, 0, 500, 375], [0, 0, 500, 375], [250, 0, 250, 375]], np.float64)
    keep, decayed = soft_nms(border, [1.0, 0.5, 0.4], [0, 0, 0], method="gaussian",
                             score_threshold=0.0)
    assert keep.tolist() == [0, 2, 1]
    np.testing.assert_allclose(decayed, [1.0, 0.4, 0.5 * math.exp(-2.0)])


def test_class_nms_chooses_the_method():
    rng = np.random.default_rng(5)
    boxes, scores, labels = random_windows(rng, 80, grid=False, n_labels=3)
    keep, kept_scores = class_nms(boxes, scores, labels)
    assert keep.tolist() == class_nms_indices(boxes, scores, labels).tolist()
    np.testing.assert_array_equal(kept_scores, scores[keep].astype(np.float64))
    keep, kept_scores = class_nms(boxes, scores, labels, method="gaussian", sigma=0.3)
    expected, expected_scores = soft_nms(boxes, scores, labels, method="gaussian", sigma=0.3)
    assert keep.tolist() == expected.tolist()
    np.testing.assert_array_equal(kept_scores, expected_scores)
    with pytest.raises(ConfigError, match="NMS method"):
        class_nms(boxes, scores, labels, method="soft")
    with pytest.raises(ConfigError, match="score threshold"):
        class_nms(boxes, scores, labels, method="linear", score_threshold=None)
    with pytest.raises(ConfigError, match="sigma"):
        soft_nms(boxes, scores, labels, sigma=0.0)
