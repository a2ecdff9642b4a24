"""PASCAL VOC detection average precision, following the official devkit's ``VOCevaldet``.

Protocols (``metric``):

- ``"11point"``: VOC2007 (``VOCevaldet.m`` of the VOC2007 devkit): the mean over the 11 recall
  thresholds of MATLAB's ``0:0.1:1`` of the highest precision at recall >= threshold.
- ``"area"``: VOC2010 and later (``VOCap.m``): the area under the precision/recall curve made
  monotone from the right.

The matching rules are the devkit's, line for line (REFERENCE.md section 9):

- per class, detections are sorted by score, descending, with a *stable* sort (MATLAB's
  ``sort``): equal scores keep their input order;
- each detection is compared with the ground-truth boxes of its class in its image and matched
  to the one with the highest overlap (the first such box on a tie); only pairs that intersect
  (``iw > 0 and ih > 0``) count;
- overlap >= ``iou_threshold`` (0.5, inclusive): a *difficult* box makes the detection ignored
  (neither true nor false positive), an unmatched box becomes a true positive and is marked, an
  already marked box makes the detection a false positive (duplicate); overlap below the
  threshold: false positive. A detection whose best box is taken is *not* re-matched to the
  second best;
- ``npos`` counts non-difficult objects; recall ``= cumsum(tp) / npos``, precision
  ``= cumsum(tp) / (cumsum(tp) + cumsum(fp))``.

Overlaps are computed on the devkit's own 1-based coordinates (``boxes_voc``: the comp4 file's
numbers as read, the XML's as written) with VOCevaldet's formula and order of operations::

    bi = [max(bb(1),bbgt(1)); max(bb(2),bbgt(2)); min(bb(3),bbgt(3)); min(bb(4),bbgt(4))]
    iw = bi(3)-bi(1)+1;  ih = bi(4)-bi(2)+1          % only pairs with iw > 0 and ih > 0
    ua = (bb(3)-bb(1)+1)*(bb(4)-bb(2)+1) + (bbgt(3)-bbgt(1)+1)*(bbgt(4)-bbgt(2)+1) - iw*ih
    ov = iw*ih/ua

so a float box whose overlap is exactly 0.5 in the devkit's arithmetic is exactly 0.5 here
(computing on 0-based coordinates, ``x2 - x1``, is equal in exact arithmetic but rounds
differently). Detections given only as sppdet's 0-based boxes (a detections artifact) get
``boxes_voc = xyxy_to_voc(boxes)``, the very numbers that :mod:`.comp4` writes to a result file,
so evaluating the artifact and evaluating its comp4 files agree exactly.

Where sppdet reports something other than the devkit, it says so in the result's ``flags``:

- every detection of a class ignored (all on difficult objects): the devkit's precision is
  0/0 and its 11-point AP is NaN; sppdet reports AP 0 with flag ``all_detections_ignored``;
- a class with no non-difficult object (``npos == 0``): AP is undefined. The devkit gives 0
  (11-point; also area when the class has no detection) or NaN (area, with detections); sppdet
  reports ``ap = None`` with flag ``no_positives`` and leaves the class out of the mean AP.
  ``ClassResult.devkit_ap`` keeps the devkit's own number, and
  ``VOCEvaluation.devkit_mean_ap`` is the mean over every class with those classes at 0, as
  the VOC2007 devkit's mean comes out;
- a class with no detections gets AP 0 (as in the devkit) with flag ``no_detections``;
- an image with no objects is legal (the devkit's annotation reader fails on it); an image id
  listed twice in the ground truth is an error, and so is a detection on an image that the
  ground truth does not list (the devkit's "unrecognized image").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from sppdet.detector.detections import ImageDetections
from sppdet.errors import ConfigError, DataError
from sppdet.evaluation.records import (
    ClassDetections,
    ClassResult,
    DetectionMatches,
    ImageGroundTruth,
    VOCEvaluation,
)

__all__ = [
    "METRICS", "VOC07_RECALL_THRESHOLDS", "ClassDetections", "ClassResult", "DetectionMatches",
    "ImageGroundTruth", "VOCEvaluation", "ap_of_curve", "area_ap",
    "class_detections_from_images", "devkit_overlaps", "evaluate_class", "evaluate_detections",
    "precision_recall", "voc07_11point_ap",
]

METRICS: dict[str, str] = {
    "11point": "VOC2007 11-point AP, devkit rules (VOCevaldet)",
    "area": "VOC2010+ area under the interpolated PR curve, devkit rules (VOCevaldet, VOCap)",
}

# MATLAB's ``0:0.1:1`` as the VOC2007 devkit evaluates it. MATLAB's colon operator computes the
# first half of the range as ``0 + k*0.1`` and the second half as ``1 - (10-k)*0.1``, so the
# fourth threshold is 0.30000000000000004 (a recall of exactly 3/10 does not reach it) while the
# seventh and eighth are exactly 0.6 and 0.7. ``np.arange(0, 1.1, 0.1)`` gives
# 0.6000000000000001 and 0.7000000000000001, and ``k / 10`` gives 0.3: both differ.
VOC07_RECALL_THRESHOLDS: tuple[float, ...] = (
    0.0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
)

FLAG_NO_POSITIVES = "no_positives"
FLAG_NO_DETECTIONS = "no_detections"
FLAG_ALL_IGNORED = "all_detections_ignored"


def voc07_11point_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007 11-point AP exactly as the VOC2007 devkit computes it (may return NaN).

    For each threshold ``t`` of :data:`VOC07_RECALL_THRESHOLDS`: ``p = max(prec(rec >= t))``
    with MATLAB's ``max`` (NaNs skipped; NaN if all are NaN), 0 when no recall reaches ``t``;
    AP accumulates ``p / 11`` in that order.

    Args:
        recall, precision: float ``[D]`` cumulative curves in score order.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    ap = 0.0
    for threshold in VOC07_RECALL_THRESHOLDS:
        reached = precision[recall >= threshold]
        if reached.size == 0:
            best = 0.0
        else:
            defined = reached[~np.isnan(reached)]
            best = float(defined.max()) if defined.size else float("nan")
        ap = ap + best / 11
    return ap


def area_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2010+ AP (devkit ``VOCap.m``): area under the right-monotone PR curve.

    ``mrec = [0, rec, 1]``, ``mpre = [0, prec, 0]``, ``mpre[i] = max(mpre[i], mpre[i+1])`` from
    the right (MATLAB's ``max`` skips NaN, as ``np.fmax`` does), then the sum of
    ``(mrec[i] - mrec[i-1]) * mpre[i]`` over the points where recall changes.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.fmax.accumulate(mpre[::-1])[::-1]
    changes = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[changes] - mrec[changes - 1]) * mpre[changes]))


def devkit_overlaps(det_voc: np.ndarray, gt_voc: np.ndarray) -> np.ndarray:
    """Overlap of paired boxes ``[P, 4]``, ``[P, 4]`` -> ``[P]``; -inf where they do not intersect.

    Both in the devkit's 1-based ``xmin, ymin, xmax, ymax`` (float64). Elementwise (each
    detection only meets the boxes of its own image), which the all-pairs ``box_iou`` does not
    do; the formula and its order of operations are VOCevaldet's, so the result is bit for bit
    the devkit's ``ov`` (only when ``iw > 0 and ih > 0``; otherwise the devkit skips the pair).
    """
    iw = np.minimum(det_voc[:, 2], gt_voc[:, 2]) - np.maximum(det_voc[:, 0], gt_voc[:, 0]) + 1
    ih = np.minimum(det_voc[:, 3], gt_voc[:, 3]) - np.maximum(det_voc[:, 1], gt_voc[:, 1]) + 1
    intersects = (iw > 0) & (ih > 0)
    union = (
        (det_voc[:, 2] - det_voc[:, 0] + 1) * (det_voc[:, 3] - det_voc[:, 1] + 1)
        + (gt_voc[:, 2] - gt_voc[:, 0] + 1) * (gt_voc[:, 3] - gt_voc[:, 1] + 1)
        - iw * ih
    )
    overlaps = np.full(det_voc.shape[0], -np.inf)
    overlaps[intersects] = (iw * ih)[intersects] / union[intersects]
    return overlaps


class _GroundTruthIndex:
    """Ground truth flattened once: all objects in image order, plus an id -> index map."""

    def __init__(self, ground_truth: Sequence[ImageGroundTruth]) -> None:
        self.image_index: dict[str, int] = {}
        for i, record in enumerate(ground_truth):
            if record.image_id in self.image_index:
                raise DataError(
                    f"image id {record.image_id!r} is listed twice in the ground truth "
                    f"(positions {self.image_index[record.image_id]} and {i}); "
                    "each image must appear once"
                )
            self.image_index[record.image_id] = i
        self.n_images = len(ground_truth)
        counts = np.array([r.labels.shape[0] for r in ground_truth], dtype=np.int64)
        self.object_image = np.repeat(np.arange(self.n_images, dtype=np.int64), counts)
        if self.n_images and counts.sum():
            self.boxes_voc = np.concatenate([r.boxes_voc for r in ground_truth])
            self.labels = np.concatenate([r.labels for r in ground_truth])
            self.difficult = np.concatenate([r.difficult for r in ground_truth])
        else:
            self.boxes_voc = np.zeros((0, 4))
            self.labels = np.zeros(0, np.int64)
            self.difficult = np.zeros(0, bool)

    def lookup(self, image_ids: np.ndarray, what: str) -> np.ndarray:
        """Image indices of ``image_ids``; DataError naming the unknown ones."""
        get = self.image_index.get
        indices = [get(i, -1) for i in image_ids]
        out = np.array(indices, dtype=np.int64)
        if out.size and out.min() < 0:
            unknown = sorted({str(i) for i, k in zip(image_ids, indices) if k < 0})
            raise DataError(
                f"{what}: {len(unknown)} image id(s) are not in the ground truth, e.g. "
                f"{unknown[:5]}; evaluate against the split the detections were made on"
            )
        return out


def precision_recall(
    true_positive: np.ndarray, false_positive: np.ndarray, npos: int
) -> tuple[np.ndarray, np.ndarray]:
    """The devkit's curves from per-detection flags in score order, bool ``[D]`` each.

    ``rec = cumsum(tp) / npos`` (NaN everywhere when ``npos == 0``), ``prec = cumsum(tp) /
    (cumsum(tp) + cumsum(fp))`` (NaN while only ignored detections have been seen).
    """
    tp_cum = np.cumsum(true_positive, dtype=np.float64)
    fp_cum = np.cumsum(false_positive, dtype=np.float64)
    counted = tp_cum + fp_cum
    precision = np.full(tp_cum.shape[0], np.nan)
    np.divide(tp_cum, counted, out=precision, where=counted > 0)
    recall = tp_cum / npos if npos > 0 else np.full(tp_cum.shape[0], np.nan)
    return recall, precision


def ap_of_curve(recall: np.ndarray, precision: np.ndarray, metric: str) -> float:
    """The devkit's AP of a curve under ``metric`` (may be NaN, as the devkit's)."""
    if metric == "11point":
        return voc07_11point_ap(recall, precision)
    return area_ap(recall, precision)


def _match_class(
    index: _GroundTruthIndex,
    class_index: int,
    class_name: str,
    detections: ClassDetections,
    iou_threshold: float,
) -> tuple[DetectionMatches, int]:
    """VOCevaldet's assignment loop for one class, vectorised; returns the matches and npos."""
    in_class = np.flatnonzero(index.labels == class_index)  # global object indices, in order
    gt_boxes = index.boxes_voc[in_class]
    gt_difficult = index.difficult[in_class]
    gt_image = index.object_image[in_class]  # ascending: objects are stored in image order
    gt_count = np.bincount(gt_image, minlength=index.n_images)
    gt_start = np.cumsum(gt_count) - gt_count
    npos = int((~gt_difficult).sum())

    det_image = index.lookup(detections.image_ids, f"detections of class {class_name!r}")
    # VOCevaldet: [~, si] = sort(-confidence); MATLAB's sort is stable.
    order = np.argsort(-detections.scores, kind="stable")
    det_image = det_image[order]
    det_boxes = detections.boxes_voc[order]
    n_det = det_image.shape[0]

    # Every (detection, ground-truth box of its image) pair, grouped by detection, boxes in
    # their annotation order within a group.
    pair_counts = gt_count[det_image]
    pair_det = np.repeat(np.arange(n_det), pair_counts)
    position_in_group = np.arange(pair_det.shape[0]) - np.repeat(
        np.cumsum(pair_counts) - pair_counts, pair_counts
    )
    pair_gt = np.repeat(gt_start[det_image], pair_counts) + position_in_group
    overlaps = devkit_overlaps(det_boxes[pair_det], gt_boxes[pair_gt])

    best_overlap = np.full(n_det, -np.inf)
    np.maximum.at(best_overlap, pair_det, overlaps)
    # VOCevaldet keeps the first box reaching the maximum (``if ov > ovmax``).
    is_best = (overlaps == best_overlap[pair_det]) & (overlaps > -np.inf)
    best_dets, first_pair = np.unique(pair_det[is_best], return_index=True)
    best_gt = np.full(n_det, -1, dtype=np.int64)
    best_gt[best_dets] = pair_gt[is_best][first_pair]

    # VOCevaldet: ``if ovmax >= VOCopts.minoverlap`` (inclusive)
    matched = best_overlap >= iou_threshold
    true_positive = np.zeros(n_det, dtype=bool)
    false_positive = ~matched
    matched_dets = np.flatnonzero(matched)
    matched_gt = best_gt[matched_dets]
    on_difficult = gt_difficult[matched_gt]
    countable = matched_dets[~on_difficult]  # ascending = score order
    countable_gt = matched_gt[~on_difficult]
    # The first detection (in score order) on a box takes it; later ones are duplicates.
    _, first_on_box = np.unique(countable_gt, return_index=True)
    true_positive[countable[first_on_box]] = True
    is_duplicate = np.ones(countable.shape[0], dtype=bool)
    is_duplicate[first_on_box] = False
    duplicate = np.zeros(n_det, dtype=bool)
    duplicate[countable[is_duplicate]] = True
    false_positive |= duplicate

    best_object = np.full(n_det, -1, dtype=np.int64)
    has_best = best_gt >= 0
    best_object[has_best] = in_class[best_gt[has_best]]
    matches = DetectionMatches(order=order, image_index=det_image, true_positive=true_positive,
                               false_positive=false_positive, duplicate=duplicate,
                               best_overlap=best_overlap, best_object=best_object)
    return matches, npos


