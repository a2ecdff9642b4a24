"""VOC AP: hand-computed cases for every devkit rule, and a line-by-line port of the devkit's
VOCevaldet.m / VOCap.m (plain loops, 1-based coordinates, "+1" areas) compared on random data."""

from __future__ import annotations

import math
import os
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest

from sppdet.ops.boxes import voc_to_xyxy
from sppdet.detector.detections import ImageDetections
from sppdet.errors import ConfigError, DataError
from sppdet.evaluation.comp4 import comp4_filename, read_comp4_dir, write_comp4_files
from sppdet.evaluation.voc_ap import (
    FLAG_ALL_IGNORED,
    FLAG_NO_DETECTIONS,
    FLAG_NO_POSITIVES,
    VOC07_RECALL_THRESHOLDS,
    ClassDetections,
    ImageGroundTruth,
    area_ap,
    evaluate_class,
    evaluate_detections,
    voc07_11point_ap,
)

# ---------------------------------------------------------------------------------------------
# Reference: the VOC devkit in plain Python, written from the MATLAB source.
# ---------------------------------------------------------------------------------------------


def matlab_colon(first: float, step: float, last: float) -> list[float]:
    """MATLAB's ``first:step:last`` (colonop.m): the first half counts up from ``first``, the
    second half counts down from ``last``, an even count's middle is ``(first + last) / 2``."""
    n = int(math.floor((last - first) / step + 1e-10))
    out = [0.0] * (n + 1)
    half = n // 2
    for k in range(half + 1):
        out[k] = first + k * step
        out[n - k] = last - k * step
    if n % 2 == 0:
        out[half] = (first + last) / 2
    return out


def matlab_divide(a: float, b: float) -> float:
    if b == 0:
        return math.nan if a == 0 else math.copysign(math.inf, a)
    return a / b


def matlab_max(values: list[float]) -> float | None:
    """MATLAB's ``max`` of a vector: [] for empty, NaNs skipped, NaN if all are NaN."""
    if not values:
        return None
    defined = [v for v in values if not math.isnan(v)]
    return max(defined) if defined else math.nan


def devkit_vocap(rec: list[float], prec: list[float]) -> float:
    """VOCap.m line by line."""
    mrec = [0.0] + list(rec) + [1.0]
    mpre = [0.0] + list(prec) + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = matlab_max([mpre[i], mpre[i + 1]])
    changes = [i for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]]
    ap = 0.0
    for i in changes:
        ap = ap + (mrec[i] - mrec[i - 1]) * mpre[i]
    return ap


def devkit_vocevaldet(gtids, recs, cls, ids, confidence, BB, use_07_metric=True, minoverlap=0.5):
    """VOCevaldet.m (VOC2007 devkit, with VOC2010's VOCap for the area metric) line by line.

    gtids: image ids; recs[i]: list of objects {"class", "bbox" (1-based xmin ymin xmax ymax),
    "difficult"}; ids/confidence/BB: the comp4 file's columns in file order.
    """
    hash_ = {}
    for i, gid in enumerate(gtids):
        if gid in hash_:
            raise ValueError(f'multiple image "{gid}"')
        hash_[gid] = i
    # extract ground truth objects
    npos = 0
    gt = []
    for i in range(len(gtids)):
        clsinds = [k for k, obj in enumerate(recs[i]) if obj["class"] == cls]
        gt.append(
            {
                "BB": [recs[i][k]["bbox"] for k in clsinds],
                "diff": [recs[i][k]["difficult"] for k in clsinds],
                "det": [False] * len(clsinds),
            }
        )
        npos = npos + sum(1 for d in gt[i]["diff"] if not d)
    # sort detections by decreasing confidence ([~,si]=sort(-confidence), a stable sort)
    si = sorted(range(len(confidence)), key=lambda k: -confidence[k])
    ids = [ids[k] for k in si]
    BB = [BB[k] for k in si]
    # assign detections to ground truth objects
    nd = len(confidence)
    tp = [0.0] * nd
    fp = [0.0] * nd
    for d in range(nd):
        if ids[d] not in hash_:
            raise ValueError(f'unrecognized image "{ids[d]}"')
        i = hash_[ids[d]]
        bb = BB[d]
        ovmax = -math.inf
        jmax = None
        for j in range(len(gt[i]["BB"])):
            bbgt = gt[i]["BB"][j]
            bi = [
                max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3])
            ]
            iw = bi[2] - bi[0] + 1
            ih = bi[3] - bi[1] + 1
            if iw > 0 and ih > 0:
                # compute overlap as area of intersection / area of union
                ua = (
                    (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1)
                    + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1)
                    - iw * ih
                )
                ov = iw * ih / ua
                if ov > ovmax:
                    ovmax = ov
                    jmax = j
        # assign detection as true positive/don't care/false positive
        if ovmax >= minoverlap:
            if not gt[i]["diff"][jmax]:
                if not gt[i]["det"][jmax]:
                    tp[d] = 1.0  # true positive
                    gt[i]["det"][jmax] = True
                else:
                    fp[d] = 1.0  # false positive (multiple detection)
        else:
            fp[d] = 1.0  # false positive
    # compute precision/recall
    for d in range(1, nd):
        fp[d] = fp[d] + fp[d - 1]
        tp[d] = tp[d] + tp[d - 1]
    rec = [matlab_divide(tp[d], npos) for d in range(nd)]
    prec = [matlab_divide(tp[d], fp[d] + tp[d]) for d in range(nd)]
    if use_07_metric:
        ap = 0.0
        for t in matlab_colon(0, 0.1, 1):
            p = matlab_max([prec[k] for k in range(nd) if rec[k] >= t])
            if p is None:
                p = 0.0
            ap = ap + p / 11
    else:
        ap = devkit_vocap(rec, prec)
    return rec, prec, ap, npos


