"""EdgeBoxes proposals (Zitnick and Dollar, ECCV 2014) through OpenCV contrib.

EdgeBoxes scores a box by the edge groups wholly inside it. It needs an edge map in [0, 1] and
an edge orientation map; two sources are offered:

- **Structured Edge model** (``EdgeBoxesParams.edge_model`` = path of ``model.yml.gz``): the
  detector EdgeBoxes was published with (Dollar and Zitnick, "Structured Forests for Fast Edge
  Detection", ICCV 2013). The trained model is not part of OpenCV's wheels; it is published in
  OpenCV's test data, ``opencv_extra/testdata/cv/ximgproc/model.yml.gz``.
- **Built-in gradient edges** (``edge_model=None``, the default): needs no file, so EdgeBoxes
  works offline. Colour gradients of the image in CIE Lab, taken at two scales, normalised by
  the local gradient energy, then thinned with the same orientation and non-maximum
  suppression steps as the model path (see :func:`gradient_edges`). Its recall is measured by
  ``benchmarks/proposals_speed.py``; compare it with the trained model's published recall
  (REFERENCE.md section 10) before relying on it.

OpenCV's ``computeOrientation`` and ``edgesNms`` are methods of a StructuredEdgeDetection
object but do not use its forest (``computeOrientation`` reads one option, a smoothing radius,
4 in the published model). For the
built-in path the module builds such an object once per process from a one-leaf model file it
writes itself (:func:`_helper_detector`), so both paths thin edges with exactly OpenCV's code
and the orientation convention EdgeBoxes expects.

A new EdgeBoxes object is created for every image: reusing one changes the results.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from sppdet.ops.boxes import xywh_to_xyxy
from sppdet.errors import YOUR_CHOICE, ConfigError, ModelError, Remedy
from sppdet.proposals.common import ProposalError, ProposalResult, check_image, finish_boxes
from sppdet.proposals.common import resize_longer_side

EDGE_MODEL_SOURCE = "opencv_extra/testdata/cv/ximgproc/model.yml.gz"

# A Structured Edge "model" with one tree of one leaf: enough for OpenCV to build a detector
# object whose computeOrientation / edgesNms we call. Options are those of the published
# model; computeOrientation reads gradientNormalizationRadius (4, Dollar's convTri radius).
_HELPER_MODEL_YAML = """%YAML:1.0
options:
   stride: 2
   shrinkNumber: 2
   patchSize: 32
   patchInnerSize: 16
   numberOfGradientOrientations: 4
   gradientSmoothingRadius: 0
   regFeatureSmoothingRadius: 2
   ssFeatureSmoothingRadius: 8
   gradientNormalizationRadius: 4
   selfsimilarityGridSize: 5
   numberOfTrees: 1
   numberOfTreesToEvaluate: 1
childs:
   - [ 0 ]
featureIds:
   - [ 0 ]
thresholds:
   - [ 0. ]
edgeBoundaries:
   - [ 0, 0 ]
edgeBins:
   - [ 0 ]