def _evaluate_class_indexed(
    index: _GroundTruthIndex,
    class_index: int,
    class_name: str,
    detections: ClassDetections,
    metric: str,
    iou_threshold: float,
) -> ClassResult:
    matches, npos = _match_class(index, class_index, class_name, detections, iou_threshold)
    true_positive, false_positive = matches.true_positive, matches.false_positive
    n_det = true_positive.shape[0]
    recall, precision = precision_recall(true_positive, false_positive, npos)
    devkit_ap = ap_of_curve(recall, precision, metric)
    n_ignored = int(n_det - true_positive.sum() - false_positive.sum())
    flags: list[str] = []
    ap: float | None = devkit_ap
    if npos == 0:
        flags.append(FLAG_NO_POSITIVES)
        ap = None
    if n_det == 0:
        flags.append(FLAG_NO_DETECTIONS)
        if ap is not None:
            ap = 0.0
    elif n_ignored == n_det:
        flags.append(FLAG_ALL_IGNORED)
        if ap is not None:
            ap = 0.0
    return ClassResult(
        class_index=class_index,
        class_name=class_name,
        ap=ap,
        devkit_ap=devkit_ap,
        npos=npos,
        n_detections=n_det,
        n_true_positives=int(true_positive.sum()),
        n_false_positives=int(false_positive.sum()),
        n_ignored=n_ignored,
        recall=recall,
        precision=precision,
        flags=tuple(flags),
        matches=matches,
    )


