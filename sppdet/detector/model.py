"""The detector at test time: a trained model's parts, loaded together, and the scoring of
one image's windows into detections.

Per image (REFERENCE.md sections 1 and 8): scores from the per-class SVMs on fc7
(``scorer="svm"``, the paper's) or from the fine-tuned fc8 softmax (``scorer="softmax"``), each
class's box regressor applied to the windows that pass the score threshold, boxes clipped to
the image, then per-class NMS (IoU 0.3, or each class's own setting: :func:`suppress`) and at
most 100 detections per image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sppdet.backbones import build_backbone
from sppdet.detector.detections import ImageDetections
from sppdet.detector.detections_io import NMSSettings
from sppdet.errors import ArtifactMissingError, ConfigError, DataError, Remedy
from sppdet.features.fc_head import FcHead
from sppdet.io.records import input_ref, read_record
from sppdet.ops.boxes import clip_boxes, is_degenerate
from sppdet.ops.nms import DEFAULT_SOFT_NMS_SIGMA, class_nms
from sppdet.training.bbox_regression import BBoxRegressor
from sppdet.training.svm.weights import SVMWeights

SCORERS = ("svm", "softmax")
# Scores below these never become candidates (released code: SVM scores > -1.5); softmax
# probabilities below 1e-3 would only bloat the candidate lists.
DEFAULT_SCORE_THRESHOLDS = {"svm": -1.5, "softmax": 1e-3}


@dataclass
class DetectTimes:
    """Seconds spent in each part of detection, summed over images; and the windows scored
    (``windows``) and their distinct footprints (``distinct``, each pooled and scored once)."""

    conv: float = 0.0
    pool: float = 0.0
    fc: float = 0.0
    bbox: float = 0.0
    nms: float = 0.0
    windows: int = 0
    distinct: int = 0

    def add(self, other: "DetectTimes") -> None:
        """Add ``other``'s seconds and counts to these (one image's, summed over images)."""
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)

    def per_image(self, images: int) -> dict[str, float]:
        """Seconds per image of each part (the counts are left out)."""
        return {k: v / max(images, 1) for k, v in vars(self).items()
                if k not in ("windows", "distinct")}


@dataclass
class DetectModel:
    """Everything that scores windows: the fc head, the SVMs and the box regressors."""

    name: str
    classes: list[str]
    head: FcHead
    svm: SVMWeights | None
    regressor: BBoxRegressor | None
    backbone: dict[str, Any]
    inputs: dict[str, Any]
    scales: list[int]


def load_model(model_dir: Path, *, scorer: str, use_bbox_reg: bool,
               fc_path: Path | None = None) -> DetectModel:
    """Load ``fc.pt``, ``svm.npz`` (for the SVM scorer) and ``bbox_reg.npz`` of a model.

    ``fc_path``: the fc layers, when they lie elsewhere than ``model_dir / "fc.pt"`` (a
    selection model shares its model's).

    Raises:
        ArtifactMissingError: a needed file is missing (names the command that makes it).
        DataError: the parts were trained on different backbones or class lists.
    """
    fc_path = Path(fc_path) if fc_path is not None else model_dir / "fc.pt"
    fc_record = read_record(fc_path, made_by="finetune")
    head, meta = FcHead.load(fc_path)
    backbone = fc_record.params.get("backbone", meta.get("backbone"))
    classes = list(fc_record.params.get("classes", meta.get("classes", [])))
    inputs = {"fc": input_ref(fc_path, made_by="finetune")}
    svm = None
    if scorer == "svm":
        svm_path = model_dir / "svm.npz"
        inputs["svm"] = input_ref(svm_path, made_by="train-svm")
        svm = SVMWeights.load(svm_path)
        if svm.classes != classes:
            raise DataError(f"{svm_path} was trained for classes {svm.classes}, the fc layers "
                            f"for {classes}; rerun `sppdet train-svm`")
        svm_fc = read_record(svm_path).inputs.get("fc")
        if svm_fc is not None and svm_fc.digest != inputs["fc"].digest and svm.layer != "pool5":
            raise DataError(f"{svm_path} was trained on other fc layers than {fc_path}; rerun "
                            "`sppdet train-svm`")
    regressor = None
    reg_path = model_dir / "bbox_reg.npz"
    if use_bbox_reg:
        if not reg_path.exists():
            raise ArtifactMissingError(
                f"{reg_path} does not exist",
                remedy=Remedy.rerun(alternative="run `sppdet train-bbox-reg`", bbox_reg=False))
        inputs["bbox_reg"] = input_ref(reg_path, made_by="train-bbox-reg")
        regressor, reg_classes = BBoxRegressor.load(reg_path)
        if list(reg_classes) != classes:
            raise DataError(f"{reg_path} was trained for classes {list(reg_classes)}, the fc "
                            f"layers for {classes}; rerun `sppdet train-bbox-reg`")
    scales = fc_record.params.get("scales") or []
    return DetectModel(name=model_dir.name, classes=classes, head=head, svm=svm,
                       regressor=regressor, backbone=backbone, inputs=inputs,
                       scales=[int(s) for s in scales])


def nms_settings(scorer: str, iou_threshold: float, score_threshold: float | None,
                  max_per_image: int | None, method: str = "hard",
                  sigma: float = DEFAULT_SOFT_NMS_SIGMA) -> NMSSettings:
    """NMS settings, with the scorer's default score threshold when none is given.

    ``method``: ``hard``, or Soft-NMS ``linear`` / ``gaussian`` (``sigma``: its width).
    """
    if scorer not in SCORERS:
        raise ConfigError(f"scorer must be one of {SCORERS}, got {scorer!r}")
    threshold = DEFAULT_SCORE_THRESHOLDS[scorer] if score_threshold is None else score_threshold
    return NMSSettings(iou_threshold=iou_threshold, score_threshold=threshold,
                       max_per_image=max_per_image, method=method, sigma=sigma)


def build_model_backbone(model: DetectModel, device: torch.device) -> torch.nn.Module:
    """The conv trunk the model's fc layers were trained on (for on-the-fly conv5)."""
    spec = model.backbone if isinstance(model.backbone, dict) else {"name": model.backbone}
    return build_backbone(spec["name"], spec.get("weights_path")).eval().to(device)


@torch.inference_mode()
def detect_windows(model: DetectModel, image_id: str, pooled: torch.Tensor, boxes: np.ndarray,
                   image_size: tuple[int, int], *, scorer: str, nms: NMSSettings,
                   times: DetectTimes, batch_size: int = 1024,
                   inverse: np.ndarray | None = None
                   ) -> tuple[ImageDetections, ImageDetections]:
    """Score pooled windows of one image and return ``(final, candidates)`` detections.

    Args:
        model: the loaded model.
        image_id: the image (names the detections).
        pooled: ``[N, C * 50]`` SPP vectors of the windows, or with ``inverse`` ``[U, C * 50]``,
            one per distinct footprint (``FeatureCache.pool_distinct``): each is scored once.
        boxes: ``[N, 4]`` the windows (original pixels).
        image_size: ``(height, width)``.
        scorer: ``svm`` or ``softmax``.
        nms: NMS settings (score threshold, IoU threshold, per-image cap).
        times: accumulates the seconds of fc, box regression and NMS.
        inverse: ``[N]`` row of ``pooled`` of each window; ``None``: row ``k`` is window ``k``.
    """
    if scorer == "svm" and model.svm is None:
        raise ConfigError("the svm scorer needs the model's SVMs; load the model with "
                          "scorer='svm'")
    height, width = image_size
    start = time.perf_counter()
    head = model.head
    scores_parts = []
    for first in range(0, pooled.shape[0], batch_size):
        batch = pooled[first:first + batch_size]
        if scorer == "svm":
            features = head.features(batch, model.svm.layer).cpu().numpy()
            scores_parts.append(model.svm.scores(features))
        else:
            probs = torch.softmax(head.eval()(batch), dim=1)[:, 1:]
            scores_parts.append(probs.cpu().numpy())
    num_classes = len(model.classes)
    scores = (np.concatenate(scores_parts) if scores_parts
              else np.zeros((0, num_classes), np.float32)).astype(np.float32)
    times.windows += int(boxes.shape[0])
    times.distinct += int(pooled.shape[0])
    row_of = np.arange(boxes.shape[0]) if inverse is None else np.asarray(inverse, np.int64)
    if inverse is not None:
        scores = scores[row_of]  # [U, K] -> [N, K]
    if scorer == "svm":
        scores[:, ~model.svm.trained] = -np.inf  # an untrained class gives no detections
    times.fc += time.perf_counter() - start
    start = time.perf_counter()
    threshold = nms.score_threshold
    cand_boxes, cand_scores, cand_labels = [], [], []
    pooled_np: np.ndarray | None = None
    for label, class_name in enumerate(model.classes):
        keep = np.flatnonzero(scores[:, label] > threshold) if threshold is not None \
            else np.flatnonzero(np.isfinite(scores[:, label]))
        if keep.size == 0:
            continue
        class_boxes = boxes[keep]
        if model.regressor is not None:
            if pooled_np is None:
                pooled_np = pooled.cpu().numpy()
            class_boxes = model.regressor.predict(class_name, pooled_np[row_of[keep]],
                                                  class_boxes,
                                                  image_size=(width, height))
        class_boxes = clip_boxes(np.asarray(class_boxes, np.float32), width, height)
        # a window regressed out of the image collapses when clipped: it is no detection
        inside = ~is_degenerate(class_boxes)
        cand_boxes.append(class_boxes[inside])
        cand_scores.append(scores[keep[inside], label])
        cand_labels.append(np.full(int(inside.sum()), label, np.int64))
    times.bbox += time.perf_counter() - start
    start = time.perf_counter()
    if cand_boxes:
        candidates = ImageDetections(image_id, np.concatenate(cand_boxes),
                                     np.concatenate(cand_scores), np.concatenate(cand_labels))
    else:
        candidates = ImageDetections.empty(image_id)
    final = suppress(candidates, nms)
    times.nms += time.perf_counter() - start
    return final, candidates


def suppress(candidates: ImageDetections, nms: NMSSettings) -> ImageDetections:
    """Per-class NMS of one image's candidates by ``nms``, each class by its own setting.

    Classes that share a setting are suppressed together by
    :func:`sppdet.ops.nms.class_nms`; the groups' survivors are then ordered by score
    descending (equal scores in input order, as ``class_nms`` orders) and capped at
    ``nms.max_per_image``. With one setting for every class this is ``class_nms`` itself.

    Returns:
        The kept detections with their (Soft-NMS: decayed) scores, by score descending.
    """
    def run(mask: np.ndarray | None, cap: int | None) -> tuple[np.ndarray, np.ndarray]:
        index = np.arange(len(candidates)) if mask is None else np.flatnonzero(mask)
        setting = nms.for_class(int(candidates.labels[index[0]])) if index.size else \
            nms.for_class(0)
        # Candidates already score above the threshold; Soft-NMS decays scores towards it.
        keep, scores = class_nms(candidates.boxes[index], candidates.scores[index],
                                 candidates.labels[index], method=setting.method,
                                 iou_threshold=setting.iou_threshold, sigma=setting.sigma,
                                 score_threshold=nms.score_threshold, max_per_image=cap)
        return index[keep], scores

    settings = {nms.for_class(int(label)) for label in np.unique(candidates.labels)}
    if nms.per_class is None or len(settings) <= 1:
        keep, scores = run(None, nms.max_per_image)
    else:
        parts = [run(np.isin(candidates.labels, [label for label in range(len(nms.per_class))
                                                 if nms.per_class[label] == setting]), None)
                 for setting in settings]
        keep = np.concatenate([p[0] for p in parts])
        scores = np.concatenate([p[1] for p in parts])
        order = np.lexsort((keep, -scores))  # score descending, then input order
        if nms.max_per_image is not None:
            order = order[:nms.max_per_image]
        keep, scores = keep[order], scores[order]
    kept = candidates.select(keep)
    return ImageDetections(candidates.image_id, kept.boxes, scores, kept.labels)
