"""Which windows of an image to use as negatives: one per feature-map footprint, and none that
overlaps an earlier negative too much."""

from __future__ import annotations

import numpy as np

from sppdet.errors import DataError


def unique_window_indices(cells: np.ndarray, scale_index: np.ndarray | None = None) -> np.ndarray:
    """Indices of the first window of each distinct feature-map footprint.

    The released SPP-net code (``spp_features_convX_to_poolX.m``, ``dedup``) keeps one window
    per distinct (feature-map box, scale) pair, since such windows have identical features.

    Args:
        cells: ``[N, 4]`` integer feature-map boxes (the cells each window pools from).
        scale_index: ``[N]`` index of the scale each window was pooled at, or None (one scale).

    Returns:
        Sorted int64 array of kept row indices (the first occurrence of each footprint).
    """
    cells = np.asarray(cells).reshape(-1, 4)
    keys = cells.astype(np.int64)
    if scale_index is not None:
        scale_index = np.asarray(scale_index).reshape(-1)
        if scale_index.shape[0] != cells.shape[0]:
            raise DataError(
                f"scale_index has {scale_index.shape[0]} entries but cells has "
                f"{cells.shape[0]} rows"
            )
        keys = np.concatenate([keys, scale_index.astype(np.int64)[:, None]], axis=1)
    if keys.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    _, first = np.unique(keys, axis=0, return_index=True)
    return np.sort(first).astype(np.int64)


def drop_overlapping_negatives(boxes_xyxy: np.ndarray, *, iou_threshold: float = 0.7) -> np.ndarray:
    """Keep a negative unless it overlaps an earlier kept negative by IoU > ``iou_threshold``.

    The paper's rule (remove a negative that overlaps another negative by more than 70 %),
    read greedily in the given order: torchvision's NMS with scores that decrease with the
    row index does exactly that.

    Args:
        boxes_xyxy: ``[N, 4]`` 0-based continuous boxes of one image's negatives.
        iou_threshold: IoU above which the later box is dropped.

    Returns:
        Sorted int64 array of kept row indices.
    """
    # Imported here so that the joblib workers of train_class_svms need not load torch.
    import torch
    from torchvision.ops import nms

    boxes = torch.as_tensor(np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4))
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    order_scores = -torch.arange(boxes.shape[0], dtype=torch.float64)
    keep = nms(boxes, order_scores, float(iou_threshold)).numpy()
    return np.sort(keep).astype(np.int64)
