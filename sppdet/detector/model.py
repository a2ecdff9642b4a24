"""The detector at test time: a trained model's parts, loaded together, and the scoring of
one image's windows into detections.

Per image (REFERENCE.md sections 1 and 8): scores from the per-class SVMs on fc7
(``scorer="svm"``, the paper's) or from the fine-tuned fc8 softmax (``scorer="softmax"``), each
class's box regressor applied to the windows that pass the score threshold, boxes clipped to
the image, then per-class NMS (IoU 0.3, or each class's own setting: :func:`suppress`) and at
most 100 detections per image.

*Mixed scoring* (``class_scorers``, chosen per class on validation by ``tune-detect``): each
class is scored by its own scorer. A softmax-scored class's score is then the log-odds
``log(p) - log(1 - p)`` of its probability (:func:`softmax_log_odds`), not ``p``: monotone in
``p`` (the class's AP is unchanged) and, like an SVM score, with its decision boundary at 0, so
the per-image cap over all classes and a common draw threshold compare like with like.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sppdet.backbones import build_backbone
from sppdet.detector.detections import ImageDetections
from sppdet.detector.detections_io import ClassNMS, NMSSettings
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
# Probabilities are clipped to [eps, 1 - eps] before their log-odds: softmax probabilities
# of 0 or 1 (float32 saturation) would give infinite scores.
LOG_ODDS_EPS = 1e-7


def softmax_log_odds(probs: np.ndarray) -> np.ndarray:
    """``log(p) - log(1 - p)`` of probabilities, ``p`` clipped to ``[1e-7, 1 - 1e-7]``.

    Strictly increasing in ``p`` inside the clip range (a class's ranking, so its AP, is
    unchanged) and 0 at ``p = 0.5``. Computed in float64; returns float32 of ``probs``' shape
    (about -16.1 to 16.1).
    """
    p = np.clip(np.asarray(probs, np.float64), LOG_ODDS_EPS, 1.0 - LOG_ODDS_EPS)
    return (np.log(p) - np.log1p(-p)).astype(np.float32)


def class_score_thresholds(class_scorers: Sequence[str],
                           score_threshold: float | None) -> tuple[float | None, ...]:
    """Per class, the score threshold of mixed scoring (``class_scorers``: per class in label
    order, ``svm`` or ``softmax``).

    ``score_threshold`` given: that value for every class, in each class's own units (SVM
    margin, or log-odds for a softmax-scored class). ``None``: -1.5 for SVM classes and the
    log-odds of the softmax default 1e-3 (about -6.9) for softmax classes.
    """
    _check_scorer_names(class_scorers)
    if score_threshold is not None:
        return tuple(float(score_threshold) for _ in class_scorers)
    softmax = float(softmax_log_odds(np.array(DEFAULT_SCORE_THRESHOLDS["softmax"])))
    return tuple(DEFAULT_SCORE_THRESHOLDS["svm"] if s == "svm" else softmax
                 for s in class_scorers)


def _check_scorer_names(names: Sequence[str]) -> None:
    for name in names:
        if name not in SCORERS:
            raise ConfigError(f"scorer must be one of {SCORERS}, got {name!r}")


def needs_svm(scorer: str, class_scorers: Sequence[str] | None) -> bool:
    """Whether detection with ``scorer`` (or, given, the per-class ``class_scorers``) reads
    the SVMs (only then :func:`load_model` loads them)."""
    return "svm" in class_scorers if class_scorers is not None else scorer == "svm"


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
def score_windows(model: DetectModel, pooled: torch.Tensor, *, svm: bool, softmax: bool,
                  batch_size: int = 1024) -> tuple[np.ndarray | None, np.ndarray | None]:
    """One pass of the fc layers over pooled windows: ``(svm_scores, probabilities)``.

    Args:
        pooled: ``[U, C * 50]`` SPP vectors.
        svm: compute the SVM scores (float32 ``[U, K]``, ``-inf`` for untrained classes).
        softmax: compute the fc8 softmax probabilities (float32 ``[U, K]``, background
            dropped). With both and the SVMs on fc7, fc8 reads the SVMs' fc7 activations
            (the eval-mode forward is ``fc8(fc7 features)``): fc6/fc7 run once.

    Returns:
        What was asked, ``None`` for the other.
    """
    if svm and model.svm is None:
        raise ConfigError("the svm scorer needs the model's SVMs; load the model with "
                          "scorer='svm'")
    head = model.head
    svm_parts, prob_parts = [], []
    for first in range(0, pooled.shape[0], batch_size):
        batch = pooled[first:first + batch_size]
        features = None
        if svm:
            features = head.features(batch, model.svm.layer)
            svm_parts.append(model.svm.scores(features.cpu().numpy()))
        if softmax:
            logits = (head.fc8(features) if features is not None and model.svm.layer == "fc7"
                      else head.eval()(batch))
            prob_parts.append(torch.softmax(logits, dim=1)[:, 1:].cpu().numpy())
    num_classes = len(model.classes)

    def stacked(parts: list[np.ndarray]) -> np.ndarray:
        return (np.concatenate(parts) if parts
                else np.zeros((0, num_classes), np.float32)).astype(np.float32)

    return (stacked(svm_parts) if svm else None), (stacked(prob_parts) if softmax else None)


def _check_class_scorers(model: DetectModel,
                         class_scorers: Sequence[str] | None) -> tuple[str, ...] | None:
    if class_scorers is None:
        return None
    class_scorers = tuple(class_scorers)
    if len(class_scorers) != len(model.classes):
        raise ConfigError(f"{len(class_scorers)} per-class scorers for "
                          f"{len(model.classes)} classes")
    _check_scorer_names(class_scorers)
    return class_scorers


def _score_pass(model: DetectModel, pooled: torch.Tensor, boxes: np.ndarray,
                inverse: np.ndarray | None, times: DetectTimes, *, svm: bool, softmax: bool,
                batch_size: int) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """:func:`score_windows` over the ``[U]`` pooled rows, counted in ``times`` (windows,
    distinct footprints, fc seconds), and ``row_of`` ``[N]``: each window's row."""
    start = time.perf_counter()
    svm_scores, probs = score_windows(model, pooled, svm=svm, softmax=softmax,
                                      batch_size=batch_size)
    times.windows += int(boxes.shape[0])
    times.distinct += int(pooled.shape[0])
    times.fc += time.perf_counter() - start
    row_of = np.arange(boxes.shape[0]) if inverse is None else np.asarray(inverse, np.int64)
    return svm_scores, probs, row_of


