"""Box formats and the few box operations the whole pipeline shares.

Inside sppdet every box is a float ``[x1, y1, x2, y2]`` in **0-based continuous** pixel
coordinates: the pixel with 0-based index ``i`` covers ``[i, i + 1)``. A PASCAL VOC box with
1-based inclusive pixel indices ``xmin..xmax`` therefore becomes ``x1 = xmin - 1, x2 = xmax``.
With this convention ``x2 - x1`` equals the devkit's ``xmax - xmin + 1``, so areas and IoU
computed the plain way (as torchvision does) equal the devkit's "+1" values exactly, and
torchvision's box ops apply unchanged.

The two conversions :func:`voc_to_xyxy` and :func:`xyxy_to_voc` are the only places where the
1-based convention appears; they are used when reading annotation XML and when writing VOC
result (comp4) files.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou as _tv_box_iou


def voc_to_xyxy(voc_boxes: np.ndarray) -> np.ndarray:
    """Convert VOC 1-based inclusive pixel boxes to sppdet's 0-based continuous boxes.

    Args:
        voc_boxes: array ``[N, 4]`` of ``(xmin, ymin, xmax, ymax)``, 1-based inclusive pixel
            indices as in VOC annotation XML and result files (floats allowed).

    Returns:
        float32 array ``[N, 4]`` of ``(x1, y1, x2, y2)`` with ``x1 = xmin - 1, x2 = xmax``.
    """
    boxes = np.asarray(voc_boxes, dtype=np.float64).reshape(-1, 4)
    out = boxes.copy()
    out[:, 0:2] -= 1.0
    return out.astype(np.float32)


def xyxy_to_voc(boxes_xyxy: np.ndarray) -> np.ndarray:
    """Inverse of :func:`voc_to_xyxy`: 0-based continuous to VOC 1-based inclusive pixels.

    Args:
        boxes_xyxy: array ``[N, 4]`` of 0-based continuous ``(x1, y1, x2, y2)``.

    Returns:
        float64 array ``[N, 4]`` of ``(xmin, ymin, xmax, ymax)`` with ``xmin = x1 + 1``,
        ``xmax = x2`` (not rounded: the devkit reads floats).
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    out = boxes.copy()
    out[:, 0:2] += 1.0
    return out


def xywh_to_xyxy(boxes_xywh: np.ndarray) -> np.ndarray:
    """Convert integer pixel boxes ``(x, y, w, h)`` (OpenCV's format) to 0-based continuous xyxy.

    OpenCV's ``(x, y, w, h)`` covers pixels ``x .. x + w - 1``, i.e. the continuous interval
    ``[x, x + w)``, so ``x2 = x + w``.

    Args:
        boxes_xywh: array ``[N, 4]``.

    Returns:
        float32 array ``[N, 4]``.
    """
    boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    out = boxes.copy()
    out[:, 2] = boxes[:, 0] + boxes[:, 2]
    out[:, 3] = boxes[:, 1] + boxes[:, 3]
    return out.astype(np.float32)


def box_area(boxes_xyxy: np.ndarray) -> np.ndarray:
    """Areas of 0-based continuous boxes, ``[N, 4] -> [N]`` (pixels squared; 0 for degenerate)."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    widths = np.clip(boxes[:, 2] - boxes[:, 0], 0.0, None)
    heights = np.clip(boxes[:, 3] - boxes[:, 1], 0.0, None)
    return widths * heights


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two sets of 0-based continuous boxes (torchvision's ``box_iou``).

    Args:
        boxes_a: ``[N, 4]`` xyxy.
        boxes_b: ``[M, 4]`` xyxy.

    Returns:
        float64 array ``[N, M]``; an empty axis gives an empty matrix. Pairs whose union is
        empty (two degenerate boxes) get IoU 0 rather than NaN.
    """
    a = torch.as_tensor(np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4))
    b = torch.as_tensor(np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4))
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]), dtype=np.float64)
    iou = _tv_box_iou(a, b).numpy()
    return np.nan_to_num(iou, nan=0.0)


def clip_boxes(boxes_xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip 0-based continuous boxes to an image of ``width x height`` pixels.

    Args:
        boxes_xyxy: ``[N, 4]``.
        width: image width in pixels; x coordinates are clipped to ``[0, width]``.
        height: image height in pixels; y coordinates are clipped to ``[0, height]``.

    Returns:
        array ``[N, 4]`` of the input's float dtype.
    """
    boxes = np.array(boxes_xyxy, dtype=np.result_type(np.asarray(boxes_xyxy).dtype, np.float32))
    boxes = boxes.reshape(-1, 4)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    return boxes


def is_degenerate(boxes_xyxy: np.ndarray, min_size: float = 0.0) -> np.ndarray:
    """Mask ``[N]`` of boxes whose width or height is ``<= min_size`` (pixels)."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    return ((boxes[:, 2] - boxes[:, 0]) <= min_size) | ((boxes[:, 3] - boxes[:, 1]) <= min_size)
