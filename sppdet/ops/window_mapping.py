"""Projecting an image window onto the cells of a conv feature map (paper appendix).

Coordinates: boxes are sppdet's 0-based continuous ``(x1, y1, x2, y2)`` (pixel ``k`` covers
``[k, k + 1)`` and has its centre at ``k + 0.5``), here in pixels of the *resized* image that
the backbone saw. A backbone reports ``cell_centers = (cy0, cx0)``: the continuous image
coordinate of the receptive-field centre of cell ``(0, 0)``; cell ``(j, i)`` is centred at
``(cy0 + stride * j, cx0 + stride * i)``. Cells are returned as 0-based inclusive index boxes
``(x0, y0, x1, y1)`` -- what :func:`sppdet.ops.spp.spp_pool` takes.

Derivation of the ``"paper"`` rule (**default**). The paper's appendix pads ``floor(p/2)``
pixels for every layer with filter size ``p``; then "for a response centered at x', its
effective receptive field in the image domain is centered at x = S x'" (``S`` = product of all
strides, 16 for ZF-5), with ``x`` and ``x'`` 0-based indices. Pixel index ``k`` is the
continuous coordinate ``k + 0.5``, so that network has ``c0 = 0.5``. The paper projects

* the left edge ``x`` by ``x' = floor(x / S) + 1``: the smallest ``x'`` with ``S x' > x``, the
  first cell whose centre lies strictly right of the window's leftmost pixel;
* the right edge ``x`` by ``x' = ceil(x / S) - 1``: the largest ``x'`` with ``S x' < x``, the
  last cell whose centre lies strictly left of the window's rightmost pixel.

Reading ``x`` as the index of the edge pixel makes the rule symmetric. In continuous
coordinates the leftmost pixel of ``[x1, x2)`` is centred at ``x1 + 0.5`` and the rightmost at
``x2 - 0.5``; a cell's centre is ``c0 + S i``. The same two conditions, for any ``c0``, give::

    i0 = floor((x1 + 0.5 - c0) / S) + 1        # smallest i with c0 + S i > x1 + 0.5
    i1 = ceil((x2 - 0.5 - c0) / S) - 1         # largest  i with c0 + S i < x2 - 0.5

With ``c0 = 0.5`` and an integer box these are exactly the paper's ``floor(x1 / S) + 1`` and
``ceil((x2 - 1) / S) - 1`` on the edge pixels' indices ``x1`` and ``x2 - 1``: this is how
``cx0 = 0.5`` and the paper's formulas agree. The paper's "if the padding is not floor(p/2), we
need to add a proper offset to x" is the ``- (c0 - 0.5)`` term.

The ``"released"`` rule (``spm_response_boxes.m`` and ``spm_pool_caffe_mex.cpp`` of SPP_net)
shrinks the window by ``offset`` pixels on each side and rounds each edge to the nearest cell::

    i0 = floor((x1 + 0.5 - c0 + offset) / S + 0.5)
    i1 = ceil((x2 - 0.5 - c0 - offset) / S - 0.5)

The released code writes this with 1-based pixels ``xmin = x1 + 1, xmax = x2`` and
``offset0 = 21, offset = 6.5``: the released ZF-5 (conv1 7x7/2 pad 1, pool 3/2, conv2 5x5/2
pad 0, pool 3/2, 3x3 pad 1 after) centres cell 0 on 0-based pixel 20 = 1-based pixel 21, i.e.
``c0 = offset0 - 0.5 = 20.5``; with that ``c0`` the formula above is the released one exactly.
For another backbone pass its own ``cell_centers``; ``offset = 6.5`` is the released ZF-5 value.

Both rules then collapse an empty range (``i0 > i1``, a window between two cell centres) to
``floor((i0 + i1) / 2)`` for both ends (the released code's integer mean; identical after
clamping), and clamp to the map ``[0, w - 1]``, so every window gets at least one cell.
Clamping last keeps ``i0 <= i1``.
"""

from __future__ import annotations

import numpy as np
import torch

from sppdet.errors import ConfigError, DataError

MAPPING_RULES = ("paper", "released")
#: Released SPP_net ZF-5 value of ``offset`` (pixels shrunk off each window side).
RELEASED_OFFSET = 6.5
#: Released SPP_net ZF-5 ``offset0 = 21`` (1-based pixel) as a continuous cell-0 centre.
RELEASED_ZF5_CELL_CENTER = 20.5


