"""Per-class non-maximum suppression for test-time detections (REFERENCE.md section 8).

Released SPP-net / R-CNN test settings: keep scores above a threshold (-1.5 for SVM scores),
per-class greedy NMS (highest score first, suppress a box whose IoU with a kept box of the same
class is **greater than** 0.3), then at most 100 detections per image over all classes.

torchvision's ``batched_nms`` does the suppression. Two things are added around it so that the
result is fully determined by the inputs:

- equal scores are broken by input order (the box listed first wins), by handing
  ``batched_nms`` each box's rank in a stable descending sort instead of its raw score;
- boxes go in as float64, shifted so the smallest coordinate is 0, because ``batched_nms``
  separates classes by adding ``label * (max_coordinate + 1)`` to the coordinates, which is
  lossy in float32 and wrong for negative coordinates.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import batched_nms

from sppdet.detector.detections import ImageDetections
from sppdet.errors import ConfigError, DataError

DEFAULT_IOU_THRESHOLD = 0.3
DEFAULT_SCORE_THRESHOLD = -1.5
DEFAULT_MAX_PER_IMAGE = 100


def _check_options(
    iou_threshold: float, score_threshold: float | None, max_per_image: int | None
) -> None:
    if not 0.0 <= iou_threshold <= 1.0:
        raise ConfigError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    if score_threshold is not None and not np.isfinite(score_threshold):
        raise ConfigError(f"score_threshold must be a finite number or None, got {score_threshold}")
    if max_per_image is not None and (int(max_per_image) != max_per_image or max_per_image < 0):
        raise ConfigError(f"max_per_image must be an integer >= 0 or None, got {max_per_image}")


def class_nms_indices(
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    score_threshold: float | None = DEFAULT_SCORE_THRESHOLD,
    max_per_image: int | None = DEFAULT_MAX_PER_IMAGE,
) -> np.ndarray:
    """Indices of the windows one image keeps after per-class NMS.

    Args:
        boxes_xyxy: float ``[N, 4]``, 0-based continuous xyxy.
        scores: float ``[N]``.
        labels: int ``[N]``; NMS never compares windows of different labels.
        iou_threshold: a window is suppressed when its IoU with a kept, higher-ranked window
            of the same label is ``> iou_threshold`` (default 0.3, released code).
        score_threshold: keep only ``score > score_threshold`` (default -1.5, released code for
            SVM scores); ``None`` keeps all.
        max_per_image: keep at most this many windows over all labels, the highest-scoring
            ones (default 100); ``None`` for no limit.

    Returns:
        int64 ``[K]`` indices into the inputs, by score descending, equal scores in input order.
        ``K = 0`` gives an empty int64 array.
    """
    _check_options(iou_threshold, score_threshold, max_per_image)
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(f"boxes must have shape [N, 4], got {boxes.shape}")
    if not (boxes.shape[0] == scores.shape[0] == labels.shape[0]):
        raise DataError(
            "boxes, scores and labels must have the same length, got "
            f"{boxes.shape[0]}, {scores.shape[0]}, {labels.shape[0]}"
        )
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise DataError("boxes and scores must be finite")

    candidates = np.arange(scores.shape[0])
    if score_threshold is not None:
        candidates = candidates[scores > score_threshold]
    if candidates.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    ranked_boxes = boxes[order]
    ranked_boxes = ranked_boxes - ranked_boxes.min()
    # Strictly decreasing stand-in scores: rank 0 (best) gets the largest value.
    rank_scores = np.arange(order.shape[0], 0, -1, dtype=np.float64)
    keep_ranked = batched_nms(
        torch.from_numpy(ranked_boxes),
        torch.from_numpy(rank_scores),
        torch.from_numpy(labels[order]),
        float(iou_threshold),
    ).numpy()
    keep_ranked = np.sort(keep_ranked)  # rank order = score order, ties in input order
    if max_per_image is not None:
        keep_ranked = keep_ranked[: int(max_per_image)]
    return order[keep_ranked].astype(np.int64)


def nms_image_detections(
    detections: ImageDetections,
    *,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    score_threshold: float | None = DEFAULT_SCORE_THRESHOLD,
    max_per_image: int | None = DEFAULT_MAX_PER_IMAGE,
) -> ImageDetections:
    """:func:`class_nms_indices` applied to one image's detections (same keyword arguments).

    Returns the kept detections, by score descending (equal scores in input order).
    """
    keep = class_nms_indices(
        detections.boxes,
        detections.scores,
        detections.labels,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        max_per_image=max_per_image,
    )
    return detections.select(keep)


def detections_from_class_scores(
    image_id: str, boxes_xyxy: np.ndarray, class_scores: np.ndarray
) -> ImageDetections:
    """Every (window, class) pair of an image as a detection, ready for NMS.

    Args:
        image_id: the image.
        boxes_xyxy: ``[N, 4]`` (one box per window, shared by all classes) or ``[N, C, 4]``
            (class-specific boxes, e.g. after bounding-box regression).
        class_scores: ``[N, C]`` score of each window for each of the C object classes.

    Returns:
        ImageDetections with ``N * C`` entries, window-major (window 0's classes first).
    """
    scores = np.asarray(class_scores, dtype=np.float32)
    if scores.ndim != 2:
        raise DataError(
            f"image {image_id}: class scores must have shape [N, C], got {scores.shape}"
        )
    n_windows, n_classes = scores.shape
    boxes = np.asarray(boxes_xyxy, dtype=np.float32)
    if boxes.shape == (n_windows, 4):
        boxes = np.broadcast_to(boxes[:, None, :], (n_windows, n_classes, 4))
    elif boxes.shape != (n_windows, n_classes, 4):
        raise DataError(
            f"image {image_id}: boxes must have shape [{n_windows}, 4] or "
            f"[{n_windows}, {n_classes}, 4] to match scores {scores.shape}, got {boxes.shape}"
        )
    labels = np.broadcast_to(np.arange(n_classes, dtype=np.int64), (n_windows, n_classes))
    return ImageDetections(
        image_id, boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
    )
