"""Model combination (paper section 4.4): pool the scored windows of several models, then NMS.

Each model scores all candidate windows of a test image; NMS then runs on the union of the
scored windows, so a more confident window of one model suppresses the less confident
overlapping windows of the other. The paper combines two networks of the same structure
(59.2 and 59.1 mAP -> 60.9); the released code has no implementation of this step, so this
follows the paper's description.

The scores of the models must be on one scale (e.g. the SVM scores of two SPP-nets trained the
same way): the pooled NMS compares them directly. The paper pools *all* scored windows; pooling
detections that already went through each model's NMS and per-image cap is an approximation
(a window suppressed inside one model cannot suppress the other model's windows any more).
"""

from __future__ import annotations

from collections.abc import Sequence

from sppdet.detector.detections import ImageDetections
from sppdet.errors import DataError
from sppdet.ops.nms import (
    DEFAULT_IOU_THRESHOLD,
    DEFAULT_MAX_PER_IMAGE,
    DEFAULT_SCORE_THRESHOLD,
    nms_image_detections,
)


def combine_image_detections(
    per_model: Sequence[ImageDetections],
    *,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    score_threshold: float | None = DEFAULT_SCORE_THRESHOLD,
    max_per_image: int | None = DEFAULT_MAX_PER_IMAGE,
) -> ImageDetections:
    """Pool one image's windows from every model and run per-class NMS on the union.

    Args:
        per_model: the image's scored windows from each model (same image id).
        iou_threshold, score_threshold, max_per_image: as :func:`sppdet.ops.nms.class_nms_indices`.

    Returns:
        the kept windows by score descending; on equal scores the earlier model (then the
        earlier window) wins.
    """
    if not per_model:
        raise DataError("model combination needs the detections of at least one model")
    image_id = per_model[0].image_id
    pooled = ImageDetections.concatenate(image_id, list(per_model))
    return nms_image_detections(
        pooled,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        max_per_image=max_per_image,
    )


def combine_models(
    models: Sequence[Sequence[ImageDetections]],
    *,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    score_threshold: float | None = DEFAULT_SCORE_THRESHOLD,
    max_per_image: int | None = DEFAULT_MAX_PER_IMAGE,
) -> list[ImageDetections]:
    """Combine several models' detections on the same images (paper section 4.4).

    Args:
        models: ``[n_models]`` lists of per-image detections. Every model must cover the same
            set of image ids (in any order), each id once.
        iou_threshold, score_threshold, max_per_image: as :func:`sppdet.ops.nms.class_nms_indices`.

    Returns:
        one :class:`ImageDetections` per image, in the first model's image order.

    Raises:
        DataError: no model, a repeated image id, or models covering different images (the
            message names the model and a few of the ids).
    """
    if not models:
        raise DataError("model combination needs the detections of at least one model")
    by_model: list[dict[str, ImageDetections]] = []
    for m, detections in enumerate(models):
        table: dict[str, ImageDetections] = {}
        for d in detections:
            if d.image_id in table:
                raise DataError(f"model {m}: image {d.image_id!r} appears more than once")
            table[d.image_id] = d
        by_model.append(table)
    reference_ids = list(by_model[0])
    reference = set(reference_ids)
    for m, table in enumerate(by_model[1:], start=1):
        if set(table) != reference:
            missing = sorted(reference - set(table))
            extra = sorted(set(table) - reference)
            raise DataError(
                f"model {m} covers other images than model 0: missing {len(missing)} "
                f"(e.g. {missing[:5]}), extra {len(extra)} (e.g. {extra[:5]}); combine "
                "detections made on the same split"
            )
    return [
        combine_image_detections(
            [table[image_id] for table in by_model],
            iou_threshold=iou_threshold,
            score_threshold=score_threshold,
            max_per_image=max_per_image,
        )
        for image_id in reference_ids
    ]
