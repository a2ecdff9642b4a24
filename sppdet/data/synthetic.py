"""A synthetic PASCAL-VOC-layout detection dataset, deterministic by seed.

``make_demo_data(out_dir, DemoDataConfig(...))`` writes a small dataset in the VOC2007 layout
(``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``) on which the whole pipeline can run
without a download: the demo and the end-to-end tests use it.

What an image holds:

* a cluttered background: a colour gradient, low- and mid-frequency colour noise, and clutter
  that is *not* an object (irregular blobs, some semi-transparent; straight lines; curved
  scribbles);
* 1 to 6 objects (by default) of up to 8 shape classes that differ by outline *and* texture
  (:data:`SHAPE_CLASSES`): a disc with radial sectors, a square with a checkerboard, a triangle
  with stripes, a two-band ring (annulus), a plus-shaped cross with a contrasting centre, a star
  with a radial gradient, an ellipse with dots and a hexagon with a grid of lines. Both colours
  of an object are drawn at random per instance (only kept apart from each other and from the
  background under the object), so colour alone never tells the classes apart;
* random sizes (longer side about 20 to 300 pixels, log-uniform, plus a few tiny ones), aspect
  ratios and rotations; objects overlap (later objects occlude earlier ones) and some are cut by
  the image border.

Annotations are computed from the objects' rendered pixel masks after occlusion: the box is the
extent of the *visible* pixels (the VOC guideline: "the bounding box of the visible area of the
object"), written as 1-based inclusive integer pixels. ``truncated`` is 1 when part of the
object's shape lies outside the image. ``difficult`` is 1 when the visible box is tiny
(``sqrt(w * h) < difficult_min_size``) or when less than ``difficult_min_visible`` of the
object's whole shape is visible (heavily occluded or mostly outside the image).

Determinism: image ``i`` (0-based, id ``f"{i + 1:06d}"``) is drawn from its own generator
``numpy.random.default_rng(SeedSequence(seed, spawn_key=(0, i)))``, and the split assignment
from ``SeedSequence(seed, spawn_key=(1,))``, so images can be made in any order or in parallel
and the same seed gives byte-identical annotation and image-set files (and byte-identical JPEGs
with the same OpenCV build).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from sppdet.data.voc_xml import VocXmlObject, voc_xml_string
from sppdet.data.synthetic_config import SHAPE_CLASSES, DemoDataConfig  # re-exported
from sppdet.errors import ConfigError, DataError

#: Name of the file written last into a finished demo dataset; its presence marks one.
MARKER_FILENAME = "sppdet-demo.json"
#: Format tag stored in the marker file.
MARKER_FORMAT = "sppdet-demo-data"
#: Bumped whenever the same config would render different images or annotations.
GENERATOR_VERSION = 1

SPLITS: tuple[str, ...] = ("train", "val", "trainval", "test")

_IMAGE_STREAM = 0
_SPLIT_STREAM = 1
# Sub-pixel precision of cv2.fillPoly vertices: coordinates are given in 1/16 pixel.
_POLY_SHIFT = 4
# Tries to place one object before it is given up (the image then has fewer objects).
_PLACEMENT_TRIES = 40
# Tries to draw object colours that stand out from the background and from each other.
_COLOUR_TRIES = 40


@dataclass(frozen=True)
class DemoObject:
    """One annotated object of a generated image.

    Attributes:
        name: class name.
        bbox: ``(xmin, ymin, xmax, ymax)`` of the visible pixels, VOC 1-based inclusive ints.
        truncated: part of the shape lies outside the image.
        difficult: tiny, or less than ``difficult_min_visible`` of the shape is visible.
        visible_fraction: visible pixels / pixels of the whole shape (inside and outside the
            image), in ``(0, 1]``.
    """

    name: str
    bbox: tuple[int, int, int, int]
    truncated: bool
    difficult: bool
    visible_fraction: float


@dataclass(frozen=True)
class DemoImage:
    """A generated image with its annotation.

    Attributes:
        image_id: e.g. ``"000001"``.
        image_bgr: uint8 array ``[H, W, 3]``, BGR order (as OpenCV reads and writes).
        objects: the annotated objects, back to front (later ones occlude earlier ones).
        visible_masks: only with ``with_masks=True``: bool array ``[N, H, W]``, the visible
            pixels of each object (same order as ``objects``); else ``None``.
        outside_pixels: pixels of each object's shape that lie outside the image, int64 ``[N]``.
    """

    image_id: str
    image_bgr: np.ndarray
    objects: tuple[DemoObject, ...]
    visible_masks: np.ndarray | None = None
    outside_pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def width(self) -> int:
        return int(self.image_bgr.shape[1])

    @property
    def height(self) -> int:
        return int(self.image_bgr.shape[0])


@dataclass(frozen=True)
class DemoDataSummary:
    """What :func:`make_demo_data` wrote.

    Attributes:
        out_dir: the dataset folder.
        classes: class names in label order.
        images: split name (train, val, trainval, test) -> number of images.
        objects: split name -> class name -> number of objects (difficult ones included).
        difficult: split name -> number of difficult objects.
        truncated: split name -> number of truncated objects.
    """

    out_dir: Path
    classes: tuple[str, ...]
    images: Mapping[str, int]
    objects: Mapping[str, Mapping[str, int]]
    difficult: Mapping[str, int]
    truncated: Mapping[str, int]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict (the path as a string)."""
        return {
            "out_dir": str(self.out_dir),
            "classes": list(self.classes),
            "images": dict(self.images),
            "objects": {split: dict(counts) for split, counts in self.objects.items()},
            "difficult": dict(self.difficult),
            "truncated": dict(self.truncated),
        }

    def format_table(self) -> str:
        """A small plain-text table: one row per split, one column per class."""
        header = ["split", "images", *self.classes, "difficult", "truncated"]
        rows = [header]
        for split in SPLITS:
            rows.append(
                [
                    split,
                    str(self.images[split]),
                    *(str(self.objects[split][name]) for name in self.classes),
                    str(self.difficult[split]),
                    str(self.truncated[split]),
                ]
            )
        widths = [max(len(row[col]) for row in rows) for col in range(len(header))]
        return "\n".join(
            "  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows
        )


