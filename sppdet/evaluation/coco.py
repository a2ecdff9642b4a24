"""COCO metrics beside the VOC ones: ground truth and detections as COCO JSON, scored by
pycocotools (the reference implementation; the ``coco`` extra, ``pip install 'sppdet[coco]'``).

Coordinates. VOC boxes are 1-based inclusive pixel indices ``xmin..xmax``; COCO boxes are
``[x, y, w, h]`` in 0-based continuous pixels. So::

    x = xmin - 1,  y = ymin - 1,  w = xmax - xmin + 1,  h = ymax - ymin + 1

(a VOC box ``1..10`` covers the ten pixels ``[0, 10)``: ``x = 0, w = 10``). This is sppdet's
0-based ``[x1, y1, x2, y2]`` with ``w = x2 - x1``; detections are converted from the same
``boxes_voc`` numbers the VOC evaluation uses. COCO's IoU (no "+1") on these boxes equals the
devkit's "+1" IoU in exact arithmetic. Ground-truth ``area`` is ``w * h``; it decides the
small (< 32^2), medium and large (> 96^2) ranges.

Difficult objects become crowd regions (``iscrowd = 1``, also ``ignore = 1`` for tools that
read it): pycocotools ignores the detections that match them, as the devkit ignores detections
on difficult objects. The rule differs in one respect: a crowd region is matched by
intersection over the *detection's* area, and may absorb several detections.

COCO AP averages 101-point interpolated precision over IoU 0.50:0.05:0.95 and keeps at most
100 detections per image (by score); AP50 is that AP at IoU 0.5 alone. AP50 is close to, not
equal to, the VOC area AP: 101 recall points instead of the exact area, at most 100
detections per image, crowd matching for difficult objects, and the overlap computed in
another order of float operations (a pair exactly on the threshold may fall either side).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sppdet.errors import ConfigError
from sppdet.evaluation.voc_ap import ClassDetections, ImageGroundTruth

#: pycocotools' ``stats`` entries for bounding boxes, in order.
COCO_METRICS: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                                 "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
COCO_EXTRA_HINT = ("COCO metrics need the pycocotools package: install sppdet's 'coco' extra "
                   "(pip install 'sppdet[coco]', or pip install pycocotools)")


def voc_to_coco_boxes(boxes_voc: np.ndarray) -> np.ndarray:
    """VOC 1-based inclusive ``[N, 4]`` ``(xmin, ymin, xmax, ymax)`` -> COCO ``[N, 4]``
    ``(x, y, w, h)``, 0-based: ``x = xmin - 1``, ``w = xmax - xmin + 1`` (float64)."""
    b = np.asarray(boxes_voc, dtype=np.float64).reshape(-1, 4)
    return np.stack([b[:, 0] - 1, b[:, 1] - 1, b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1],
                    axis=1)


def coco_image_numbers(ground_truth: Sequence[ImageGroundTruth]) -> dict[str, int]:
    """VOC image id -> COCO integer image id: 1, 2, ... in split order."""
    return {r.image_id: k + 1 for k, r in enumerate(ground_truth)}


def coco_ground_truth(
    ground_truth: Sequence[ImageGroundTruth],
    class_names: Sequence[str],
    *,
    image_info: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The split's ground truth as a COCO ``instances`` dict.

    Args:
        ground_truth: one record per image (``boxes_voc`` are converted).
        class_names: category ``k + 1`` is ``class_names[k]``.
        image_info: per VOC image id, optional ``width``, ``height``, ``file_name`` (entries
            that are ``None`` are left out).

    Images get ids 1..N in split order (:func:`coco_image_numbers`) and keep their VOC id as
    ``voc_id``; annotations get ids 1..M.
    """
    image_info = image_info or {}
    images, annotations = [], []
    numbers = coco_image_numbers(ground_truth)
    for record in ground_truth:
        entry: dict[str, Any] = {"id": numbers[record.image_id], "voc_id": record.image_id,
                                 "file_name": f"{record.image_id}.jpg"}
        for key, value in image_info.get(record.image_id, {}).items():
            if value is not None:
                entry[key] = value
        images.append(entry)
        for box, label, difficult in zip(voc_to_coco_boxes(record.boxes_voc), record.labels,
                                         record.difficult):
            crowd = int(bool(difficult))
            annotations.append({
                "id": len(annotations) + 1, "image_id": numbers[record.image_id],
                "category_id": int(label) + 1, "bbox": [float(v) for v in box],
                "area": float(box[2] * box[3]), "iscrowd": crowd, "ignore": crowd})
    categories = [{"id": k + 1, "name": str(name)} for k, name in enumerate(class_names)]
    return {"info": {"description": "converted from PASCAL VOC annotations by sppdet",
                     "boxes": "x = xmin - 1, y = ymin - 1, w = xmax - xmin + 1, "
                              "h = ymax - ymin + 1; difficult objects are crowd regions"},
            "images": images, "annotations": annotations, "categories": categories}


