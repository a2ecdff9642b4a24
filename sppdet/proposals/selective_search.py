"""Selective search proposals (Uijlings et al., IJCV 2013) through OpenCV contrib.

OpenCV's ``SelectiveSearchSegmentation`` does the work; this module feeds it, makes its output
deterministic, and turns it into sppdet boxes.

Determinism. OpenCV gives every region the rank ``rand() / RAND_MAX * level`` with the C
library's ``rand()`` and sorts by it, so the *order* of the boxes changes from run to run (the
set does not). We seed the C library's generator with ``srand(seed)`` right before
``process()`` (same seed for every image), under a process-wide lock so that two threads cannot
interleave their ``rand()`` calls. Seeding was chosen over re-sorting by a fixed key because it
keeps selective search's own pseudo-random ranking, which mixes regions of one hierarchy level
with others, instead of replacing it by an arbitrary geometric order. With the seed fixed the
output is a function of the image alone: the same boxes in the same order across runs, worker
processes and shards (tested in ``tests/test_proposals_selective_search.py``).

Order and the cap on boxes. OpenCV's rank puts *low* hierarchy levels first (its source notes
that this is inverted from the paper, which ranks the last merged, largest regions first), so
the first 2,000 of OpenCV's list are mostly small regions. We therefore re-order by **scale
interleaving**: boxes are put into octave strata by ``floor(log2(sqrt(area)))`` (area in the
pixels selective search saw), keep OpenCV's seeded order inside each stratum, and are then
taken round-robin, one box per stratum per round, larger strata first. ``max_boxes`` keeps a
prefix of that order, so every scale keeps its share and the few large boxes always survive
the cap. The order does not depend on ``max_boxes``: the top ``k`` boxes of a capped result are
the top ``k`` of an uncapped one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from sppdet.ops.boxes import xywh_to_xyxy
from sppdet.errors import ConfigError
from sppdet.proposals.common import ProposalError, ProposalResult, check_image, finish_boxes
from sppdet.proposals.common import resize_longer_side

SS_MODES = ("fast", "quality")

# rand()/srand() state is per process; one selective search at a time per process keeps a
# seeded sequence from being consumed by another thread.
_RAND_LOCK = threading.Lock()


@dataclass(frozen=True)
class SelectiveSearchParams:
    """Parameters of selective search; every field is JSON-serialisable for artifact records.

    Attributes:
        max_boxes: keep at most this many boxes (a prefix of the scale-interleaved order, see
            the module docstring); ``None`` keeps all. Default 2000, the paper's "about 2,000
            windows per image".
        max_size: shrink the image so that its longer side is at most this many pixels before
            proposing (boxes are mapped back to original pixels); ``None`` never resizes.
            Default 500, the size of PASCAL VOC images and the width R-CNN's selective search
            script resizes to: a 640x480 image then costs about as much as a VOC image.
        min_size: drop boxes narrower or lower than this many original pixels. Default 10:
            such a window covers less than one cell of a stride-16 conv5 map at SPP-net's
            scales, and VOC objects that small are rare (most are marked difficult). On the
            VOC fixtures it removes about 5 % of the boxes and no recall.
        seed: value passed to the C library's ``srand`` before each image (determinism). In
            glibc seeds 0 and 1 give the same sequence.
        base_k: Felzenszwalb-Huttenlocher ``k`` of the first initial segmentation (OpenCV's
            default 150).
        inc_k: step of ``k`` between the initial segmentations (OpenCV's default 150).
        sigma: Gaussian smoothing of the initial segmentations (OpenCV's default 0.8).
    """

    max_boxes: int | None = 2000
    max_size: int | None = 500
    min_size: float = 10.0
    seed: int = 0
    base_k: int = 150
    inc_k: int = 150
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
        if self.base_k < 1 or self.inc_k < 1 or self.sigma < 0:
            raise ConfigError(
                f"base_k and inc_k must be >= 1 and sigma >= 0, "
                f"got base_k={self.base_k}, inc_k={self.inc_k}, sigma={self.sigma}"
            )


@lru_cache(maxsize=1)
def _libc_srand() -> "ctypes._CFuncPtr":
    """The ``srand`` that OpenCV's ``rand()`` reads: the process's C library."""
    for library in (None, ctypes.util.find_library("c")):
        try:
            srand = ctypes.CDLL(library).srand
        except (OSError, AttributeError):
            continue
        srand.argtypes = [ctypes.c_uint]
        srand.restype = None
        return srand
    raise ProposalError(
        "cannot find the C library's srand(), which selective search needs for a "
        "deterministic box order on this platform"
    )


def scale_interleaved_order(boxes_xyxy: np.ndarray) -> np.ndarray:
    """Indices that interleave boxes across octave scale strata, keeping the order inside each.

    Args:
        boxes_xyxy: ``[N, 4]`` xyxy boxes in rank order.

    Returns:
        int64 ``[N]`` permutation: round ``r`` lists the ``r``-th box of every stratum, the
        stratum of larger boxes first. Stratum = ``floor(log2(sqrt(area)))``, areas below 1
        count as 1.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    stratum = np.floor(0.5 * np.log2(np.maximum(areas, 1.0))).astype(np.int64)
    # Position of each box inside its stratum, in input order (a stable sort by stratum).
    by_stratum = np.argsort(stratum, kind="stable")
    sorted_strata = stratum[by_stratum]
    starts = np.searchsorted(sorted_strata, sorted_strata, side="left")
    position = np.empty_like(stratum)
    position[by_stratum] = np.arange(boxes.shape[0]) - starts
    # Primary key: round (position); secondary: larger stratum first.
    return np.lexsort((-stratum, position)).astype(np.int64)


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
        original pixels, in scale-interleaved rank order; ``scores`` is ``None``.

    Raises:
        ProposalError: the image is not uint8 RGB, or OpenCV failed on it.
        ConfigError: unknown ``mode``.
    """
    params = params or SelectiveSearchParams()
    if mode not in SS_MODES:
        raise ConfigError(f"selective search mode must be one of {SS_MODES}, got {mode!r}")
    image_rgb = check_image(image_rgb)
    height, width = image_rgb.shape[:2]
    resized, scale_x, scale_y = resize_longer_side(image_rgb, params.max_size)
    # OpenCV's colour conversions inside selective search assume BGR.
    image_bgr = np.ascontiguousarray(resized[:, :, ::-1])

    try:
        segmenter = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
        segmenter.setBaseImage(image_bgr)
        if mode == "fast":
            segmenter.switchToSelectiveSearchFast(params.base_k, params.inc_k, params.sigma)
        else:
            segmenter.switchToSelectiveSearchQuality(params.base_k, params.inc_k, params.sigma)
        srand = _libc_srand()
        with _RAND_LOCK:
            srand(params.seed)
            rects = segmenter.process()
    except cv2.error as error:
        raise ProposalError(
            f"OpenCV selective search ({mode}) failed on a {width}x{height} image: "
            f"{str(error).strip()}"
        ) from error

    rects = np.asarray(rects, dtype=np.int64).reshape(-1, 4)
    boxes = xywh_to_xyxy(rects)
    boxes = boxes[scale_interleaved_order(boxes)]
    boxes, _ = finish_boxes(
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
