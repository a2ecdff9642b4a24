"""Box-regression targets (R-CNN appendix C) and the training windows they are computed for.

A proposal P is moved towards a ground-truth box G by four targets:
``t_x = (G_x - P_x) / P_w``, ``t_y = (G_y - P_y) / P_h``, ``t_w = log(G_w / P_w)``,
``t_h = log(G_h / P_h)``, where ``(x, y)`` is a box's centre and ``(w, h)`` its size. Boxes are
sppdet's 0-based continuous ``[x1, y1, x2, y2]`` (``sppdet.ops.boxes``), so ``w = x2 - x1`` and
the centre is ``x1 + 0.5 * w``, as in torchvision's ``BoxCoder``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from sppdet.errors import DataError
from sppdet.ops.boxes import box_iou

#: Cap on predicted log-scale changes before ``exp`` (torchvision's ``BoxCoder`` uses the same
#: ``log(1000 / 16)``): keeps a wild prediction from overflowing to an infinite box.
MAX_LOG_SCALE = math.log(1000.0 / 16.0)


def _centers_sizes(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(cx, cy, w, h)`` of ``[N, 4]`` 0-based continuous boxes (float64, each ``[N]``)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h


def as_boxes(boxes: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        if arr.size == 0:
            return arr.reshape(0, 4)
        raise DataError(f"{what}: expected boxes [N, 4], got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{what}: boxes contain NaN or infinite coordinates")
    return arr


def encode(proposals: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """Regression targets that move each proposal onto its ground-truth box.

    Args:
        proposals: ``[N, 4]`` 0-based continuous xyxy boxes, positive width and height.
        gt_boxes: ``[N, 4]`` the ground-truth box matched to each proposal (same format).

    Returns:
        float64 ``[N, 4]`` targets ``(t_x, t_y, t_w, t_h)`` (R-CNN appendix C); ``[0, 4]`` for
        empty input.
    """
    p = as_boxes(proposals, "proposals")
    g = as_boxes(gt_boxes, "ground-truth boxes")
    if p.shape != g.shape:
        raise DataError(f"proposals {p.shape} and ground-truth boxes {g.shape} must match")
    px, py, pw, ph = _centers_sizes(p)
    gx, gy, gw, gh = _centers_sizes(g)
    for name, sizes in (("proposals", (pw, ph)), ("ground-truth boxes", (gw, gh))):
        bad = np.flatnonzero((sizes[0] <= 0) | (sizes[1] <= 0))
        if bad.size:
            raise DataError(
                f"{name} with zero or negative width/height at rows {bad[:10].tolist()}: "
                "regression targets are undefined for them"
            )
    return np.stack(
        [(gx - px) / pw, (gy - py) / ph, np.log(gw / pw), np.log(gh / ph)], axis=1
    )


def decode(
    proposals: np.ndarray, deltas: np.ndarray, *, max_log_scale: float = MAX_LOG_SCALE
) -> np.ndarray:
    """Apply regression targets to proposals (the inverse of :func:`encode`).

    Args:
        proposals: ``[N, 4]`` 0-based continuous xyxy boxes.
        deltas: ``[N, 4]`` ``(t_x, t_y, t_w, t_h)``.
        max_log_scale: ``t_w`` and ``t_h`` are capped at this value before ``exp``.

    Returns:
        float64 ``[N, 4]`` boxes (not clipped to the image).
    """
    p = as_boxes(proposals, "proposals")
    d = np.asarray(deltas, dtype=np.float64).reshape(-1, 4)
    if d.shape[0] != p.shape[0]:
        raise DataError(f"{p.shape[0]} proposals but {d.shape[0]} rows of deltas")
    px, py, pw, ph = _centers_sizes(p)
    cx = d[:, 0] * pw + px
    cy = d[:, 1] * ph + py
    w = np.exp(np.minimum(d[:, 2], max_log_scale)) * pw
    h = np.exp(np.minimum(d[:, 3], max_log_scale)) * ph
    return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=1)


def paired_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of row i of ``boxes_a`` with row i of ``boxes_b``, ``[N, 4] x [N, 4] -> [N]`` float64.

    torchvision has only the pairwise ``[N, M]`` matrix; its diagonal would cost N^2 memory.
    """
    a = as_boxes(boxes_a, "boxes")
    b = as_boxes(boxes_b, "boxes")
    if a.shape != b.shape:
        raise DataError(f"paired_iou needs boxes of the same shape, got {a.shape} and {b.shape}")
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0.0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0.0, None)
    inter = iw * ih
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


class TrainingWindows(NamedTuple):
    """Training windows of one image for box regression (see :func:`select_training_windows`)."""

    index: np.ndarray  # [M] int64 rows of the image's proposals
    gt_boxes: np.ndarray  # [M, 4] float64 the matched ground-truth box of each
    labels: np.ndarray  # [M] the matched box's class label
    iou: np.ndarray  # [M] float64 IoU with it


def select_training_windows(
    proposals: np.ndarray,
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    *,
    min_iou: float = 0.5,
) -> TrainingWindows:
    """One image's regression training windows (SPP-net ``spp_train_bbox_regressor.m``).

    Each proposal is matched to the ground-truth box (of any class) it overlaps most, the
    first such box on ties, and takes that box's class; it is a training window if that IoU is
    ``> min_iou``. Include the ground-truth boxes among the proposals to train on them too (the
    released code does: their targets are 0).

    Args:
        proposals: ``[N, 4]`` 0-based continuous boxes.
        gt_boxes: ``[G, 4]`` the image's ground-truth boxes.
        gt_labels: ``[G]`` their class labels (any dtype).
        min_iou: IoU a window must exceed.

    Returns:
        :class:`TrainingWindows`; empty when the image has no proposals or no ground truth.
    """
    p = as_boxes(proposals, "proposals")
    g = as_boxes(gt_boxes, "ground-truth boxes")
    labels = np.asarray(gt_labels).reshape(-1)
    if labels.shape[0] != g.shape[0]:
        raise DataError(f"{g.shape[0]} ground-truth boxes but {labels.shape[0]} labels")
    if p.shape[0] == 0 or g.shape[0] == 0:
        return TrainingWindows(
            np.zeros(0, dtype=np.int64), np.zeros((0, 4)), labels[:0], np.zeros(0)
        )
    iou = box_iou(p, g)  # [N, G]
    best = np.argmax(iou, axis=1)
    best_iou = iou[np.arange(p.shape[0]), best]
    index = np.flatnonzero(best_iou > min_iou)
    return TrainingWindows(
        index.astype(np.int64), g[best[index]], labels[best[index]], best_iou[index]
    )
