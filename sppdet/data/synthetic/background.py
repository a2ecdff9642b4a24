"""The cluttered background of a synthetic image: a gradient, colour noise and clutter that is
not an object."""

from __future__ import annotations

import math

import cv2
import numpy as np


def random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 255.0, size=3)


def render_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Gradient + colour noise + clutter that is not an object. float32 ``[H, W, 3]``, 0-255."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    direction = rng.uniform(0.0, 2.0 * np.pi)
    ramp = xx * math.cos(direction) + yy * math.sin(direction)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1.0)
    start, end = random_colour(rng), random_colour(rng)
    image = start[None, None, :] * (1 - ramp[..., None]) + end[None, None, :] * ramp[..., None]
    # Low- and mid-frequency colour noise: small random grids upsampled smoothly.
    for cells, amplitude in ((4, rng.uniform(10, 35)), (24, rng.uniform(3, 14))):
        grid = rng.normal(0.0, 1.0, size=(cells, max(2, cells * width // height), 3))
        noise = cv2.resize(grid.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
        image = image + amplitude * noise
    canvas = np.clip(image, 0, 255).astype(np.uint8)

    # Irregular blobs (radius modulated by a few random harmonics, so never a disc or ellipse),
    # some semi-transparent.
    for _ in range(int(rng.integers(2, 9))):
        centre = rng.uniform([0, 0], [width, height])
        radius = rng.uniform(8, 0.18 * min(width, height))
        angles = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        wobble = np.ones_like(angles)
        for harmonic in range(2, 6):
            wobble += rng.uniform(0.08, 0.3) / harmonic * 2 * np.cos(
                harmonic * angles + rng.uniform(0, 2 * np.pi)
            )
        radii = radius * np.clip(wobble, 0.25, None)
        points = centre + np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
        colour = tuple(float(c) for c in random_colour(rng))
        opacity = rng.uniform(0.35, 1.0)
        overlay = canvas.copy()
        pts = np.round(points * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(overlay, [pts], colour, cv2.LINE_AA, 4)
        canvas = cv2.addWeighted(overlay, opacity, canvas, 1.0 - opacity, 0.0)
    # Straight lines across the image.
    for _ in range(int(rng.integers(2, 10))):
        p0 = rng.uniform([-0.2 * width, -0.2 * height], [1.2 * width, 1.2 * height])
        p1 = rng.uniform([-0.2 * width, -0.2 * height], [1.2 * width, 1.2 * height])
        colour = tuple(float(c) for c in random_colour(rng))
        cv2.line(
            canvas,
            tuple(int(c) for c in np.round(p0 * 16)),
            tuple(int(c) for c in np.round(p1 * 16)),
            colour,
            int(rng.integers(1, 4)),
            cv2.LINE_AA,
            4,
        )
    # Scribbles: random walks.
    for _ in range(int(rng.integers(0, 4))):
        steps = int(rng.integers(8, 25))
        heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.5, size=steps))
        step = rng.uniform(4, 12)
        start_point = rng.uniform([0, 0], [width, height])
        points = start_point + np.cumsum(
            np.stack([np.cos(heading), np.sin(heading)], axis=1) * step, axis=0
        )
        colour = tuple(float(c) for c in random_colour(rng))
        pts = np.round(points * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [pts], False, colour, int(rng.integers(1, 3)), cv2.LINE_AA, 4)
    return canvas.astype(np.float32)
