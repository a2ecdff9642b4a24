"""Recall of object proposals versus the number of boxes per image.

Protocol (Hosang et al., "What makes for effective detection proposals?", TPAMI 2016):

- An object is **recalled at IoU t** with the top ``k`` proposals of its image when the best IoU
  between the object's box and any of those ``k`` proposals is ``>= t``. Objects are matched
  independently (one proposal may cover several objects), as in Hosang et al. and the selective
  search paper; detection-style one-to-one matching is not used.
- **Average recall (AR)** is the mean of the recall over the ten IoU thresholds
  ``0.50, 0.55, ..., 0.95``: the definition used by the COCO API and most detection code bases.
  It is the ten-point approximation of Hosang et al.'s ``2 * integral_{0.5}^{1} recall(o) do``.
- ``difficult`` objects are excluded by default, as in VOC evaluation.
- IoU uses sppdet's 0-based continuous boxes, so it equals the VOC devkit's "+1" overlap.
- "Top ``k``" is the first ``k`` boxes in the given rank order; ``None`` means all boxes. The
  report also gives the mean number of boxes actually used per image for each ``k`` (images
  may have fewer than ``k`` proposals), which is the x axis of the plot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sppdet.ops.boxes import box_iou
from sppdet.errors import DataError
from sppdet.proposals.common import ProposalResult

DEFAULT_NUM_BOXES: tuple[int | None, ...] = (100, 300, 1000, 2000, None)
# 0.5:0.05:0.95, written out so that the thresholds are exact decimals (no arange drift).
AR_IOU_THRESHOLDS: tuple[float, ...] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


@dataclass(frozen=True)
class ImageGroundTruth:
    """Ground-truth objects of one image.

    Attributes:
        boxes: ``[G, 4]`` xyxy, 0-based continuous pixels.
        labels: ``G`` class names (or any hashable labels, printed with ``str``).
        difficult: ``[G]`` bool, or ``None`` for no difficult objects.
    """

    boxes: np.ndarray
    labels: Sequence[str]
    difficult: np.ndarray | None = None


@dataclass
class RecallCurve:
    """Recall of one group of objects (a class, or all classes).

    Attributes:
        num_objects: number of objects counted.
        recall: ``[K][T]`` nested list, recall with the ``k``-th box budget at the ``t``-th
            IoU threshold; ``None`` entries when ``num_objects == 0``.
    """

    num_objects: int
    recall: list[list[float | None]]

    def at_iou(self, iou_thresholds: Sequence[float], threshold: float) -> list[float | None]:
        """Recall for each box budget at one of the evaluated IoU thresholds."""
        index = _threshold_index(iou_thresholds, threshold)
        return [row[index] for row in self.recall]

    def average_recall(self, iou_thresholds: Sequence[float]) -> list[float | None]:
        """AR for each box budget: mean recall over the AR thresholds 0.50:0.05:0.95."""
        indices = [_threshold_index(iou_thresholds, t) for t in AR_IOU_THRESHOLDS]
        return [
            None if row[0] is None else float(np.mean([row[i] for i in indices]))
            for row in self.recall
        ]


@dataclass
class RecallReport:
    """Recall of a proposal set; serialises to JSON with :meth:`to_dict`.

    Attributes:
        num_boxes: the box budgets ``k`` (``None`` = all boxes).
        iou_thresholds: the IoU thresholds evaluated (include 0.5:0.05:0.95).
        mean_boxes_per_image: for each budget, the mean number of boxes actually used.
        num_images: number of images evaluated.
        include_difficult: whether difficult objects were counted.
        overall: recall over all objects.
        per_class: recall per class name, for classes with at least one counted object.
    """

    num_boxes: list[int | None]
    iou_thresholds: list[float]
    mean_boxes_per_image: list[float]
    num_images: int
    include_difficult: bool
    overall: RecallCurve
    per_class: dict[str, RecallCurve] = field(default_factory=dict)

    def recall_at(self, threshold: float, label: str | None = None) -> list[float | None]:
        """Recall at IoU ``threshold`` for each budget, overall or for class ``label``."""
        curve = self.overall if label is None else self.per_class[label]
        return curve.at_iou(self.iou_thresholds, threshold)

    def average_recall(self, label: str | None = None) -> list[float | None]:
        """AR for each budget, overall or for class ``label``."""
        curve = self.overall if label is None else self.per_class[label]
        return curve.average_recall(self.iou_thresholds)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (``None`` where a recall is undefined)."""

        def curve_dict(curve: RecallCurve) -> dict:
            return {
                "num_objects": curve.num_objects,
                "recall@0.5": curve.at_iou(self.iou_thresholds, 0.5),
                "recall@0.7": curve.at_iou(self.iou_thresholds, 0.7),
                "average_recall": curve.average_recall(self.iou_thresholds),
                "recall": curve.recall,
            }

        return {
            "protocol": "best IoU per object over the top-k proposals; "
            "AR = mean recall over IoU 0.50:0.05:0.95",
            "num_boxes": list(self.num_boxes),
            "iou_thresholds": list(self.iou_thresholds),
            "mean_boxes_per_image": list(self.mean_boxes_per_image),
            "num_images": self.num_images,
            "include_difficult": self.include_difficult,
            "overall": curve_dict(self.overall),
            "per_class": {name: curve_dict(c) for name, c in sorted(self.per_class.items())},
        }

    def to_text(self) -> str:
        """A plain-text table: per class and overall, ``R@0.5 / R@0.7 / AR`` per budget."""
        budgets = ["all" if k is None else str(k) for k in self.num_boxes]
        difficult = "included" if self.include_difficult else "excluded"
        lines = [
            f"Proposal recall, {self.num_images} images, {self.overall.num_objects} objects "
            f"(difficult {difficult}); each cell: recall@0.5 / recall@0.7 / AR@0.5:0.95",
            "mean boxes per image: "
            + ", ".join(f"{b}: {m:.1f}" for b, m in zip(budgets, self.mean_boxes_per_image)),
        ]
        name_width = max([5] + [len(name) for name in self.per_class])
        header = f"{'class':<{name_width}} {'objects':>7}" + "".join(
            f" {('top ' + b):>20}" for b in budgets
        )
        lines += [header, "-" * len(header)]

        def row(name: str, curve: RecallCurve) -> str:
            r50 = curve.at_iou(self.iou_thresholds, 0.5)
            r70 = curve.at_iou(self.iou_thresholds, 0.7)
            ar = curve.average_recall(self.iou_thresholds)
            cells = "".join(
                f" {_fmt(a) + ' / ' + _fmt(b) + ' / ' + _fmt(c):>20}"
                for a, b, c in zip(r50, r70, ar)
            )
            return f"{name:<{name_width}} {curve.num_objects:>7}{cells}"

        lines += [row(name, curve) for name, curve in sorted(self.per_class.items())]
        lines += ["-" * len(header), row("all", self.overall)]
        return "\n".join(lines)

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """Write a PNG of overall recall@0.5, recall@0.7 and AR versus mean boxes per image."""
        from sppdet.plotting import pyplot, save_png

        plt = pyplot()

        path = Path(path)
        x = np.asarray(self.mean_boxes_per_image, dtype=np.float64)
        series = {
            "recall@0.5": self.recall_at(0.5),
            "recall@0.7": self.recall_at(0.7),
            "AR@0.5:0.95": self.average_recall(),
        }
        figure, axes = plt.subplots(figsize=(6, 4.5), dpi=100)
        for label, values in series.items():
            y = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            axes.plot(x, y, marker="o", label=label)
        if np.all(x > 0):
            axes.set_xscale("log")
        axes.set_xlabel("mean number of proposals per image")
        axes.set_ylabel("recall")
        axes.set_ylim(0.0, 1.0)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(loc="lower right")
        axes.set_title(title or f"proposal recall ({self.overall.num_objects} objects)")
        figure.tight_layout()
        return save_png(figure, path)


