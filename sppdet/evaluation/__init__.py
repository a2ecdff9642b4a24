"""PASCAL VOC evaluation: devkit-exact AP (:mod:`.voc_ap`), VOC result files (:mod:`.comp4`)
and reports (:mod:`.report`)."""

from sppdet.evaluation.voc_ap import (
    METRICS,
    VOC07_RECALL_THRESHOLDS,
    ClassDetections,
    ClassResult,
    ImageGroundTruth,
    VOCEvaluation,
    area_ap,
    class_detections_from_images,
    evaluate_class,
    evaluate_detections,
    voc07_11point_ap,
)

__all__ = [
    "METRICS",
    "VOC07_RECALL_THRESHOLDS",
    "ClassDetections",
    "ClassResult",
    "ImageGroundTruth",
    "VOCEvaluation",
    "area_ap",
    "class_detections_from_images",
    "evaluate_class",
    "evaluate_detections",
    "voc07_11point_ap",
]
