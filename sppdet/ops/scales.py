"""Image scales: resizing an image to a scale, mapping boxes into it, choosing a scale per window.

A **scale** ``s`` is the length in pixels of the shorter image side after resizing (paper 4.1:
"resize the image such that min(w, h) = s"). One definition of the resized size is used
everywhere (features, boxes, window mapping), :func:`resized_size`:

    f = s / min(H, W),   h = floor(H * f + 0.5),   w = floor(W * f + 0.5)

(round half up, so the result never depends on banker's rounding). The shorter side comes out
exactly ``s``; the other side is rounded, so the effective per-axis factors ``h / H`` and
``w / W`` (:func:`scale_factors`) differ slightly. Boxes are mapped with those per-axis factors,
which is exactly how a bilinear resize to ``(h, w)`` (OpenCV ``INTER_LINEAR``, PyTorch
``interpolate(align_corners=False)``) maps 0-based continuous coordinates: the image extent
``[0, W] x [0, H]`` goes onto ``[0, w] x [0, h]``.

The released SPP_net code scales 1-based boxes by ``(b - 1) * (s - 1) / (min_side - 1) + 1``
(corner-aligned); sppdet uses the continuous mapping above, which differs from it by less than
one pixel.

Scale per window (paper 4.1, multi-scale testing): "we choose a single scale s such that the
scaled candidate window has a number of pixels closest to 224 x 224" -- :func:`select_scales`
with ``rule="paper"`` (**default**). The released code's rule is available as
``rule="released"``: ``expected = round(208 * min_side / sqrt(area))`` (208 = 13 cells x stride
16), then the scale nearest to ``expected``, linearly (``spm_expected_scale.m`` and
``spp_features_convX_to_poolX.m``).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from sppdet.errors import ConfigError, DataError

#: The paper's five scales (paper 4.1; the released code uses 874 instead of 864).
PAPER_SCALES: tuple[int, ...] = (480, 576, 688, 864, 1200)
#: The paper's single scale.
SINGLE_SCALE: tuple[int, ...] = (688,)

#: Paper 4.1: the scaled window should have about 224 x 224 pixels.
PAPER_TARGET_SIZE = 224
#: Released code: ``sz_conv_standard * step_standard`` = 13 * 16.
RELEASED_TARGET_SIZE = 208

SCALE_RULES = ("paper", "released")


def _check_image_size(height: int, width: int) -> None:
    if int(height) != height or int(width) != width or height < 1 or width < 1:
        raise DataError(
            f"image size must be two positive integers (height, width), got ({height}, {width})"
        )


def _check_scale(scale: int) -> None:
    if int(scale) != scale or scale < 1:
        raise ConfigError(
            f"a scale must be a positive integer (shorter side in pixels), got {scale!r}"
        )


def resized_size(height: int, width: int, scale: int) -> tuple[int, int]:
    """Size ``(h, w)`` in pixels of an ``height x width`` image resized to scale ``scale``.

    ``f = scale / min(height, width)``; each side is ``floor(side * f + 0.5)`` (round half up).
    The shorter side becomes exactly ``scale``; there is no cap on the longer side (as in the
    released code).

    Args:
        height: original image height in pixels.
        width: original image width in pixels.
        scale: target length of the shorter side in pixels.

    Returns:
        ``(h, w)``, positive ints.
    """
    _check_image_size(height, width)
    _check_scale(scale)
    factor = scale / min(height, width)
    new_h = max(1, math.floor(height * factor + 0.5))
    new_w = max(1, math.floor(width * factor + 0.5))
    return new_h, new_w


def scale_factors(height: int, width: int, scale: int) -> tuple[float, float]:
    """Per-axis factors ``(fy, fx) = (h / height, w / width)`` of :func:`resized_size`.

    A 0-based continuous coordinate ``x`` of the original image is ``x * fx`` in the resized one.
    The two factors differ slightly because the longer side is rounded to whole pixels.
    """
    new_h, new_w = resized_size(height, width, scale)
    return new_h / height, new_w / width


def scale_boxes(boxes_xyxy: np.ndarray | torch.Tensor, image_size: tuple[int, int], scale: int):
    """Map 0-based continuous boxes from the original image into the image resized to ``scale``.

    Args:
        boxes_xyxy: ``[N, 4]`` ``(x1, y1, x2, y2)`` in original-image pixels (array or tensor).
        image_size: ``(height, width)`` of the original image in pixels.
        scale: shorter side of the resized image in pixels.

    Returns:
        ``[N, 4]`` float64 boxes in resized-image pixels, ``x * fx`` and ``y * fy`` with the
        factors of :func:`scale_factors`; a numpy array for numpy input, a tensor on the input's
        device for tensor input.
    """
    fy, fx = scale_factors(image_size[0], image_size[1], scale)
    if isinstance(boxes_xyxy, torch.Tensor):
        boxes = boxes_xyxy.to(torch.float64).reshape(-1, 4)
        factors = torch.tensor([fx, fy, fx, fy], dtype=torch.float64, device=boxes.device)
        return boxes * factors
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    return boxes * np.array([fx, fy, fx, fy], dtype=np.float64)


def resize_image(image: np.ndarray, scale: int) -> np.ndarray:
    """Resize an ``[H, W, C]`` image so that its shorter side is ``scale`` pixels.

    Bilinear without antialiasing (OpenCV ``INTER_LINEAR``), as the released code's
    ``imresize(..., 'bilinear', 'antialiasing', false)``; the output size is
    :func:`resized_size`.

    Args:
        image: ``[H, W]`` or ``[H, W, C]`` array (uint8 or float32).
        scale: shorter side of the result in pixels.

    Returns:
        array ``[h, w(, C)]`` of the input's dtype.
    """
    import cv2  # OpenCV is only needed by this helper

    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise DataError(f"image must be an array [H, W] or [H, W, C], got shape {image.shape}")
    new_h, new_w = resized_size(image.shape[0], image.shape[1], scale)
    if (new_h, new_w) == image.shape[:2]:
        return image.copy()
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def _check_scales(scales: Sequence[int]) -> np.ndarray:
    values = np.asarray(list(scales), dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ConfigError("at least one scale is needed, got an empty list")
    for value in values:
        _check_scale(value)
    if len(np.unique(values)) != len(values):
        raise ConfigError(f"scales must be distinct, got {list(scales)}")
    return values


def select_scales(
    boxes_xyxy: np.ndarray | torch.Tensor,
    image_size: tuple[int, int],
    scales: Sequence[int] = PAPER_SCALES,
    *,
    rule: str = "paper",
) -> np.ndarray:
    """Choose one scale per window for multi-scale feature pooling.

    ``rule="paper"`` (**default**, paper 4.1): the scale whose scaled window has a pixel count
    closest to 224 x 224, i.e. ``argmin_s |area * fx(s) * fy(s) - 224**2|`` with the per-axis
    factors of :func:`scale_factors`.

    ``rule="released"`` (released code, ``spm_expected_scale.m``):
    ``expected = round(208 * min(H, W) / sqrt(area))``, then ``argmin_s |s - expected|``.

    Ties go to the scale listed first in ``scales`` (MATLAB's ``min``, numpy's ``argmin``).
    A window covers at least one pixel: areas are clamped to ``>= 1`` so that degenerate
    windows get the largest scale under both rules instead of an arbitrary one.

    Args:
        boxes_xyxy: ``[N, 4]`` 0-based continuous boxes in original-image pixels.
        image_size: ``(height, width)`` of the original image in pixels.
        scales: candidate scales (shorter side in pixels), distinct.
        rule: ``"paper"`` or ``"released"``.

    Returns:
        int64 array ``[N]`` of chosen scale values (elements of ``scales``); ``[0]`` for no boxes.
    """
    if rule not in SCALE_RULES:
        raise ConfigError(f"scale rule must be one of {SCALE_RULES}, got {rule!r}")
    scale_values = _check_scales(scales)
    height, width = image_size
    _check_image_size(height, width)
    if isinstance(boxes_xyxy, torch.Tensor):
        boxes_xyxy = boxes_xyxy.detach().cpu().numpy()
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return np.zeros((0,), dtype=np.int64)
    widths = np.clip(boxes[:, 2] - boxes[:, 0], 0.0, None)
    heights = np.clip(boxes[:, 3] - boxes[:, 1], 0.0, None)
    areas = np.maximum(widths * heights, 1.0)  # [N]
    if rule == "paper":
        factors = np.array([scale_factors(height, width, int(s)) for s in scale_values])  # [S, 2]
        scaled_areas = areas[:, None] * (factors[:, 0] * factors[:, 1])[None, :]  # [N, S]
        distance = np.abs(scaled_areas - float(PAPER_TARGET_SIZE) ** 2)
    else:
        # spm_expected_scale.m: MATLAB's round() rounds half away from zero; values are > 0.
        expected = np.floor(RELEASED_TARGET_SIZE * min(height, width) / np.sqrt(areas) + 0.5)
        distance = np.abs(scale_values[None, :] - expected[:, None])  # [N, S]
    best = np.argmin(distance, axis=1)
    return scale_values[best].astype(np.int64)
