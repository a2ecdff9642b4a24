"""Labelled windows for fine-tuning: positives, background and unused proposals by IoU band.

Fine-tuning (paper 4.1, REFERENCE section 5) labels every window by its largest IoU with the
image's ground-truth boxes: a **positive** has IoU >= 0.5 and takes the class of that
ground-truth box (label ``class + 1``; 0 is background); a **negative** has IoU in
``[0.1, 0.5)`` (label 0); every other window is unused. As in the released code (R-CNN's window
file, reused by SPP_net), the ground-truth boxes themselves are windows too (IoU 1, so
positives), and difficult objects count as ground truth.

:class:`SplitWindows` holds the labelled windows of a whole split as flat arrays, grouped by
image, which is what the mini-batch sampler draws from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from sppdet.ops.boxes import box_iou, is_degenerate
from sppdet.data.voc import ImageAnnotation
from sppdet.errors import DataError
from sppdet.training.finetune.config import (  # re-exported
    BG_IOU_HIGH, BG_IOU_LOW, FG_IOU, check_thresholds)


@dataclass(frozen=True)
class LabelledWindows:
    """The used windows of one image.

    Attributes:
        boxes: float32 ``[M, 4]``, 0-based continuous xyxy in original-image pixels.
        labels: int64 ``[M]``; 0 = background, ``c + 1`` = class ``c``.
        overlaps: float32 ``[M]``, the largest IoU with a ground-truth box (0 without any).
        is_gt: bool ``[M]``, the window is a ground-truth box.
    """

    boxes: np.ndarray
    labels: np.ndarray
    overlaps: np.ndarray
    is_gt: np.ndarray

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def label_windows(proposals_xyxy: np.ndarray, gt_boxes_xyxy: np.ndarray,
                  gt_labels: np.ndarray, *, fg_iou: float = FG_IOU,
                  bg_iou_low: float = BG_IOU_LOW, bg_iou_high: float = BG_IOU_HIGH,
                  include_gt: bool = True) -> LabelledWindows:
    """Label one image's windows by their largest IoU with its ground truth.

    Args:
        proposals_xyxy: ``[N, 4]`` proposals (0-based continuous xyxy); degenerate ones (zero
            width or height) are left out.
        gt_boxes_xyxy: ``[G, 4]`` ground-truth boxes.
        gt_labels: int ``[G]`` class indices (0-based) of the ground-truth boxes.
        fg_iou: positives have ``IoU >= fg_iou``.
        bg_iou_low, bg_iou_high: negatives have ``bg_iou_low <= IoU < bg_iou_high``.
        include_gt: put the ground-truth boxes first among the windows (released code).

    Returns:
        The positive and negative windows, ground truth first, then proposals in their order.
        A positive's label is ``1 +`` the class of the ground-truth box it overlaps most
        (the first such box on ties). An image without ground truth has no windows (every
        IoU is 0, below the negative band unless ``bg_iou_low == 0``).

    Raises:
        DataError: boxes that are not ``[N, 4]`` finite numbers, or labels of another length.
    """
    check_thresholds(fg_iou, bg_iou_low, bg_iou_high)
    proposals = _as_boxes(proposals_xyxy, "proposals")
    gt_boxes = _as_boxes(gt_boxes_xyxy, "ground-truth boxes")
    gt_labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
    if gt_labels.shape[0] != gt_boxes.shape[0]:
        raise DataError(f"{gt_boxes.shape[0]} ground-truth boxes but {gt_labels.shape[0]} "
                        "labels")
    proposals = proposals[~is_degenerate(proposals)]
    parts = [gt_boxes, proposals] if include_gt else [proposals]
    boxes = np.concatenate(parts, axis=0).astype(np.float32)  # [M, 4]
    is_gt = np.zeros(len(boxes), dtype=bool)
    if include_gt:
        is_gt[: len(gt_boxes)] = True
    if len(gt_boxes):
        iou = box_iou(boxes, gt_boxes)  # [M, G]
        best = iou.argmax(axis=1)
        overlaps = iou[np.arange(len(boxes)), best]
        labels = gt_labels[best] + 1
    else:
        overlaps = np.zeros(len(boxes))
        labels = np.zeros(len(boxes), dtype=np.int64)
    positive = overlaps >= fg_iou
    negative = (overlaps >= bg_iou_low) & (overlaps < bg_iou_high)
    labels = np.where(positive, labels, 0)
    keep = positive | negative
    return LabelledWindows(boxes=boxes[keep], labels=labels[keep].astype(np.int64),
                           overlaps=overlaps[keep].astype(np.float32), is_gt=is_gt[keep])


def _as_boxes(boxes: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise DataError(f"{what} must have shape [N, 4] (x1, y1, x2, y2), got {array.shape}")
    if not np.isfinite(array).all():
        raise DataError(f"{what} hold NaN or inf")
    return array


@dataclass
class SplitWindows:
    """The labelled windows of a split, as flat arrays grouped by image.

    Attributes:
        image_ids: images that have at least one window, in split order.
        image_index: int32 ``[W]``, index into ``image_ids`` of each window (non-decreasing).
        boxes: float32 ``[W, 4]``, original-image pixels.
        labels: int64 ``[W]``, 0 = background, ``c + 1`` = class ``c``.
        num_classes: number of object classes ``K``.
        skipped: image id -> why the image has no windows (no proposals, no features...).
    """

    image_ids: list[str]
    image_index: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    num_classes: int
    skipped: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image_index = np.asarray(self.image_index, dtype=np.int32).reshape(-1)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if not (len(self.image_index) == len(self.boxes) == len(self.labels)):
            raise DataError("image_index, boxes and labels must have one row per window")
        if len(self.image_index) and np.any(np.diff(self.image_index) < 0):
            raise DataError("windows must be grouped by image (image_index non-decreasing)")
        # first window of each image; windows of image i are starts[i]:starts[i + 1]
        self.starts = np.searchsorted(self.image_index, np.arange(len(self.image_ids) + 1))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    def class_counts(self) -> np.ndarray:
        """int64 ``[K + 1]``: windows per label (index 0 = negatives)."""
        return np.bincount(self.labels, minlength=self.num_classes + 1)

    @property
    def n_positive(self) -> int:
        return int((self.labels > 0).sum())

    @property
    def n_negative(self) -> int:
        return int((self.labels == 0).sum())

    def windows_of(self, image: int) -> slice:
        """Rows of image number ``image`` (index into ``image_ids``)."""
        return slice(int(self.starts[image]), int(self.starts[image + 1]))


def build_split_windows(annotations: Iterable[ImageAnnotation],
                        proposals_of: Callable[[str], np.ndarray | None], num_classes: int, *,
                        fg_iou: float = FG_IOU, bg_iou_low: float = BG_IOU_LOW,
                        bg_iou_high: float = BG_IOU_HIGH, include_gt: bool = True,
                        include_difficult: bool = True,
                        has_features: Callable[[str], bool] | None = None) -> SplitWindows:
    """Label the windows of every image of a split (see :func:`label_windows`).

    Args:
        annotations: the split's ground truth (:class:`~sppdet.data.voc.VOCDataset`).
        proposals_of: image id -> ``[N, 4]`` proposals, or ``None`` when the proposals
            artifact has no entry for the image.
        num_classes: ``K``.
        fg_iou, bg_iou_low, bg_iou_high, include_gt: as in :func:`label_windows`.
        include_difficult: difficult objects count as ground truth (released code: yes).
        has_features: image id -> whether the feature cache holds the image.

    Returns:
        The windows; images without proposals, without features, or with no window in either
        band are left out and listed in ``skipped`` with the reason.
    """
    image_ids: list[str] = []
    index_parts, box_parts, label_parts = [], [], []
    skipped: dict[str, str] = {}
    for ann in annotations:
        if has_features is not None and not has_features(ann.image_id):
            skipped[ann.image_id] = "not in the features artifact"
            continue
        proposals = proposals_of(ann.image_id)
        if proposals is None:
            skipped[ann.image_id] = "not in the proposals artifact"
            continue
        if np.asarray(proposals).size == 0:
            skipped[ann.image_id] = "no proposals"
            continue
        keep = np.ones(len(ann), dtype=bool) if include_difficult else ~ann.difficult
        if len(ann.labels) and int(ann.labels.max()) >= num_classes:
            raise DataError(f"image {ann.image_id}: class index {int(ann.labels.max())} is "
                            f"outside the {num_classes} classes")
        try:
            windows = label_windows(proposals, ann.boxes[keep], ann.labels[keep], fg_iou=fg_iou,
                                    bg_iou_low=bg_iou_low, bg_iou_high=bg_iou_high,
                                    include_gt=include_gt)
        except DataError as exc:
            raise DataError(f"image {ann.image_id}: {exc.message}", remedy=exc.remedy) from exc
        if not len(windows):
            skipped[ann.image_id] = "no window in the positive or negative IoU band"
            continue
        index_parts.append(np.full(len(windows), len(image_ids), dtype=np.int32))
        box_parts.append(windows.boxes)
        label_parts.append(windows.labels)
        image_ids.append(ann.image_id)
    if not image_ids:
        return SplitWindows([], np.zeros(0, np.int32), np.zeros((0, 4), np.float32),
                            np.zeros(0, np.int64), num_classes, skipped)
    return SplitWindows(image_ids, np.concatenate(index_parts), np.concatenate(box_parts),
                        np.concatenate(label_parts), num_classes, skipped)