# ---------------------------------------------------------------------------------------------
# Helpers for hand-made cases (boxes given 0-based continuous, integers: exact arithmetic).
# ---------------------------------------------------------------------------------------------


def gt_image(image_id, boxes, labels=None, difficult=None):
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.zeros(len(boxes), np.int64) if labels is None else np.array(labels)
    return ImageGroundTruth(image_id, boxes, labels, difficult)


def dets(rows):
    """rows: (image_id, score, x1, y1, x2, y2) in input order."""
    if not rows:
        return ClassDetections.empty()
    return ClassDetections(
        np.array([r[0] for r in rows], dtype=object),
        np.array([r[1] for r in rows], dtype=np.float64),
        np.array([r[2:] for r in rows], dtype=np.float64),
    )


FAR = (100.0, 100.0, 110.0, 110.0)  # overlaps nothing in the hand cases


def test_thresholds_are_matlab_colon_and_differ_from_numpy_forms():
    assert list(VOC07_RECALL_THRESHOLDS) == matlab_colon(0, 0.1, 1)
    assert VOC07_RECALL_THRESHOLDS[3] == 0.30000000000000004
    assert VOC07_RECALL_THRESHOLDS[6] == 0.6 and VOC07_RECALL_THRESHOLDS[7] == 0.7
    assert list(np.arange(0, 1.1, 0.1)) != list(VOC07_RECALL_THRESHOLDS)
    assert [k / 10 for k in range(11)] != list(VOC07_RECALL_THRESHOLDS)


def test_difficult_match_is_ignored():
    gt = [gt_image("a", [[0, 0, 10, 10], [20, 20, 30, 30]], difficult=[False, True])]
    d = dets([("a", 0.9, 20, 20, 30, 30), ("a", 0.8, 0, 0, 10, 10), ("a", 0.7, *FAR)])
    r = evaluate_class(gt, 0, d)
    assert (r.npos, r.n_ignored, r.n_true_positives, r.n_false_positives) == (1, 1, 1, 1)
    np.testing.assert_array_equal(r.recall, [0.0, 1.0, 1.0])
    assert math.isnan(r.precision[0])
    np.testing.assert_array_equal(r.precision[1:], [1.0, 0.5])
    # Every threshold sees precision 1 (the NaN of the ignored detection is skipped).
    assert r.ap == pytest.approx(1.0, abs=1e-12)
    assert r.flags == ()


def test_duplicate_is_false_positive_and_not_rematched_to_second_best_box():
    # A and B overlap (IoU 100/120); the second detection equals A (already taken) and also
    # overlaps B by 0.83, but the devkit only looks at its best box: a duplicate.
    gt = [gt_image("a", [[0, 0, 10, 10], [0, 0, 10, 12]])]
    d = dets([("a", 0.9, 0, 0, 10, 10), ("a", 0.8, 0, 0, 10, 10), ("a", 0.7, 0, 0, 10, 12)])
    r = evaluate_class(gt, 0, d)
    assert (r.n_true_positives, r.n_false_positives) == (2, 1)
    np.testing.assert_allclose(r.recall, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(r.precision, [1.0, 0.5, 2 / 3])
    # 11-point: thresholds 0..0.5 (6 of them) see precision 1, 0.6..1 (5) see 2/3.
    assert r.ap == pytest.approx((6 + 5 * 2 / 3) / 11, abs=1e-12)
    # Area: 0.5 * 1 + 0.5 * 2/3.
    r_area = evaluate_class(gt, 0, d, metric="area")
    assert r_area.ap == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-12)


def test_equal_overlap_goes_to_first_box_even_if_taken_or_difficult():
    gt = [gt_image("a", [[0, 0, 10, 10], [0, 0, 10, 10]])]
    d = dets([("a", 0.9, 0, 0, 10, 10), ("a", 0.8, 0, 0, 10, 10)])
    r = evaluate_class(gt, 0, d)
    assert (r.n_true_positives, r.n_false_positives) == (1, 1)
    gt_difficult_first = [gt_image("a", [[0, 0, 10, 10], [0, 0, 10, 10]], difficult=[1, 0])]
    r = evaluate_class(gt_difficult_first, 0, d)
    assert (r.n_true_positives, r.n_false_positives, r.n_ignored) == (0, 0, 2)


