"""One synthetic image: objects placed over the background, and their annotations computed
from the rendered pixel masks after occlusion."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sppdet.data.synthetic.background import random_colour, render_background
from sppdet.data.synthetic.config import DemoDataConfig
from sppdet.data.synthetic.shapes import aspect_ratio, fill_alpha, pattern_weight, unit_polygons
from sppdet.data.synthetic.splits import image_id
from sppdet.errors import ConfigError

# spawn key of image i's generator is (0, i); the splits use (1,)
_IMAGE_STREAM = 0

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


def _image_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_IMAGE_STREAM, index)))


def _colour_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b))


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
    outline_and_holes, params = unit_polygons(name, rng)
    max_size = min(float(config.max_object_size), 0.8 * min(width, height))
    min_size = min(float(config.min_object_size), max_size)
    if rng.random() < config.tiny_fraction:
        size = rng.uniform(8.0, max(min_size, 8.0))
    else:
        size = math.exp(rng.uniform(math.log(min_size), math.log(max_size)))
    aspect = aspect_ratio(name, rng)
    if aspect >= 1.0:
        half_w, half_h = size / 2.0, size / (2.0 * aspect)
    else:
        half_w, half_h = size * aspect / 2.0, size / 2.0
    angle = rng.uniform(0.0, 2.0 * np.pi)
    rotation = np.array(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
    )
    offsets = [(p * np.array([half_w, half_h])) @ rotation.T for p in outline_and_holes]
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
        first, second = random_colour(rng), random_colour(rng)
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
    image = render_background(rng, height, width)

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
            alpha = fill_alpha(polygons, origin, size)
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
        weight = pattern_weight(name, params, u, v, half_w, half_h)
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
