"""Window labelling for fine-tuning: IoU bands, ground truth as windows, skipped images."""

import numpy as np
import pytest

from sppdet.data.voc import ImageAnnotation
from sppdet.errors import ConfigError, DataError
from sppdet.training.finetune_windows import build_split_windows, label_windows


def slow_labels(boxes, gt, gt_labels, fg=0.5, lo=0.1, hi=0.5):
    """Loop reference: label (or None for unused) of each window, IoU by hand."""
    out = []
    for b in boxes:
        best, best_label = 0.0, 0
        for g, lab in zip(gt, gt_labels):
            iw = max(0.0, min(b[2], g[2]) - max(b[0], g[0]))
            ih = max(0.0, min(b[3], g[3]) - max(b[1], g[1]))
            inter = iw * ih
            union = (b[2] - b[0]) * (b[3] - b[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
            iou = inter / union
            if iou > best:
                best, best_label = iou, lab
        if best >= fg:
            out.append(best_label + 1)
        elif lo <= best < hi:
            out.append(0)
        else:
            out.append(None)
    return out


def test_hand_made_bands_and_ground_truth_first():
    gt = np.array([[0, 0, 10, 10]], np.float32)
    proposals = np.array([
        [0, 0, 10, 10],     # IoU 1 -> positive
        [0, 0, 10, 5],      # IoU 0.5 exactly -> positive (inclusive)
        [0, 0, 10, 4.9],    # IoU 0.49 -> negative
        [0, 0, 10, 1],      # IoU 0.1 exactly -> negative (inclusive low end)
        [0, 0, 10, 0.9],    # IoU 0.09 -> unused
        [50, 50, 60, 60],   # IoU 0 -> unused
        [3, 3, 3, 8],       # degenerate -> dropped
    ], np.float32)
    windows = label_windows(proposals, gt, np.array([2]))
    assert windows.is_gt.tolist() == [True, False, False, False, False]
    assert windows.labels.tolist() == [3, 3, 3, 0, 0]
    np.testing.assert_allclose(windows.overlaps, [1, 1, 0.5, 0.49, 0.1], rtol=1e-6)
    np.testing.assert_array_equal(windows.boxes[1:], proposals[:4])

    without_gt = label_windows(proposals, gt, np.array([2]), include_gt=False)
    assert without_gt.labels.tolist() == [3, 3, 0, 0] and not without_gt.is_gt.any()


def test_label_is_the_class_of_the_most_overlapping_box():
    gt = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32)
    proposals = np.array([[1, 0, 11, 10], [4, 0, 14, 10]], np.float32)
    windows = label_windows(proposals, gt, np.array([0, 1]), include_gt=False)
    assert windows.labels.tolist() == [1, 2]


def test_matches_loop_reference_on_random_boxes():
    rng = np.random.default_rng(3)
    for _ in range(20):
        gt = np.sort(rng.uniform(0, 100, (3, 2, 2)), axis=1).transpose(0, 2, 1).reshape(3, 4)
        gt = gt[:, [0, 2, 1, 3]]
        gt[:, 2:] += 1
        proposals = gt[rng.integers(0, 3, 60)] + rng.normal(0, 8, (60, 4))
        proposals[:, 2:] = np.maximum(proposals[:, 2:], proposals[:, :2] + 1)
        labels = rng.integers(0, 4, 3)
        windows = label_windows(proposals, gt, labels, include_gt=False)
        expected = [lab for lab in slow_labels(proposals, gt, labels) if lab is not None]
        assert windows.labels.tolist() == expected


def test_thresholds_are_parameters_and_checked():
    gt = np.array([[0, 0, 10, 10]], np.float32)
    proposals = np.array([[0, 0, 10, 6], [0, 0, 10, 0.5]], np.float32)  # IoU 0.6, 0.05
    windows = label_windows(proposals, gt, np.array([0]), fg_iou=0.7, bg_iou_low=0.0,
                            bg_iou_high=0.7, include_gt=False)
    assert windows.labels.tolist() == [0, 0]
    with pytest.raises(ConfigError, match="both positive and negative"):
        label_windows(proposals, gt, np.array([0]), fg_iou=0.5, bg_iou_high=0.6)
    with pytest.raises(ConfigError):
        label_windows(proposals, gt, np.array([0]), bg_iou_low=0.5, bg_iou_high=0.4)


def test_empty_inputs_and_bad_boxes():
    empty = label_windows(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(0))
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)
    # no ground truth: every IoU is 0, below the negative band
    assert len(label_windows(np.array([[0, 0, 5, 5]]), np.zeros((0, 4)), np.zeros(0))) == 0
    only_gt = label_windows(np.zeros((0, 4)), np.array([[1, 1, 4, 4]]), np.array([0]))
    assert only_gt.labels.tolist() == [1]
    with pytest.raises(DataError, match="NaN"):
        label_windows(np.array([[0, 0, np.nan, 5]]), np.array([[1, 1, 4, 4]]), np.array([0]))
    with pytest.raises(DataError, match="shape"):
        label_windows(np.zeros((2, 3)), np.array([[1, 1, 4, 4]]), np.array([0]))


def _ann(image_id, boxes, labels, difficult=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    return ImageAnnotation(image_id, None, 100, 100, boxes, np.asarray(labels, np.int64),
                           np.zeros(n, bool) if difficult is None else np.asarray(difficult),
                           np.zeros(n, bool))


def test_split_windows_skip_images_with_reasons():
    anns = [_ann("a", [[0, 0, 10, 10]], [0]), _ann("no_props", [[0, 0, 10, 10]], [1]),
            _ann("missing", [[0, 0, 10, 10]], [0]), _ann("no_feat", [[0, 0, 10, 10]], [0]),
            _ann("no_gt", [], []), _ann("b", [[20, 20, 40, 40]], [1], difficult=[True])]
    proposals = {"a": np.array([[0, 0, 10, 8], [0, 0, 10, 3]], np.float32),
                 "no_props": np.zeros((0, 4), np.float32),
                 "no_feat": np.array([[0, 0, 10, 8]], np.float32),
                 "no_gt": np.array([[0, 0, 10, 8]], np.float32),
                 "b": np.array([[20, 20, 40, 38]], np.float32)}
    windows = build_split_windows(anns, proposals.get, 2,
                                  has_features=lambda i: i != "no_feat")
    assert windows.image_ids == ["a", "b"]
    assert windows.skipped == {"no_props": "no proposals",
                               "missing": "not in the proposals artifact",
                               "no_feat": "not in the features artifact",
                               "no_gt": "no window in the positive or negative IoU band"}
    assert windows.image_index.tolist() == [0, 0, 0, 1, 1]
    assert windows.labels.tolist() == [1, 1, 0, 2, 2]
    assert windows.class_counts().tolist() == [1, 2, 2]
    assert windows.labels[windows.windows_of(1)].tolist() == [2, 2]
    # difficult objects can be left out of the ground truth
    strict = build_split_windows(anns, proposals.get, 2, include_difficult=False)
    assert "b" not in strict.image_ids and "b" in strict.skipped


def test_split_windows_empty_and_bad_labels():
    windows = build_split_windows([], lambda i: None, 3)
    assert len(windows) == 0 and windows.n_images == 0
    with pytest.raises(DataError, match="outside the 1 classes"):
        build_split_windows([_ann("a", [[0, 0, 5, 5]], [1])],
                            lambda i: np.array([[0, 0, 5, 5]]), 1)