def test_overlap_exactly_half_counts_as_match():
    # gt [0,0,3,4] (area 12), det [1,0,4,4] (area 12): intersection 8, union 16 -> 0.5 exactly.
    gt = [gt_image("a", [[0, 0, 3, 4]])]
    d = dets([("a", 0.9, 1, 0, 4, 4)])
    assert 8.0 / (12.0 + 12.0 - 8.0) == 0.5
    r = evaluate_class(gt, 0, d)
    assert r.n_true_positives == 1 and r.ap == pytest.approx(1.0, abs=1e-12)
    # Just below: det [1,0,4.001,4] gives 8/16.004 < 0.5 -> false positive.
    r = evaluate_class(gt, 0, dets([("a", 0.9, 1, 0, 4.001, 4)]))
    assert r.n_false_positives == 1 and r.ap == 0.0
    # The same boxes in the devkit's 1-based form (xmin = x1 + 1).
    _, _, ap, _ = devkit_vocevaldet(
        ["a"], [[{"class": 0, "bbox": [1, 1, 3, 4], "difficult": False}]], 0,
        ["a"], [0.9], [[2, 1, 4, 4]],
    )
    assert ap == pytest.approx(1.0, abs=1e-12)


def test_equal_scores_keep_input_order():
    # One object; a false positive and a true positive with the same score. In input order
    # FP, TP the curve is rec [0, 1], prec [0, 0.5] -> AP 0.5; a sort that swapped the tied
    # pair (an unstable sort may) would give TP first and AP 1.
    gt = [gt_image("a", [[0, 0, 10, 10]])]
    fp_first = dets([("a", 0.5, *FAR), ("a", 0.5, 0, 0, 10, 10)])
    tp_first = dets([("a", 0.5, 0, 0, 10, 10), ("a", 0.5, *FAR)])
    r_fp_first = evaluate_class(gt, 0, fp_first)
    r_tp_first = evaluate_class(gt, 0, tp_first)
    assert r_fp_first.ap == pytest.approx(0.5, abs=1e-12)
    assert r_tp_first.ap == pytest.approx(1.0, abs=1e-12)
    for d, r in ((fp_first, r_fp_first), (tp_first, r_tp_first)):
        _, _, ap, _ = devkit_vocevaldet(
            ["a"], [[{"class": 0, "bbox": [1, 1, 10, 10], "difficult": False}]], 0,
            list(d.image_ids), list(d.scores), [[b[0] + 1, b[1] + 1, b[2], b[3]] for b in d.boxes],
        )
        assert r.ap == pytest.approx(ap, abs=1e-12)


def test_tied_scores_many_detections_match_stable_reference():
    # Many ties on the same objects: only the stable order reproduces the reference.
    rng = np.random.default_rng(7)
    boxes = [[10 * k, 0, 10 * k + 8, 8] for k in range(10)]
    gt = [gt_image("a", boxes)]
    rows = []
    for _ in range(60):
        k = int(rng.integers(0, 12))
        box = boxes[k] if k < 10 else FAR
        rows.append(("a", float(rng.integers(0, 3)), *box))
    d = dets(rows)
    r = evaluate_class(gt, 0, d)
    _, prec, ap, _ = devkit_vocevaldet(
        ["a"], [[{"class": 0, "bbox": [b[0] + 1, b[1] + 1, b[2], b[3]], "difficult": False}
                 for b in boxes]], 0,
        [x[0] for x in rows], [x[1] for x in rows],
        [[x[2] + 1, x[3] + 1, x[4], x[5]] for x in rows],
    )
    assert r.ap == pytest.approx(ap, abs=1e-12)
    np.testing.assert_array_equal(r.precision, prec)
    # The ties are not cosmetic here: reversing every tie block changes the curve.
    reversed_rows = rows[::-1]
    r_reversed = evaluate_class(gt, 0, dets(reversed_rows))
    assert not np.array_equal(r_reversed.precision, r.precision)


@pytest.mark.parametrize(
    ("n_tp", "expected_thresholds_reached"),
    [(3, 3), (6, 7), (7, 8)],
)
def test_recall_exactly_on_threshold(n_tp, expected_thresholds_reached):
    # npos = 10 and n_tp perfect detections, nothing else: recall peaks at n_tp / 10 with
    # precision 1, so the 11-point AP counts the thresholds that recall reaches.
    boxes = [[20 * k, 0, 20 * k + 10, 10] for k in range(10)]
    gt = [gt_image("a", boxes)]
    d = dets([("a", 1.0 - 0.01 * k, *boxes[k]) for k in range(n_tp)])
    r = evaluate_class(gt, 0, d)
    assert r.recall[-1] == n_tp / 10
    assert r.ap == pytest.approx(expected_thresholds_reached / 11, abs=1e-12)
    # k/10 thresholds would count 4 at recall 0.3; np.arange would count 6 at 0.6, 7 at 0.7.
    wrong = [k / 10 for k in range(11)] if n_tp == 3 else list(np.arange(0, 1.1, 0.1))
    assert sum(n_tp / 10 >= t for t in wrong) != expected_thresholds_reached
    # Area metric: exactly the recall reached.
    assert evaluate_class(gt, 0, d, metric="area").ap == pytest.approx(n_tp / 10, abs=1e-12)


