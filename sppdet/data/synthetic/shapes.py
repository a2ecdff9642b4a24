"""The shape classes' outlines (with holes), their textures and their anti-aliased fill."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from sppdet.data.synthetic.config import SHAPE_CLASSES
from sppdet.errors import ConfigError

# Sub-pixel precision of cv2.fillPoly vertices: coordinates are given in 1/16 pixel.
_POLY_SHIFT = 4


def _circle(n_points: int = 128) -> np.ndarray:
    angles = np.linspace(0.0, 2.0 * np.pi, n_points, endpoint=False)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def unit_polygons(shape: str, rng: np.random.Generator) -> tuple[list[np.ndarray], dict]:
    """Outline of a shape in unit coordinates (about ``[-1, 1]^2``) and its pattern parameters.

    Returns:
        (polygons, params): the first polygon ``[K, 2]`` (u, v) is the outline, any further one
        is a hole; params hold what the texture needs.
    """
    params: dict[str, float] = {}
    if shape == "disc":
        params["sectors"] = 2 * int(rng.integers(3, 7))
        params["phase"] = rng.uniform(0.0, 2.0 * np.pi)
        return [_circle()], params
    if shape == "square":
        params["cells"] = int(rng.integers(3, 7))
        return [np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)], params
    if shape == "triangle":
        params["period"] = rng.uniform(0.25, 0.45)
        params["angle"] = rng.uniform(0.0, np.pi)
        apex = rng.uniform(-0.4, 0.4)
        return [np.array([[apex, -1], [1, 1], [-1, 1]], dtype=np.float64)], params
    if shape == "ring":
        inner = rng.uniform(0.45, 0.62)
        params["inner"] = inner
        return [_circle(), _circle() * inner], params
    if shape == "cross":
        arm = rng.uniform(0.28, 0.4)
        params["arm"] = arm
        a = arm
        outline = np.array(
            [
                [-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a],
                [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a],
            ],
            dtype=np.float64,
        )  # fmt: skip
        return [outline], params
    if shape == "star":
        inner = rng.uniform(0.38, 0.5)
        angles = -np.pi / 2 + np.arange(10) * (np.pi / 5)
        radii = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        return [np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)], params
    if shape == "ellipse":
        params["spacing"] = rng.uniform(0.3, 0.45)
        return [_circle()], params
    if shape == "hexagon":
        params["spacing"] = rng.uniform(0.3, 0.45)
        angles = np.arange(6) * (np.pi / 3)
        return [np.stack([np.cos(angles), np.sin(angles)], axis=1)], params
    raise ConfigError(f"unknown shape class {shape!r}; known: {list(SHAPE_CLASSES)}")


def aspect_ratio(shape: str, rng: np.random.Generator) -> float:
    """Width / height of the unrotated shape."""
    if shape in ("disc", "ring"):
        return math.exp(rng.uniform(-math.log(1.15), math.log(1.15)))
    if shape == "ellipse":
        return rng.uniform(1.5, 2.2)
    return math.exp(rng.uniform(-math.log(1.4), math.log(1.4)))


def pattern_weight(
    shape: str, params: dict, u: np.ndarray, v: np.ndarray, half_w: float, half_h: float
) -> np.ndarray:
    """Mix weight of the second colour, float ``[h, w]`` in ``[0, 1]``.

    Args:
        shape: class name.
        params: the pattern parameters from :func:`unit_polygons`.
        u, v: unit shape coordinates of each pixel centre (the outline spans about [-1, 1]).
        half_w, half_h: the shape's unrotated half sizes in pixels. Patterns that must keep
            their proportions on stretched shapes (dots, grid lines) are laid out in pixels.
    """
    if shape == "disc":
        sectors = params["sectors"]
        angle = np.arctan2(v, u) + params["phase"]
        weight = np.floor(angle / (2.0 * np.pi) * sectors) % 2
        return np.where(u * u + v * v < 0.03, 0.0, weight)
    if shape == "square":
        cells = params["cells"]
        return (np.floor((u + 1) * cells / 2) + np.floor((v + 1) * cells / 2)) % 2
    if shape == "triangle":
        along = u * math.cos(params["angle"]) + v * math.sin(params["angle"])
        return np.floor(along / params["period"]) % 2
    if shape == "ring":
        radius = np.sqrt(u * u + v * v)
        return (radius > (params["inner"] + 1.0) / 2.0).astype(np.float64)
    if shape == "cross":
        arm = params["arm"]
        return ((np.abs(u) < arm * 0.999) & (np.abs(v) < arm * 0.999)).astype(np.float64)
    if shape == "star":
        return np.clip(np.sqrt(u * u + v * v), 0.0, 1.0)
    if shape in ("ellipse", "hexagon"):
        spacing = max(5.0, params["spacing"] * min(half_w, half_h))
        fx = (u * half_w / spacing) % 1.0 - 0.5
        fy = (v * half_h / spacing) % 1.0 - 0.5
        if shape == "ellipse":
            return (fx * fx + fy * fy < 0.3 * 0.3).astype(np.float64)
        return ((np.abs(fx) > 0.36) | (np.abs(fy) > 0.36)).astype(np.float64)
    raise ConfigError(f"unknown shape class {shape!r}")


def fill_alpha(
    polygons: Sequence[np.ndarray], origin: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """Anti-aliased coverage of an outline with holes on a local canvas.

    Args:
        polygons: ``[K, 2]`` (x, y) image-pixel vertices; the first is the outline, the others
            are holes.
        origin: (x0, y0) image pixel of the canvas's top-left pixel.
        size: (width, height) of the canvas.

    Returns:
        uint8 ``[height, width]``, 255 = fully inside.
    """
    canvas = np.zeros((size[1], size[0]), dtype=np.uint8)
    scale = float(1 << _POLY_SHIFT)
    for k, polygon in enumerate(polygons):
        # Continuous pixel coordinates to OpenCV's integer grid, where pixel i has its centre at
        # i: subtract the origin and half a pixel.
        local = (polygon - np.array(origin, dtype=np.float64) - 0.5) * scale
        points = np.round(local).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(canvas, [points], 255 if k == 0 else 0, cv2.LINE_AA, _POLY_SHIFT)
    return canvas
