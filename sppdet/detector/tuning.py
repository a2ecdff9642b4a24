"""Test settings chosen on held-out validation data: per-class NMS and an operating point.

What is chosen, per class (never on the test split):

- **Scorer** (with ``softmax_candidates``): the class's windows are scored by the SVMs (the
  paper's, the default) or by the fine-tuned fc8 softmax, as the log-odds of its probability
  (mixed scoring, :mod:`sppdet.detector.model`). Under :data:`DEFAULT_NMS`, softmax replaces
  the SVMs for a class only when its validation AP beats theirs in at least a share
  ``confidence`` of the same paired bootstrap resamples as the NMS choice below (measured
  with only this class changed, as an NMS setting is). On real data one class of BCCD gained
  2-3 test AP this way while softmax lost on every other class of BCCD and of the demo. The
  NMS choice then reads each class's chosen scorer's candidates.
- **NMS**: each setting of :data:`NMS_GRID` (hard NMS at several IoU thresholds, linear and
  Gaussian Soft-NMS) is run on the validation split's candidate windows (every scored window
  above the score threshold, before NMS: what a detections artifact keeps), and scored by the
  class's VOC AP (the devkit rules of :mod:`sppdet.evaluation.voc_ap`). A setting is tried on
  one class at a time with the other classes at :data:`DEFAULT_NMS`: the per-image cap counts
  every class's detections, so that is what detection with this one change keeps. The mean AP
  of the chosen settings together is measured afterwards and reported as it is.

  A validation split holds 25-60 objects per class, and there the best AP is mostly noise:
  settings that "gained" 5-7 points on validation lost 3 on the test split, and the per-class
  choice cost 1.2 mAP on the demo against the paper's NMS for every class. So a class leaves
  :data:`DEFAULT_NMS`, the paper's hard NMS at IoU 0.3, only for a setting that beats it
  (by more than :data:`AP_TOLERANCE`) in at least a share ``confidence`` (default
  :data:`DEFAULT_CONFIDENCE`) of :data:`DEFAULT_RESAMPLES` paired bootstrap resamples of the
  validation images (:mod:`sppdet.evaluation.bootstrap`: both settings' AP on the same
  resampled images; resamples without an object of the class are left out). Among those
  settings the one of highest validation AP wins, if it is above the default's; ties go to
  the earlier grid entry. ``confidence=0`` takes the setting of best validation AP as it
  is (ties to the default, then to the earlier grid entry). The share of every setting
  (``win_fraction``) is stored with the choice.
- **Operating point**: AP never drops when lower-scored detections are added, so AP cannot
  choose the score threshold. The threshold that maximizes F1 (``2PR / (P + R)``, precision
  and recall as the devkit counts them) on validation is the class's *operating point*: what a
  user sees (drawings, detections of image files). Evaluation keeps the low score threshold,
  which AP needs.

The choice is stored with the model as ``test_settings.json`` (:data:`TEST_SETTINGS_FILE`,
read back by :func:`read_test_settings`), which ``detect`` then uses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sppdet.detector.detections import ImageDetections
from sppdet.detector.detections_io import ClassNMS, NMSSettings
from sppdet.detector.model import (SCORERS, DetectModel, class_score_thresholds, nms_settings,
                                   suppress)
from sppdet.errors import ArtifactError, ConfigError, Remedy
from sppdet.ops.nms import DEFAULT_IOU_THRESHOLD, DEFAULT_SOFT_NMS_SIGMA
from sppdet.progress import get_logger
from sppdet.evaluation.bootstrap import (bootstrap_ap, positives_per_image,
                                         resample_weights, win_fraction)
from sppdet.evaluation.voc_ap import (ClassResult, ImageGroundTruth,
                                      class_detections_from_images, evaluate_class,
                                      evaluate_detections)

#: The file beside a model's fc.pt / svm.npz that holds its chosen test settings.
TEST_SETTINGS_FILE = "test_settings.json"
#: The paper's test-time NMS (released code): hard, suppress above IoU 0.3.
DEFAULT_NMS = ClassNMS("hard", 0.3)
#: The settings tried per class: hard NMS at IoU 0.3-0.6, linear Soft-NMS at N_t 0.3 and
#: 0.5, Gaussian Soft-NMS at sigma 0.3 and 0.5 (Bodla et al.'s default).
NMS_GRID: tuple[ClassNMS, ...] = (
    DEFAULT_NMS, ClassNMS("hard", 0.4), ClassNMS("hard", 0.5), ClassNMS("hard", 0.6),
    ClassNMS("linear", 0.3), ClassNMS("linear", 0.5),
    ClassNMS("gaussian", sigma=0.3), ClassNMS("gaussian", sigma=0.5),
)
log = get_logger("tuning")
# AP differences below this are float noise, not a better setting.
AP_TOLERANCE = 1e-9
#: A setting replaces :data:`DEFAULT_NMS` for a class only when it beats it in at least this
#: share of the bootstrap resamples of the validation images.
DEFAULT_CONFIDENCE = 0.95
#: Bootstrap resamples of the validation images (the share's standard error at 0.95 is
#: under 0.007).
DEFAULT_RESAMPLES = 1000


@dataclass(frozen=True)
class OperatingPoint:
    """The score threshold of best F1 on validation, and what it gave there.

    Attributes:
        score: keep detections scoring at least this (a detection's own score).
        precision, recall, f1: on the validation split, the devkit's counting.
        detections: validation detections kept at that threshold.
    """

    score: float
    precision: float
    recall: float
    f1: float
    detections: int

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "precision": self.precision, "recall": self.recall,
                "f1": self.f1, "detections": self.detections}


def operating_point(result: ClassResult, scores: np.ndarray) -> OperatingPoint | None:
    """The threshold of best F1 along a class's devkit curve; ``None`` without a true positive.

    Only thresholds a score filter can realise are candidates: the curve's point after the
    *last* of several equal scores. Equal F1: the higher threshold (fewer detections).

    Args:
        result: :func:`~sppdet.evaluation.voc_ap.evaluate_class`'s result for the class
            (its ``matches.order`` sorts the detections by score).
        scores: float ``[D]`` the class's detection scores, in the order evaluated.
    """
    if result.matches is None or result.n_true_positives == 0 or result.npos == 0:
        return None
    sorted_scores = np.asarray(scores, np.float64)[result.matches.order]
    precision = np.nan_to_num(result.precision, nan=0.0)
    recall = np.nan_to_num(result.recall, nan=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    cut = np.ones(sorted_scores.shape[0], dtype=bool)
    cut[:-1] = sorted_scores[1:] < sorted_scores[:-1]
    f1 = np.where(cut, f1, -1.0)
    best = int(np.argmax(f1))  # the first maximum: the highest threshold
    return OperatingPoint(score=float(sorted_scores[best]), precision=float(precision[best]),
                          recall=float(recall[best]), f1=float(f1[best]),
                          detections=best + 1)


@dataclass
class ClassChoice:
    """One class's choice.

    Attributes:
        name: the class.
        nms: the chosen suppression.
        val_ap: AP on validation of every grid setting (on this class, the others at the
            default), in grid order (``None``: the class has no positive on validation).
        positives: non-difficult validation objects of the class.
        operating_point: the F1-best threshold under the chosen NMS (``None``: no true
            positive on validation).
        win_fraction: per grid setting, in grid order, the share of bootstrap resamples of
            the validation images in which it beats :data:`DEFAULT_NMS`'s AP (``None``: the
            default itself, a class without positives, or no bootstrap run).
        scorer: the class's scores, ``svm`` or ``softmax`` (log-odds when the detector's
            scorer is ``svm``: mixed scoring).
        scorer_val_ap: with the scorer chosen, the validation AP under :data:`DEFAULT_NMS`
            of each scorer (``svm``, ``softmax``); empty when it was not chosen.
        softmax_win_fraction: with the scorer chosen, the share of the resamples in which
            softmax's AP beats the SVMs' (``None``: not chosen, no positive, no bootstrap).
    """

    name: str
    nms: ClassNMS
    val_ap: list[float | None]
    positives: int
    operating_point: OperatingPoint | None = None
    win_fraction: list[float | None] = field(default_factory=list)
    scorer: str = "svm"
    scorer_val_ap: dict[str, float | None] = field(default_factory=dict)
    softmax_win_fraction: float | None = None


@dataclass
class TuningResult:
    """The per-class choices and the validation mean AP before and after.

    Attributes:
        grid: the settings tried, in order.
        classes: one choice per class, in label order.
        default_map: validation mean AP with :data:`DEFAULT_NMS` for every class (each
            class scored by its chosen scorer, as every AP here but ``scorer_val_ap``).
        chosen_map: validation mean AP with the chosen settings together.
        chosen_ap: per class, the AP of the chosen settings together.
        confidence: the share of resamples a setting had to win to replace the default
            (0: none, the best validation AP was taken).
        resamples: bootstrap resamples of the validation images (0: none drawn).
        seed: the resamples' seed.
    """

    grid: tuple[ClassNMS, ...]
    classes: list[ClassChoice]
    default_map: float | None
    chosen_map: float | None
    chosen_ap: list[float | None] = field(default_factory=list)
    confidence: float = 0.0
    resamples: int = 0
    seed: int = 0

    def per_class_nms(self) -> tuple[ClassNMS, ...]:
        return tuple(c.nms for c in self.classes)

    def class_scorers(self) -> tuple[str, ...]:
        return tuple(c.scorer for c in self.classes)

    def default_ap(self, label: int) -> float | None:
        return self.classes[label].val_ap[self.grid.index(DEFAULT_NMS)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "grid": [g.to_params() for g in self.grid],
            "default": DEFAULT_NMS.to_params(),
            "val_map": {"default": self.default_map, "chosen": self.chosen_map},
            "bootstrap": {"confidence": self.confidence, "resamples": self.resamples,
                          "seed": self.seed},
            "classes": {c.name: {
                "nms": c.nms.to_params(),
                "val_ap": {g.describe(): ap for g, ap in zip(self.grid, c.val_ap)},
                "val_win_fraction": {g.describe(): (c.win_fraction[i] if c.win_fraction
                                                    else None)
                                     for i, g in enumerate(self.grid)},
                "val_ap_default": self.default_ap(label),
                "val_ap_chosen": self.chosen_ap[label] if self.chosen_ap else None,
                "positives": c.positives,
                "operating_point": (None if c.operating_point is None
                                    else c.operating_point.to_dict()),
                "scorer": c.scorer,
                **({"val_ap_scorer": dict(c.scorer_val_ap),
                    "softmax_win_fraction": c.softmax_win_fraction} if c.scorer_val_ap
                   else {}),
            } for label, c in enumerate(self.classes)},
        }


def _pick(aps: Sequence[float | None], grid: Sequence[ClassNMS],
          eligible: Sequence[bool] | None = None) -> ClassNMS:
    """The grid setting of highest AP among the ``eligible`` ones (``None``: all), if above
    :data:`DEFAULT_NMS`'s; ties to the default, then to the earlier setting."""
    default = grid.index(DEFAULT_NMS)
    if aps[default] is None:
        return DEFAULT_NMS
    if eligible is None:
        eligible = [True] * len(grid)
    best, best_ap = DEFAULT_NMS, float(aps[default])
    for setting, ap, allowed in zip(grid, aps, eligible):
        if allowed and ap is not None and ap > best_ap + AP_TOLERANCE:
            best, best_ap = setting, float(ap)
    return best


