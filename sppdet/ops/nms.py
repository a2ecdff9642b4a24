"""Per-class non-maximum suppression for test-time detections (REFERENCE.md section 8).

Released SPP-net / R-CNN test settings: keep scores above a threshold (-1.5 for SVM scores),
per-class greedy NMS (highest score first, suppress a box whose IoU with a kept box of the same
class is **greater than** 0.3), then at most 100 detections per image over all classes.

torchvision's ``batched_nms`` does the suppression. Two things are added around it so that the
result is fully determined by the inputs:

- equal scores are broken by input order (the box listed first wins), by handing
  ``batched_nms`` each box's rank in a stable descending sort instead of its raw score;
- boxes go in as float64, shifted so the smallest coordinate is 0, because ``batched_nms``
  separates classes by adding ``label * (max_coordinate + 1)`` to the coordinates (on the CPU
  for up to 1,000 boxes; above that it loops over the classes), which is lossy in float32 and
  wrong for negative coordinates.

Soft-NMS (Bodla et al., "Soft-NMS: improving object detection with one line of code", ICCV
2017) is the alternative of :func:`soft_nms`: instead of removing a box that overlaps a kept one,
it lowers the box's score, linearly (``1 - IoU`` above the IoU threshold) or with a Gaussian
(``exp(-IoU^2 / sigma)``), so that two true objects that overlap can both be detected.
torchvision has no Soft-NMS, hence the loop here. :func:`class_nms` chooses between the two.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import batched_nms

from sppdet.detector.detections import ImageDetections
from sppdet.errors import ConfigError, DataError
from sppdet.ops.boxes import box_iou

DEFAULT_IOU_THRESHOLD = 0.3
DEFAULT_SCORE_THRESHOLD = -1.5
DEFAULT_MAX_PER_IMAGE = 100
NMS_METHODS = ("hard", "linear", "gaussian")
# Bodla et al.'s Gaussian width and the score below which their code drops a decayed box.
DEFAULT_SOFT_NMS_SIGMA = 0.5
DEFAULT_SOFT_NMS_PRUNE = 1e-3


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
    boxes, scores, labels = _check_inputs(boxes_xyxy, scores, labels)
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


def _check_inputs(
    boxes_xyxy: np.ndarray, scores: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 ``[N, 4]`` boxes, float64 ``[N]`` scores, int64 ``[N]`` labels, or DataError."""
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
    return boxes, scores, labels


