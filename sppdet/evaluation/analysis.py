"""False-positive analysis after Hoiem, Chodpathumwan and Dai, "Diagnosing error in object
detectors" (ECCV 2012), as R-CNN and SPP-net used it to explain a detector.

Each false positive of the devkit's assignment (:class:`~sppdet.evaluation.voc_ap.DetectionMatches`)
gets exactly one type, the first that applies in this order:

1. ``localization``: the right class, poorly placed: its best overlap with an object of its
   own class is in ``[0.1, iou_threshold)``, or it is a duplicate (overlap >= the threshold
   with an object that a higher-scoring detection already took);
2. ``similar``: overlap >= 0.1 with an object of a *similar* class (same group of
   :data:`VOC_CLASS_GROUPS`; with other class lists no class is similar to another);
3. ``other``: overlap >= 0.1 with an object of any other class;
4. ``background``: everything else.

Overlaps are the devkit's (:func:`~sppdet.evaluation.voc_ap.devkit_overlaps`, 1-based, "+1"),
difficult objects included (a detection on a difficult object of its own class with overlap
>= the threshold is ignored by the AP, so it is never a false positive here either). The types
partition the false positives, so their counts add up to the AP's ``n_false_positives``.

"AP without a type" re-scores the class with that type's false positives removed (treated as
ignored detections, like those on difficult objects); the paper's figure of the impact of each
error type.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sppdet.errors import ConfigError
from sppdet.evaluation.voc_ap import (
    ClassDetections,
    ClassResult,
    ImageGroundTruth,
    VOCEvaluation,
    _GroundTruthIndex,
    ap_of_curve,
    devkit_overlaps,
    precision_recall,
)

FP_TYPES: tuple[str, ...] = ("localization", "similar", "other", "background")
FP_TYPE_DESCRIPTIONS: dict[str, str] = {
    "localization": "right class, overlap 0.1 to the match threshold with an object of it, or "
                    "a duplicate detection",
    "similar": "overlap >= 0.1 with an object of a similar class",
    "other": "overlap >= 0.1 with an object of another class",
    "background": "no object of any class overlaps it by 0.1",
}
#: Hoiem et al.'s groups of similar PASCAL VOC classes (person, bottle, pottedplant and
#: tvmonitor are in none).
VOC_CLASS_GROUPS: dict[str, tuple[str, ...]] = {
    "animals": ("bird", "cat", "cow", "dog", "horse", "sheep"),
    "vehicles": ("aeroplane", "bicycle", "boat", "bus", "car", "motorbike", "train"),
    "furniture": ("chair", "diningtable", "sofa"),
}
MIN_CONFUSION_OVERLAP = 0.1


@dataclass
class FalsePositive:
    """One false positive, with what made its type.

    Attributes:
        rank: 1-based position among the class's detections by score.
        image_id, score: the detection's image and score.
        box_voc: ``(xmin, ymin, xmax, ymax)``, 1-based, as evaluated.
        fp_type: one of :data:`FP_TYPES`.
        overlap: the overlap that decided the type (-inf for background with no object near).
        object_class: class of that object (``None`` for background).
        object_box_voc: that object's box (``None`` for background).
        duplicate: a localization error that is a duplicate detection.
    """

    rank: int
    image_id: str
    score: float
    box_voc: tuple[float, float, float, float]
    fp_type: str
    overlap: float
    object_class: str | None = None
    object_box_voc: tuple[float, float, float, float] | None = None
    duplicate: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "image_id": self.image_id, "score": self.score,
                "box_voc": list(self.box_voc), "type": self.fp_type,
                "overlap": None if not np.isfinite(self.overlap) else self.overlap,
                "object_class": self.object_class, "duplicate": self.duplicate,
                "object_box_voc": None if self.object_box_voc is None
                else list(self.object_box_voc)}


@dataclass
class ClassAnalysis:
    """The false-positive analysis of one class.

    Attributes:
        class_name: the class.
        ap: its AP (``None`` when undefined, no positives).
        npos: non-difficult objects.
        n_false_positives: as counted by the AP.
        counts: type -> number of false positives (sums to ``n_false_positives``).
        n_duplicates: localization errors that are duplicates.
        ap_without: type -> AP with that type's false positives removed (``None`` when
            undefined).
        outcome: str ``[D]`` per detection in score order: ``"correct"``, ``"ignored"`` or a
            false-positive type (what the stacked-area plot draws).
        top: the highest-scoring false positives, best first.
    """

    class_name: str
    ap: float | None
    npos: int
    n_false_positives: int
    counts: dict[str, int]
    n_duplicates: int
    ap_without: dict[str, float | None]
    outcome: np.ndarray = field(repr=False)
    top: list[FalsePositive] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.class_name, "ap": self.ap, "npos": self.npos,
                "n_detections": int(self.outcome.shape[0]),
                "n_false_positives": self.n_false_positives, "fp_types": dict(self.counts),
                "n_duplicates": self.n_duplicates, "ap_without": dict(self.ap_without),
                "top_false_positives": [fp.to_dict() for fp in self.top]}


@dataclass
class ErrorAnalysis:
    """The analysis of a whole evaluation: one :class:`ClassAnalysis` per class."""

    metric: str
    iou_threshold: float
    class_groups: dict[str, tuple[str, ...]]
    per_class: list[ClassAnalysis]

    @property
    def totals(self) -> dict[str, int]:
        return {t: sum(c.counts[t] for c in self.per_class) for t in FP_TYPES}

    def to_dict(self) -> dict[str, Any]:
        """The content of ``analysis.json``."""
        return {
            "method": "Hoiem et al., Diagnosing error in object detectors (ECCV 2012)",
            "metric": self.metric, "iou_threshold": self.iou_threshold,
            "fp_types": dict(FP_TYPE_DESCRIPTIONS),
            "type_order": "each false positive gets the first type that applies, in the "
                          "order localization, similar, other, background",
            "ap_without": "AP with the false positives of one type removed (ignored)",
            "class_groups": {k: list(v) for k, v in self.class_groups.items()},
            "totals": self.totals,
            "n_false_positives": sum(c.n_false_positives for c in self.per_class),
            "classes": [c.to_dict() for c in self.per_class],
        }


def similar_class_groups(class_names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """:data:`VOC_CLASS_GROUPS` restricted to ``class_names`` when they are VOC classes, else
    no groups (no class is similar to another)."""
    names = set(class_names)
    groups = {g: tuple(c for c in members if c in names) for g, members in
              VOC_CLASS_GROUPS.items()}
    return {g: members for g, members in groups.items() if len(members) > 1}


def _similar_matrix(class_names: Sequence[str],
                    groups: Mapping[str, Sequence[str]]) -> np.ndarray:
    """bool ``[C, C]``: class i and class j (i != j) share a group."""
    index = {n: i for i, n in enumerate(class_names)}
    similar = np.zeros((len(class_names), len(class_names)), dtype=bool)
    for members in groups.values():
        ids = [index[m] for m in members if m in index]
        for a in ids:
            for b in ids:
                similar[a, b] = a != b
    return similar


def _classify_class(index: _GroundTruthIndex, result: ClassResult, detections: ClassDetections,
                    class_names: Sequence[str], similar: np.ndarray, iou_threshold: float,
                    metric: str, n_top: int, image_ids: Sequence[str]) -> ClassAnalysis:
    matches = result.matches
    if matches is None:
        raise ConfigError(f"class {result.class_name!r}: the evaluation kept no matches")
    c = result.class_index
    n_det = matches.order.shape[0]
    det_boxes = detections.boxes_voc[matches.order]
    fp = np.flatnonzero(matches.false_positive)
    fp_type = np.full(n_det, "", dtype=object)
    decided_overlap = np.full(n_det, -np.inf)
    decided_object = np.full(n_det, -1, dtype=np.int64)

    # 1. localization: a duplicate, or 0.1 <= best own-class overlap (< threshold, else TP)
    is_loc = matches.duplicate[fp] | (matches.best_overlap[fp] >= MIN_CONFUSION_OVERLAP)
    loc = fp[is_loc]
    fp_type[loc] = "localization"
    decided_overlap[loc] = matches.best_overlap[loc]
    decided_object[loc] = matches.best_object[loc]

    # 2-4. the rest against every object of another class in the same image
    rest = fp[~is_loc]
    counts_per_image = np.bincount(index.object_image, minlength=index.n_images)
    starts = np.cumsum(counts_per_image) - counts_per_image
    pair_counts = counts_per_image[matches.image_index[rest]]
    pair_det = np.repeat(rest, pair_counts)
    offsets = np.arange(pair_det.shape[0]) - np.repeat(np.cumsum(pair_counts) - pair_counts,
                                                       pair_counts)
    pair_obj = np.repeat(starts[matches.image_index[rest]], pair_counts) + offsets
    other_class = index.labels[pair_obj] != c
    pair_det, pair_obj = pair_det[other_class], pair_obj[other_class]
    overlaps = devkit_overlaps(det_boxes[pair_det], index.boxes_voc[pair_obj])
    pair_similar = similar[c, index.labels[pair_obj]]
    for kind, in_kind in (("similar", pair_similar), ("other", ~pair_similar)):
        undecided = fp_type[pair_det] == ""
        use = in_kind & undecided & (overlaps >= MIN_CONFUSION_OVERLAP)
        best = np.full(n_det, -np.inf)
        np.maximum.at(best, pair_det[use], overlaps[use])
        hit = np.flatnonzero(np.isfinite(best))
        fp_type[hit] = kind
        decided_overlap[hit] = best[hit]
        # the object giving that overlap (the first such, in annotation order)
        at_best = use & (overlaps == best[pair_det])
        dets, first = np.unique(pair_det[at_best], return_index=True)
        decided_object[dets] = pair_obj[at_best][first]
    fp_type[fp[fp_type[fp] == ""]] = "background"

    outcome = np.full(n_det, "ignored", dtype=object)
    outcome[matches.true_positive] = "correct"
    outcome[fp] = fp_type[fp]
    counts = {t: int((fp_type[fp] == t).sum()) for t in FP_TYPES}
    ap_without: dict[str, float | None] = {}
    for t in FP_TYPES:
        keep_fp = matches.false_positive & (outcome != t)
        recall, precision = precision_recall(matches.true_positive, keep_fp, result.npos)
        ap = ap_of_curve(recall, precision, metric)
        ap_without[t] = None if result.ap is None else (0.0 if np.isnan(ap) else float(ap))

    top = []
    for k in fp[:n_top]:
        obj = int(decided_object[k])
        top.append(FalsePositive(
            rank=int(k) + 1, image_id=str(image_ids[matches.image_index[k]]),
            score=float(detections.scores[matches.order[k]]),
            box_voc=tuple(float(v) for v in det_boxes[k]), fp_type=str(fp_type[k]),
            overlap=float(decided_overlap[k]),
            object_class=None if obj < 0 else str(class_names[index.labels[obj]]),
            object_box_voc=None if obj < 0 else tuple(float(v) for v in index.boxes_voc[obj]),
            duplicate=bool(matches.duplicate[k])))
    return ClassAnalysis(class_name=result.class_name, ap=result.ap, npos=result.npos,
                         n_false_positives=int(fp.shape[0]), counts=counts,
                         n_duplicates=int(matches.duplicate.sum()), ap_without=ap_without,
                         outcome=outcome, top=top)


def analyse_false_positives(
    ground_truth: Sequence[ImageGroundTruth],
    detections: Mapping[str, ClassDetections],
    evaluation: VOCEvaluation,
    *,
    class_groups: Mapping[str, Sequence[str]] | None = None,
    n_top: int = 12,
) -> ErrorAnalysis:
    """Type every false positive of ``evaluation`` (see the module docstring).

    Args:
        ground_truth: the :class:`~sppdet.evaluation.voc_ap.ImageGroundTruth` records that
            ``evaluation`` was computed on.
        detections: class name -> the :class:`ClassDetections` evaluated (a class missing
            here had none).
        evaluation: the result of :func:`~sppdet.evaluation.voc_ap.evaluate_detections`.
        class_groups: groups of similar classes; default :func:`similar_class_groups`.
        n_top: how many of each class's highest-scoring false positives to list.
    """
    names = list(evaluation.class_names)
    groups = similar_class_groups(names) if class_groups is None else {
        g: tuple(m) for g, m in class_groups.items()}
    unknown = sorted({m for ms in groups.values() for m in ms} - set(names))
    if unknown:
        raise ConfigError(f"class groups name classes that are not evaluated: {unknown}")
    index = _GroundTruthIndex(ground_truth)
    image_ids = [r.image_id for r in ground_truth]
    similar = _similar_matrix(names, groups)
    per_class = [
        _classify_class(index, result, detections.get(result.class_name,
                                                      ClassDetections.empty()),
                        names, similar, evaluation.iou_threshold, evaluation.metric, n_top,
                        image_ids)
        for result in evaluation.per_class
    ]
    return ErrorAnalysis(metric=evaluation.metric, iou_threshold=evaluation.iou_threshold,
                         class_groups=dict(groups), per_class=per_class)