# --------------------------------------------------------------------------------------------
# Splits


def image_id(index: int) -> str:
    """VOC2007-style id of the image with 0-based ``index``: ``0 -> "000001"``."""
    return f"{index + 1:06d}"


def split_image_ids(config: DemoDataConfig) -> dict[str, list[str]]:
    """Image ids of each split (sorted), drawn from the seed.

    Returns:
        ``{"train", "val", "trainval", "test"}`` -> sorted ids. ``train`` and ``val`` partition
        ``trainval``; ``trainval`` and ``test`` partition all ``config.n_images`` ids.
    """
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(_SPLIT_STREAM,)))
    order = rng.permutation(config.n_images)
    test = np.sort(order[: config.n_test])
    trainval = np.sort(order[config.n_test :])
    n_val = int(round(config.val_fraction * len(trainval)))
    if config.val_fraction > 0 and len(trainval) >= 2:
        n_val = min(max(n_val, 1), len(trainval) - 1)
    else:
        n_val = min(n_val, len(trainval) - 1)
    val_order = rng.permutation(len(trainval))
    val = np.sort(trainval[val_order[:n_val]])
    train = np.sort(trainval[val_order[n_val:]])
    return {
        "train": [image_id(int(i)) for i in train],
        "val": [image_id(int(i)) for i in val],
        "trainval": [image_id(int(i)) for i in trainval],
        "test": [image_id(int(i)) for i in test],
    }


# --------------------------------------------------------------------------------------------
# Rendering


def _image_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_IMAGE_STREAM, index)))


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 255.0, size=3)


def _colour_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b))


def _circle(n_points: int = 128) -> np.ndarray:
    angles = np.linspace(0.0, 2.0 * np.pi, n_points, endpoint=False)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _unit_polygons(shape: str, rng: np.random.Generator) -> tuple[list[np.ndarray], dict]:
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