def _win_fractions(results: Sequence[ClassResult], default: int, positives: np.ndarray,
                   weights: np.ndarray, metric: str) -> list[float | None]:
    """Per grid setting (``results`` in grid order, the default's at index ``default``), the
    share of the resamples ``weights`` (int ``[B, n_images]``) in which its AP beats the
    default's; ``None`` for the default itself."""
    baseline = bootstrap_ap(results[default].matches, positives, weights, metric)
    return [None if i == default else
            win_fraction(bootstrap_ap(r.matches, positives, weights, metric), baseline,
                         AP_TOLERANCE)
            for i, r in enumerate(results)]


def _merge_scorers(by_scorer: Mapping[str, Sequence[ImageDetections]],
                   class_scorers: Sequence[str]) -> list[ImageDetections]:
    """Per image, each class's candidates from its scorer's list (``by_scorer``: scorer ->
    per image, the same images in the same order), by label (as detection orders them)."""
    names = [name for name in SCORERS if name in by_scorer]
    scorer_of = np.asarray(class_scorers)  # label -> its scorer
    merged = []
    for per_image in zip(*(by_scorer[name] for name in names)):
        picked = [detections.select(np.flatnonzero(scorer_of[detections.labels] == name))
                  for name, detections in zip(names, per_image)]
        boxes = np.concatenate([d.boxes for d in picked]).reshape(-1, 4)
        scores = np.concatenate([d.scores for d in picked])
        labels = np.concatenate([d.labels for d in picked])
        order = np.argsort(labels, kind="stable")
        merged.append(ImageDetections(per_image[0].image_id, boxes[order], scores[order],
                                      labels[order]))
    return merged