def _check_options(metric: str, iou_threshold: float) -> None:
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ConfigError(f"iou_threshold must be in (0, 1], got {iou_threshold}")


def evaluate_class(
    ground_truth: Sequence[ImageGroundTruth],
    class_index: int,
    detections: ClassDetections,
    *,
    class_name: str | None = None,
    metric: str = "11point",
    iou_threshold: float = 0.5,
) -> ClassResult:
    """Devkit AP of one class (see the module docstring for the rules and the flags).

    Args:
        ground_truth: one record per image of the split (images without objects included).
        class_index: the class evaluated; ground-truth objects with other labels are ignored.
        detections: that class's detections; every image id must be in ``ground_truth``.
        class_name: name for the result (default ``str(class_index)``).
        metric: ``"11point"`` (VOC2007, default) or ``"area"`` (VOC2010+).
        iou_threshold: overlap needed for a match, inclusive (VOC: 0.5).
    """
    _check_options(metric, iou_threshold)
    name = str(class_index) if class_name is None else class_name
    return _evaluate_class_indexed(
        _GroundTruthIndex(ground_truth), class_index, name, detections, metric, iou_threshold
    )


def class_detections_from_images(
    detections: Sequence[ImageDetections], num_classes: int
) -> list[ClassDetections]:
    """Regroup per-image detections by class: ``[num_classes]`` lists in image, then box order.

    Raises DataError for a label ``>= num_classes``.
    """
    if not detections:
        return [ClassDetections.empty() for _ in range(num_classes)]
    counts = np.array([len(d) for d in detections], dtype=np.int64)
    ids = np.empty(len(detections), dtype=object)
    ids[:] = [d.image_id for d in detections]
    image_ids = np.repeat(ids, counts)
    labels = np.concatenate([d.labels for d in detections])
    scores = np.concatenate([d.scores for d in detections]).astype(np.float64)
    boxes = np.concatenate([d.boxes for d in detections]).astype(np.float64).reshape(-1, 4)
    if labels.size and labels.max() >= num_classes:
        bad = int(np.flatnonzero(labels >= num_classes)[0])
        raise DataError(
            f"image {image_ids[bad]}: detection label {int(labels[bad])} is out of range for "
            f"{num_classes} classes"
        )
    out = []
    for c in range(num_classes):
        mask = labels == c
        out.append(ClassDetections(image_ids[mask], scores[mask], boxes[mask]))
    return out


