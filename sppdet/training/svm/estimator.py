"""One class's linear SVM trained with hard-negative mining, as a scikit-learn estimator."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from functools import partial

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from sppdet.errors import ConfigError
from sppdet.training.svm.inputs import ImageNegatives, check_features
from sppdet.training.svm.miner import HardNegativeMiner, RetrainRecord
from sppdet.training.svm.solver import Solver, fit_linear_svm


class HardNegativeSVM(BaseEstimator):
    """A linear SVM for one class trained with hard-negative mining (REFERENCE.md section 6).

    The mining loop, as R-CNN's ``rcnn_train.m`` and SPP-net's ``spp_train.m`` run it:

    1. Until a first model exists, every negative of an image is added to the cache (in the
       released code, "the first image adds all its negatives"); the model is trained right
       after the first image that brings any negative.
    2. Later, a negative is *hard* if its score under the current model is
       ``> hard_threshold`` (-1.0001: inside or on the margin) and it is not cached already
       (identity ``(image_id, proposal_index)``); hard negatives are added.
    3. The model is retrained whenever more than ``retrain_every`` negatives have been added
       since the last training, and once at the end of the last pass if anything was added
       since the last training (the released code also retrains at the last image when
       nothing was added; that retraining sees the same cache minus evicted non-support
       vectors and gives the same model, so it is skipped here).
    4. After each retraining, cached negatives scoring ``< evict_threshold`` (-1.2) are evicted.

    Memory is bounded: the cache holds at most ``max_cached_negatives`` rows (when an image
    pushes it over, the lowest-scoring rows are dropped and a warning is logged), and the
    negatives arrive one image at a time.

    Args:
        C: SVM cost of each negative's hinge loss (R-CNN: 1e-3).
        bias_feature: value of liblinear's constant bias feature (R-CNN: 10); its weight is
            regularised.
        positive_weight: extra loss weight of positives (R-CNN: 2).
        hard_threshold: score above which a negative is hard (R-CNN: -1.0001).
        evict_threshold: score below which a cached negative is evicted (R-CNN: -1.2).
        retrain_every: retrain when more than this many negatives were added (R-CNN: 2000).
        epochs: passes over the images (the paper: one).
        max_cached_negatives: cap on the cache (rows).
        include_difficult: keep positives flagged difficult (the released code does).
        tol: liblinear stopping tolerance (0.1, liblinear's default for the dual solver).
        max_iter: liblinear's iteration cap.
        random_state: seed of liblinear's coordinate order and of the cap's tie-breaking when
            no model exists yet.
        solver: None for :func:`fit_linear_svm` with the settings above; otherwise a callable
            ``solver(positives [P, D], negatives [M, D]) -> (w [D], b)`` (for tests or another
            solver). Must be picklable to be used with ``n_jobs > 1``.

    Attributes (after ``fit``):
        coef_: float64 ``[D]`` weights for scaled features.
        intercept_: float, the bias.
        feature_scale_: the factor ``fit`` multiplied features by; ``decision_function``
            applies it too.
        history_: list of :class:`RetrainRecord`, one per retraining.
        n_positives_: positives used.
        n_images_: images consumed (over all passes).
        n_dropped_by_cap_: negatives dropped because the cache was full.
        cached_negative_keys_: ``(image_id, proposal_index)`` of the final cache, in order.
        solver_seconds_: wall time spent in the solver.
        mining_seconds_: wall time of the mining (scoring, caching and solving; not the
            computing of the features).
    """

    def __init__(
        self,
        C: float = 1e-3,
        bias_feature: float = 10.0,
        positive_weight: float = 2.0,
        hard_threshold: float = -1.0001,
        evict_threshold: float = -1.2,
        retrain_every: int = 2000,
        epochs: int = 1,
        max_cached_negatives: int = 100_000,
        include_difficult: bool = True,
        tol: float = 0.1,
        max_iter: int = 1000,
        random_state: int | None = 0,
        solver: Solver | None = None,
    ) -> None:
        self.C = C
        self.bias_feature = bias_feature
        self.positive_weight = positive_weight
        self.hard_threshold = hard_threshold
        self.evict_threshold = evict_threshold
        self.retrain_every = retrain_every
        self.epochs = epochs
        self.max_cached_negatives = max_cached_negatives
        self.include_difficult = include_difficult
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state
        self.solver = solver

    # -- parameters -----------------------------------------------------------------------

    def _check_params(self) -> None:
        for name in ("C", "bias_feature", "positive_weight", "tol"):
            value = getattr(self, name)
            if not (
                isinstance(value, numbers.Real)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value > 0
            ):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        for name in ("retrain_every", "epochs", "max_cached_negatives", "max_iter"):
            value = getattr(self, name)
            if not (
                isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1
            ):
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not self.evict_threshold < self.hard_threshold:
            raise ConfigError(
                f"evict_threshold ({self.evict_threshold}) must be below hard_threshold "
                f"({self.hard_threshold}), or just-added negatives would be evicted at once"
            )

    def _solver(self) -> Solver:
        if self.solver is not None:
            return self.solver
        return partial(
            fit_linear_svm,
            C=self.C,
            bias_feature=self.bias_feature,
            positive_weight=self.positive_weight,
            tol=self.tol,
            max_iter=self.max_iter,
            random_state=self.random_state,
        )

    # -- fit ------------------------------------------------------------------------------

    def fit(
        self,
        positives: np.ndarray,
        negatives: Iterable[ImageNegatives | tuple],
        *,
        difficult: np.ndarray | None = None,
        feature_scale: float = 1.0,
        on_retrain: Callable[[RetrainRecord], None] | None = None,
    ) -> HardNegativeSVM:
        """Mine hard negatives in one streamed pass over the images and train the SVM.

        Args:
            positives: ``[P, D]`` raw features of the class's ground-truth boxes.
            negatives: the images' negatives, one :class:`ImageNegatives` (or a tuple
                ``(image_id, features)`` / ``(image_id, features, proposal_index)``) per image.
                With ``epochs > 1`` it must be re-iterable (a list, or an object whose
                ``__iter__`` starts a new pass), not a one-shot iterator.
            difficult: ``[P]`` bool, which positives are difficult; with
                ``include_difficult=False`` those are left out. None: none is.
            feature_scale: factor applied to every feature (:func:`estimate_feature_scale`).
            on_retrain: called with each :class:`RetrainRecord` as it happens.

        Returns:
            self.

        Raises:
            DataError: non-finite features (naming the image), shapes that do not fit.
            EmptyClassError: no positives, or no negative in any image.
            ConfigError: invalid settings.
        """
        miner = HardNegativeMiner(
            self, positives, difficult=difficult, feature_scale=feature_scale,
            on_retrain=on_retrain,
        )
        if self.epochs > 1 and iter(negatives) is negatives:
            raise ConfigError(
                f"epochs={self.epochs} needs re-iterable negatives (a list or an object whose "
                "__iter__ starts a new pass), got a one-shot iterator"
            )
        for _ in range(self.epochs):
            for item in negatives:
                miner.add_image(item)
            miner.end_pass()
        return miner.finish()

    # -- predict --------------------------------------------------------------------------

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """SVM scores of raw features.

        Args:
            X: ``[N, D]`` raw (unscaled) features.

        Returns:
            float64 ``[N]`` scores ``(X * feature_scale_) . coef_ + intercept_``.
        """
        check_is_fitted(self, "coef_")
        x = check_features(X, "features to score", self.coef_.shape[0])
        return (x * self.feature_scale_) @ self.coef_ + self.intercept_