def choose_test_settings(ground_truth: Sequence[ImageGroundTruth],
                         candidates: Sequence[ImageDetections], classes: Sequence[str], *,
                         score_threshold: float | None, max_per_image: int | None,
                         grid: Sequence[ClassNMS] = NMS_GRID,
                         metric: str = "11point",
                         confidence: float | None = DEFAULT_CONFIDENCE,
                         resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                         scorer: str = "svm",
                         softmax_candidates: Sequence[ImageDetections] | None = None,
                         softmax_score_threshold: float | None = None) -> TuningResult:
    """Choose each class's scorer (with ``softmax_candidates``), NMS and operating point on
    validation candidates.

    Args:
        ground_truth: one record per validation image (images without objects included).
        candidates: per validation image, every scored window above ``score_threshold``
            before NMS (box-regressed), labels indexing ``classes``; scored by ``scorer``.
        classes: class names in label order.
        score_threshold: the score threshold detection uses (Soft-NMS decays towards it).
        max_per_image: the per-image cap detection uses.
        grid: the settings to try; :data:`DEFAULT_NMS` is added first when missing.
        metric: ``11point`` (VOC2007) or ``area``.
        confidence: a setting replaces :data:`DEFAULT_NMS` (and softmax the SVMs) only when it
            beats it in at least this share of the bootstrap resamples (in [0, 1]; ``0`` or
            ``None``: the best validation AP as it is, the rule before the bootstrap).
        resamples: bootstrap resamples of the validation images, the same for every setting,
            scorer and class (paired); 0 draws none (only with ``confidence`` 0: no win
            fractions).
        seed: the resamples' seed (``np.random.default_rng``).
        scorer: what scored ``candidates`` (each class's scorer without a choice).
        softmax_candidates: ``scorer`` ``svm`` only: the same images' candidates scored by the
            softmax as log-odds (:func:`sppdet.detector.model.softmax_log_odds`), above
            ``softmax_score_threshold``; given, each class's scorer is chosen first (module
            docstring) and its operating point is in its scorer's units.
        softmax_score_threshold: the threshold (log-odds) of softmax-scored classes.

    Raises:
        ConfigError: an empty grid or one listing a setting twice, ``confidence`` outside
            [0, 1], ``resamples`` negative, ``confidence`` above 0 without resamples, or
            ``softmax_candidates`` not for the SVM scorer's images.
    """
    confidence = 0.0 if confidence is None else float(confidence)
    if not 0.0 <= confidence <= 1.0:
        raise ConfigError(f"confidence must be in [0, 1], got {confidence}")
    if resamples < 0 or (confidence > 0 and resamples == 0):
        raise ConfigError(f"need resamples >= 1 for confidence {confidence:g} (0 only with "
                          f"confidence 0), got {resamples}")
    if scorer not in SCORERS:
        raise ConfigError(f"scorer must be one of {SCORERS}, got {scorer!r}")
    if softmax_candidates is not None and (scorer != "svm" or len(softmax_candidates) !=
                                           len(candidates)):
        raise ConfigError("softmax candidates choose against the SVM scorer's, one per image "
                          f"({len(softmax_candidates)} for {len(candidates)}, scorer {scorer})")
    grid = tuple(grid)
    if DEFAULT_NMS not in grid:
        grid = (DEFAULT_NMS, *grid)
    if len(set(grid)) != len(grid):
        raise ConfigError(f"the NMS grid lists a setting twice: {[g.describe() for g in grid]}")
    names = [str(c) for c in classes]
    # one set of resamples for every class, scorer and setting: each comparison is paired
    weights = resample_weights(len(ground_truth), resamples, seed)

    def thresholds(class_scorers: Sequence[str]) -> tuple[float | None, ...] | None:
        """Per class (mixed scoring), else ``None``: ``score_threshold`` for every class."""
        if "softmax" not in class_scorers or scorer == "softmax":
            return None
        return tuple(score_threshold if s == "svm" else softmax_score_threshold
                     for s in class_scorers)

    def run(per_class: tuple[ClassNMS, ...], class_scorers: Sequence[str],
            images: Sequence[ImageDetections]) -> list[ImageDetections]:
        nms = NMSSettings(score_threshold=score_threshold, max_per_image=max_per_image,
                          per_class=per_class,
                          class_score_thresholds=thresholds(class_scorers))
        return [suppress(c, nms) for c in images]

    class_scorers = [scorer] * len(names)
    scorer_stats: list[tuple[dict[str, float | None], float | None]] = []
    if softmax_candidates is not None:
        by_scorer = {"svm": candidates, "softmax": softmax_candidates}
        defaults = (DEFAULT_NMS,) * len(names)
        svm_results = evaluate_detections(ground_truth, run(defaults, class_scorers,
                                                            candidates), names,
                                          metric=metric).per_class
        for label, name in enumerate(names):
            # only this class softmax: the per-image cap counts the others as they are
            one = ["softmax" if c == label else "svm" for c in range(len(names))]
            found = class_detections_from_images(
                run(defaults, one, _merge_scorers(by_scorer, one)), len(names))[label]
            soft = evaluate_class(ground_truth, label, found, class_name=name, metric=metric)
            svm_ap, soft_ap = svm_results[label].ap, soft.ap
            win = None
            if resamples and svm_ap is not None:
                positives = positives_per_image(ground_truth, label)
                win = win_fraction(bootstrap_ap(soft.matches, positives, weights, metric),
                                   bootstrap_ap(svm_results[label].matches, positives,
                                                weights, metric), AP_TOLERANCE)
            better = (svm_ap is not None and soft_ap is not None
                      and soft_ap > svm_ap + AP_TOLERANCE
                      and (confidence == 0 or (win is not None and win >= confidence)))
            class_scorers[label] = "softmax" if better else "svm"
            scorer_stats.append(({"svm": svm_ap, "softmax": soft_ap}, win))
        candidates = _merge_scorers(by_scorer, class_scorers)

    default_evaluation = evaluate_detections(
        ground_truth, run((DEFAULT_NMS,) * len(names), class_scorers, candidates), names,
        metric=metric)
    default = default_evaluation.per_class
    default_index = grid.index(DEFAULT_NMS)
    choices = []
    for label, name in enumerate(names):
        results = []
        for setting in grid:
            if setting == DEFAULT_NMS:
                results.append(default[label])
                continue
            per_class = tuple(setting if c == label else DEFAULT_NMS for c in range(len(names)))
            found = class_detections_from_images(run(per_class, class_scorers, candidates),
                                                 len(names))[label]
            results.append(evaluate_class(ground_truth, label, found, class_name=name,
                                          metric=metric))
        aps = [r.ap for r in results]
        wins: list[float | None] = [None] * len(grid)
        if resamples and aps[default_index] is not None:
            wins = _win_fractions(results, default_index, positives_per_image(
                ground_truth, label), weights, metric)
        eligible = None if confidence == 0 else [
            w is not None and w >= confidence for w in wins]
        choice = ClassChoice(name=name, nms=_pick(aps, grid, eligible), val_ap=aps,
                             positives=default[label].npos, win_fraction=wins,
                             scorer=class_scorers[label])
        if scorer_stats:
            choice.scorer_val_ap, choice.softmax_win_fraction = scorer_stats[label]
        choices.append(choice)
    default_map = default_evaluation.mean_ap
    final = run(tuple(c.nms for c in choices), class_scorers, candidates)
    evaluation = evaluate_detections(ground_truth, final, names, metric=metric)
    by_class = class_detections_from_images(final, len(names))
    for choice, result, detections in zip(choices, evaluation.per_class, by_class):
        choice.operating_point = operating_point(result, detections.scores)
    return TuningResult(grid=grid, classes=choices, default_map=default_map,
                        chosen_map=evaluation.mean_ap,
                        chosen_ap=[r.ap for r in evaluation.per_class],
                        confidence=confidence, resamples=resamples, seed=seed)


