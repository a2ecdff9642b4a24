"""Small synthetic images shared by the proposal tests (160x120, deterministic)."""

from __future__ import annotations

import numpy as np

# The bright rectangle covers pixel columns 50..119 and rows 30..79, i.e. the 0-based
# continuous box [50, 30, 120, 80].
RECTANGLE_XYXY = np.array([[50.0, 30.0, 120.0, 80.0]], dtype=np.float32)


def rectangle_image(noise: bool = False, seed: int = 0) -> np.ndarray:
    """uint8 [120, 160, 3] RGB: a bright rectangle on a dark (optionally noisy) background."""
    if noise:
        rng = np.random.default_rng(seed)
        image = rng.integers(0, 60, size=(120, 160, 3)).astype(np.uint8)
    else:
        image = np.full((120, 160, 3), 40, dtype=np.uint8)
    image[30:80, 50:120] = (230, 200, 60)
    return image


def blocks_image(seed: int = 0, height: int = 120, width: int = 160) -> np.ndarray:
    """uint8 [H, W, 3] RGB of random coloured rectangles: many regions at many scales."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 128, dtype=np.uint8)
    for _ in range(40):
        x1, y1 = rng.integers(0, width - 4), rng.integers(0, height - 4)
        w, h = rng.integers(4, width // 2), rng.integers(4, height // 2)
        image[y1 : y1 + h, x1 : x1 + w] = rng.integers(0, 256, size=3)
    return image