def coco_detections(
    detections: Mapping[str, ClassDetections],
    class_names: Sequence[str],
    image_numbers: Mapping[str, int],
) -> list[dict[str, Any]]:
    """Detections as a COCO results list (``image_id``, ``category_id``, ``bbox``, ``score``).

    Args:
        detections: class name -> detections; boxes from their ``boxes_voc``.
        class_names: category ``k + 1`` is ``class_names[k]``.
        image_numbers: VOC image id -> COCO image id (:func:`coco_image_numbers`).
    """
    out: list[dict[str, Any]] = []
    for k, name in enumerate(class_names):
        found = detections.get(name)
        if found is None or len(found) == 0:
            continue
        for image_id, score, box in zip(found.image_ids, found.scores,
                                        voc_to_coco_boxes(found.boxes_voc)):
            out.append({"image_id": image_numbers[str(image_id)], "category_id": k + 1,
                        "bbox": [float(v) for v in box], "score": float(score)})
    return out


def _pycocotools() -> tuple[Any, Any]:
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ConfigError(COCO_EXTRA_HINT) from None
    return COCO, COCOeval


def coco_metrics(gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """pycocotools' bounding-box evaluation of ``results`` against ``gt``.

    Returns:
        ``{"AP": .., "AP50": .., ..., "per_class": {name: {"AP": .., "AP50": ..}}}`` as
        fractions in [0, 1]; ``None`` where pycocotools has nothing to average (it prints -1).
        With no detections at all every AP is 0.

    Raises:
        ConfigError: pycocotools is not installed (names the ``coco`` extra).
    """
    COCO, COCOeval = _pycocotools()
    names = {c["id"]: c["name"] for c in gt["categories"]}
    if not results:
        zero = {m: 0.0 for m in COCO_METRICS}
        return {**zero, "per_class": {n: {"AP": 0.0, "AP50": 0.0} for n in names.values()}}
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):  # pycocotools prints its progress
        coco_gt = COCO()
        coco_gt.dataset = {k: v for k, v in gt.items()}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([dict(r) for r in results])
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()

    def defined(value: float) -> float | None:
        return None if value < 0 else float(value)

    out: dict[str, Any] = {m: defined(v) for m, v in zip(COCO_METRICS, evaluator.stats)}
    # precision: [iou thresholds T, recall points R, categories K, area ranges A, max dets M];
    # area range 0 is "all", max dets index 2 is 100
    precision = evaluator.eval["precision"]
    per_class = {}
    for k, category in enumerate(evaluator.params.catIds):
        all_iou = precision[:, :, k, 0, -1]
        at_50 = precision[0, :, k, 0, -1]
        per_class[names[category]] = {
            "AP": defined(float(np.mean(all_iou[all_iou > -1]))) if (all_iou > -1).any()
            else None,
            "AP50": defined(float(np.mean(at_50[at_50 > -1]))) if (at_50 > -1).any() else None,
        }
    out["per_class"] = per_class
    return out


def write_json(path: str | os.PathLike, value: Any) -> Path:
    """Write ``value`` as compact JSON (atomically)."""
    import json

    from sppdet.io.atomic import write_text_atomic

    path = Path(path)
    write_text_atomic(path, json.dumps(value, separators=(",", ":"), allow_nan=False) + "\n")
    return path