def _edges_to_cells(
    low: np.ndarray,
    high: np.ndarray,
    center0: float,
    stride: int,
    size: int,
    rule: str,
    offset: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One axis: continuous window edges ``[N]`` -> inclusive cell range ``[N]``, ``[N]``."""
    # Centres of the window's first and last pixel (see the module docstring).
    first = low + 0.5 - center0
    last = high - 0.5 - center0
    if rule == "paper":
        # Paper appendix: left x' = floor(x / S) + 1, right x' = ceil(x / S) - 1.
        start = np.floor(first / stride) + 1
        end = np.ceil(last / stride) - 1
    else:
        # spm_response_boxes.m: floor(... / S + 0.5) and ceil(... / S - 0.5).
        start = np.floor((first + offset) / stride + 0.5)
        end = np.ceil((last - offset) / stride - 0.5)
    collapsed = start > end
    mean = np.floor((start + end) / 2)
    start = np.where(collapsed, mean, start)
    end = np.where(collapsed, mean, end)
    start = np.clip(start, 0, size - 1)
    end = np.clip(end, 0, size - 1)
    return start.astype(np.int64), end.astype(np.int64)


def map_windows_to_cells(
    boxes_xyxy: np.ndarray | torch.Tensor,
    stride: int,
    cell_centers: tuple[float, float],
    map_size: tuple[int, int],
    *,
    rule: str = "paper",
    offset: float = RELEASED_OFFSET,
) -> np.ndarray | torch.Tensor:
    """Project windows of the resized image onto feature-map cells (see the module docstring).

    Args:
        boxes_xyxy: ``[N, 4]`` float ``(x1, y1, x2, y2)``, 0-based continuous pixels of the
            resized image the feature map was computed on. Degenerate (zero-size) windows and
            windows partly or wholly outside the image are allowed.
        stride: total stride ``S`` of the feature map in pixels (16 for ZF-5).
        cell_centers: ``(cy0, cx0)``, continuous image coordinates of the receptive-field
            centre of cell ``(0, 0)`` (``backbone.cell_centers(h, w)``).
        map_size: ``(h, w)`` of the feature map in cells.
        rule: ``"paper"`` (**default**, paper appendix) or ``"released"`` (SPP_net code).
        offset: pixels shrunk off each side by the ``"released"`` rule (6.5 for ZF-5); unused by
            ``"paper"``.

    Returns:
        int64 ``[N, 4]`` inclusive cell indices ``(x0, y0, x1, y1)`` with
        ``0 <= x0 <= x1 < w`` and ``0 <= y0 <= y1 < h``; a numpy array for numpy input, a tensor
        on the input's device for tensor input.

    Raises:
        ConfigError: unknown rule, non-positive stride or map size.
        DataError: boxes not ``[N, 4]``, not finite, or with ``x2 < x1`` / ``y2 < y1``.
    """
    if rule not in MAPPING_RULES:
        raise ConfigError(f"window mapping rule must be one of {MAPPING_RULES}, got {rule!r}")
    if int(stride) != stride or stride < 1:
        raise ConfigError(f"stride must be a positive integer (pixels), got {stride!r}")
    map_h, map_w = int(map_size[0]), int(map_size[1])
    if map_h < 1 or map_w < 1:
        raise ConfigError(f"feature map size must be positive (h, w) cells, got {tuple(map_size)}")
    device = boxes_xyxy.device if isinstance(boxes_xyxy, torch.Tensor) else None
    if device is not None:
        boxes_xyxy = boxes_xyxy.detach().cpu().numpy()
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        else:
            raise DataError(f"boxes must have shape [N, 4] (x1, y1, x2, y2), got {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise DataError("boxes contain NaN or infinite coordinates")
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if inverted.any():
        first = int(np.nonzero(inverted)[0][0])
        raise DataError(
            f"boxes must have x2 >= x1 and y2 >= y1; box {first} is {boxes[first].tolist()}"
        )
    cy0, cx0 = float(cell_centers[0]), float(cell_centers[1])
    x0, x1 = _edges_to_cells(boxes[:, 0], boxes[:, 2], cx0, int(stride), map_w, rule, float(offset))
    y0, y1 = _edges_to_cells(boxes[:, 1], boxes[:, 3], cy0, int(stride), map_h, rule, float(offset))
    cells = np.stack([x0, y0, x1, y1], axis=1).reshape(-1, 4)
    if device is not None:
        return torch.from_numpy(cells).to(device)
    return cells
