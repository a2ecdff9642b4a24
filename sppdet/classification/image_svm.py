"""Linear SVMs on full-image features (paper 3.2: VOC 2007 classification, Caltech101).

The features come from ``sppdet classify --features`` (an HDF5 file with ``features [N, D]``,
``labels`` -- ``[N]`` class indices or ``[N, K]`` 0/1 for multi-label images -- ``image_ids``
and the class names). One linear SVM per class, one-vs-rest (scikit-learn's liblinear
``LinearSVC``), on L2-normalised features by default. Scores are evaluated with per-class
average precision (VOC 2007 11-point, as the VOC classification devkit ranks images by
confidence; images whose only instances of a class are "difficult" are not told apart here)
and, for single-label data, the top-1 error of the arg-max class.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from sklearn.svm import LinearSVC

from sppdet.errors import ArtifactError, DataError, Remedy
from sppdet.evaluation.voc_ap import voc07_11point_ap


@dataclass(frozen=True)
class FeatureFile:
    """A features file of ``sppdet classify``.

    Attributes:
        features: float32 ``[N, D]``.
        targets: int8 ``[N, K]`` 0/1 (one-hot for single-label data).
        single_label: True when the file holds class indices (one label per image).
        image_ids: ``[N]`` strings.
        classes: the ``K`` class names of ``targets``' columns.
        layer: ``spp``, ``fc6`` or ``fc7``.
    """

    features: np.ndarray
    targets: np.ndarray
    single_label: bool
    image_ids: tuple[str, ...]
    classes: tuple[str, ...]
    layer: str


def read_feature_file(path: str | Path) -> FeatureFile:
    """Read a features file; errors name the file and what is missing."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such features file",
                            remedy=Remedy.rerun("classify", "DATASET", "MODEL",
                                                verb="write one: run", features="fc7"))
    try:
        with h5py.File(path, "r") as handle:
            features = handle["features"][()].astype(np.float32)
            labels = handle["labels"][()]
            image_ids = tuple(s.decode() if isinstance(s, bytes) else str(s)
                              for s in handle["image_ids"][()])
            classes = tuple(json.loads(handle.attrs["classes"]))
            layer = str(handle.attrs["layer"])
    except (OSError, KeyError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a features file of `sppdet classify` ({exc})") from exc
    if labels.ndim == 1:
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise DataError(f"{path}: labels outside [0, {len(classes)})")
        targets = np.zeros((len(labels), len(classes)), dtype=np.int8)
        targets[np.arange(len(labels)), labels.astype(np.int64)] = 1
        single = True
    else:
        targets, single = labels.astype(np.int8), False
    if features.shape[0] != targets.shape[0] or targets.shape[1] != len(classes):
        raise DataError(f"{path}: {features.shape[0]} feature rows, labels {labels.shape}, "
                        f"{len(classes)} classes do not agree")
    return FeatureFile(features, targets, single, image_ids, classes, layer)


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(norms > 0, norms, 1.0)


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """VOC 2007 11-point AP of ranking by ``scores``; None when there is no positive."""
    positives = np.asarray(positives).astype(bool)
    if not positives.any():
        return None
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = positives[order].astype(np.float64)
    true_positives = np.cumsum(hits)
    recall = true_positives / positives.sum()
    precision = true_positives / np.arange(1, len(hits) + 1)
    return voc07_11point_ap(recall, precision)


@dataclass
class ImageSVMResult:
    """Per-class AP (None for a class without test positives), mAP and top-1 error."""

    classes: tuple[str, ...]
    ap: dict[str, float | None]
    mean_ap: float
    top1_error: float | None
    C: float
    normalized: bool

    def to_dict(self) -> dict:
        return {"classes": list(self.classes), "ap": self.ap, "mean_ap": self.mean_ap,
                "top1_error": self.top1_error, "C": self.C, "normalized": self.normalized}

    def to_text(self) -> str:
        lines = [f"{name:>20s}  AP {100 * ap:6.2f}" if ap is not None
                 else f"{name:>20s}  AP      - (no test positives)"
                 for name, ap in self.ap.items()]
        lines.append(f"{'mean':>20s}  AP {100 * self.mean_ap:6.2f}")
        if self.top1_error is not None:
            lines.append(f"top-1 error {100 * self.top1_error:.2f} %")
        return "\n".join(lines)


def train_and_test(train: FeatureFile, test: FeatureFile, *, C: float = 1.0,
                   normalize: bool = True, seed: int = 0) -> ImageSVMResult:
    """One-vs-rest linear SVMs trained on ``train``, scored on ``test``.

    Raises:
        DataError: the two files differ in classes or feature length, or a class has no
            training positive or no training negative.
    """
    if train.classes != test.classes:
        raise DataError(f"train and test features have other classes: {train.classes} vs "
                        f"{test.classes}")
    if train.features.shape[1] != test.features.shape[1]:
        raise DataError(f"train and test features differ in length: "
                        f"{train.features.shape[1]} vs {test.features.shape[1]}")
    x_train = l2_normalize(train.features) if normalize else train.features
    x_test = l2_normalize(test.features) if normalize else test.features
    scores = np.zeros((len(x_test), len(train.classes)), dtype=np.float64)
    for k, name in enumerate(train.classes):
        y = train.targets[:, k]
        if y.min() == y.max():
            raise DataError(f"class {name!r} has {'no' if y.max() == 0 else 'only'} positive "
                            f"training images; an SVM needs both kinds")
        svm = LinearSVC(C=C, loss="hinge", dual=True, max_iter=20_000, random_state=seed)
        svm.fit(x_train, y)
        scores[:, k] = svm.decision_function(x_test)
    ap = {name: average_precision(scores[:, k], test.targets[:, k])
          for k, name in enumerate(train.classes)}
    defined = [value for value in ap.values() if value is not None]
    top1 = None
    if test.single_label and len(x_test):
        top1 = float(np.mean(scores.argmax(1) != test.targets.argmax(1)))
    return ImageSVMResult(train.classes, ap, float(np.mean(defined)) if defined else 0.0,
                          top1, C, normalize)