# --- the stored file -------------------------------------------------------------------------


@dataclass(frozen=True)
class TestSettings:
    """A model's stored test settings, as ``detect`` uses them.

    Attributes:
        path: the file.
        classes: class names in label order.
        nms: per class, in label order.
        operating_scores: per class, the F1-best score threshold (``None``: none found).
        scorer, bbox_reg: the detector the settings were chosen for.
        val_split: the split they were chosen on.
        class_scorers: per class, in label order, ``svm`` or ``softmax`` (files without it:
            ``scorer`` for every class). Softmax classes of an ``svm`` detector are scored as
            log-odds (mixed scoring); their operating points are log-odds.
    """

    __test__ = False  # not a pytest test class, despite its name

    path: Path
    classes: tuple[str, ...]
    nms: tuple[ClassNMS, ...]
    operating_scores: tuple[float | None, ...]
    scorer: str
    bbox_reg: bool
    val_split: str
    class_scorers: tuple[str, ...] = ()

    def mixed_scorers(self) -> tuple[str, ...] | None:
        """The per-class scorers when some class has another than ``scorer`` (mixed scoring),
        else ``None``."""
        if all(s == self.scorer for s in self.class_scorers):
            return None
        return self.class_scorers

    def nms_settings(self, score_threshold: float | None,
                     max_per_image: int | None) -> NMSSettings:
        """The per-class NMS with the given score threshold (mixed scoring: the one given, or
        ``None`` for each class's scorer's default, :func:`class_score_thresholds`) and
        per-image cap."""
        mixed = self.mixed_scorers()
        if mixed is None:
            return NMSSettings(score_threshold=score_threshold, max_per_image=max_per_image,
                               per_class=self.nms)
        per_class = class_score_thresholds(mixed, score_threshold)
        return NMSSettings(score_threshold=per_class[mixed.index("svm")] if "svm" in mixed
                           else per_class[0], max_per_image=max_per_image, per_class=self.nms,
                           class_score_thresholds=per_class)


