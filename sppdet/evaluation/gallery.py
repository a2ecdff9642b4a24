"""A gallery of detections for the report: images with their ground truth and the detections
a user would keep, drawn.

Which detections to draw: per class, those scoring at least the class's *operating score*,
the score of the detection where its F1 (``2PR / (P + R)``) peaks along the devkit's curve;
scores of different models or scorers (SVM margins, softmax probabilities) need no common
threshold that way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from sppdet.evaluation.report import safe_file_name
from sppdet.evaluation.voc_ap import ClassDetections, ImageGroundTruth, VOCEvaluation


def operating_scores(evaluation: VOCEvaluation,
                     detections: Mapping[str, ClassDetections]) -> dict[str, float]:
    """Class name -> the score at its best F1; classes without a true positive are left out."""
    out: dict[str, float] = {}
    for result in evaluation.per_class:
        found = detections.get(result.class_name)
        if found is None or result.matches is None or result.n_true_positives == 0:
            continue
        p, r = result.precision, result.recall
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
        f1 = np.nan_to_num(f1, nan=0.0)
        best = int(np.argmax(f1))
        out[result.class_name] = float(found.scores[result.matches.order[best]])
    return out


def draw_gallery(
    ground_truth: Sequence[ImageGroundTruth],
    detections: Mapping[str, ClassDetections],
    class_names: Sequence[str],
    thresholds: Mapping[str, float],
    load_image: Callable[[str], np.ndarray],
    out_dir: str | os.PathLike,
    *,
    n_images: int = 8,
) -> list[tuple[Path, str]]:
    """Draw up to ``n_images`` images (the first of the split with a detection to draw).

    Ground-truth boxes are thin white lines; detections scoring at least their class's
    threshold are drawn with :func:`sppdet.detector.drawing.draw_detections`.

    Returns:
        ``(jpeg path, caption)`` per image, written as ``out_dir/gallery_<image id>.jpg``.
    """
    import cv2

    from sppdet.detector.detections import ImageDetections
    from sppdet.detector.drawing import draw_detections, save_image

    per_image: dict[str, list[tuple[np.ndarray, float, int]]] = {}
    for label, name in enumerate(class_names):
        found = detections.get(name)
        if found is None or name not in thresholds:
            continue
        keep = np.flatnonzero(found.scores >= thresholds[name])
        for k in keep:
            per_image.setdefault(str(found.image_ids[k]), []).append(
                (found.boxes[k], float(found.scores[k]), label))
    out, written = Path(out_dir), []
    for record in ground_truth:
        if len(written) >= n_images:
            break
        rows = per_image.get(record.image_id)
        if not rows:
            continue
        image = np.ascontiguousarray(load_image(record.image_id).copy())
        for box in record.boxes_voc:  # 1-based inclusive pixels
            cv2.rectangle(image, (int(box[0]) - 1, int(box[1]) - 1), (int(box[2]) - 1,
                          int(box[3]) - 1), (255, 255, 255), 1)
        boxes, scores, labels = zip(*rows)
        drawn = draw_detections(image, ImageDetections(record.image_id, np.array(boxes),
                                                       np.array(scores, np.float32),
                                                       np.array(labels)), class_names)
        # JPEG: photos are a tenth of their PNG size, and report.html embeds them
        path = save_image(out / f"gallery_{safe_file_name(record.image_id)}.jpg", drawn)
        written.append((path, f"{record.image_id}: {len(rows)} detection(s) at or above their "
                              "class's best-F1 score; ground truth in white"))
    return written
