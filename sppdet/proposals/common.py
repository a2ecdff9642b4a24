"""What every proposal method shares: the result type, the per-image error and box clean-up.

All boxes here are sppdet's float ``[x1, y1, x2, y2]``, 0-based continuous pixel coordinates of
the *original* image (see :mod:`sppdet.ops.boxes`), listed in rank order (best or first-generated
first) so that "the top k boxes" is a prefix of the array.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sppdet.ops.boxes import clip_boxes
from sppdet.errors import DataError


class ProposalError(DataError):
    """Proposals for one image could not be computed (bad image, a failure inside OpenCV).

    A per-image error: a long stage records it with the image id and goes on with the next
    image. It derives from :class:`~sppdet.errors.DataError` so that a stage catching data
    problems (a corrupt JPEG) catches this too.
    """


@dataclass(frozen=True)
class ProposalResult:
    """Object proposals of one image.

    Attributes:
        boxes: float32 ``[N, 4]`` xyxy, 0-based continuous, original image pixels, rank order.
        scores: float32 ``[N]`` (higher is better, same order as ``boxes``), or ``None`` for a
            method without scores (selective search ranks but does not score).
    """

    boxes: np.ndarray
    scores: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def check_image(image_rgb: np.ndarray) -> np.ndarray:
    """Return ``image_rgb`` as a C-contiguous uint8 ``[H, W, 3]`` array or raise ProposalError.

    Args:
        image_rgb: RGB image, uint8 ``[H, W, 3]`` (what sppdet's image reader returns).
    """
    if not isinstance(image_rgb, np.ndarray):
        raise ProposalError(f"expected the image as a numpy array, got {type(image_rgb).__name__}")
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ProposalError(
            f"expected an RGB image of dtype uint8 and shape [H, W, 3], "
            f"got dtype {image_rgb.dtype} and shape {tuple(image_rgb.shape)}"
        )
    if image_rgb.shape[0] < 2 or image_rgb.shape[1] < 2:
        raise ProposalError(
            f"image of {image_rgb.shape[1]}x{image_rgb.shape[0]} pixels is too small for "
            "object proposals (need at least 2x2)"
        )
    return np.ascontiguousarray(image_rgb)


def resize_longer_side(image: np.ndarray, max_size: int | None) -> tuple[np.ndarray, float, float]:
    """Shrink ``image`` so that its longer side is at most ``max_size`` pixels.

    Args:
        image: ``[H, W, C]`` array.
        max_size: cap on the longer side in pixels; ``None`` keeps the image as it is. Images
            already within the cap are never enlarged.

    Returns:
        ``(resized, scale_x, scale_y)`` where ``scale_x = W / W_resized`` and
        ``scale_y = H / H_resized`` map a continuous coordinate of the resized image back to the
        original (1.0 when nothing was resized).
    """
    height, width = image.shape[:2]
    if max_size is None or max(height, width) <= max_size:
        return image, 1.0, 1.0
    factor = max_size / max(height, width)
    new_width = max(1, int(round(width * factor)))
    new_height = max(1, int(round(height * factor)))
    # INTER_AREA averages the pixels a target pixel covers: no aliasing when shrinking.
    resized = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_AREA)
    return resized, width / new_width, height / new_height


def finish_boxes(
    boxes_xyxy: np.ndarray,
    scores: np.ndarray | None,
    *,
    scale_x: float,
    scale_y: float,
    width: int,
    height: int,
    min_size: float,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Map boxes back to original pixels, clip, drop tiny boxes and exact duplicates.

    The order of the input (rank order) is kept; of duplicate boxes the first one stays.

    Args:
        boxes_xyxy: ``[N, 4]`` xyxy in the (possibly resized) image the method saw.
        scores: ``[N]`` or ``None``.
        scale_x, scale_y: original / resized size ratio per axis (see
            :func:`resize_longer_side`).
        width, height: original image size in pixels (boxes are clipped to it).
        min_size: boxes whose width or height in original pixels is below this are dropped.

    Returns:
        ``(boxes float32 [M, 4], scores float32 [M] or None)``.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4).copy()
    boxes[:, 0::2] *= scale_x
    boxes[:, 1::2] *= scale_y
    boxes = clip_boxes(boxes, width, height)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    keep &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes = boxes[keep].astype(np.float32)
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)[keep]
    if boxes.shape[0] > 0:
        # np.unique sorts; the first index of each distinct row restores the rank order.
        _, first = np.unique(boxes, axis=0, return_index=True)
        first = np.sort(first)
        boxes = boxes[first]
        if scores is not None:
            scores = scores[first]
    return np.ascontiguousarray(boxes, dtype=np.float32), scores