def _window_candidates(model: DetectModel, image_id: str, scores: np.ndarray,
                       pooled: torch.Tensor, row_of: np.ndarray, boxes: np.ndarray,
                       image_size: tuple[int, int], nms: NMSSettings) -> ImageDetections:
    """The windows above each class's threshold (``scores`` float32 ``[N, K]``, one row per
    window; ``row_of`` ``[N]``: each window's row of ``pooled``), box-regressed, clipped to
    the image and without those collapsed by clipping."""
    height, width = image_size
    cand_boxes, cand_scores, cand_labels = [], [], []
    pooled_np: np.ndarray | None = None
    for label, class_name in enumerate(model.classes):
        threshold = nms.score_threshold_for(label)
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
    if not cand_boxes:
        return ImageDetections.empty(image_id)
    return ImageDetections(image_id, np.concatenate(cand_boxes), np.concatenate(cand_scores),
                           np.concatenate(cand_labels))


def _mixed_scores(model: DetectModel, svm_scores: np.ndarray | None,
                  probs: np.ndarray | None, class_scorers: Sequence[str]) -> np.ndarray:
    """float32 ``[U, K]``: per class its SVM scores, or the log-odds of its probability."""
    scores = np.empty((len(svm_scores if svm_scores is not None else probs),
                       len(model.classes)), np.float32)
    for label, name in enumerate(class_scorers):
        scores[:, label] = (svm_scores[:, label] if name == "svm"
                            else softmax_log_odds(probs[:, label]))
    return scores


@torch.inference_mode()
def detect_windows(model: DetectModel, image_id: str, pooled: torch.Tensor, boxes: np.ndarray,
                   image_size: tuple[int, int], *, scorer: str, nms: NMSSettings,
                   times: DetectTimes, batch_size: int = 1024,
                   inverse: np.ndarray | None = None,
                   class_scorers: Sequence[str] | None = None
                   ) -> tuple[ImageDetections, ImageDetections]:
    """Score pooled windows of one image and return ``(final, candidates)`` detections.

    Args:
        model: the loaded model.
        image_id: the image (names the detections).
        pooled: ``[N, C * 50]`` SPP vectors of the windows, or with ``inverse`` ``[U, C * 50]``,
            one per distinct footprint (``FeatureCache.pool_distinct``): each is scored once.
        boxes: ``[N, 4]`` the windows (original pixels).
        image_size: ``(height, width)``.
        scorer: ``svm`` or ``softmax`` (softmax: probabilities), for every class.
        nms: NMS settings (score threshold, per class with ``class_score_thresholds``; IoU
            threshold; per-image cap).
        times: accumulates the seconds of fc, box regression and NMS.
        inverse: ``[N]`` row of ``pooled`` of each window; ``None``: row ``k`` is window ``k``.
        class_scorers: mixed scoring, replacing ``scorer``: per class in label order ``svm``
            (SVM scores) or ``softmax`` (the log-odds of the softmax probability,
            :func:`softmax_log_odds`), both from one pass (:func:`score_windows`).
    """
    class_scorers = _check_class_scorers(model, class_scorers)
    use_svm = needs_svm(scorer, class_scorers)
    use_softmax = (scorer == "softmax" if class_scorers is None
                   else "softmax" in class_scorers)
    svm_scores, probs, row_of = _score_pass(model, pooled, boxes, inverse, times,
                                            svm=use_svm, softmax=use_softmax,
                                            batch_size=batch_size)
    if class_scorers is None:
        scores = svm_scores if scorer == "svm" else probs
    else:
        scores = _mixed_scores(model, svm_scores, probs, class_scorers)
    if inverse is not None:
        scores = scores[row_of]  # [U, K] -> [N, K]
    start = time.perf_counter()
    candidates = _window_candidates(model, image_id, scores, pooled, row_of, boxes, image_size,
                                    nms)
    times.bbox += time.perf_counter() - start
    start = time.perf_counter()
    final = suppress(candidates, nms)
    times.nms += time.perf_counter() - start
    return final, candidates