def test_eleven_point_and_area_differ_on_a_curve():
    # npos 2: TP, FP, TP -> rec [.5 .5 1], prec [1 .5 .667].
    gt = [gt_image("a", [[0, 0, 10, 10], [20, 0, 30, 10]])]
    d = dets([("a", 0.9, 0, 0, 10, 10), ("a", 0.8, *FAR), ("a", 0.7, 20, 0, 30, 10)])
    eleven = evaluate_class(gt, 0, d).ap
    area = evaluate_class(gt, 0, d, metric="area").ap
    assert eleven == pytest.approx((6 + 5 * 2 / 3) / 11, abs=1e-12)
    assert area == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-12)
    assert eleven != pytest.approx(area)


def test_class_without_detections_scores_zero():
    gt = [gt_image("a", [[0, 0, 10, 10]])]
    r = evaluate_class(gt, 0, ClassDetections.empty())
    assert r.ap == 0.0 and r.flags == (FLAG_NO_DETECTIONS,)
    assert r.recall.shape == (0,) and r.precision.shape == (0,)


def test_class_without_positives_is_undefined_and_left_out_of_mean():
    gt = [
        gt_image("a", [[0, 0, 10, 10], [20, 0, 30, 10]], labels=[0, 1], difficult=[0, 1]),
        gt_image("b", []),
    ]
    detections = [
        ImageDetections("a", [[0, 0, 10, 10], [40, 40, 50, 50]], [0.9, 0.8], [0, 1]),
        ImageDetections.empty("b"),
    ]
    for metric in ("11point", "area"):
        ev = evaluate_detections(gt, detections, ["cat", "dog"], metric=metric)
        dog = ev.per_class[1]
        assert dog.ap is None and FLAG_NO_POSITIVES in dog.flags and dog.npos == 0
        assert np.isnan(dog.recall).all()
        assert ev.classes_excluded_from_mean == ("dog",)
        assert ev.mean_ap == pytest.approx(1.0, abs=1e-12)
        # What the devkit itself would report for the class: 0 (11-point) or NaN (area).
        _, _, devkit_ap, _ = devkit_vocevaldet(
            ["a", "b"],
            [[{"class": 0, "bbox": [1, 1, 10, 10], "difficult": False},
              {"class": 1, "bbox": [21, 1, 30, 10], "difficult": True}], []],
            1, ["a"], [0.8], [[41, 41, 50, 50]], use_07_metric=(metric == "11point"),
        )
        assert np.isnan(devkit_ap) if metric == "area" else devkit_ap == 0.0
        assert np.array_equal(dog.devkit_ap, devkit_ap, equal_nan=True)


def test_all_detections_ignored_reports_zero_with_flag():
    gt = [gt_image("a", [[0, 0, 10, 10], [20, 0, 30, 10]], difficult=[True, False])]
    d = dets([("a", 0.9, 0, 0, 10, 10), ("a", 0.8, 0, 0, 10, 10)])
    r = evaluate_class(gt, 0, d)
    assert r.ap == 0.0 and r.flags == (FLAG_ALL_IGNORED,)
    assert math.isnan(r.devkit_ap)  # the devkit's 0/0 precision
    assert evaluate_class(gt, 0, d, metric="area").ap == 0.0


def test_images_without_objects_and_detections_on_them():
    gt = [gt_image("a", [[0, 0, 10, 10]]), gt_image("empty", [])]
    d = dets([("empty", 0.9, 0, 0, 10, 10), ("a", 0.8, 0, 0, 10, 10)])
    r = evaluate_class(gt, 0, d)
    assert (r.n_true_positives, r.n_false_positives) == (1, 1)
    assert r.ap == pytest.approx(0.5, abs=1e-12)


def test_input_errors():
    gt = [gt_image("a", [[0, 0, 10, 10]]), gt_image("a", [])]
    with pytest.raises(DataError, match="listed twice"):
        evaluate_class(gt, 0, ClassDetections.empty())
    with pytest.raises(DataError, match="not in the ground truth"):
        evaluate_class([gt_image("a", [])], 0, dets([("zzz", 0.9, 0, 0, 1, 1)]))
    with pytest.raises(DataError, match="out of range"):
        evaluate_detections([gt_image("a", [[0, 0, 1, 1]], labels=[3])], [], ["x"])
    with pytest.raises(DataError, match="out of range"):
        evaluate_detections(
            [gt_image("a", [])], [ImageDetections("a", [[0, 0, 1, 1]], [1.0], [2])], ["x"]
        )
    with pytest.raises(DataError, match="unknown classes"):
        evaluate_detections([gt_image("a", [])], {"y": ClassDetections.empty()}, ["x"])
    with pytest.raises(ConfigError, match="metric"):
        evaluate_class([gt_image("a", [])], 0, ClassDetections.empty(), metric="voc12")
    with pytest.raises(DataError, match="finite"):
        dets([("a", float("nan"), 0, 0, 1, 1)])