def _aspect_ratio(shape: str, rng: np.random.Generator) -> float:
    """Width / height of the unrotated shape."""
    if shape in ("disc", "ring"):
        return math.exp(rng.uniform(-math.log(1.15), math.log(1.15)))
    if shape == "ellipse":
        return rng.uniform(1.5, 2.2)
    return math.exp(rng.uniform(-math.log(1.4), math.log(1.4)))


def _pattern(
    shape: str, params: dict, u: np.ndarray, v: np.ndarray, half_w: float, half_h: float
) -> np.ndarray:
    """Mix weight of the second colour, float ``[h, w]`` in ``[0, 1]``.

    Args:
        shape: class name.
        params: the pattern parameters from :func:`_unit_polygons`.
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


def _fill_alpha(
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


def _render_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Gradient + colour noise + clutter that is not an object. float32 ``[H, W, 3]``, 0-255."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    direction = rng.uniform(0.0, 2.0 * np.pi)
    ramp = xx * math.cos(direction) + yy * math.sin(direction)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1.0)
    start, end = _random_colour(rng), _random_colour(rng)
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
        colour = tuple(float(c) for c in _random_colour(rng))
        opacity = rng.uniform(0.35, 1.0)
        overlay = canvas.copy()
        pts = np.round(points * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(overlay, [pts], colour, cv2.LINE_AA, 4)
        canvas = cv2.addWeighted(overlay, opacity, canvas, 1.0 - opacity, 0.0)
    # Straight lines across the image.
    for _ in range(int(rng.integers(2, 10))):
        p0 = rng.uniform([-0.2 * width, -0.2 * height], [1.2 * width, 1.2 * height])
        p1 = rng.uniform([-0.2 * width, -0.2 * height], [1.2 * width, 1.2 * height])
        colour = tuple(float(c) for c in _random_colour(rng))
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
        colour = tuple(float(c) for c in _random_colour(rng))
        pts = np.round(points * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [pts], False, colour, int(rng.integers(1, 3)), cv2.LINE_AA, 4)
    return canvas.astype(np.float32)


@dataclass
class _Placed:
    """A placed object during rendering (internal)."""

    name: str
    origin: tuple[int, int]  # (x0, y0) of its local canvas in image pixels
    hard: np.ndarray  # bool [h, w], the shape's pixels on the local canvas
    full_pixels: int


def _sample_object(
    rng: np.random.Generator, config: DemoDataConfig, width: int, height: int
) -> tuple[str, list[np.ndarray], dict, np.ndarray, float, float, float]:
    """Draw class, outline, size, rotation and position of one object.

    Returns:
        (name, polygons, params, centre, angle, half_width, half_height): polygons ``[K, 2]`` in
        image pixels (outline first, then holes), the pattern parameters, the centre (x, y) in
        pixels, the rotation in radians and the unrotated half sizes in pixels.
    """
    name = config.classes[int(rng.integers(0, config.n_classes))]
    unit_polygons, params = _unit_polygons(name, rng)
    max_size = min(float(config.max_object_size), 0.8 * min(width, height))
    min_size = min(float(config.min_object_size), max_size)
    if rng.random() < config.tiny_fraction:
        size = rng.uniform(8.0, max(min_size, 8.0))
    else:
        size = math.exp(rng.uniform(math.log(min_size), math.log(max_size)))
    aspect = _aspect_ratio(name, rng)
    if aspect >= 1.0:
        half_w, half_h = size / 2.0, size / (2.0 * aspect)
    else:
        half_w, half_h = size * aspect / 2.0, size / 2.0
    angle = rng.uniform(0.0, 2.0 * np.pi)
    rotation = np.array(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
    )
    offsets = [(p * np.array([half_w, half_h])) @ rotation.T for p in unit_polygons]
    low = offsets[0].min(axis=0)
    high = offsets[0].max(axis=0)
    extent = high - low
    if rng.random() < config.truncation_fraction:
        # Across one border (or two, at a corner): 5 % to 50 % of the extent outside.
        centre = np.empty(2)
        sides = [int(rng.integers(0, 4))]
        if rng.random() < 0.2:
            sides.append((sides[0] + 1 + 2 * int(rng.integers(0, 2))) % 4)
        limits = (width, height)
        for axis in range(2):
            if limits[axis] > extent[axis]:
                centre[axis] = rng.uniform(-low[axis], limits[axis] - high[axis])
            else:
                centre[axis] = limits[axis] / 2.0
        for side in sides:
            axis = side % 2
            outside = rng.uniform(0.05, 0.5) * extent[axis]
            if side < 2:  # left or top border
                centre[axis] = -low[axis] - outside
            else:  # right or bottom border
                centre[axis] = (limits[axis] - high[axis]) + outside
    else:
        centre = np.array(
            [
                rng.uniform(-low[0], width - high[0]) if width > extent[0] else width / 2.0,
                rng.uniform(-low[1], height - high[1]) if height > extent[1] else height / 2.0,
            ]
        )
    polygons = [offset + centre for offset in offsets]
    return name, polygons, params, centre, angle, half_w, half_h


def _choose_colours(
    rng: np.random.Generator, background_mean: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Two random colours that differ from the background under the object and each other.

    Keeps the best of ``_COLOUR_TRIES`` draws (by the smallest of the three distances), so the
    result is random but rarely camouflaged; the thresholds are what selective search needs to
    find objects on these backgrounds (measured).
    """
    best_margin, best = -1.0, (np.zeros(3), np.zeros(3))
    for _ in range(_COLOUR_TRIES):
        first, second = _random_colour(rng), _random_colour(rng)
        margin = min(
            _colour_distance(first, background_mean),
            _colour_distance(second, background_mean),
            _colour_distance(first, second) * 1.2,
        )
        if margin > best_margin:
            best_margin, best = margin, (first, second)
        if margin >= 90.0:
            break
    return best