@torch.inference_mode()
def detect_windows_with_softmax(model: DetectModel, image_id: str, pooled: torch.Tensor,
                                boxes: np.ndarray, image_size: tuple[int, int], *,
                                nms: NMSSettings, softmax_nms: NMSSettings,
                                times: DetectTimes, batch_size: int = 1024,
                                inverse: np.ndarray | None = None
                                ) -> tuple[ImageDetections, ImageDetections, ImageDetections]:
    """:func:`detect_windows` with the SVM scorer, and from the same pass of the fc layers
    every class's candidates scored by the softmax as log-odds (what mixed scoring gives a
    softmax class): ``(final, candidates, softmax_candidates)``.

    ``softmax_nms``: only its score thresholds are read (the softmax candidates' own, in
    log-odds, e.g. :func:`class_score_thresholds` of all ``softmax``). ``tune-detect`` chooses
    each class's scorer from the two candidate sets of one detection run.
    """
    svm_scores, probs, row_of = _score_pass(model, pooled, boxes, inverse, times, svm=True,
                                            softmax=True, batch_size=batch_size)
    odds = softmax_log_odds(probs)
    if inverse is not None:
        svm_scores, odds = svm_scores[row_of], odds[row_of]  # [U, K] -> [N, K]
    start = time.perf_counter()
    candidates = _window_candidates(model, image_id, svm_scores, pooled, row_of, boxes,
                                    image_size, nms)
    softmax_candidates = _window_candidates(model, image_id, odds, pooled, row_of, boxes,
                                            image_size, softmax_nms)
    times.bbox += time.perf_counter() - start
    start = time.perf_counter()
    final = suppress(candidates, nms)
    times.nms += time.perf_counter() - start
    return final, candidates, softmax_candidates


def suppress(candidates: ImageDetections, nms: NMSSettings) -> ImageDetections:
    """Per-class NMS of one image's candidates by ``nms``, each class by its own setting.

    Classes that share a setting (and a score threshold: Soft-NMS decays towards it) are
    suppressed together by :func:`sppdet.ops.nms.class_nms`; the groups' survivors are then
    ordered by score descending (equal scores in input order, as ``class_nms`` orders) and
    capped at ``nms.max_per_image``. With one setting for every class this is ``class_nms``
    itself.

    Returns:
        The kept detections with their (Soft-NMS: decayed) scores, by score descending.
    """
    def group(label: int) -> tuple[ClassNMS, float | None]:
        return nms.for_class(label), nms.score_threshold_for(label)

    def run(mask: np.ndarray | None, cap: int | None) -> tuple[np.ndarray, np.ndarray]:
        index = np.arange(len(candidates)) if mask is None else np.flatnonzero(mask)
        setting, threshold = group(int(candidates.labels[index[0]])) if index.size else \
            group(0)
        # Candidates already score above the threshold; Soft-NMS decays scores towards it.
        keep, scores = class_nms(candidates.boxes[index], candidates.scores[index],
                                 candidates.labels[index], method=setting.method,
                                 iou_threshold=setting.iou_threshold, sigma=setting.sigma,
                                 score_threshold=threshold, max_per_image=cap)
        return index[keep], scores

    present = [int(label) for label in np.unique(candidates.labels)]
    groups = {group(label) for label in present}
    if len(groups) <= 1:
        keep, scores = run(None, nms.max_per_image)
    else:
        parts = [run(np.isin(candidates.labels, [label for label in present
                                                 if group(label) == g]), None)
                 for g in groups]
        keep = np.concatenate([p[0] for p in parts])
        scores = np.concatenate([p[1] for p in parts])
        order = np.lexsort((keep, -scores))  # score descending, then input order
        if nms.max_per_image is not None:
            order = order[:nms.max_per_image]
        keep, scores = keep[order], scores[order]
    kept = candidates.select(keep)
    return ImageDetections(candidates.image_id, kept.boxes, scores, kept.labels)