def evaluate_detections(
    ground_truth: Sequence[ImageGroundTruth],
    detections: Sequence[ImageDetections] | Mapping[str, ClassDetections],
    class_names: Sequence[str],
    *,
    metric: str = "11point",
    iou_threshold: float = 0.5,
) -> VOCEvaluation:
    """Evaluate a split with the devkit rules: per-class AP and the mean AP.

    Args:
        ground_truth: one :class:`ImageGroundTruth` per image of the split; labels index
            ``class_names``.
        detections: either per-image :class:`ImageDetections` (labels index ``class_names``)
            or a mapping from class name to :class:`ClassDetections` (as read from comp4
            files); a class missing from the mapping has no detections.
        class_names: the classes, in label order.
        metric: ``"11point"`` (VOC2007, default) or ``"area"`` (VOC2010+).
        iou_threshold: overlap needed for a match, inclusive (VOC: 0.5).

    Returns:
        :class:`VOCEvaluation`. Classes without non-difficult objects get ``ap = None`` and are
        left out of ``mean_ap`` (the devkit would count them as 0 or NaN); see the flags.
    """
    _check_options(metric, iou_threshold)
    names = [str(n) for n in class_names]
    if len(set(names)) != len(names):
        raise ConfigError(f"class names must be unique, got {names}")
    index = _GroundTruthIndex(ground_truth)
    if index.labels.size and index.labels.max() >= len(names):
        bad = int(np.flatnonzero(index.labels >= len(names))[0])
        image_id = ground_truth[int(index.object_image[bad])].image_id
        raise DataError(
            f"image {image_id}: ground-truth label {int(index.labels[bad])} is out of range for "
            f"{len(names)} classes"
        )
    if isinstance(detections, Mapping):
        unknown = sorted(set(detections) - set(names))
        if unknown:
            raise DataError(f"detections for unknown classes {unknown}; classes are {names}")
        per_class = [detections.get(n, ClassDetections.empty()) for n in names]
    else:
        per_class = class_detections_from_images(detections, len(names))
    results = tuple(
        _evaluate_class_indexed(index, c, names[c], per_class[c], metric, iou_threshold)
        for c in range(len(names))
    )
    defined = [r.ap for r in results if r.ap is not None]
    mean_ap = float(np.mean(defined)) if defined else None
    # The VOC2007 devkit's own mean: a class without positives scores 0 there (11-point).
    with_zeros = [0.0 if r.ap is None else r.ap for r in results]
    devkit_mean_ap = float(np.mean(with_zeros)) if with_zeros and defined else None
    return VOCEvaluation(
        metric=metric,
        protocol=METRICS[metric],
        iou_threshold=iou_threshold,
        n_images=index.n_images,
        per_class=results,
        mean_ap=mean_ap,
        devkit_mean_ap=devkit_mean_ap,
    )
