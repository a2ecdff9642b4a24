"""Per-class SVMs, each class mining its own stream of images, the classes in parallel.

joblib over a module-level worker, as scikit-learn's ``multiclass.py`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone

from sppdet.errors import ConfigError, ModelError
from sppdet.training.svm.estimator import HardNegativeSVM
from sppdet.training.svm.solver import EmptyClassError

logger = logging.getLogger(__name__)


@dataclass
class ClassSVMs:
    """The per-class SVMs of a detector.

    Attributes:
        classes: all class names, in the detector's order.
        models: fitted :class:`HardNegativeSVM` per trained class.
        skipped: class name -> why it has no SVM (no positives, no negatives). A skipped class
            gets no detections.
        feature_scale: the factor applied to features before scoring.
        stream_stats: per worker of :func:`train_class_svms_shared`, what its stream reported
            (e.g. feature timings); empty otherwise.
        worker_seconds: per worker of :func:`train_class_svms_shared`, its wall time.
    """

    classes: list[str]
    models: dict[str, HardNegativeSVM]
    skipped: dict[str, str] = field(default_factory=dict)
    feature_scale: float = 1.0
    stream_stats: list[dict[str, Any]] = field(default_factory=list)
    worker_seconds: list[float] = field(default_factory=list)

    @classmethod
    def in_class_order(cls, classes: Sequence[str], models: Mapping[str, HardNegativeSVM],
                       skipped: Mapping[str, str], feature_scale: float,
                       **worker_info: Any) -> ClassSVMs:
        """The result of a trainer, its models and skipped classes put in ``classes``' order."""
        return cls(classes=list(classes),
                   models={name: models[name] for name in classes if name in models},
                   skipped={name: skipped[name] for name in classes if name in skipped},
                   feature_scale=float(feature_scale), **worker_info)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Stack the models for saving (``numpy.savez``) and for scoring all classes at once.

        Returns:
            ``coef`` float32 ``[K, D]`` (zeros for skipped classes), ``intercept`` float32
            ``[K]``, ``trained`` bool ``[K]``, ``feature_scale`` float64 scalar. Scores of raw
            features X: ``(X * feature_scale) @ coef.T + intercept``; ignore columns where
            ``trained`` is False.
        """
        if not self.models:
            raise ModelError("no class has a trained SVM")
        dim = next(iter(self.models.values())).coef_.shape[0]
        coef = np.zeros((len(self.classes), dim), dtype=np.float32)
        intercept = np.zeros(len(self.classes), dtype=np.float32)
        trained = np.zeros(len(self.classes), dtype=bool)
        for k, name in enumerate(self.classes):
            if name in self.models:
                coef[k] = self.models[name].coef_
                intercept[k] = self.models[name].intercept_
                trained[k] = True
        return {
            "coef": coef,
            "intercept": intercept,
            "trained": trained,
            "feature_scale": np.float64(self.feature_scale),
        }


def _fit_class_svm(
    class_name: str,
    estimator: HardNegativeSVM,
    positives: np.ndarray,
    difficult: np.ndarray | None,
    negatives_factory: Callable[[str], Iterable],
    feature_scale: float,
) -> tuple[str, HardNegativeSVM | None, str | None]:
    """Worker for :func:`train_class_svms` (module-level so that joblib can pickle it)."""
    model = clone(estimator)
    try:
        model.fit(
            positives,
            negatives_factory(class_name),
            difficult=difficult,
            feature_scale=feature_scale,
        )
    except EmptyClassError as error:
        return class_name, None, str(error)
    return class_name, model, None


def split_trainable(classes: Sequence[str], positives_by_class: Mapping[str, np.ndarray]
                    ) -> tuple[list[str], dict[str, str]]:
    """The classes that have positives (in order), and why each other class gets no SVM.

    A class missing from ``positives_by_class`` or with 0 rows is skipped with a warning.

    Raises:
        ConfigError: class names repeat.
    """
    if len(set(classes)) != len(classes):
        raise ConfigError(f"class names must be unique, got {list(classes)}")
    trainable: list[str] = []
    skipped: dict[str, str] = {}
    for name in classes:
        positives = positives_by_class.get(name)
        if positives is None or np.asarray(positives).shape[0] == 0:
            skipped[name] = "no positive examples"
            logger.warning("class %r has no positive examples: no SVM, no detections", name)
        else:
            trainable.append(name)
    return trainable, skipped


def log_class_result(name: str, model: "HardNegativeSVM") -> None:
    """One log line of a trained class: retrainings, positives, cache, objective."""
    last = model.history_[-1]
    logger.info(
        "class %r: %d retrainings, %d positives, final cache %d negatives, objective %.4f",
        name, len(model.history_), model.n_positives_, last.cache_size, last.objective.total,
    )


def train_class_svms(
    classes: Sequence[str],
    positives_by_class: Mapping[str, np.ndarray],
    negatives_factory: Callable[[str], Iterable],
    *,
    estimator: HardNegativeSVM | None = None,
    difficult_by_class: Mapping[str, np.ndarray] | None = None,
    feature_scale: float = 1.0,
    n_jobs: int | None = 1,
) -> ClassSVMs:
    """Train one :class:`HardNegativeSVM` per class, the classes in parallel with joblib.

    Each class streams its own pass over the images, so every worker reads the feature cache
    once (the released code reads each image once for all classes; per-class workers trade
    that for parallelism and bounded memory per worker).

    Args:
        classes: class names.
        positives_by_class: class -> ``[P, D]`` raw features of its ground-truth boxes. A class
            missing here or with 0 rows is skipped with a warning.
        negatives_factory: ``negatives_factory(class_name)`` returns that class's iterable of
            :class:`ImageNegatives`; it is called inside the worker, so it must be picklable
            (a module-level function or a ``functools.partial`` of one) for ``n_jobs > 1``.
        estimator: the settings, as an unfitted :class:`HardNegativeSVM` (cloned per class);
            None for the defaults.
        difficult_by_class: class -> ``[P]`` bool difficult flags of its positives.
        feature_scale: factor applied to all features.
        n_jobs: joblib workers (processes); 1 runs in this process.

    Returns:
        :class:`ClassSVMs`.
    """
    trainable, skipped = split_trainable(classes, positives_by_class)
    estimator = HardNegativeSVM() if estimator is None else estimator
    jobs = [
        delayed(_fit_class_svm)(
            name, estimator, positives_by_class[name],
            None if difficult_by_class is None else difficult_by_class.get(name),
            negatives_factory, feature_scale,
        )
        for name in trainable
    ]
    models: dict[str, HardNegativeSVM] = {}
    if jobs:
        results = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs)
        for name, model, reason in results:
            if model is None:
                skipped[name] = reason
                logger.warning("class %r skipped: %s", name, reason)
                continue
            models[name] = model
            log_class_result(name, model)
    return ClassSVMs.in_class_order(classes, models, skipped, feature_scale)