def settings_file_content(result: TuningResult, *, scorer: str, bbox_reg: bool, val_split: str,
                       score_threshold: float | None, max_per_image: int | None, metric: str,
                       inputs: Mapping[str, str]) -> dict[str, Any]:
    """The content of ``test_settings.json`` (``inputs``: name -> digest of each input)."""
    return {"scorer": scorer, "bbox_reg": bbox_reg, "val_split": val_split, "metric": metric,
            "score_threshold": score_threshold, "max_per_image": max_per_image,
            "inputs": dict(inputs), **result.to_dict()}


def write_test_settings_file(path: str | os.PathLike[str], content: Mapping[str, Any]) -> None:
    """Write the JSON content (the stage adds the record; NaN is refused, as JSON has none)."""
    Path(path).write_text(json.dumps(content, indent=1, allow_nan=False) + "\n")


def read_test_settings(path: str | os.PathLike[str]) -> TestSettings:
    """Read a ``test_settings.json``.

    Raises:
        ArtifactError: unreadable, or a key missing or malformed (the message names the file
            and the key, and says to rerun ``sppdet tune-detect``).
    """
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: cannot read the test settings ({exc})",
                            remedy=Remedy.rerun("tune-detect", force=True)) from exc
    key = "classes"
    try:
        per_class = content["classes"]
        names = tuple(str(n) for n in per_class)
        key = "scorer"
        scorer = str(content["scorer"])
        if scorer not in SCORERS:
            raise ValueError(f"not one of {SCORERS}")
        nms, scores, class_scorers = [], [], []
        for name in names:
            key = f"classes.{name}.nms"
            nms.append(ClassNMS.from_params(per_class[name]["nms"]))
            key = f"classes.{name}.operating_point"
            point = per_class[name]["operating_point"]
            scores.append(None if point is None else float(point["score"]))
            key = f"classes.{name}.scorer"
            # files from before the per-class choice: every class has the file's scorer
            class_scorers.append(str(per_class[name].get("scorer", scorer)))
            if class_scorers[-1] not in SCORERS or (scorer == "softmax"
                                                   and class_scorers[-1] != scorer):
                raise ValueError(f"not one of {SCORERS}, or svm for a softmax detector")
        key = "bbox_reg"
        bbox_reg = bool(content["bbox_reg"])
        key = "val_split"
        val_split = str(content["val_split"])
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as exc:
        raise ArtifactError(f"{path}: key {key!r} is missing or malformed ({exc})",
                            remedy=Remedy.rerun("tune-detect", force=True)) from exc
    return TestSettings(path=path, classes=names, nms=tuple(nms),
                        operating_scores=tuple(scores), scorer=scorer, bbox_reg=bbox_reg,
                        val_split=val_split, class_scorers=tuple(class_scorers))