def test_empty_split():
    ev = evaluate_detections([], [], ["x", "y"])
    assert ev.mean_ap is None and ev.n_images == 0
    assert all(r.ap is None for r in ev.per_class)


def test_ap_functions_on_nan_prefix_match_reference():
    rec = [0.0, 0.0, 0.5, 0.5, 1.0]
    prec = [math.nan, math.nan, 1.0, 0.5, 0.6]
    assert voc07_11point_ap(np.array(rec), np.array(prec)) == pytest.approx(
        devkit_vocevaldet_ap11(rec, prec), abs=1e-15
    )
    assert area_ap(np.array(rec), np.array(prec)) == pytest.approx(
        devkit_vocap(rec, prec), abs=1e-15
    )


def devkit_vocevaldet_ap11(rec, prec):
    ap = 0.0
    for t in matlab_colon(0, 0.1, 1):
        p = matlab_max([prec[k] for k in range(len(rec)) if rec[k] >= t])
        ap = ap + (0.0 if p is None else p) / 11
    return ap


# ---------------------------------------------------------------------------------------------
# Random comparisons with the reference port.
# ---------------------------------------------------------------------------------------------


def random_case(rng: np.random.Generator, *, grid: bool, n_classes: int = 3):
    """Ground truth (1-based, as in XML) and per-class detections (1-based, as in comp4).

    ``grid``: integer coordinates and scores from a few levels (exact ties, overlaps exactly
    0.5); otherwise float32-representable fractional coordinates and continuous scores.
    """
    n_images = int(rng.integers(1, 7))
    gtids = [f"{i:06d}" for i in rng.permutation(100)[:n_images]]
    recs = []
    for _ in range(n_images):
        objects = []
        for _ in range(int(rng.integers(0, 5))):
            x, y = rng.integers(1, 40, 2)
            w, h = rng.integers(1, 16, 2)
            box = [float(x), float(y), float(x + w - 1), float(y + h - 1)]
            if not grid:
                box = [float(np.float32(v + rng.uniform(-0.4, 0.4))) for v in box]
            objects.append(
                {"class": int(rng.integers(0, n_classes)), "bbox": box,
                 "difficult": bool(rng.random() < 0.2)}
            )
        recs.append(objects)
    per_class = {}
    for c in range(n_classes):
        ids, scores, boxes = [], [], []
        for _ in range(int(rng.integers(0, 25))):
            i = int(rng.integers(0, n_images))
            of_class = [o for o in recs[i] if o["class"] == c]
            if of_class and rng.random() < 0.7:
                base = of_class[int(rng.integers(0, len(of_class)))]["bbox"]
                jitter = rng.integers(-3, 4, 4) if grid else rng.normal(0, 2, 4)
                box = [b + j for b, j in zip(base, jitter)]
            else:
                x, y = rng.integers(1, 40, 2)
                box = [x, y, x + rng.integers(-2, 16), y + rng.integers(0, 16)]
            box = [float(v) if grid else float(np.float32(v)) for v in box]
            ids.append(gtids[i])
            scores.append(float(rng.integers(0, 4)) / 4 if grid else float(rng.random()))
            boxes.append(box)
        per_class[c] = (ids, scores, boxes)
    return gtids, recs, per_class


def to_sppdet(gtids, recs, per_class, n_classes):
    gt = []
    for gid, objects in zip(gtids, recs):
        boxes = voc_to_xyxy(np.array([o["bbox"] for o in objects]).reshape(-1, 4))
        gt.append(
            ImageGroundTruth(
                gid, boxes, np.array([o["class"] for o in objects], dtype=np.int64),
                np.array([o["difficult"] for o in objects], dtype=bool),
            )
        )
    detections = {
        str(c): ClassDetections(
            np.array(ids, dtype=object), np.array(scores),
            voc_to_xyxy(np.array(boxes).reshape(-1, 4)),
        )
        for c, (ids, scores, boxes) in per_class.items()
    }
    return gt, detections


