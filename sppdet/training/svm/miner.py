"""The hard-negative mining state of one class, fed one image at a time.

The algorithm is documented in :class:`~sppdet.training.svm.estimator.HardNegativeSVM`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sppdet.errors import ConfigError, DataError, ModelError
from sppdet.training.svm.inputs import ImageNegatives, check_features, unpack_negatives
from sppdet.training.svm.negative_cache import NegativeCache
from sppdet.training.svm.solver import EmptyClassError, Objective, objective_from_scores

if TYPE_CHECKING:
    from sppdet.training.svm.estimator import HardNegativeSVM

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainRecord:
    """What happened at one retraining of a :class:`HardNegativeSVM` (one ``history_`` entry).

    Attributes:
        epoch: 0-based pass over the images.
        images_seen: images consumed so far in this pass when the retraining ran.
        image_id: the last image consumed (None for the end-of-pass retraining).
        reason: ``"first"``, ``"limit"`` (more than ``retrain_every`` added) or ``"end"``.
        num_positives: positives the solver saw.
        num_negatives: cached negatives the solver saw.
        num_added: negatives added since the previous retraining.
        objective: the primal objective of the new model on the solver's data.
        num_positive_support: positives with score < 1 (margin violated or on the margin).
        num_negative_support: negatives with score > -1.
        num_evicted: cached negatives evicted after it (score < ``evict_threshold``).
        cache_size: cached negatives after eviction.
        solver_seconds: wall time of the solver call.
    """

    epoch: int
    images_seen: int
    image_id: str | None
    reason: str
    num_positives: int
    num_negatives: int
    num_added: int
    objective: Objective
    num_positive_support: int
    num_negative_support: int
    num_evicted: int
    cache_size: int
    solver_seconds: float = 0.0


class HardNegativeMiner:
    """The mining state of one class, fed one image at a time.

    :meth:`HardNegativeSVM.fit` drives one miner over a class's own stream of images;
    :func:`train_class_svms_shared` drives one miner per class over one shared stream, so that
    each image's window features are computed once for all classes (as the released code's
    loop over images, then classes, does). The algorithm is the one documented in
    :class:`HardNegativeSVM`.

    Args:
        estimator: the settings (an unfitted :class:`HardNegativeSVM`); :meth:`finish` fits it.
        positives: ``[P, D]`` raw features of the class's ground-truth boxes.
        difficult: ``[P]`` bool difficult flags, or None.
        feature_scale: factor applied to every feature.
        on_retrain: called with each :class:`RetrainRecord` as it happens.

    Attributes:
        dim: feature width ``D``.
        dtype: dtype of the scaled features the miner keeps (float64 for float64 positives,
            else float32); :meth:`add_scaled` expects it.
        solver_seconds: wall time spent in the solver so far.
        mining_seconds: wall time spent in :meth:`add_image` / :meth:`add_scaled` and the
            retrainings (scoring, caching, solving), without computing the features.

    Raises:
        EmptyClassError: no positives (after leaving out difficult ones if asked).
        DataError, ConfigError: as :meth:`HardNegativeSVM.fit`.
    """

    def __init__(
        self,
        estimator: HardNegativeSVM,
        positives: np.ndarray,
        *,
        difficult: np.ndarray | None = None,
        feature_scale: float = 1.0,
        on_retrain: Callable[[RetrainRecord], None] | None = None,
    ) -> None:
        estimator._check_params()
        if not (math.isfinite(feature_scale) and feature_scale > 0):
            raise ConfigError(f"feature_scale must be a positive number, got {feature_scale!r}")
        pos = check_features(positives, "positives")
        if difficult is not None:
            difficult = np.asarray(difficult, dtype=bool).reshape(-1)
            if difficult.shape[0] != pos.shape[0]:
                raise DataError(
                    f"difficult has {difficult.shape[0]} entries but there are {pos.shape[0]} "
                    "positives"
                )
            if not estimator.include_difficult:
                pos = pos[~difficult]
        if pos.shape[0] == 0:
            raise EmptyClassError("no positive examples: this class cannot be trained")
        self.estimator = estimator
        self.feature_scale = float(feature_scale)
        self.dim = pos.shape[1]
        self.dtype = np.dtype(np.float64 if pos.dtype == np.float64 else np.float32)
        self._pos = (pos * feature_scale).astype(self.dtype, copy=False)
        self._solver = estimator._solver()
        self._rng = np.random.default_rng(estimator.random_state)
        self._on_retrain = on_retrain
        self._cache = NegativeCache(self.dim, self.dtype)
        self._image_codes: dict[str, int] = {}
        self._model: tuple[np.ndarray, float] | None = None
        self._num_added = 0
        self._num_dropped = 0
        self._num_images = 0
        self._history: list[RetrainRecord] = []
        self._epoch = 0
        self._images_seen = 0  # in the current pass
        self._last_pass_images = 0
        self.solver_seconds = 0.0
        self.mining_seconds = 0.0

    @property
    def cache_size(self) -> int:
        """Negatives cached now."""
        return self._cache.size

    def add_image(self, item: ImageNegatives | tuple) -> None:
        """Consume one image's raw negatives (validated: shapes, finite values, identities)."""
        image_id, features, proposal_index = unpack_negatives(item, self.dim)
        scaled = (features * self.feature_scale).astype(self.dtype, copy=False)
        self.add_scaled(image_id, scaled, proposal_index)

    def add_scaled(self, image_id: str, features: np.ndarray, proposal_index: np.ndarray,
                   rows: np.ndarray | None = None) -> None:
        """Consume one image's negatives already multiplied by ``feature_scale``.

        For callers that validated the features once for many classes: ``features`` must be a
        finite ``[n, D]`` array of :attr:`dtype` and ``proposal_index`` ``[n]`` distinct ints.

        Args:
            rows: int ``[m]``, the rows of ``features`` that are this class's negatives (None:
                all). Only the rows that enter the cache are copied.
        """
        start = time.perf_counter()
        self._images_seen += 1
        self._num_images += 1
        code = self._image_codes.setdefault(image_id, len(self._image_codes))
        if (features.shape[0] if rows is None else rows.size):
            self._mine(image_id, code, features, proposal_index, rows)
        self.mining_seconds += time.perf_counter() - start

    def _mine(self, image_id: str, code: int, feats: np.ndarray, proposal_index: np.ndarray,
              rows: np.ndarray | None) -> None:
        est = self.estimator
        cache = self._cache
        index = proposal_index if rows is None else proposal_index[rows]
        if self._model is None:
            scores = np.full(index.shape[0], np.nan)
            take = np.ones(index.shape[0], dtype=bool)
        else:
            # Scoring every row and then selecting avoids copying the class's rows first.
            scores = (feats @ self._w_scoring).astype(np.float64) + self._model[1]
            if rows is not None:
                scores = scores[rows]
            take = scores > est.hard_threshold
        take &= ~cache.contains(code, index)
        if take.any():
            taken = np.flatnonzero(take) if rows is None else rows[take]
            cache.add(code, feats[taken], index[take], scores[take])
            self._num_added += int(np.count_nonzero(take))
            if cache.size > est.max_cached_negatives:
                self._num_dropped += self._drop_easiest(image_id)
        if cache.size > 0 and (self._model is None or self._num_added > est.retrain_every):
            self._retrain(self._epoch, self._images_seen, image_id,
                          "first" if self._model is None else "limit")

    def end_pass(self) -> None:
        """Mark the end of one pass over the images."""
        self._last_pass_images = self._images_seen
        self._images_seen = 0
        self._epoch += 1

    def finish(self) -> HardNegativeSVM:
        """Retrain once more if negatives were added since the last training; fit the estimator.

        Returns:
            The estimator, with the attributes documented in :class:`HardNegativeSVM`.

        Raises:
            EmptyClassError: no image brought any negative.
        """
        start = time.perf_counter()
        if self._images_seen or self._epoch == 0:  # a pass that was not closed with end_pass
            self.end_pass()
        if self._cache.size > 0 and self._num_added > 0:
            self._retrain(self._epoch - 1, self._last_pass_images, None, "end")
        self.mining_seconds += time.perf_counter() - start
        if self._model is None:
            raise EmptyClassError(
                f"no negative examples in {self._num_images} image(s): this class cannot be "
                "trained"
            )
        est = self.estimator
        est.coef_ = self._model[0]
        est.intercept_ = self._model[1]
        est.feature_scale_ = self.feature_scale
        est.history_ = self._history
        est.n_positives_ = int(self._pos.shape[0])
        est.n_images_ = self._num_images
        est.n_dropped_by_cap_ = self._num_dropped
        code_to_id = {code: image_id for image_id, code in self._image_codes.items()}
        est.cached_negative_keys_ = [
            (code_to_id[int(c)], int(p))
            for c, p in zip(self._cache.image_code, self._cache.proposal)
        ]
        est.solver_seconds_ = self.solver_seconds
        est.mining_seconds_ = self.mining_seconds
        return est

    def _retrain(self, epoch: int, images_seen: int, image_id: str | None, reason: str) -> None:
        est = self.estimator
        cache = self._cache
        pos = self._pos
        x_neg = cache.features
        start = time.perf_counter()
        w, b = self._solver(pos, x_neg)
        seconds = time.perf_counter() - start
        self.solver_seconds += seconds
        w = np.asarray(w, dtype=np.float64).reshape(-1)
        b = float(b)
        if w.shape[0] != self.dim or not (np.all(np.isfinite(w)) and math.isfinite(b)):
            raise ModelError(
                f"the SVM solver returned weights of shape {w.shape} (expected ({self.dim},)) "
                "or non-finite values"
            )
        # Scores in the features' dtype: a float64 weight vector would make numpy cast the
        # whole cache to float64 first.
        w_scoring = w.astype(self.dtype)
        z_pos = (pos @ w_scoring).astype(np.float64) + b
        z_neg = (x_neg @ w_scoring).astype(np.float64) + b
        objective = objective_from_scores(
            w, b, z_pos, z_neg,
            C=est.C, bias_feature=est.bias_feature, positive_weight=est.positive_weight,
        )
        easy = z_neg < est.evict_threshold
        num_negatives = cache.size
        cache.set_scores(z_neg)
        cache.keep(~easy)
        record = RetrainRecord(
            epoch=epoch,
            images_seen=images_seen,
            image_id=image_id,
            reason=reason,
            num_positives=pos.shape[0],
            num_negatives=num_negatives,
            num_added=self._num_added,
            objective=objective,
            num_positive_support=int(np.count_nonzero(z_pos < 1.0 + 1e-9)),
            num_negative_support=int(np.count_nonzero(z_neg > -1.0 - 1e-9)),
            num_evicted=int(np.count_nonzero(easy)),
            cache_size=cache.size,
            solver_seconds=seconds,
        )
        self._history.append(record)
        # DEBUG: one line per retraining (hundreds for 20 classes) goes to the stage's log
        # file; the console shows the per-class totals.
        logger.debug(
            "retrain %d (%s, pass %d, image %d): %d pos, %d neg (%d new); objective %.4f = "
            "%.4f (pos) + %.4f (neg) + %.4f (reg); evicted %d, cache %d; solver %.2f s",
            len(self._history), reason, epoch + 1, images_seen, record.num_positives,
            num_negatives, record.num_added, objective.total, objective.positive_loss,
            objective.negative_loss, objective.regularizer, record.num_evicted, cache.size,
            seconds,
        )
        if self._on_retrain is not None:
            self._on_retrain(record)
        self._model = (w, b)
        self._w_scoring = w_scoring
        self._num_added = 0

    def _drop_easiest(self, image_id: str) -> int:
        """Shrink the cache to ``max_cached_negatives`` rows, dropping the lowest-scoring.

        The cache keeps every row's score under the current model (set when the row is added
        and at each retraining), so ranking costs no matrix product.
        """
        cache = self._cache
        cap = self.estimator.max_cached_negatives
        excess = cache.size - cap
        if self._model is None:
            # No model to rank by yet (the first image alone exceeds the cap): a random subset.
            drop = self._rng.choice(cache.size, size=excess, replace=False)
        else:
            drop = np.argsort(cache.score, kind="stable")[:excess]
        keep = np.ones(cache.size, dtype=bool)
        keep[drop] = False
        cache.keep(keep)
        logger.warning(
            "negative cache full (max_cached_negatives=%d) after image %r: dropped the %d "
            "easiest cached negatives",
            cap, image_id, excess,
        )
        return int(excess)
