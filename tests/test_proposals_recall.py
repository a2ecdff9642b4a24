"""Proposal recall: a hand-computed case, a slow reference, serialisation, table and plot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sppdet.errors import DataError
from sppdet.proposals import ImageGroundTruth, ProposalResult, evaluate_recall
from sppdet.proposals.recall import AR_IOU_THRESHOLDS


def _hand_case():
    ground_truth = {
        "i1": ImageGroundTruth(
            boxes=np.array([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], np.float32),
            labels=["cat", "dog", "dog"],
            difficult=np.array([False, False, True]),
        ),
        "i2": ImageGroundTruth(boxes=np.zeros((0, 4)), labels=[]),  # no objects: legal
    }
    proposals = {
        "i1": ProposalResult(
            np.array(
                [
                    [0, 0, 10, 5],  # IoU 0.5 with the cat
                    [20, 20, 40, 40],  # IoU 1 with the dog
                    [0, 0, 10, 8],  # IoU 0.8 with the cat
                    [50, 50, 60, 60],  # IoU 1 with the difficult dog
                ],
                np.float32,
            )
        ),
        "i2": np.zeros((0, 4), np.float32),
        "unused": np.ones((3, 4), np.float32),  # not evaluated
    }
    return ground_truth, proposals


def test_hand_computed_recall():
    ground_truth, proposals = _hand_case()
    report = evaluate_recall(ground_truth, proposals, num_boxes=[1, 2, 3, None])
    assert report.overall.num_objects == 2  # the difficult dog is excluded
    assert report.mean_boxes_per_image == [0.5, 1.0, 1.5, 2.0]
    assert report.recall_at(0.5) == [0.5, 1.0, 1.0, 1.0]
    assert report.recall_at(0.7) == [0.0, 0.5, 1.0, 1.0]
    assert report.recall_at(0.85) == [0.0, 0.5, 0.5, 0.5]
    # AR: k=1 only the cat at 0.5; k=2 cat at 0.5 + dog everywhere; k>=3 cat 0.5..0.8.
    assert report.average_recall() == pytest.approx([0.05, 0.55, 0.85, 0.85])
    assert report.recall_at(0.5, "cat") == [1.0, 1.0, 1.0, 1.0]
    assert report.recall_at(0.5, "dog") == [0.0, 1.0, 1.0, 1.0]
    assert report.per_class["dog"].num_objects == 1


def test_difficult_objects_counted_on_request():
    ground_truth, proposals = _hand_case()
    report = evaluate_recall(ground_truth, proposals, num_boxes=[3, None], include_difficult=True)
    assert report.overall.num_objects == 3
    assert report.recall_at(0.5, "dog") == [0.5, 1.0]
    assert report.recall_at(0.5) == pytest.approx([2 / 3, 1.0])


def _reference_recall(ground_truth, proposals, budgets, thresholds):
    """Loops: best IoU per non-difficult object over the first k proposals."""

    def iou(a, b):
        width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = width * height
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    hits = np.zeros((len(budgets), len(thresholds)))
    count = 0
    for image_id, truth in ground_truth.items():
        boxes = proposals[image_id]
        for gt_box, hard in zip(truth.boxes, truth.difficult):
            if hard:
                continue
            count += 1
            for j, k in enumerate(budgets):
                top = boxes if k is None else boxes[:k]
                best = max([iou(gt_box, p) for p in top], default=0.0)
                for t, threshold in enumerate(thresholds):
                    hits[j, t] += best >= threshold
    return hits / count


def test_matches_slow_reference_on_random_data():
    rng = np.random.default_rng(7)
    ground_truth, proposals = {}, {}
    for index in range(15):
        num_gt, num_boxes = rng.integers(0, 5), rng.integers(0, 40)
        xy = rng.uniform(0, 80, (num_gt, 2))
        gt = np.concatenate([xy, xy + rng.uniform(5, 40, (num_gt, 2))], axis=1)
        # Proposals: jittered copies of the objects plus random boxes.
        jitter = np.repeat(gt, 3, axis=0) + rng.normal(0, 4, (3 * num_gt, 4))
        pxy = rng.uniform(0, 80, (num_boxes, 2))
        random_boxes = np.concatenate([pxy, pxy + rng.uniform(2, 50, (num_boxes, 2))], axis=1)
        boxes = rng.permutation(np.concatenate([jitter, random_boxes]))
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 0.5)
        image_id = f"im{index}"
        ground_truth[image_id] = ImageGroundTruth(
            gt,
            ["a" if v > 0.5 else "b" for v in rng.uniform(size=num_gt)],
            rng.uniform(size=num_gt) < 0.2,
        )
        proposals[image_id] = boxes
    budgets = [1, 5, 20, None]
    report = evaluate_recall(ground_truth, proposals, num_boxes=budgets)
    expected = _reference_recall(ground_truth, proposals, budgets, AR_IOU_THRESHOLDS)
    np.testing.assert_allclose(np.array(report.overall.recall), expected, atol=1e-12)
    # The random case is not trivial: recall grows with k and falls with the threshold.
    assert expected[0, 0] < expected[-1, 0] and expected[-1, -1] < expected[-1, 0]


def test_json_text_and_plot(tmp_path):
    ground_truth, proposals = _hand_case()
    report = evaluate_recall(ground_truth, proposals)
    encoded = json.dumps(report.to_dict(), allow_nan=False)
    decoded = json.loads(encoded)
    assert decoded["num_boxes"] == [100, 300, 1000, 2000, None]
    assert decoded["overall"]["recall@0.5"] == [1.0] * 5
    assert decoded["overall"]["average_recall"] == pytest.approx([0.85] * 5)
    assert set(decoded["per_class"]) == {"cat", "dog"}
    text = report.to_text()
    assert "cat" in text and "dog" in text and "top all" in text and "difficult excluded" in text
    assert "1.000 / 1.000 / 0.850" in text
    png = report.plot(tmp_path / "recall.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000


def test_no_objects_gives_undefined_recall_not_nan():
    ground_truth = {"e": ImageGroundTruth(np.zeros((0, 4)), [])}
    report = evaluate_recall(ground_truth, {"e": np.zeros((0, 4))}, num_boxes=[10])
    assert report.overall.num_objects == 0
    assert report.recall_at(0.5) == [None] and report.average_recall() == [None]
    json.dumps(report.to_dict(), allow_nan=False)
    assert "  -  " in report.to_text()


def test_input_errors():
    ground_truth, proposals = _hand_case()
    del proposals["i2"]
    with pytest.raises(DataError, match="no proposals for 1 evaluated image"):
        evaluate_recall(ground_truth, proposals)
    with pytest.raises(DataError, match="num_boxes"):
        evaluate_recall(*_hand_case(), num_boxes=[0])
    with pytest.raises(DataError, match="0.50:0.05:0.95"):
        evaluate_recall(*_hand_case(), iou_thresholds=[0.5, 0.7])
    bad_labels = {"x": ImageGroundTruth(np.zeros((2, 4)), ["a"])}
    with pytest.raises(DataError, match="2 ground-truth boxes but 1 labels"):
        evaluate_recall(bad_labels, {"x": np.zeros((0, 4))})
    with pytest.raises(DataError, match=r"\[N, 4\]"):
        evaluate_recall({"x": ImageGroundTruth(np.zeros((1, 4)), ["a"])}, {"x": np.ones((2, 3))})