def render_demo_image(
    index: int, config: DemoDataConfig = DemoDataConfig(), *, with_masks: bool = False
) -> DemoImage:
    """Render image ``index`` (0-based) of the dataset that ``config`` describes.

    Args:
        index: 0-based image index; the id is ``image_id(index)``.
        config: dataset parameters (the seed among them).
        with_masks: also return the visible-pixel mask of each object (for tests).

    Returns:
        The image (uint8 BGR ``[H, W, 3]``) and its objects; the same (index, config) always
        gives the same result.
    """
    if index < 0 or index >= config.n_images:
        raise ConfigError(f"demo data: image index must be in [0, {config.n_images}), got {index}")
    rng = _image_rng(config.seed, index)
    jitter = rng.uniform(1 - config.size_jitter, 1 + config.size_jitter, size=2)
    width = int(round(config.image_width * jitter[0]))
    height = int(round(config.image_height * jitter[1]))
    if rng.random() < config.portrait_fraction:
        width, height = height, width
    image = _render_background(rng, height, width)

    # owner[y, x] = index of the top-most object covering the pixel, -1 for background.
    owner = np.full((height, width), -1, dtype=np.int32)
    placed: list[_Placed] = []
    n_wanted = int(rng.integers(config.min_objects, config.max_objects + 1))
    for _ in range(n_wanted):
        for _try in range(_PLACEMENT_TRIES):
            name, polygons, params, centre, angle, half_w, half_h = _sample_object(
                rng, config, width, height
            )
            low = np.floor(polygons[0].min(axis=0)).astype(int) - 2
            high = np.ceil(polygons[0].max(axis=0)).astype(int) + 2
            origin = (int(low[0]), int(low[1]))
            size = (int(high[0] - low[0]), int(high[1] - low[1]))
            alpha = _fill_alpha(polygons, origin, size)
            hard = alpha >= 128
            full_pixels = int(hard.sum())
            # Part of the local canvas inside the image.
            x0, y0 = max(origin[0], 0), max(origin[1], 0)
            x1, y1 = min(origin[0] + size[0], width), min(origin[1] + size[1], height)
            if full_pixels == 0 or x1 <= x0 or y1 <= y0:
                continue
            local = (slice(y0 - origin[1], y1 - origin[1]), slice(x0 - origin[0], x1 - origin[0]))
            inside = hard[local]
            if inside.sum() < max(config.min_visible * full_pixels, 12):
                continue
            # Would this object hide too much of an object placed before it?
            region_owner = owner[y0:y1, x0:x1]
            covered = np.bincount(region_owner[inside] + 1, minlength=len(placed) + 1)[1:]
            visible_before = np.bincount(owner.ravel() + 1, minlength=len(placed) + 1)[1:]
            remaining = visible_before - covered
            if any(
                remaining[j] < max(config.min_visible * placed[j].full_pixels, 12)
                for j in range(len(placed))
            ):
                continue
            break
        else:
            continue  # no placement found: the image gets one object fewer
        region = image[y0:y1, x0:x1]
        first, second = _choose_colours(rng, region[inside].mean(axis=0))
        # Texture coordinates of each local pixel centre: undo translation and rotation.
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        dx, dy = xs + 0.5 - centre[0], ys + 0.5 - centre[1]
        cos_a, sin_a = math.cos(angle), math.sin(angle)
        px = dx * cos_a + dy * sin_a  # pixels along the shape's own x axis
        py = -dx * sin_a + dy * cos_a
        u, v = px / half_w, py / half_h
        weight = _pattern(name, params, u, v, half_w, half_h)
        texture = first[None, None, :] * (1 - weight[..., None]) + (
            second[None, None, :] * weight[..., None]
        )
        # Mild directional shading and grain, so surfaces are not perfectly flat.
        light = rng.uniform(0.0, 0.2)
        light_angle = rng.uniform(0.0, 2.0 * np.pi)
        shade = 1.0 + light * (u * math.cos(light_angle) + v * math.sin(light_angle)) / 1.5
        texture = texture * shade[..., None]
        texture = texture + rng.normal(0.0, rng.uniform(1.0, 6.0), size=texture.shape)
        cover = alpha[local].astype(np.float32)[..., None] / 255.0
        image[y0:y1, x0:x1] = region * (1 - cover) + texture.astype(np.float32) * cover
        region_owner[inside] = len(placed)
        placed.append(_Placed(name=name, origin=origin, hard=hard, full_pixels=full_pixels))

    # Sensor noise over everything, then quantise.
    image = image + rng.normal(0.0, rng.uniform(1.0, 4.0), size=image.shape).astype(np.float32)
    image_bgr = np.clip(np.round(image), 0, 255).astype(np.uint8)

    objects: list[DemoObject] = []
    masks: list[np.ndarray] = []
    outside_pixels: list[int] = []
    for k, item in enumerate(placed):
        visible = owner == k
        rows = np.flatnonzero(visible.any(axis=1))
        cols = np.flatnonzero(visible.any(axis=0))
        visible_pixels = int(visible.sum())
        # VOC 1-based inclusive: pixel column c (0-based) is xmin = c + 1.
        bbox = (int(cols[0]) + 1, int(rows[0]) + 1, int(cols[-1]) + 1, int(rows[-1]) + 1)
        x0, y0 = max(item.origin[0], 0), max(item.origin[1], 0)
        x1 = min(item.origin[0] + item.hard.shape[1], width)
        y1 = min(item.origin[1] + item.hard.shape[0], height)
        local = (
            slice(y0 - item.origin[1], y1 - item.origin[1]),
            slice(x0 - item.origin[0], x1 - item.origin[0]),
        )
        inside_pixels = int(item.hard[local].sum())
        outside = item.full_pixels - inside_pixels
        visible_fraction = visible_pixels / item.full_pixels
        box_w, box_h = bbox[2] - bbox[0] + 1, bbox[3] - bbox[1] + 1
        difficult = (
            math.sqrt(box_w * box_h) < config.difficult_min_size
            or visible_fraction < config.difficult_min_visible
        )
        objects.append(
            DemoObject(
                name=item.name,
                bbox=bbox,
                truncated=outside > 0,
                difficult=bool(difficult),
                visible_fraction=float(visible_fraction),
            )
        )
        outside_pixels.append(outside)
        if with_masks:
            masks.append(visible)
    visible_masks = None
    if with_masks:
        visible_masks = np.zeros((len(masks), height, width), dtype=bool)
        for k, mask in enumerate(masks):
            visible_masks[k] = mask
    return DemoImage(
        image_id=image_id(index),
        image_bgr=image_bgr,
        objects=tuple(objects),
        visible_masks=visible_masks,
        outside_pixels=np.array(outside_pixels, dtype=np.int64),
    )