def settings_mismatch(settings: TestSettings, model_inputs: Mapping[str, Any],
                      classes: Sequence[str], *, scorer: str | None,
                      bbox_reg: bool) -> str | None:
    """Why stored settings do not belong to the model as loaded now, or ``None``.

    Args:
        settings: the stored settings.
        model_inputs: the loaded model's parts, name (``fc``, ``svm``, ``bbox_reg``) ->
            :class:`~sppdet.io.records.InputRef`; each must be the one the settings' record
            names (retraining a part makes the settings stale).
        classes: the model's classes in label order.
        scorer: how the model scores windows now: ``None`` (the default) is the SVM detector
            with the settings' per-class scorers; ``svm`` or ``softmax`` given scores every
            class so, which settings with per-class scorers were not chosen for.
        bbox_reg: whether the model moves windows now.
    """
    from sppdet.io.records import read_record

    if settings.scorer != (scorer or "svm"):
        return f"they were chosen for {settings.scorer} scores, not {scorer or 'svm'} scores"
    mixed = settings.mixed_scorers()
    if scorer is not None and mixed is not None:
        softmax = [n for n, s in zip(settings.classes, mixed) if s == "softmax"]
        return (f"they score {', '.join(softmax)} with the softmax (log-odds), and the "
                f"{scorer} scorer asked for scores every class with {scorer} scores")
    if settings.bbox_reg != bbox_reg:
        return ("they were chosen " + ("with" if settings.bbox_reg else "without")
                + " box regression")
    if list(settings.classes) != list(classes):
        return f"they list classes {list(settings.classes)}, the model {list(classes)}"
    try:
        recorded = read_record(settings.path).inputs
    except ArtifactError as exc:
        return f"their record cannot be read ({exc})"
    for name, ref in model_inputs.items():
        made_with = recorded.get(name)
        if made_with is None or made_with.digest != ref.digest:
            return f"{Path(ref.path).name} changed since they were chosen"
    return None


