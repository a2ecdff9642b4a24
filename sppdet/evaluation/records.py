"""The records of a VOC evaluation: ground truth and detections as the devkit sees them
(:class:`ImageGroundTruth`, :class:`ClassDetections`, both with the devkit's 1-based
``boxes_voc``), and what :mod:`.voc_ap` finds (:class:`DetectionMatches`, :class:`ClassResult`,
:class:`VOCEvaluation`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sppdet.errors import DataError
from sppdet.ops.boxes import xyxy_to_voc


@dataclass
class ImageGroundTruth:
    """The annotated objects of one image.

    Attributes:
        image_id: the dataset's image id.
        boxes: float32 ``[M, 4]`` 0-based continuous xyxy (``voc_to_xyxy`` of the XML boxes).
        labels: int64 ``[M]``, 0-based class indices.
        difficult: bool ``[M]``; ``None`` means no object is difficult.
        boxes_voc: float64 ``[M, 4]`` the devkit's 1-based ``xmin, ymin, xmax, ymax`` as the
            XML gives them; the overlaps use these. Default ``xyxy_to_voc(boxes)``.

    ``M = 0`` (an image with no objects) is allowed.
    """

    image_id: str
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray | None = None
    boxes_voc: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.image_id, str) or not self.image_id:
            raise DataError(f"image id must be a non-empty string, got {self.image_id!r}")
        boxes = np.asarray(self.boxes, dtype=np.float32)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        labels = np.asarray(self.labels)
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f"image {self.image_id}: ground-truth labels must be integers, "
                f"got dtype {labels.dtype}"
            )
        labels = labels.astype(np.int64).reshape(-1)
        if self.difficult is None:
            difficult = np.zeros(labels.shape[0], dtype=bool)
        else:
            difficult = np.asarray(self.difficult).astype(bool).reshape(-1)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise DataError(
                f"image {self.image_id}: ground-truth boxes must have shape [M, 4], "
                f"got {boxes.shape}"
            )
        if not (boxes.shape[0] == labels.shape[0] == difficult.shape[0]):
            raise DataError(
                f"image {self.image_id}: ground-truth boxes, labels and difficult flags must "
                f"have the same length, got {boxes.shape[0]}, {labels.shape[0]}, "
                f"{difficult.shape[0]}"
            )
        if not np.isfinite(boxes).all():
            raise DataError(f"image {self.image_id}: ground-truth boxes must be finite")
        boxes_voc = xyxy_to_voc(boxes) if self.boxes_voc is None else np.asarray(
            self.boxes_voc, dtype=np.float64).reshape(-1, 4)
        if boxes_voc.shape != boxes.shape or not np.isfinite(boxes_voc).all():
            raise DataError(
                f"image {self.image_id}: boxes_voc must be finite with the shape of boxes "
                f"{boxes.shape}, got {boxes_voc.shape}"
            )
        if labels.size and labels.min() < 0:
            raise DataError(
                f"image {self.image_id}: ground-truth labels must be >= 0, "
                f"got {int(labels.min())}"
            )
        self.boxes = boxes
        self.labels = labels
        self.difficult = difficult
        self.boxes_voc = boxes_voc


@dataclass
class ClassDetections:
    """All detections of one class over a split, as in one VOC result (comp4) file.

    Attributes:
        image_ids: object array ``[D]`` of image id strings.
        scores: float64 ``[D]``.
        boxes: float64 ``[D, 4]`` 0-based continuous xyxy.
        boxes_voc: float64 ``[D, 4]`` the devkit's 1-based ``xmin, ymin, xmax, ymax``, on which
            the overlaps are computed: a comp4 file's own numbers (:meth:`from_voc`), or by
            default ``xyxy_to_voc(boxes)``, the numbers a comp4 file of ``boxes`` holds.

    The order is the file's (or the producer's) order; it decides between equal scores.
    """

    image_ids: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    boxes_voc: np.ndarray | None = None

    def __post_init__(self) -> None:
        image_ids = np.empty(len(self.image_ids), dtype=object)
        image_ids[:] = [str(i) for i in self.image_ids]
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        boxes = np.asarray(self.boxes, dtype=np.float64)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise DataError(f"detection boxes must have shape [D, 4], got {boxes.shape}")
        if not (image_ids.shape[0] == scores.shape[0] == boxes.shape[0]):
            raise DataError(
                "detection image ids, scores and boxes must have the same length, got "
                f"{image_ids.shape[0]}, {scores.shape[0]}, {boxes.shape[0]}"
            )
        if not (np.isfinite(scores).all() and np.isfinite(boxes).all()):
            raise DataError("detection scores and boxes must be finite")
        boxes_voc = xyxy_to_voc(boxes) if self.boxes_voc is None else np.asarray(
            self.boxes_voc, dtype=np.float64).reshape(-1, 4)
        if boxes_voc.shape != boxes.shape or not np.isfinite(boxes_voc).all():
            raise DataError(f"detection boxes_voc must be finite with shape {boxes.shape}, "
                            f"got {boxes_voc.shape}")
        self.image_ids = image_ids
        self.scores = scores
        self.boxes = boxes
        self.boxes_voc = boxes_voc

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def subset(self, keep: np.ndarray) -> ClassDetections:
        """The detections selected by a boolean mask or index array, in their order."""
        return ClassDetections(self.image_ids[keep], self.scores[keep], self.boxes[keep],
                               self.boxes_voc[keep])

    @classmethod
    def from_voc(cls, image_ids: Sequence[str] | np.ndarray, scores: np.ndarray,
                 boxes_voc: np.ndarray) -> ClassDetections:
        """Detections given in the devkit's 1-based coordinates (a comp4 file's columns), kept
        exactly as given for the overlaps; ``boxes`` is their 0-based form."""
        boxes_voc = np.asarray(boxes_voc, dtype=np.float64).reshape(-1, 4)
        boxes = boxes_voc.copy()
        boxes[:, 0:2] -= 1.0  # voc_to_xyxy, kept in float64
        return cls(np.asarray(image_ids, dtype=object), scores, boxes, boxes_voc)

    @classmethod
    def empty(cls) -> ClassDetections:
        return cls(np.empty(0, dtype=object), np.zeros(0), np.zeros((0, 4)))


@dataclass
class DetectionMatches:
    """How the devkit assigned each detection of a class, in score order (stable sort).

    Attributes:
        order: int64 ``[D]``: position in the input :class:`ClassDetections` of the k-th
            detection by score.
        image_index: int64 ``[D]``: the detection's image, an index into the ground truth.
        true_positive, false_positive: bool ``[D]``; a detection that is neither is ignored
            (its best box is difficult).
        duplicate: bool ``[D]``: a false positive whose best box (overlap >= threshold) was
            already taken by a higher-scoring detection.
        best_overlap: float64 ``[D]``: the devkit's ``ovmax`` with the class's boxes in the
            image (``-inf`` when none intersects).
        best_object: int64 ``[D]``: that box as an index into the ground truth's objects
            (all images, in image then annotation order), -1 when none.
    """

    order: np.ndarray
    image_index: np.ndarray
    true_positive: np.ndarray
    false_positive: np.ndarray
    duplicate: np.ndarray
    best_overlap: np.ndarray
    best_object: np.ndarray


@dataclass
class ClassResult:
    """Evaluation of one class.

    Attributes:
        class_index, class_name: which class.
        ap: average precision in [0, 1]; ``None`` when undefined (``npos == 0``).
        devkit_ap: the number the devkit itself would give (NaN where it gives NaN).
        npos: non-difficult ground-truth objects.
        n_detections: detections of the class (including ignored ones).
        n_true_positives, n_false_positives, n_ignored: the devkit's assignment counts.
        recall, precision: float64 ``[n_detections]``, cumulative, in score order, exactly
            the devkit's ``rec`` and ``prec``: precision is NaN while only ignored detections
            have been seen (0/0), recall is NaN everywhere when ``npos == 0``.
        flags: any of ``no_positives``, ``no_detections``, ``all_detections_ignored``.
        matches: the per-detection assignment behind the counts.
    """

    class_index: int
    class_name: str
    ap: float | None
    devkit_ap: float
    npos: int
    n_detections: int
    n_true_positives: int
    n_false_positives: int
    n_ignored: int
    recall: np.ndarray = field(repr=False)
    precision: np.ndarray = field(repr=False)
    flags: tuple[str, ...] = ()
    matches: DetectionMatches | None = field(default=None, repr=False)


@dataclass
class VOCEvaluation:
    """Per-class results and the mean AP over the classes whose AP is defined.

    Attributes:
        metric: ``"11point"`` or ``"area"``; ``protocol`` says it in words.
        iou_threshold: the overlap that counts as a match (0.5 in VOC).
        n_images: images in the ground truth.
        per_class: one :class:`ClassResult` per class, in class-index order.
        mean_ap: mean of the defined per-class APs; ``None`` when no class has positives.
        devkit_mean_ap: the mean over every class, classes without positives counted as AP 0
            (what the VOC2007 devkit's mean comes out as); ``None`` for no class.
    """

    metric: str
    protocol: str
    iou_threshold: float
    n_images: int
    per_class: tuple[ClassResult, ...]
    mean_ap: float | None
    devkit_mean_ap: float | None = None

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(r.class_name for r in self.per_class)

    @property
    def classes_in_mean(self) -> tuple[str, ...]:
        return tuple(r.class_name for r in self.per_class if r.ap is not None)

    @property
    def classes_excluded_from_mean(self) -> tuple[str, ...]:
        return tuple(r.class_name for r in self.per_class if r.ap is None)
