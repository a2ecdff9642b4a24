"""R-CNN's window warping (the baseline SPP-net is compared against).

R-CNN (Girshick et al. 2014, appendix A; ``rcnn_im_crop.m`` in "warp" mode with ``padding``)
dilates each window about its centre so that, once the dilated window is warped (anisotropic
resize) to ``size x size``, the original window occupies the central ``size - 2 * context_pad``
pixels and ``context_pad`` pixels of image context surround it. Parts of the dilated window
outside the image are filled with the mean (R-CNN subtracts the mean image and pads with 0).

Here all windows of an image are warped at once with ``torchvision.ops.roi_align``
(``aligned=True``, one bilinear sample per output pixel, i.e. ``sampling_ratio=1``): output
pixel ``j`` samples the continuous point ``x1 + (j + 0.5) * (x2 - x1) / size``, the same point
a bilinear resize without antialiasing of the crop samples (OpenCV ``INTER_LINEAR``, MATLAB
``imresize(..., 'antialiasing', false)``). Two deliberate differences from ``rcnn_im_crop.m``:
the dilated box is not rounded to whole pixels, and samples within half a pixel of a crop edge
interpolate with the neighbouring image pixel instead of replicating the crop's edge pixel
(the image is treated as one continuous signal, extended by the fill value outside).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import roi_align

from sppdet.errors import ConfigError, DataError

#: ZF-5's input size (paper table 1); R-CNN's AlexNet used 227.
DEFAULT_WARP_SIZE = 224
#: R-CNN's context padding in pixels of the warped window.
DEFAULT_CONTEXT_PAD = 16


def rcnn_context_boxes(boxes_xyxy: np.ndarray | Tensor, size: int, context_pad: int) -> np.ndarray:
    """Dilate windows about their centres by ``size / (size - 2 * context_pad)`` (R-CNN).

    Args:
        boxes_xyxy: ``[N, 4]`` 0-based continuous boxes in image pixels.
        size: side of the warped window in pixels.
        context_pad: context in pixels of the warped window on each side.

    Returns:
        float64 array ``[N, 4]``; not clipped to the image.
    """
    if int(size) != size or size < 1:
        raise ConfigError(f"warp size must be a positive integer (pixels), got {size!r}")
    if int(context_pad) != context_pad or context_pad < 0 or 2 * context_pad >= size:
        raise ConfigError(
            f"context_pad must be an integer in [0, size / 2), got {context_pad!r} for size {size}"
        )
    if isinstance(boxes_xyxy, Tensor):
        boxes_xyxy = boxes_xyxy.detach().cpu().numpy()
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    # rcnn_im_crop.m: scale = crop_size / (crop_size - padding * 2) about the box centre.
    dilation = size / (size - 2 * context_pad)
    centers = (boxes[:, 0:2] + boxes[:, 2:4]) / 2  # [N, 2]
    half_sizes = (boxes[:, 2:4] - boxes[:, 0:2]) / 2 * dilation  # [N, 2]
    return np.concatenate([centers - half_sizes, centers + half_sizes], axis=1)


def _image_to_chw(image: np.ndarray | Tensor) -> Tensor:
    """numpy ``[H, W, 3]`` (OpenCV/PIL layout) or tensor ``[3, H, W]`` -> float ``[3, H, W]``."""
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise DataError(f"an image tensor must be [3, H, W], got {tuple(image.shape)}")
        chw = image
    else:
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3:
            raise DataError(f"an image array must be [H, W, 3], got {array.shape}")
        chw = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    if chw.shape[1] < 1 or chw.shape[2] < 1:
        raise DataError(f"image must have at least one pixel, got {tuple(chw.shape)}")
    if not chw.dtype.is_floating_point:
        chw = chw.to(torch.float32)
    return chw


def warp_windows(
    image: np.ndarray | Tensor,
    boxes_xyxy: np.ndarray | Tensor,
    size: int = DEFAULT_WARP_SIZE,
    context_pad: int = DEFAULT_CONTEXT_PAD,
    fill: float | tuple[float, float, float] = 0.0,
) -> Tensor:
    """Warp each window with context to ``size x size`` pixels, all at once (R-CNN's input).

    Memory: the result takes ``N * 3 * size * size * 4`` bytes (602 kB per window at 224);
    call it on chunks of windows.

    Args:
        image: RGB image, a numpy array ``[H, W, 3]`` (uint8 or float) or a tensor
            ``[3, H, W]`` (e.g. already preprocessed by a backbone, on any device).
        boxes_xyxy: ``[N, 4]`` 0-based continuous boxes in image pixels; degenerate boxes give
            constant windows.
        size: side of the warped windows in pixels (default 224; R-CNN's AlexNet used 227).
        context_pad: pixels of context around the window in the warped image (default 16;
            0 warps the tight box).
        fill: value (or one value per channel) of the image outside its borders: R-CNN's mean
            in the input's units; 0.0 for a mean-subtracted image.

    Returns:
        float tensor ``[N, 3, size, size]`` on the image's device (float32 for integer images,
        else the image's dtype), channels in the input's order; ``[0, 3, size, size]`` for no
        boxes.
    """
    chw = _image_to_chw(image)
    dilated = rcnn_context_boxes(boxes_xyxy, size, context_pad)
    if not np.isfinite(dilated).all():
        raise DataError("boxes contain NaN or infinite coordinates")
    num_windows = dilated.shape[0]
    if num_windows == 0:
        return chw.new_zeros((0, 3, size, size))
    fill_t = torch.as_tensor(fill, dtype=chw.dtype, device=chw.device).reshape(-1)
    if fill_t.numel() not in (1, 3):
        raise ConfigError(
            f"fill must be one value or one per channel (3), got {fill_t.numel()} values"
        )
    fill_t = fill_t.expand(3).reshape(3, 1, 1)
    # Shift so that the fill is 0 and add a 1-pixel border of it: roi_align then reads the
    # fill everywhere outside the image (it returns 0 beyond the border and replicates the
    # border row within one pixel of it).
    padded = torch.nn.functional.pad(chw - fill_t, (1, 1, 1, 1))  # [3, H + 2, W + 2]
    rois = torch.zeros((num_windows, 5), dtype=chw.dtype, device=chw.device)
    # + 1: the boxes move with the 1-pixel border.
    rois[:, 1:] = torch.as_tensor(dilated + 1.0, dtype=chw.dtype, device=chw.device)
    warped = roi_align(
        padded[None],
        rois,
        output_size=(size, size),
        spatial_scale=1.0,
        sampling_ratio=1,
        aligned=True,
    )  # [N, 3, size, size]
    return warped + fill_t