# --------------------------------------------------------------------------------------------
# Writing the dataset


def is_demo_dataset(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a finished dataset written by :func:`make_demo_data`.

    A finished one has the marker file (written last) with the demo-data format tag; a folder
    without it is unfinished or something else.
    """
    marker = Path(path) / MARKER_FILENAME
    if not marker.is_file():
        return False
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("format") == MARKER_FORMAT


def read_demo_config(path: str | os.PathLike[str]) -> DemoDataConfig:
    """The :class:`DemoDataConfig` a finished demo dataset was made with.

    Raises:
        DataError: ``path`` is not a finished demo dataset, or its marker is unreadable.
    """
    if not is_demo_dataset(path):
        raise DataError(
            f"{path} is not a finished sppdet demo dataset (no valid {MARKER_FILENAME}); "
            "make one with make-demo-data"
        )
    record = json.loads((Path(path) / MARKER_FILENAME).read_text(encoding="utf-8"))
    try:
        return DemoDataConfig.from_dict(record["config"])
    except (KeyError, TypeError, ConfigError) as error:
        raise DataError(f"{Path(path) / MARKER_FILENAME}: unreadable config ({error})") from error


def _write_images(
    folder: str, indices: Sequence[int], config: DemoDataConfig
) -> list[tuple[str, list[tuple[str, bool, bool]]]]:
    """Render and write images ``indices`` into ``folder`` (a joblib worker).

    Returns:
        per image: (id, [(class name, difficult, truncated), ...]).
    """
    root = Path(folder)
    records = []
    encode_params = [int(cv2.IMWRITE_JPEG_QUALITY), int(config.jpeg_quality)]
    for index in indices:
        demo = render_demo_image(index, config)
        ok, encoded = cv2.imencode(".jpg", demo.image_bgr, encode_params)
        if not ok:
            raise DataError(f"demo data: OpenCV could not encode image {demo.image_id} as JPEG")
        (root / "JPEGImages" / f"{demo.image_id}.jpg").write_bytes(encoded.tobytes())
        xml = voc_xml_string(
            f"{demo.image_id}.jpg",
            demo.width,
            demo.height,
            [
                VocXmlObject(
                    name=obj.name,
                    bbox=obj.bbox,
                    truncated=obj.truncated,
                    difficult=obj.difficult,
                )
                for obj in demo.objects
            ],
            folder="sppdet-demo",
        )
        (root / "Annotations" / f"{demo.image_id}.xml").write_bytes(xml.encode("utf-8"))
        records.append(
            (demo.image_id, [(obj.name, obj.difficult, obj.truncated) for obj in demo.objects])
        )
    return records


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_bytes("".join(line + "\n" for line in lines).encode("utf-8"))


def _readme_text(config: DemoDataConfig) -> str:
    return (
        "sppdet demo dataset (synthetic, PASCAL VOC 2007 layout)\n"
        "\n"
        "Made by sppdet make-demo-data; regenerate it with the parameters in "
        f"{MARKER_FILENAME}.\n"
        f"Classes ({config.n_classes}, also in classes.txt): {', '.join(config.classes)}.\n"
        "Annotations/<id>.xml: VOC XML; boxes are the visible pixels of each object, 1-based\n"
        "inclusive; truncated = cut by the image border; difficult = tiny or mostly hidden.\n"
        "ImageSets/Main/{train,val,trainval,test}.txt and <class>_<split>.txt as in VOC\n"
        "(1: the class is in the image, 0: only as difficult, -1: absent).\n"
    )


def make_demo_data(
    out_dir: str | os.PathLike[str],
    config: DemoDataConfig = DemoDataConfig(),
    *,
    overwrite: bool = False,
    jobs: int = 1,
) -> DemoDataSummary:
    """Write the synthetic dataset ``config`` describes into ``out_dir`` (VOC layout).

    Layout::

        out_dir/Annotations/<id>.xml
        out_dir/JPEGImages/<id>.jpg
        out_dir/ImageSets/Main/{train,val,trainval,test}.txt
        out_dir/ImageSets/Main/<class>_{train,val,trainval,test}.txt
        out_dir/classes.txt, out_dir/README.txt
        out_dir/sppdet-demo.json   (format tag, generator version, config; written last)

    The dataset is written into a temporary sibling folder ``.<name>.tmp-*`` and renamed to
    ``out_dir`` only when complete, so ``out_dir`` never holds a half-written dataset (a crash
    leaves only the temporary folder).

    Args:
        out_dir: the dataset folder. It may be absent, empty, or a previous demo dataset (which
            is replaced); anything else is refused unless ``overwrite``.
        config: dataset parameters.
        overwrite: replace ``out_dir`` whatever it holds.
        jobs: worker processes for rendering (joblib); the output does not depend on it.

    Returns:
        Counts per split and class.

    Raises:
        DataError: ``out_dir`` holds something that is not a demo dataset and ``overwrite`` is
            false, or writing fails.
        ConfigError: ``jobs`` < 1.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"demo data: jobs must be an integer >= 1, got {jobs!r}")
    out = Path(out_dir).absolute()
    if out.exists() or out.is_symlink():
        replaceable = out.is_dir() and (not any(out.iterdir()) or is_demo_dataset(out))
        if not replaceable and not overwrite:
            kind = "a non-empty folder" if out.is_dir() else "a file"
            raise DataError(
                f"{out} exists and is {kind} that is not an sppdet demo dataset (no "
                f"{MARKER_FILENAME}); choose another folder or pass overwrite=True to replace it"
            )
    out.parent.mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (tmp / sub).mkdir(parents=True)
        indices = list(range(config.n_images))
        if jobs == 1 or len(indices) < 2:
            records = _write_images(str(tmp), indices, config)
        else:
            from joblib import Parallel, delayed

            chunks = [indices[k::jobs] for k in range(jobs) if indices[k::jobs]]
            parts = Parallel(n_jobs=len(chunks))(
                delayed(_write_images)(str(tmp), chunk, config) for chunk in chunks
            )
            records = sorted((rec for part in parts for rec in part), key=lambda rec: rec[0])
        by_id = dict(records)

        splits = split_image_ids(config)
        classes = config.classes
        main = tmp / "ImageSets" / "Main"
        images_count: dict[str, int] = {}
        objects_count: dict[str, dict[str, int]] = {}
        difficult_count: dict[str, int] = {}
        truncated_count: dict[str, int] = {}
        for split in SPLITS:
            ids = splits[split]
            _write_lines(main / f"{split}.txt", ids)
            for name in classes:
                lines = []
                for image in ids:
                    flags = [difficult for cls, difficult, _ in by_id[image] if cls == name]
                    # VOC devkit convention: 1 present, 0 only difficult instances, -1 absent.
                    label = -1 if not flags else (0 if all(flags) else 1)
                    lines.append(f"{image} {label:2d}")
                _write_lines(main / f"{name}_{split}.txt", lines)
            objs = [obj for image in ids for obj in by_id[image]]
            images_count[split] = len(ids)
            objects_count[split] = {name: sum(o[0] == name for o in objs) for name in classes}
            difficult_count[split] = sum(bool(o[1]) for o in objs)
            truncated_count[split] = sum(bool(o[2]) for o in objs)

        _write_lines(tmp / "classes.txt", list(classes))
        (tmp / "README.txt").write_bytes(_readme_text(config).encode("utf-8"))
        marker = {
            "format": MARKER_FORMAT,
            "generator_version": GENERATOR_VERSION,
            "config": config.to_dict(),
            "classes": list(classes),
            "images": images_count,
            "objects": objects_count,
            "difficult": difficult_count,
            "truncated": truncated_count,
        }
        (tmp / MARKER_FILENAME).write_bytes(
            (json.dumps(marker, indent=2, sort_keys=True) + "\n").encode("utf-8")
        )

        if out.exists() or out.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "previous")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    return DemoDataSummary(
        out_dir=out,
        classes=classes,
        images=images_count,
        objects=objects_count,
        difficult=difficult_count,
        truncated=truncated_count,
    )