def evaluate_recall(
    ground_truth: Mapping[str, ImageGroundTruth],
    proposals: Mapping[str, ProposalResult | np.ndarray],
    *,
    num_boxes: Sequence[int | None] = DEFAULT_NUM_BOXES,
    iou_thresholds: Sequence[float] = AR_IOU_THRESHOLDS,
    include_difficult: bool = False,
    image_rows: Mapping[str, tuple[np.ndarray, list[tuple[str, np.ndarray]]]] | None = None,
) -> RecallReport:
    """Recall of proposals against ground truth, per class and overall, per box budget.

    Args:
        ground_truth: image id -> :class:`ImageGroundTruth`; the images evaluated.
        proposals: image id -> proposals in rank order (a :class:`ProposalResult` or a
            ``[N, 4]`` xyxy array); must cover every id of ``ground_truth`` (extra ids are
            ignored).
        num_boxes: box budgets ``k`` (positive ints, ``None`` = all boxes).
        iou_thresholds: IoU thresholds; 0.50:0.05:0.95 must be among them (for AR).
        include_difficult: count difficult objects too.
        image_rows: each image's :func:`image_best_ious`, computed elsewhere (e.g. by
            workers); then ``proposals`` is not read (pass ``{}``).

    Returns:
        :class:`RecallReport`.

    Raises:
        DataError: an image of ``ground_truth`` has no proposal entry, or inputs are malformed.
    """
    budgets = [None if k is None else int(k) for k in num_boxes]
    if not budgets or any(k is not None and k < 1 for k in budgets):
        raise DataError(f"num_boxes must be a non-empty list of ints >= 1 or None, got {num_boxes}")
    thresholds = [float(t) for t in iou_thresholds]
    missing_ar = [t for t in AR_IOU_THRESHOLDS if not any(math.isclose(t, u) for u in thresholds)]
    if missing_ar:
        raise DataError(f"iou_thresholds must include 0.50:0.05:0.95 for AR; missing {missing_ar}")
    missing = sorted(set(ground_truth) - set(proposals if image_rows is None else image_rows))
    if missing:
        raise DataError(
            f"no proposals for {len(missing)} evaluated image(s), e.g. {missing[:5]}; "
            "every image with ground truth needs a proposal entry (an empty array is fine)"
        )

    # best_iou[label] collects one [K] row of best IoUs per counted object.
    best_per_label: dict[str, list[np.ndarray]] = {}
    used_boxes = np.zeros(len(budgets), dtype=np.float64)
    for image_id, truth in ground_truth.items():
        if image_rows is not None:
            counts, rows = image_rows[image_id]
        else:
            counts, rows = image_best_ious(image_id, truth, proposals[image_id], budgets,
                                           include_difficult)
        used_boxes += counts
        for label, row in rows:
            best_per_label.setdefault(label, []).append(row)

    threshold_array = np.asarray(thresholds, dtype=np.float64)

    def curve_of(rows: list[np.ndarray]) -> RecallCurve:
        if not rows:
            return RecallCurve(0, [[None] * len(thresholds) for _ in budgets])
        best = np.stack(rows)  # [G, K]
        hit = best[:, :, None] >= threshold_array[None, None, :]  # [G, K, T]
        recall = hit.mean(axis=0)  # [K, T]
        return RecallCurve(len(rows), [[float(v) for v in row] for row in recall])

    all_rows = [row for rows in best_per_label.values() for row in rows]
    num_images = len(ground_truth)
    return RecallReport(
        num_boxes=budgets,
        iou_thresholds=thresholds,
        mean_boxes_per_image=[float(v) for v in used_boxes / max(num_images, 1)],
        num_images=num_images,
        include_difficult=include_difficult,
        overall=curve_of(all_rows),
        per_class={label: curve_of(rows) for label, rows in best_per_label.items()},
    )