def at_operating_points(detections: ImageDetections,
                        operating_scores: Sequence[float | None],
                        fallback: float | None) -> ImageDetections:
    """The detections scoring at least their class's operating point; a class without one
    keeps those scoring above ``fallback`` (``None``: all)."""
    if len(detections) == 0:
        return detections
    labels = detections.labels
    points = np.array([np.nan if s is None else s for s in operating_scores],
                      dtype=np.float64)[labels]
    scores = detections.scores.astype(np.float64)
    # the points are scores of float32 detections, stored as float64: compare in float64
    keep = np.where(np.isnan(points),
                    scores > (-np.inf if fallback is None else fallback), scores >= points)
    return detections.select(np.flatnonzero(keep))


def describe_scorers(classes: Sequence[str], class_scorers: Sequence[str] | None,
                     scorer: str = "svm") -> str:
    """``svm scores`` or, with mixed scoring, ``svm scores; RBC: softmax scores (log-odds)``."""
    if class_scorers is None:
        return f"{scorer} scores"
    softmax = [n for n, s in zip(classes, class_scorers) if s == "softmax"]
    if len(softmax) == len(class_scorers):
        return "softmax scores (log-odds)"
    return "svm scores; " + ", ".join(softmax) + ": softmax scores (log-odds)"


def nms_given(iou_threshold: float | None, nms_method: str | None,
              nms_sigma: float | None) -> bool:
    """Whether a detection run was given an NMS setting (then no stored settings apply)."""
    return any(v is not None for v in (iou_threshold, nms_method, nms_sigma))


