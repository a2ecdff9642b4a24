"""PASCAL VOC evaluation: devkit-exact AP (:mod:`.voc_ap`, on the records of :mod:`.records`),
VOC result files (:mod:`.comp4`) and reports (:mod:`.report`, :mod:`.html_report`); beside
them the false-positive analysis (:mod:`.analysis`, :mod:`.analysis_plots`), COCO metrics
(:mod:`.coco`, needs pycocotools) and a gallery of detections (:mod:`.gallery`), imported
where used."""

from sppdet.evaluation.comp4 import (
    Comp4Results,
    comp4_filename,
    read_comp4_dir,
    read_comp4_file,
    write_comp4_file,
    write_comp4_files,
)
from sppdet.evaluation.report import (
    ap_table,
    plot_pr_curves,
    report_dict,
    write_report,
    write_report_json,
    write_report_markdown,
)
from sppdet.evaluation.voc_ap import (
    METRICS,
    VOC07_RECALL_THRESHOLDS,
    ClassDetections,
    ClassResult,
    DetectionMatches,
    ImageGroundTruth,
    VOCEvaluation,
    ap_of_curve,
    area_ap,
    class_detections_from_images,
    devkit_overlaps,
    evaluate_class,
    evaluate_detections,
    precision_recall,
    voc07_11point_ap,
)

__all__ = [
    "METRICS",
    "VOC07_RECALL_THRESHOLDS",
    "ClassDetections",
    "ClassResult",
    "Comp4Results",
    "DetectionMatches",
    "ImageGroundTruth",
    "VOCEvaluation",
    "ap_of_curve",
    "ap_table",
    "area_ap",
    "class_detections_from_images",
    "comp4_filename",
    "devkit_overlaps",
    "evaluate_class",
    "evaluate_detections",
    "plot_pr_curves",
    "precision_recall",
    "read_comp4_dir",
    "read_comp4_file",
    "report_dict",
    "voc07_11point_ap",
    "write_comp4_file",
    "write_comp4_files",
    "write_report",
    "write_report_json",
    "write_report_markdown",
]
