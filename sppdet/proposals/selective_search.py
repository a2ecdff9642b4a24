"""Selective search proposals (Uijlings et al., IJCV 2013) assembled from OpenCV contrib.

The paper's modes diversify the search over colour spaces, the scale ``k`` of the initial
Felzenszwalb-Huttenlocher segmentation and the similarity used for grouping (its table of the
"Selective Search Fast" and "Quality" settings; R-CNN's ``selective_search_boxes.m`` runs the
fast mode, as SPP-net did):

- **fast**: colour spaces HSV and Lab; ``k = 50, 100``; similarities colour + texture + size +
  fill and texture + size + fill: 2 x 2 x 2 = 8 hierarchical groupings.
- **quality**: HSV, Lab, rgI, H, I; ``k = 50, 100, 150, 300``; the two above plus fill alone
  and size alone: 80 groupings.

OpenCV's ``switchToSelectiveSearchFast`` cannot express the fast mode: it segments at
``k = base_k, base_k + inc_k, base_k + 2 inc_k`` (three scales, 150, 300, 450 by default), with
OpenCV's default minimum segment size of 100 pixels, and in an HSV whose hue spans 0-179. This
module builds the same pipeline from OpenCV's parts instead (``addImage``,
``addGraphSegmentation``, ``addStrategy``, ``process``): one OpenCV run per colour space and
``k``, with both similarity strategies, a minimum segment size of ``k`` pixels (as in
Uijlings et al.'s code) and HSV over the full 0-255 hue range (``COLOR_BGR2HSV_FULL``, as
MATLAB's ``im2uint8(rgb2hsv(...))`` in their code); Lab is OpenCV's 8-bit Lab, the same
encoding as MATLAB's ``applycform`` on uint8 images.

Order and the cap on boxes (``max_boxes`` keeps a prefix of the order). The paper's code ranks
the boxes of each grouping by their position in the hierarchy (1 for the last merge, the whole
image; the initial segments last), multiplies that position by a uniform random number, pools
all groupings and sorts ascending, keeping the first of duplicate boxes: large regions tend to
come first, but every scale is represented in any prefix. OpenCV's ``process`` returns boxes
without their hierarchy (and ranks by ``rand() * depth``, which puts the *small* regions
first), so the position is taken here as the rank of the box's area, largest first, among the
boxes of one OpenCV run (ties by coordinates): a region's box is never smaller than those of
its parts, so this order agrees with the hierarchy on every chain of merges. Measured against
OpenCV's order and the scale-interleaved order sppdet used before, on the VOC fixtures and BCCD
(``benchmarks/proposals_recall.py --orders``, BENCHMARKS.md), it keeps more objects than
OpenCV's order at every budget, and more than the former order at small budgets (100-500 boxes;
the same within an object at 1,000-2,000).

Determinism. The random numbers come from a NumPy generator seeded with ``seed`` (the same for
every image), and the boxes of an OpenCV run are ordered by a fixed key before they are drawn,
so the output is a function of the image and the parameters alone, whatever state the C
library's ``rand()`` (which OpenCV uses) is in: the same boxes in the same order across runs,
worker processes and shards (tested in ``tests/test_proposals_selective_search.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sppdet.errors import ConfigError
from sppdet.ops.boxes import xywh_to_xyxy
from sppdet.proposals.common import ProposalError, ProposalResult, check_image, finish_boxes
from sppdet.proposals.common import resize_longer_side

SS_MODES = ("fast", "quality")


@dataclass(frozen=True)
class Diversification:
    """One mode of selective search: what the groupings vary over.

    Attributes:
        colour_spaces: names understood by :func:`colour_image`.
        k_factors: the segmentation scales as multiples of ``SelectiveSearchParams.k``.
        strategies: names understood by :func:`similarity_strategy`.
    """

    colour_spaces: tuple[str, ...]
    k_factors: tuple[int, ...]
    strategies: tuple[str, ...]


# Uijlings et al.'s "Selective Search Fast" and "Quality" settings, with k = 50 as the base.
MODES: dict[str, Diversification] = {
    "fast": Diversification(("hsv", "lab"), (1, 2), ("colour+texture+size+fill",
                                                    "texture+size+fill")),
    "quality": Diversification(("hsv", "lab", "rgi", "h", "intensity"), (1, 2, 3, 6),
                               ("colour+texture+size+fill", "texture+size+fill", "fill",
                                "size")),
}


@dataclass(frozen=True)
class SelectiveSearchParams:
    """Parameters of selective search; every field is JSON-serialisable for artifact records.

    Attributes:
        max_boxes: keep at most this many boxes (a prefix of the hierarchy rank order, see the
            module docstring); ``None`` keeps all. Default 2000, the paper's "about 2,000
            windows per image"; the fast mode makes about 3,000 on VOC images before the cap.
        max_size: shrink the image so that its longer side is at most this many pixels before
            proposing (boxes are mapped back to original pixels); ``None`` never resizes.
            Default 500, the size of PASCAL VOC images, for which the paper's ``k`` was chosen,
            and the width R-CNN's selective search script resizes to.
        min_size: drop boxes narrower or lower than this many original pixels. Default 10:
            such a window covers less than one cell of a stride-16 conv5 map at SPP-net's
            scales, and VOC objects that small are rare (most are marked difficult).
        seed: seed of the random ranks (determinism; see the module docstring).
        k: the smallest Felzenszwalb-Huttenlocher scale ``k`` of the initial segmentations; the
            mode multiplies it (fast: ``k, 2k``; quality: ``k, 2k, 3k, 6k``). The minimum
            segment size is ``k`` pixels, as in Uijlings et al.'s code. Default 50, the paper's.
        sigma: Gaussian smoothing of the initial segmentations (default 0.8, the paper's).
    """

    max_boxes: int | None = 2000
    max_size: int | None = 500
    min_size: float = 10.0
    seed: int = 0
    k: int = 50
    sigma: float = 0.8

    def __post_init__(self) -> None:
        if self.max_boxes is not None and self.max_boxes < 1:
            raise ConfigError(f"max_boxes must be >= 1 or None, got {self.max_boxes}")
        if self.max_size is not None and self.max_size < 16:
            raise ConfigError(f"max_size must be >= 16 pixels or None, got {self.max_size}")
        if self.min_size < 0:
            raise ConfigError(f"min_size must be >= 0 pixels, got {self.min_size}")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be in [0, 2**32), got {self.seed}")
        if self.k < 1 or self.sigma < 0:
            raise ConfigError(f"k must be >= 1 and sigma >= 0, got k={self.k}, "
                              f"sigma={self.sigma}")


def colour_image(image_bgr: np.ndarray, space: str) -> np.ndarray:
    """The uint8 image a grouping segments and compares, in colour space ``space``.

    Args:
        image_bgr: uint8 ``[H, W, 3]`` BGR.
        space: ``hsv`` (hue over 0-255), ``lab`` (OpenCV's 8-bit Lab), ``rgi`` (normalised
            r and g times 255, and the grey level), ``h`` (the hue alone) or ``intensity``.

    Returns:
        uint8 ``[H, W, 3]`` or ``[H, W]`` (``h``, ``intensity``).
    """
    if space == "hsv":
        return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2HSV_FULL)
    if space == "lab":
        return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2Lab)
    if space == "h":
        return np.ascontiguousarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2HSV_FULL)[:, :, 0])
    grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    if space == "intensity":
        return grey
    if space == "rgi":
        bgr = image_bgr.astype(np.float32)
        total = bgr.sum(axis=2)
        # A black pixel has no chromaticity: 1/3 each, as in the paper's code.
        safe = np.where(total > 0, total, 1.0)
        r = np.where(total > 0, bgr[:, :, 2] / safe, 1.0 / 3.0)
        g = np.where(total > 0, bgr[:, :, 1] / safe, 1.0 / 3.0)
        chroma = np.rint(np.stack([r, g], axis=2) * 255.0).astype(np.uint8)
        return np.ascontiguousarray(np.dstack([chroma, grey]))
    raise ConfigError(f"unknown colour space {space!r}")


def similarity_strategy(
    name: str, shared: dict | None = None
) -> "cv2.ximgproc.segmentation.SelectiveSearchSegmentationStrategy":
    """An OpenCV similarity strategy: parts joined by ``+`` are averaged with equal weights.

    Args:
        name: ``+``-joined parts among ``colour``, ``texture``, ``size``, ``fill``.
        shared: part name -> part object, filled as parts are made: strategies built with the
            same dict share their parts. Within one OpenCV run that is safe (each grouping
            resets its parts before it starts) and it is what OpenCV's own fast mode does: the
            colour and texture histograms of the initial segments are then computed once per
            run, not once per strategy. ``None`` makes fresh parts.
    """
    segmentation = cv2.ximgproc.segmentation
    makers = {
        "colour": segmentation.createSelectiveSearchSegmentationStrategyColor,
        "texture": segmentation.createSelectiveSearchSegmentationStrategyTexture,
        "size": segmentation.createSelectiveSearchSegmentationStrategySize,
        "fill": segmentation.createSelectiveSearchSegmentationStrategyFill,
    }
    parts = name.split("+")
    if not 1 <= len(parts) <= 4 or any(part not in makers for part in parts):
        raise ConfigError(f"unknown similarity {name!r}; join 1-4 of {sorted(makers)} with '+'")
    shared = {} if shared is None else shared
    for part in parts:
        if part not in shared:
            shared[part] = makers[part]()
    strategies = [shared[part] for part in parts]
    if len(strategies) == 1:
        return strategies[0]
    return segmentation.createSelectiveSearchSegmentationStrategyMultiple(*strategies)


def grouping_boxes(image: np.ndarray, k: int, sigma: float,
                   strategies: tuple[str, ...]) -> np.ndarray:
    """Boxes of the hierarchical groupings of one colour image at one segmentation scale.

    Args:
        image: uint8 ``[H, W, C]`` or ``[H, W]`` image in the grouping's colour space.
        k: Felzenszwalb-Huttenlocher scale; also the minimum segment size in pixels.
        sigma: smoothing of the segmentation.
        strategies: similarity names (:func:`similarity_strategy`), one grouping each, all
            on the same initial segmentation.

    Returns:
        int64 ``[N, 4]`` distinct xyxy boxes (integer pixel edges), in no meaningful order.
    """
    segmentation = cv2.ximgproc.segmentation
    search = segmentation.createSelectiveSearchSegmentation()
    search.addImage(image)
    search.addGraphSegmentation(segmentation.createGraphSegmentation(sigma, float(k), int(k)))
    shared: dict = {}
    for name in strategies:
        search.addStrategy(similarity_strategy(name, shared))
    rects = np.asarray(search.process(), dtype=np.int64).reshape(-1, 4)
    return xywh_to_xyxy(rects)


def hierarchy_rank_order(groups: list[np.ndarray], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pool the boxes of several groupings in the randomised hierarchy order of the paper's code.

    In each group, a box's position is its rank by area, largest first (ties: by x1, y1, x2,
    y2), counted from 1; its priority is that position times a uniform random number in
    [0, 1). All groups are pooled by ascending priority (ties: group order, then position).

    Args:
        groups: list of ``[N_i, 4]`` xyxy boxes, one array per OpenCV run.
        seed: seed of the random numbers (NumPy PCG64).

    Returns:
        ``(boxes, group_index)``: float64 ``[sum N_i, 4]`` pooled boxes in rank order
        (duplicates across groups kept; the caller removes them keeping the first), and
        int64 ``[sum N_i]`` the group each came from.
    """
    rng = np.random.default_rng(seed)
    pooled, priorities, origins = [], [], []
    for index, boxes in enumerate(groups):
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        by_position = np.lexsort((boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], -areas))
        boxes = boxes[by_position]
        positions = np.arange(1, boxes.shape[0] + 1, dtype=np.float64)
        pooled.append(boxes)
        priorities.append(positions * rng.random(boxes.shape[0]))
        origins.append(np.full(boxes.shape[0], index, dtype=np.int64))
    if not pooled:
        return np.zeros((0, 4), np.float64), np.zeros(0, np.int64)
    boxes, priority, origin = (np.concatenate(pooled), np.concatenate(priorities),
                               np.concatenate(origins))
    order = np.argsort(priority, kind="stable")
    return boxes[order], origin[order]


