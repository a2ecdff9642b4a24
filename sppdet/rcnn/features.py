"""R-CNN-style window features: warp every window, run the whole trunk on it, pool to 6x6.

This is the baseline SPP-net is measured against (paper section 4.1, REFERENCE 2): R-CNN
(Girshick et al. 2014) crops each proposal with 16 pixels of context, warps it to the network's
input size (224 x 224 for ZF-5) and runs all conv layers on every window separately; fc6 reads
the fixed-size pool5 map of that window. SPP-net runs the conv layers once per image instead
(:func:`sppdet.ops.spp.pool_windows`).

pool5 here is max pooling of the window's conv map to a fixed ``6 x 6`` grid, with the same bin
partition as SPP's 6x6 level (bin ``i`` of a map of ``w`` cells covers cells
``[floor(i w / 6), ceil((i + 1) w / 6))``, PyTorch's adaptive max pooling), so any trunk and
warp size give R-CNN's ``C x 6 x 6`` vector (9,216-d for ZF-5). With sppdet's ZF-5
(``floor(k / 2)`` padding, ceil-mode pools) a 224 x 224 window gives a 15 x 15 conv5 map, where
the 6 bins are 3 cells wide at a stride of 2.5 cells; the released ZF-5's padding gives 13 x 13
and a 3x3 / stride-2 pool5, the same 6 x 6 grid.

The fc layers on top are :class:`sppdet.features.fc_head.FcHead` with ``in_dim =``
:func:`rcnn_feature_dim` (``head.features(pool5, "fc7")``), as for SPP vectors.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sppdet.backbones.base import Backbone
from sppdet.errors import ConfigError, DataError
from sppdet.rcnn.warp import DEFAULT_CONTEXT_PAD, DEFAULT_WARP_SIZE, warp_windows

#: R-CNN's pool5 grid: 6 x 6 bins per window.
RCNN_POOL_SIZE = 6
#: Windows per trunk pass (activations of a 224 x 224 ZF-5 window take about 13 MB).
DEFAULT_BATCH_SIZE = 50


def rcnn_feature_dim(channels: int, pool_size: int = RCNN_POOL_SIZE) -> int:
    """Length of an R-CNN pool5 vector: ``channels * pool_size ** 2`` (9,216 for ZF-5)."""
    return int(channels) * int(pool_size) ** 2


def _check_positive_int(value: int, what: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def rcnn_pool5(conv_maps: Tensor, pool_size: int = RCNN_POOL_SIZE) -> Tensor:
    """Max-pool each window's conv map to a ``pool_size x pool_size`` grid and flatten.

    Args:
        conv_maps: ``[B, C, h, w]`` float, one conv map per warped window (any memory format).
        pool_size: bins per side (default 6, R-CNN's pool5).

    Returns:
        ``[B, C * pool_size ** 2]``, index ``c * pool_size ** 2 + row * pool_size + col``
        (channel-major, as SPP's levels), in the maps' dtype and device.
    """
    pool_size = _check_positive_int(pool_size, "pool_size")
    if not isinstance(conv_maps, Tensor) or conv_maps.dim() != 4:
        got = tuple(conv_maps.shape) if isinstance(conv_maps, Tensor) else type(conv_maps).__name__
        raise DataError(f"conv maps must be a tensor [B, C, h, w], got {got}")
    # Adaptive max pooling bins are [floor(i w / n), ceil((i + 1) w / n)): SPP's partition.
    return F.adaptive_max_pool2d(conv_maps, pool_size).flatten(1)  # [B, C * n * n]


def rcnn_pool5_features(
    backbone: Backbone,
    image_rgb: np.ndarray,
    boxes_xyxy: np.ndarray | Tensor,
    *,
    warp_size: int = DEFAULT_WARP_SIZE,
    context_pad: int = DEFAULT_CONTEXT_PAD,
    pool_size: int = RCNN_POOL_SIZE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Tensor:
    """R-CNN pool5 vectors of an image's windows: warp, whole trunk, 6x6 max pooling.

    The image is preprocessed once with ``backbone.preprocess``; windows are warped from it
    with :func:`sppdet.rcnn.warp.warp_windows` (``context_pad`` pixels of context; outside the image
    the fill is 0, the mean in every backbone's preprocessed units) and run through the trunk
    ``batch_size`` at a time, on the backbone's device, without gradients.

    Args:
        backbone: the conv trunk (eval mode expected), e.g. ``build_backbone("zf5")``.
        image_rgb: uint8 ``[H, W, 3]`` RGB image.
        boxes_xyxy: ``[N, 4]`` 0-based continuous boxes in image pixels.
        warp_size: side of the warped windows in pixels (default 224, ZF-5's input).
        context_pad: context around each window in warped pixels (default 16, R-CNN's).
        pool_size: pool5 bins per side (default 6).
        batch_size: windows per trunk pass (default 50); the result does not depend on it
            beyond float rounding.
        memory_format: layout of the trunk's input batches (``torch.channels_last`` is faster
            for some trunks on a CPU).

    Returns:
        float32 ``[N, backbone.out_channels * pool_size ** 2]`` on the backbone's device, row
        ``k`` for window ``k``; ``[0, D]`` for no windows.

    Raises:
        ConfigError: non-positive ``batch_size``/``pool_size``, bad ``warp_size`` or
            ``context_pad``, or a warp size too small for the trunk.
        DataError: a malformed image, or boxes that are not ``[N, 4]`` finite numbers.
    """
    batch_size = _check_positive_int(batch_size, "batch_size")
    pool_size = _check_positive_int(pool_size, "pool_size")
    warp_size = _check_positive_int(warp_size, "warp_size")
    backbone.output_size(warp_size, warp_size)  # ConfigError when the warp is too small
    if isinstance(boxes_xyxy, Tensor):
        boxes_xyxy = boxes_xyxy.detach().cpu().numpy()
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(f"boxes must have shape [N, 4] (x1, y1, x2, y2), got {boxes.shape}")
    parameter = next(backbone.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dim = rcnn_feature_dim(backbone.out_channels, pool_size)
    out = torch.zeros((boxes.shape[0], dim), dtype=torch.float32, device=device)
    if boxes.shape[0] == 0:
        return out
    image = backbone.preprocess(image_rgb).to(device)  # [3, H, W]
    with torch.no_grad():
        for start in range(0, boxes.shape[0], batch_size):
            stop = min(start + batch_size, boxes.shape[0])
            warped = warp_windows(image, boxes[start:stop], size=warp_size,
                                  context_pad=context_pad, fill=0.0)  # [B, 3, size, size]
            conv = backbone(warped.contiguous(memory_format=memory_format))  # [B, C, h, w]
            out[start:stop] = rcnn_pool5(conv, pool_size)
    return out