@pytest.mark.parametrize("metric", ["11point", "area"])
@pytest.mark.parametrize("grid", [True, False])
def test_matches_devkit_port_on_random_cases(metric, grid):
    n_classes = 3
    compared = 0
    for seed in range(150):
        rng = np.random.default_rng(seed)
        gtids, recs, per_class = random_case(rng, grid=grid, n_classes=n_classes)
        gt, detections = to_sppdet(gtids, recs, per_class, n_classes)
        ev = evaluate_detections(
            gt, detections, [str(c) for c in range(n_classes)], metric=metric
        )
        for c in range(n_classes):
            ids, scores, boxes = per_class[c]
            rec, prec, ap, npos = devkit_vocevaldet(
                gtids, recs, c, ids, scores, boxes, use_07_metric=(metric == "11point")
            )
            r = ev.per_class[c]
            assert r.npos == npos
            np.testing.assert_array_equal(r.recall, np.array(rec, dtype=np.float64))
            np.testing.assert_array_equal(r.precision, np.array(prec, dtype=np.float64))
            assert np.isclose(r.devkit_ap, ap, rtol=0, atol=1e-12, equal_nan=True), (seed, c)
            if npos > 0 and not math.isnan(ap):
                assert r.ap == pytest.approx(ap, abs=1e-12)
                compared += 1
    assert compared > 200