def selective_search(
    image_rgb: np.ndarray,
    params: SelectiveSearchParams | None = None,
    *,
    mode: str = "fast",
) -> ProposalResult:
    """Selective search proposals of one image.

    Args:
        image_rgb: uint8 ``[H, W, 3]`` RGB image.
        params: see :class:`SelectiveSearchParams` (defaults when ``None``).
        mode: ``"fast"`` (the setting of R-CNN and SPP-net) or ``"quality"``.

    Returns:
        :class:`ProposalResult` with float32 ``[N, 4]`` xyxy boxes, 0-based continuous in
        original pixels, in hierarchy rank order; ``scores`` is ``None``.

    Raises:
        ProposalError: the image is not uint8 RGB, or OpenCV failed on it.
        ConfigError: unknown ``mode``.
    """
    params = params or SelectiveSearchParams()
    if mode not in SS_MODES:
        raise ConfigError(f"selective search mode must be one of {SS_MODES}, got {mode!r}")
    diversification = MODES[mode]
    image_rgb = check_image(image_rgb)
    height, width = image_rgb.shape[:2]
    resized, scale_x, scale_y = resize_longer_side(image_rgb, params.max_size)
    image_bgr = np.ascontiguousarray(resized[:, :, ::-1])

    groups = []
    try:
        for space in diversification.colour_spaces:
            converted = colour_image(image_bgr, space)
            for factor in diversification.k_factors:
                groups.append(grouping_boxes(converted, params.k * factor, params.sigma,
                                             diversification.strategies))
    except cv2.error as error:
        raise ProposalError(
            f"OpenCV selective search ({mode}) failed on a {width}x{height} image: "
            f"{str(error).strip()}"
        ) from error

    boxes, _ = hierarchy_rank_order(groups, params.seed)
    boxes, _ = finish_boxes(  # also removes duplicates, keeping the first (best ranked)
        boxes,
        None,
        scale_x=scale_x,
        scale_y=scale_y,
        width=width,
        height=height,
        min_size=params.min_size,
    )
    if params.max_boxes is not None:
        boxes = boxes[: params.max_boxes]
    return ProposalResult(boxes=np.ascontiguousarray(boxes), scores=None)