def soft_nms(
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    method: str = "gaussian",
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    sigma: float = DEFAULT_SOFT_NMS_SIGMA,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    prune_threshold: float = DEFAULT_SOFT_NMS_PRUNE,
    max_per_image: int | None = DEFAULT_MAX_PER_IMAGE,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class Soft-NMS (Bodla et al. 2017, algorithm 1): decay overlapping scores.

    Per label: take the window of highest current score (equal scores: the one listed first),
    keep it with that score, then multiply the *margin* ``score - score_threshold`` of every
    remaining window of the label by a weight of its IoU with the kept one, drop the windows
    whose margin fell below ``prune_threshold``, and repeat. Weights:

    - ``"linear"``: ``1 - IoU`` when ``IoU > iou_threshold``, else 1;
    - ``"gaussian"``: ``exp(-IoU**2 / sigma)`` for every window (``iou_threshold`` unused).

    Bodla et al. decay probabilities, whose zero is 0. SVM margins can be negative, and
    multiplying a negative score would raise it; so the decay runs on the margin above the score
    threshold, which acts as the zero (for softmax probabilities and a threshold near 0 this is
    the paper's rule).

    Args:
        boxes_xyxy: float ``[N, 4]``, 0-based continuous xyxy.
        scores: float ``[N]``.
        labels: int ``[N]``; windows of different labels never decay each other.
        method: ``"linear"`` or ``"gaussian"``.
        iou_threshold: the linear method's ``N_t`` (default 0.3, as for hard NMS).
        sigma: the Gaussian method's width (default 0.5, the paper's).
        score_threshold: only windows scoring above it take part; it is also the zero of the
            decay (default -1.5, the released code's SVM threshold).
        prune_threshold: a window whose margin falls below this is dropped (default 1e-3, the
            threshold of Bodla et al.'s code). 0 keeps every window.
        max_per_image: keep at most this many windows over all labels, the highest decayed
            scores (default 100); ``None`` for no limit.

    Returns:
        ``(indices, decayed_scores)``: int64 ``[K]`` indices into the inputs and float64 ``[K]``
        their scores after decay, by decayed score descending, equal scores in input order.
    """
    if method not in ("linear", "gaussian"):
        raise ConfigError(f"Soft-NMS method must be 'linear' or 'gaussian', got {method!r}")
    if score_threshold is None:
        raise ConfigError("Soft-NMS needs a score threshold: scores decay towards it")
    _check_options(iou_threshold, score_threshold, max_per_image)
    if not (np.isfinite(sigma) and sigma > 0):
        raise ConfigError(f"sigma must be a number > 0, got {sigma}")
    if not (np.isfinite(prune_threshold) and prune_threshold >= 0):
        raise ConfigError(f"prune_threshold must be a number >= 0, got {prune_threshold}")
    boxes, scores, labels = _check_inputs(boxes_xyxy, scores, labels)
    cap = None if max_per_image is None else int(max_per_image)

    kept: list[np.ndarray] = []
    kept_margins: list[np.ndarray] = []
    candidates = np.flatnonzero(scores > score_threshold)
    for label in np.unique(labels[candidates]):
        # Input order inside the label: np.argmax returns the first of equal margins.
        remaining = candidates[labels[candidates] == label]
        margins = scores[remaining] - score_threshold
        picked: list[int] = []
        picked_margins: list[float] = []
        # A label's picked margins never increase, so its first `cap` picks are all that the
        # per-image cap can keep.
        while remaining.size and (cap is None or len(picked) < cap):
            best = int(np.argmax(margins))
            picked.append(int(remaining[best]))
            picked_margins.append(float(margins[best]))
            remaining = np.delete(remaining, best)
            margins = np.delete(margins, best)
            if remaining.size == 0:
                break
            iou = box_iou(boxes[picked[-1]][None, :], boxes[remaining])[0]
            if method == "linear":
                weights = np.where(iou > iou_threshold, 1.0 - iou, 1.0)
            else:
                weights = np.exp(-(iou * iou) / sigma)
            margins = margins * weights
            alive = margins >= prune_threshold
            remaining, margins = remaining[alive], margins[alive]
        kept.append(np.asarray(picked, dtype=np.int64))
        kept_margins.append(np.asarray(picked_margins, dtype=np.float64))
    if not kept:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    indices = np.concatenate(kept)
    decayed = np.concatenate(kept_margins) + score_threshold
    order = np.lexsort((indices, -decayed))  # score descending, then input order
    if cap is not None:
        order = order[:cap]
    return indices[order], decayed[order]


def class_nms(
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    method: str = "hard",
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    sigma: float = DEFAULT_SOFT_NMS_SIGMA,
    score_threshold: float | None = DEFAULT_SCORE_THRESHOLD,
    max_per_image: int | None = DEFAULT_MAX_PER_IMAGE,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class NMS of one image by ``method``: ``"hard"``, ``"linear"`` or ``"gaussian"``.

    ``"hard"`` is :func:`class_nms_indices` (scores unchanged); the others are
    :func:`soft_nms` with its default pruning. Keyword arguments as there.

    Returns:
        ``(indices, scores)``: int64 ``[K]`` indices into the inputs and float64 ``[K]`` the
        kept windows' scores (after decay for Soft-NMS), by score descending.
    """
    if method not in NMS_METHODS:
        raise ConfigError(f"NMS method must be one of {NMS_METHODS}, got {method!r}")
    if method == "hard":
        keep = class_nms_indices(boxes_xyxy, scores, labels, iou_threshold=iou_threshold,
                                 score_threshold=score_threshold, max_per_image=max_per_image)
        return keep, np.asarray(scores, dtype=np.float64).reshape(-1)[keep]
    return soft_nms(boxes_xyxy, scores, labels, method=method, iou_threshold=iou_threshold,
                    sigma=sigma, score_threshold=score_threshold, max_per_image=max_per_image)


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