"""

_HELPER_LOCK = threading.Lock()

# Built-in edges (see gradient_edges): scales as downsampling factors, blur sigma in pixels of
# each scale, half width of the normalisation window.
_GRADIENT_SCALES = (1, 2)
_GRADIENT_SIGMA = 3.0
_NORMALISATION_RADIUS = 16


@dataclass(frozen=True)
class EdgeBoxesParams:
    """Parameters of EdgeBoxes; every field is JSON-serialisable for artifact records.

    Defaults are those of Zitnick and Dollar's code (and OpenCV's), except ``max_boxes``.

    Attributes:
        edge_model: path of a Structured Edge model (``model.yml.gz``); ``None`` uses the
            built-in gradient edges.
        max_boxes: at most this many boxes, best score first. Default 2000 (as for selective
            search; OpenCV's default is 10,000).
        alpha: step size of the sliding-window search (IoU between neighbouring windows).
        beta: NMS threshold of EdgeBoxes itself (0.75 suits IoU 0.7 evaluation; 0.55 suits 0.5).
        eta: adaptation rate of the NMS threshold.
        min_score: minimum box score.
        max_aspect_ratio: maximum box aspect ratio (default 3 drops longer boxes).
        min_box_area: minimum box area in pixels of the image EdgeBoxes sees (after
            ``max_size``).
        edge_min_mag, edge_merge_thr, cluster_min_mag: edge grouping thresholds.
        gamma, kappa: affinity and scale sensitivity of the box score.
        max_size: shrink the image so that its longer side is at most this many pixels before
            computing edges (boxes are mapped back); ``None`` never resizes. Default 500.
        min_size: drop boxes narrower or lower than this many original pixels (default 10, as
            for selective search).
    """

    edge_model: str | None = None
    max_boxes: int = 2000
    alpha: float = 0.65
    beta: float = 0.75
    eta: float = 1.0
    min_score: float = 0.01
    max_aspect_ratio: float = 3.0
    min_box_area: float = 1000.0
    edge_min_mag: float = 0.1
    edge_merge_thr: float = 0.5
    cluster_min_mag: float = 0.5
    gamma: float = 2.0
    kappa: float = 1.5
    max_size: int | None = 500
    min_size: float = 10.0

    def __post_init__(self) -> None:
        if self.max_boxes < 1:
            raise ConfigError(f"max_boxes must be >= 1, got {self.max_boxes}")
        if not 0.0 < self.alpha < 1.0 or not 0.0 < self.beta <= 1.0:
            raise ConfigError(
                f"alpha must be in (0, 1) and beta in (0, 1], got alpha={self.alpha}, "
                f"beta={self.beta}"
            )
        if self.max_aspect_ratio < 1.0:
            raise ConfigError(f"max_aspect_ratio must be >= 1, got {self.max_aspect_ratio}")
        if self.min_box_area < 0 or self.min_size < 0:
            raise ConfigError(
                f"min_box_area and min_size must be >= 0, got {self.min_box_area}, "
                f"{self.min_size}"
            )
        if self.max_size is not None and self.max_size < 16:
            raise ConfigError(f"max_size must be >= 16 pixels or None, got {self.max_size}")


def missing_model_error(path: str | os.PathLike) -> ModelError:
    """The error for a Structured Edge model file that is not there."""
    return ModelError(
        f"Structured Edge model file not found: {path}. EdgeBoxes with learned edges needs "
        f"the trained model 'model.yml.gz' published in OpenCV's test data "
        f"({EDGE_MODEL_SOURCE}); download it once",
        remedy=Remedy.rerun(edge_model=YOUR_CHOICE,
                            purpose=" (its path), or without it to use the built-in gradient "
                                    "edges, which need no file"))


@lru_cache(maxsize=4)
def _load_detector(path: str, mtime_ns: int, size: int) -> "cv2.ximgproc.StructuredEdgeDetection":
    # mtime and size are part of the cache key so that a replaced file is reloaded.
    expected = f"expected the file 'model.yml.gz' from {EDGE_MODEL_SOURCE}"
    try:
        # OpenCV's loader divides by options.numberOfTrees without checking it (a readable
        # file of another kind would crash the process), so look before loading.
        storage = cv2.FileStorage(path, cv2.FILE_STORAGE_READ)
        opened = storage.isOpened()
        trees = storage.getNode("options").getNode("numberOfTrees") if opened else None
        has_forest = opened and not storage.getNode("childs").empty()
        num_trees = 0 if trees is None or trees.empty() else int(trees.real())
        storage.release()
        if not opened or num_trees < 1 or not has_forest:
            raise ModelError(f"{path} is not a Structured Edge model file; {expected}")
        detector = cv2.ximgproc.createStructuredEdgeDetection(path)
    except (cv2.error, SystemError) as error:
        # A parse error inside cv2.FileStorage's constructor surfaces as SystemError.
        reason = str(error.__cause__ or error).strip()
        raise ModelError(
            f"cannot load the Structured Edge model {path}: {reason}; {expected}"
        ) from error
    if detector is None or detector.empty():
        raise ModelError(f"the Structured Edge model {path} loaded as an empty detector")
    return detector


def load_edge_model(path: str | os.PathLike) -> "cv2.ximgproc.StructuredEdgeDetection":
    """Load (once per process and file version) a Structured Edge detector from ``path``.

    Call it before a long run to fail early on a bad file.

    Raises:
        ModelError: the file is missing (the message says where the model is published and
            how to pass it) or OpenCV cannot read it.
    """
    file = Path(path)
    if not file.is_file():
        raise missing_model_error(path)
    stat = file.stat()
    return _load_detector(str(file.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=1)
def _helper_detector() -> "cv2.ximgproc.StructuredEdgeDetection":
    """A StructuredEdgeDetection with a one-leaf forest, for computeOrientation and edgesNms."""
    with _HELPER_LOCK, tempfile.TemporaryDirectory(prefix="sppdet-sed-") as folder:
        model_path = os.path.join(folder, "helper_model.yml")
        with open(model_path, "w", encoding="ascii") as handle:
            handle.write(_HELPER_MODEL_YAML)
        return cv2.ximgproc.createStructuredEdgeDetection(model_path)


def gradient_edges(image_rgb: np.ndarray) -> np.ndarray:
    """Built-in edge strength map of an RGB image, no model needed.

    1. CIE Lab colour (L/100, a/100, b/100), at the image's scale and at half scale.
    2. Gaussian blur of sigma 3 pixels (of that scale): suppresses texture, keeps object
       boundaries. Sigma 1, 1.5, 2, 2.5, 3 and 4 were compared on the VOC fixtures and 20 BCCD
       images: 3 gave the best recall at small box budgets, equal recall at 2,000 boxes and,
       with fewer edge pixels, the fastest EdgeBoxes search (about 0.1 s per image).
    3. Sobel gradients; at each pixel the magnitude of the channel with the strongest gradient
       (as in Dollar's gradient features); the two scales averaged.
    4. Divided by the local mean magnitude over a 33x33 window plus 0.01 (after Dollar's
       gradient normalisation): a weak boundary in a calm region counts as much as a strong
       one in a busy region. Divided by 4 and clipped to [0, 1].

    Args:
        image_rgb: uint8 ``[H, W, 3]`` RGB.

    Returns:
        float32 ``[H, W]`` edge strength in [0, 1] (not yet thinned).
    """
    height, width = image_rgb.shape[:2]
    lab = cv2.cvtColor(image_rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab) / 100.0
    magnitude = np.zeros((height, width), dtype=np.float32)
    for factor in _GRADIENT_SCALES:
        scaled = lab
        if factor > 1:
            size = (max(1, width // factor), max(1, height // factor))
            scaled = cv2.resize(lab, size, interpolation=cv2.INTER_AREA)
        blurred = cv2.GaussianBlur(scaled, (0, 0), sigmaX=_GRADIENT_SIGMA)
        grad_x = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
        grad_y = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
        channel_max = np.sqrt(grad_x * grad_x + grad_y * grad_y).max(axis=2)  # [h, w]
        if factor > 1:
            channel_max = cv2.resize(channel_max, (width, height), interpolation=cv2.INTER_LINEAR)
        magnitude += channel_max / len(_GRADIENT_SCALES)
    window = 2 * _NORMALISATION_RADIUS + 1
    local_mean = cv2.blur(magnitude, (window, window), borderType=cv2.BORDER_REFLECT)
    edges = np.clip(magnitude / (local_mean + 0.01) / 4.0, 0.0, 1.0)
    return np.ascontiguousarray(edges, dtype=np.float32)


def edge_map(image_rgb: np.ndarray, edge_model: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Thinned edge map and orientation map for EdgeBoxes.

    Args:
        image_rgb: uint8 ``[H, W, 3]`` RGB.
        edge_model: Structured Edge model path, or ``None`` for :func:`gradient_edges`.

    Returns:
        ``(edges, orientation)``: float32 ``[H, W]`` each; edges in [0, 1] after non-maximum
        suppression, orientation in [0, pi).
    """
    if edge_model is None:
        detector = _helper_detector()
        edges = gradient_edges(image_rgb)
    else:
        detector = load_edge_model(edge_model)
        # Structured Edge detection takes float32 RGB in [0, 1].
        edges = detector.detectEdges(image_rgb.astype(np.float32) / 255.0)
    orientation = detector.computeOrientation(edges)
    # r=2, s=0, m=1: the settings of Dollar's edgeBoxes.m and OpenCV's EdgeBoxes sample.
    # Single-threaded: the stage parallelises over images.
    thinned = detector.edgesNms(edges, orientation, r=2, s=0, m=1.0, isParallel=False)
    return thinned, orientation


def score_vector(scores: object, num_boxes: int) -> np.ndarray:
    """EdgeBoxes scores as float32 ``[N]`` whatever OpenCV's version.

    OpenCV 4.x returns them as ``(N, 1)``, 5.x as ``(N,)``; an empty result may come as an
    empty tuple or ``None``.

    Raises:
        ProposalError: the number of scores differs from ``num_boxes``.
    """
    if scores is None or (isinstance(scores, tuple) and len(scores) == 0):
        vector = np.zeros(0, dtype=np.float32)
    else:
        vector = np.asarray(scores, dtype=np.float32).reshape(-1)
    if vector.shape[0] != num_boxes:
        raise ProposalError(
            f"OpenCV EdgeBoxes returned {num_boxes} boxes but {vector.shape[0]} scores"
        )
    return vector


def edge_boxes(image_rgb: np.ndarray, params: EdgeBoxesParams | None = None) -> ProposalResult:
    """EdgeBoxes proposals of one image.

    Args:
        image_rgb: uint8 ``[H, W, 3]`` RGB image.
        params: see :class:`EdgeBoxesParams` (defaults when ``None``).

    Returns:
        :class:`ProposalResult`: float32 ``[N, 4]`` xyxy boxes, 0-based continuous in original
        pixels, best score first, and their float32 ``[N]`` EdgeBoxes scores.

    Raises:
        ModelError: ``params.edge_model`` is missing or unreadable (not a per-image problem).
        ProposalError: the image is not uint8 RGB, or OpenCV failed on it.
    """
    params = params or EdgeBoxesParams()
    image_rgb = check_image(image_rgb)
    height, width = image_rgb.shape[:2]
    if params.edge_model is not None:
        load_edge_model(params.edge_model)  # ModelError before any per-image work
    resized, scale_x, scale_y = resize_longer_side(image_rgb, params.max_size)
    try:
        edges, orientation = edge_map(resized, params.edge_model)
        # A new object per image: OpenCV's EdgeBoxes keeps state between calls.
        detector = cv2.ximgproc.createEdgeBoxes(
            alpha=params.alpha,
            beta=params.beta,
            eta=params.eta,
            minScore=params.min_score,
            maxBoxes=params.max_boxes,
            edgeMinMag=params.edge_min_mag,
            edgeMergeThr=params.edge_merge_thr,
            clusterMinMag=params.cluster_min_mag,
            maxAspectRatio=params.max_aspect_ratio,
            minBoxArea=params.min_box_area,
            gamma=params.gamma,
            kappa=params.kappa,
        )
        rects, scores = detector.getBoundingBoxes(edges, orientation)
    except cv2.error as error:
        raise ProposalError(
            f"OpenCV EdgeBoxes failed on a {width}x{height} image: {str(error).strip()}"
        ) from error

    rects = np.zeros((0, 4), np.int64) if rects is None else np.asarray(rects, np.int64)
    rects = rects.reshape(-1, 4)
    scores = score_vector(scores, rects.shape[0])
    # EdgeBoxes returns boxes best first; a stable sort makes that explicit and keeps ties.
    order = np.argsort(-scores, kind="stable")
    boxes, scores = finish_boxes(
        xywh_to_xyxy(rects[order]),
        scores[order],
        scale_x=scale_x,
        scale_y=scale_y,
        width=width,
        height=height,
        min_size=params.min_size,
    )
    return ProposalResult(boxes=boxes, scores=scores)