def planned_class_scorers(model_dir: Path, *, scorer: str | None,
                          iou_threshold: float | None = None, nms_method: str | None = None,
                          nms_sigma: float | None = None,
                          use_test_settings: bool = True) -> tuple[str, ...] | None:
    """The per-class scorers the model's test settings would give a detection run, before
    the model is loaded (so it loads the SVMs only when a class needs them); ``None``: no
    mixed scoring. :func:`resolve_nms` decides (it checks the settings belong to the model);
    an unreadable file is its to report."""
    path = Path(model_dir) / TEST_SETTINGS_FILE
    if scorer is not None or not use_test_settings or not path.exists() or nms_given(
            iou_threshold, nms_method, nms_sigma):
        return None
    try:
        settings = read_test_settings(path)
    except ArtifactError:
        return None
    return settings.mixed_scorers() if settings.scorer == "svm" else None


def resolve_nms(model_dir: Path, model: DetectModel, *, scorer: str | None,
                use_bbox_reg: bool, score_threshold: float | None, max_per_image: int | None,
                iou_threshold: float | None = None, nms_method: str | None = None,
                nms_sigma: float | None = None, use_test_settings: bool = True
                ) -> tuple[NMSSettings, TestSettings | None, str, tuple[str, ...] | None]:
    """The NMS settings of a detection run, the stored settings used (if any), a line
    saying which settings these are and where they came from, and the per-class scorers
    (``None``: every class ``scorer``'s, ``svm`` when ``None``).

    Any of ``iou_threshold``, ``nms_method``, ``nms_sigma`` given: those (the others at their
    defaults) for every class, and no stored settings. None given: the model's
    ``test_settings.json`` when ``use_test_settings`` and it belongs to the model as loaded
    (same parts, scorer, box regression; :func:`settings_mismatch`), with its per-class
    scorers when ``scorer`` is ``None`` (the default SVM detector); else hard NMS at IoU 0.3.
    The score threshold and the cap are always the ones given (``None``: the scorer's default
    threshold; with mixed scoring, each class's scorer's, :func:`class_score_thresholds`).
    """
    base = scorer or "svm"
    nms = nms_settings(base, DEFAULT_IOU_THRESHOLD if iou_threshold is None else iou_threshold,
                       score_threshold, max_per_image, nms_method or "hard",
                       DEFAULT_SOFT_NMS_SIGMA if nms_sigma is None else nms_sigma)
    if nms_given(iou_threshold, nms_method, nms_sigma):
        return nms, None, f"{nms.describe()} for every class (given)", None
    path = Path(model_dir) / TEST_SETTINGS_FILE
    if not use_test_settings or not path.exists():
        return nms, None, f"{nms.describe()} for every class (default)", None
    settings = read_test_settings(path)
    reason = settings_mismatch(settings, model.inputs, model.classes, scorer=scorer,
                               bbox_reg=use_bbox_reg)
    if reason is not None:
        log.warning("%s is not used: %s; rerun `sppdet tune-detect` to choose them again",
                    path, reason)
        return nms, None, (f"{nms.describe()} for every class (default; {path} is not used: "
                           f"{reason}; rerun `sppdet tune-detect`)"), None
    mixed = settings.mixed_scorers()
    # mixed: the given threshold as it is, in each class's units; else each scorer's default
    tuned = settings.nms_settings(score_threshold if mixed is not None else nms.score_threshold,
                                  nms.max_per_image)
    text = (f"{tuned.describe(model.classes)} (chosen on split '{settings.val_split}': "
            f"{path})")
    if mixed is not None:
        text += f"; {describe_scorers(model.classes, mixed)} (chosen there)"
    return tuned, settings, text, mixed
