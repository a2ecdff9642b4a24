"""Detections drawn on images (like the paper's figure 6)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from sppdet.detector.detections import ImageDetections
from sppdet.errors import ConfigError
from sppdet.io.atomic import atomic_path

# Distinct, readable colours (RGB), cycled over classes.
_PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
], dtype=np.uint8)


def class_color(label: int) -> tuple[int, int, int]:
    r, g, b = _PALETTE[label % len(_PALETTE)]
    return int(r), int(g), int(b)


def draw_detections(image_rgb: np.ndarray, detections: ImageDetections,
                    class_names: Sequence[str], *, min_score: float | None = None,
                    max_boxes: int = 50) -> np.ndarray:
    """A copy of ``image_rgb`` (uint8 ``[H, W, 3]``) with boxes, class names and scores.

    Args:
        image_rgb: the image.
        detections: its detections (0-based continuous xyxy boxes).
        class_names: names in label order.
        min_score: draw only detections scoring above this (``None``: all).
        max_boxes: draw at most this many, best first.
    """
    canvas = np.ascontiguousarray(image_rgb.copy())
    order = np.argsort(-detections.scores, kind="stable")
    if min_score is not None:
        order = order[detections.scores[order] > min_score]
    thickness = max(1, round(min(canvas.shape[:2]) / 250))
    for index in order[:max_boxes][::-1]:  # best drawn last, on top
        x1, y1, x2, y2 = detections.boxes[index]
        label = int(detections.labels[index])
        color = class_color(label)
        # continuous [x1, x2) covers pixels x1 .. x2 - 1
        p1 = (int(round(x1)), int(round(y1)))
        p2 = (max(int(round(x2)) - 1, p1[0]), max(int(round(y2)) - 1, p1[1]))
        cv2.rectangle(canvas, p1, p2, color, thickness, cv2.LINE_AA)
        text = f"{class_names[label]} {detections.scores[index]:.2f}"
        scale = 0.4 * thickness
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = p1[1] - 2 if p1[1] - th - base - 2 >= 0 else p1[1] + th + 2
        cv2.rectangle(canvas, (p1[0], ty - th - 2), (p1[0] + tw + 2, ty + base - 1), color, -1)
        cv2.putText(canvas, text, (p1[0] + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def save_image(path: str | os.PathLike[str], image_rgb: np.ndarray) -> Path:
    """Write an RGB image (PNG or JPEG by the file's suffix), atomically.

    OpenCV only encodes; Python writes the bytes, so any file name the OS accepts works
    (``cv2.imwrite`` crashes on names that are not UTF-8).

    Raises:
        ConfigError: OpenCV cannot encode to the file's suffix.
        StorageError: the file cannot be written.
    """
    path = Path(path)
    try:
        ok, encoded = cv2.imencode(path.suffix or ".png",
                                   cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    except cv2.error:
        ok = False
    if not ok:
        raise ConfigError(f"{path}: cannot encode an image as {path.suffix!r}")
    with atomic_path(path, durable=False) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return path