def image_best_ious(image_id: str, truth: ImageGroundTruth,
                    proposals: ProposalResult | np.ndarray, budgets: Sequence[int | None],
                    include_difficult: bool
                    ) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """One image's part of :func:`evaluate_recall`.

    Returns:
        The boxes counted per budget ``[K]``, and per counted object its label and its best
        IoU over the top boxes of each budget (``[K]`` float64).

    Raises:
        DataError: malformed ground truth or proposals.
    """
    boxes = _proposal_boxes(proposals, image_id)
    counts = np.array(
        [boxes.shape[0] if k is None else min(k, boxes.shape[0]) for k in budgets]
    )
    gt_boxes = np.asarray(truth.boxes, dtype=np.float64).reshape(-1, 4)
    labels = [str(label) for label in truth.labels]
    if len(labels) != gt_boxes.shape[0]:
        raise DataError(
            f"image {image_id}: {gt_boxes.shape[0]} ground-truth boxes but {len(labels)} labels"
        )
    difficult = (
        np.zeros(gt_boxes.shape[0], dtype=bool)
        if truth.difficult is None
        else np.asarray(truth.difficult, dtype=bool).reshape(-1)
    )
    if difficult.shape[0] != gt_boxes.shape[0]:
        raise DataError(
            f"image {image_id}: {gt_boxes.shape[0]} ground-truth boxes but "
            f"{difficult.shape[0]} difficult flags"
        )
    counted = np.ones_like(difficult) if include_difficult else ~difficult
    if not counted.any():
        return counts, []
    gt_boxes = gt_boxes[counted]
    labels = [label for label, keep in zip(labels, counted) if keep]
    # best[g, j] = best IoU of object g over the top counts[j] boxes.
    best = np.zeros((gt_boxes.shape[0], len(budgets)), dtype=np.float64)
    if boxes.shape[0] > 0:
        iou = box_iou(gt_boxes, boxes)  # [G, N]
        running_max = np.maximum.accumulate(iou, axis=1)  # [G, N]
        for j, count in enumerate(counts):
            if count > 0:
                best[:, j] = running_max[:, count - 1]
    return counts, list(zip(labels, best))


def _proposal_boxes(entry: ProposalResult | np.ndarray, image_id: str) -> np.ndarray:
    boxes = entry.boxes if isinstance(entry, ProposalResult) else entry
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(f"image {image_id}: proposals must be [N, 4] xyxy, got {boxes.shape}")
    return boxes


def _threshold_index(iou_thresholds: Sequence[float], threshold: float) -> int:
    for index, value in enumerate(iou_thresholds):
        if math.isclose(value, threshold):
            return index
    raise KeyError(f"IoU threshold {threshold} was not evaluated (have {list(iou_thresholds)})")


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"