def test_comp4_files_reproduce_devkit_map(tmp_path: Path):
    """sppdet reads a folder of comp4 files and gets the devkit's mAP (to 1e-12, so to
    4 decimals), and the same mAP as from the detections in memory."""
    class_names = ["aeroplane", "bicycle", "bird", "boat"]
    rng = np.random.default_rng(2024)
    n_images = 40
    gtids = [f"{i:06d}" for i in range(1, n_images + 1)]
    recs, images = [], []
    for gid in gtids:
        objects = []
        for _ in range(int(rng.integers(0, 6))):
            x, y = rng.integers(1, 300, 2)
            w, h = rng.integers(8, 120, 2)
            objects.append(
                {"class": class_names[int(rng.integers(0, len(class_names)))],
                 "bbox": [float(x), float(y), float(x + w - 1), float(y + h - 1)],
                 "difficult": bool(rng.random() < 0.15)}
            )
        recs.append(objects)
        boxes, scores, labels = [], [], []
        for _ in range(int(rng.integers(0, 30))):
            if objects and rng.random() < 0.6:
                obj = objects[int(rng.integers(0, len(objects)))]
                x1, y1, x2, y2 = obj["bbox"]
                box = [x1 - 1, y1 - 1, x2, y2] + rng.normal(0, 6, 4)
                label = class_names.index(obj["class"]) if rng.random() < 0.9 else int(
                    rng.integers(0, len(class_names)))
            else:
                x, y = rng.uniform(0, 300, 2)
                box = [x, y, x + rng.uniform(5, 100), y + rng.uniform(5, 100)]
                label = int(rng.integers(0, len(class_names)))
            boxes.append(box)
            scores.append(rng.normal())
            labels.append(label)
        images.append(ImageDetections(gid, np.array(boxes).reshape(-1, 4), scores, labels))
    paths = write_comp4_files(tmp_path, "test", class_names, images)
    assert [p.name for p in paths] == [comp4_filename("test", c) for c in class_names]

    gt = [
        ImageGroundTruth(
            gid, voc_to_xyxy(np.array([o["bbox"] for o in objs]).reshape(-1, 4)),
            np.array([class_names.index(o["class"]) for o in objs], dtype=np.int64),
            np.array([o["difficult"] for o in objs], dtype=bool),
        )
        for gid, objs in zip(gtids, recs)
    ]
    from_files = read_comp4_dir(tmp_path, "test", class_names, known_image_ids=gtids)
    for metric in ("11point", "area"):
        ev_files = evaluate_detections(gt, from_files.detections, class_names, metric=metric)
        ev_memory = evaluate_detections(gt, images, class_names, metric=metric)
        devkit_aps = []
        for name in class_names:
            # The devkit's textscan(fid, '%s %f %f %f %f %f') on the written file.
            lines = (tmp_path / comp4_filename("test", name)).read_text().split("\n")
            fields = [line.split() for line in lines if line.strip()]
            _, _, ap, npos = devkit_vocevaldet(
                gtids, recs, name, [f[0] for f in fields], [float(f[1]) for f in fields],
                [[float(v) for v in f[2:]] for f in fields], use_07_metric=(metric == "11point"),
            )
            assert npos > 0
            devkit_aps.append(ap)
        devkit_map = sum(devkit_aps) / len(devkit_aps)
        assert 0.05 < devkit_map < 0.95  # a non-trivial case
        assert round(ev_files.mean_ap, 4) == round(devkit_map, 4)
        assert ev_files.mean_ap == pytest.approx(devkit_map, abs=1e-12)
        assert ev_memory.mean_ap == ev_files.mean_ap
        for r, ap in zip(ev_files.per_class, devkit_aps):
            assert r.ap == pytest.approx(ap, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Real VOC2007 annotations (difficult objects, real boxes), when the shared data is present.
# ---------------------------------------------------------------------------------------------

_SHARED_DATA = Path(
    os.environ.get(
        "SPPDET_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    )
)
_VOC07_FIXTURES = _SHARED_DATA / "voc-fixtures" / "VOC2007"


@pytest.mark.skipif(
    not (_VOC07_FIXTURES / "Annotations").is_dir(),
    reason=f"real VOC2007 fixtures not found at {_VOC07_FIXTURES} (set SPPDET_SHARED_DATA)",
)
def test_real_voc2007_annotations_match_devkit_port():
    gtids = (_VOC07_FIXTURES / "ImageSets" / "Main" / "test.txt").read_text().split()
    recs = []
    for gid in gtids:
        root = ElementTree.parse(_VOC07_FIXTURES / "Annotations" / f"{gid}.xml").getroot()
        recs.append([
            {
                "class": obj.findtext("name").strip(),
                "bbox": [
                    float(obj.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")
                ],
                "difficult": obj.findtext("difficult", "0").strip() == "1",
            }
            for obj in root.iter("object")
        ])
    assert any(o["difficult"] for objs in recs for o in objs)
    class_names = sorted({o["class"] for objs in recs for o in objs})
    rng = np.random.default_rng(0)
    per_class = {name: ([], [], []) for name in class_names}
    for gid, objs in zip(gtids, recs):
        for obj in objs:
            for _ in range(int(rng.integers(1, 4))):  # hits, duplicates and misses
                box = [v + float(rng.integers(-25, 26)) for v in obj["bbox"]]
                name = obj["class"]
                if rng.random() < 0.15:
                    name = class_names[int(rng.integers(0, len(class_names)))]
                per_class[name][0].append(gid)
                per_class[name][1].append(float(rng.integers(0, 20)) / 4)
                per_class[name][2].append(box)
    gt = [
        ImageGroundTruth(
            gid, voc_to_xyxy(np.array([o["bbox"] for o in objs]).reshape(-1, 4)),
            np.array([class_names.index(o["class"]) for o in objs], dtype=np.int64),
            np.array([o["difficult"] for o in objs], dtype=bool),
        )
        for gid, objs in zip(gtids, recs)
    ]
    detections = {
        name: ClassDetections(
            np.array(ids, dtype=object), np.array(s), voc_to_xyxy(np.array(b).reshape(-1, 4))
        )
        for name, (ids, s, b) in per_class.items()
    }
    for metric in ("11point", "area"):
        ev = evaluate_detections(gt, detections, class_names, metric=metric)
        for r in ev.per_class:
            ids, scores, boxes = per_class[r.class_name]
            _, _, ap, npos = devkit_vocevaldet(
                gtids, recs, r.class_name, ids, scores, boxes, use_07_metric=(metric == "11point")
            )
            assert r.npos == npos
            assert np.isclose(r.devkit_ap, ap, rtol=0, atol=1e-12, equal_nan=True)


# ---------------------------------------------------------------------------------------------
# The devkit's edge cases, each with its AP worked out by hand.
# ---------------------------------------------------------------------------------------------


def zero_based_overlap(det_voc, gt_voc):
    """The same overlap computed on 0-based coordinates (x1 = xmin - 1, w = x2 - x1): equal in
    exact arithmetic, rounded differently in floats."""
    b = [det_voc[0] - 1, det_voc[1] - 1, det_voc[2], det_voc[3]]
    g = [gt_voc[0] - 1, gt_voc[1] - 1, gt_voc[2], gt_voc[3]]
    iw = min(b[2], g[2]) - max(b[0], g[0])
    ih = min(b[3], g[3]) - max(b[1], g[1])
    inter = iw * ih
    return inter / ((b[2] - b[0]) * (b[3] - b[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter)


@pytest.mark.parametrize(
    ("det_voc", "gt_voc"),
    [
        # float64: the devkit's order of operations gives exactly 0.5, 0-based 0.4999999999999999
        ((1.19, 14.28, 32.94596685082873, 35.0), (1.0, 1.0, 24.0, 35.0)),
        # the devkit gives 0.5; boxes stored as float32 0-based (the old reading) 0.49999999
        ((1.01, 1.09, 19.889182643794147, 10.0), (1.0, 1.0, 10.0, 10.0)),
    ],
)
def test_float_detection_at_exactly_half_matches_as_in_devkit(det_voc, gt_voc):
    _, _, devkit_ap, _ = devkit_vocevaldet(
        ["a"], [[{"class": 0, "bbox": list(gt_voc), "difficult": False}]], 0,
        ["a"], [0.9], [list(det_voc)],
    )
    assert devkit_ap == pytest.approx(1.0, abs=1e-12)  # the devkit: a true positive
    b32 = np.float32(np.array(det_voc) - [1, 1, 0, 0]).astype(np.float64) + [1, 1, 0, 0]
    # the case is on the edge: another float route lands below 0.5
    assert min(zero_based_overlap(det_voc, gt_voc), zero_based_overlap(b32, gt_voc)) < 0.5
    gt = [ImageGroundTruth("a", voc_to_xyxy(np.array([gt_voc])), [0], None,
                           np.array([gt_voc]))]
    d = ClassDetections.from_voc(["a"], np.array([0.9]), np.array([det_voc]))
    r = evaluate_class(gt, 0, d)
    assert r.matches.best_overlap[0] == 0.5
    # one object, one true positive: precision 1 at recall 1 -> AP 1 in both metrics
    assert r.n_true_positives == 1 and r.ap == pytest.approx(1.0, abs=1e-12)
    assert evaluate_class(gt, 0, d, metric="area").ap == 1.0


def test_single_pixel_ground_truth_box():
    # VOC (5, 5, 5, 5) is one pixel (area 1 under the +1 rule); the 2x1 detection (5, 5, 6, 5)
    # covers it: intersection 1, union 2 -> overlap 0.5, a match.
    gt = [ImageGroundTruth("a", np.zeros((2, 4)), [0, 0], None,
                           np.array([[5.0, 5, 5, 5], [20, 20, 29, 29]]))]
    d = ClassDetections.from_voc(
        ["a", "a", "a"], np.array([0.9, 0.8, 0.7]),
        np.array([[5.0, 5, 6, 5], [40, 40, 49, 49], [20, 20, 29, 29]]))
    r = evaluate_class(gt, 0, d)
    np.testing.assert_array_equal(r.matches.best_overlap, [0.5, -np.inf, 1.0])
    # TP, FP, TP with npos 2: recall .5 .5 1, precision 1 .5 2/3.
    # 11-point: thresholds 0..0.5 (6) reach precision 1, 0.6..1 (5) reach 2/3.
    assert r.ap == pytest.approx((6 + 5 * 2 / 3) / 11, abs=1e-12)
    assert evaluate_class(gt, 0, d, metric="area").ap == pytest.approx(0.5 + 0.5 * 2 / 3,
                                                                       abs=1e-12)
    # the single pixel alone, matched exactly: overlap 1
    exact = ClassDetections.from_voc(["a"], np.array([1.0]), np.array([[5.0, 5, 5, 5]]))
    assert evaluate_class(gt, 0, exact).matches.best_overlap[0] == 1.0


def test_class_without_ground_truth_devkit_mean_beside():
    # cat: one object, one true positive -> AP 1. dog: no object, one detection -> undefined
    # here, 0 in the VOC2007 devkit. Mean AP over defined classes 1; the devkit's mean
    # (1 + 0) / 2 = 0.5.
    gt = [gt_image("a", [[0, 0, 10, 10]], labels=[0])]
    detections = {"cat": dets([("a", 0.9, 0, 0, 10, 10)]), "dog": dets([("a", 0.8, *FAR)])}
    ev = evaluate_detections(gt, detections, ["cat", "dog"])
    assert ev.per_class[0].ap == pytest.approx(1.0, abs=1e-12)
    assert ev.per_class[1].ap is None and ev.per_class[1].devkit_ap == 0.0
    assert ev.mean_ap == pytest.approx(1.0, abs=1e-12)
    assert ev.devkit_mean_ap == pytest.approx(0.5, abs=1e-12)
    _, _, devkit_dog, _ = devkit_vocevaldet(
        ["a"], [[{"class": 0, "bbox": [1, 1, 10, 10], "difficult": False}]], 1,
        ["a"], [0.8], [[101, 101, 110, 110]])
    assert devkit_dog == 0.0
    # with every class defined the two means agree
    both = evaluate_detections([gt_image("a", [[0, 0, 10, 10], [20, 0, 30, 10]], [0, 1])],
                               detections, ["cat", "dog"])
    assert both.devkit_mean_ap == both.mean_ap == pytest.approx(0.5, abs=1e-12)


def test_artifact_and_its_comp4_file_give_the_same_overlaps(tmp_path: Path):
    # float32 0-based boxes (as detect stores them) near the 0.5 boundary: the in-memory
    # detections and the comp4 file written from them are evaluated on the same numbers.
    rng = np.random.default_rng(3)
    gt_voc = np.array([[1.0, 1.0, 24.0, 35.0]])
    boxes = (np.array([[0.19, 13.28, 32.945967, 35.0]]) + rng.normal(0, 1e-3, (200, 4)))
    images = [ImageDetections("a", boxes.astype(np.float32), rng.random(200), np.zeros(200, np.int64))]
    write_comp4_files(tmp_path, "test", ["x"], images)
    from_file = read_comp4_dir(tmp_path, "test", ["x"]).detections["x"]
    gt = [ImageGroundTruth("a", voc_to_xyxy(gt_voc), [0], None, gt_voc)]
    r_memory = evaluate_detections(gt, images, ["x"]).per_class[0]
    r_file = evaluate_detections(gt, {"x": from_file}, ["x"]).per_class[0]
    np.testing.assert_array_equal(r_memory.matches.best_overlap, r_file.matches.best_overlap)
    assert (r_memory.matches.best_overlap < 0.5).any() and (
        r_memory.matches.best_overlap >= 0.5).any()
    np.testing.assert_array_equal(r_memory.precision, r_file.precision)
