"""Per-class linear SVMs with hard-negative mining (R-CNN's recipe, reused by SPP-net).

What this module implements (REFERENCE.md section 6; R-CNN ``rcnn_train.m`` and SPP-net
``spp_train.m``):

- **Feature scale**: one factor for all features so that their mean L2 norm is 20, estimated on
  a fixed random sample (R-CNN ``rcnn_feature_stats.m``: 200 random images x up to 200 random
  boxes): :func:`sample_for_scale`, :func:`estimate_feature_scale`.
- **Solver**: L2-regularised hinge loss solved in the dual (liblinear type 3), ``C = 1e-3``, a
  constant bias feature of 10 whose weight is regularised like every other weight, loss weight 2
  on positives: :func:`fit_linear_svm` (scikit-learn's liblinear-backed ``LinearSVC``). The
  objective it minimises is :func:`svm_objective`.
- **Hard-negative mining**: :class:`HardNegativeSVM`, one estimator per class, streaming the
  negatives image by image so that only the cache and one image's features are in memory.
- **Per-class training in parallel**: :func:`train_class_svms` (joblib over a module-level
  worker, as scikit-learn's ``multiclass.py`` does).

Features passed to ``fit`` and ``decision_function`` are the raw (unscaled) features; the scale
factor is given to ``fit`` and stored with the model (``feature_scale_``), so a model is never
applied to features on another scale.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC
from sklearn.utils.validation import check_is_fitted

from sppdet.errors import ConfigError, DataError, ModelError

logger = logging.getLogger(__name__)

#: A solver takes scaled positives ``[P, D]`` and negatives ``[M, D]`` and returns the weight
#: vector ``w [D]`` and the bias ``b`` of the decision function ``x . w + b``.
Solver = Callable[[np.ndarray, np.ndarray], "tuple[np.ndarray, float]"]


class EmptyClassError(DataError):
    """A class has no positive or no negative training example, so no SVM can be trained."""


# ----------------------------------------------------------------------------------------------
# Feature scale
# ----------------------------------------------------------------------------------------------


def sample_for_scale(
    rows_per_image: Sequence[int],
    rng: np.random.Generator,
    *,
    num_images: int = 200,
    rows_per_image_sample: int = 200,
) -> list[tuple[int, np.ndarray]]:
    """Choose the feature rows on which the feature scale is estimated.

    R-CNN ``rcnn_feature_stats.m``: ``num_images`` images drawn at random without replacement,
    and from each up to ``rows_per_image_sample`` of its boxes drawn without replacement.

    Args:
        rows_per_image: number of feature rows (boxes) of each image, in the caller's order.
        rng: a seeded generator (``numpy.random.default_rng(seed)``); the same seed gives the
            same sample.
        num_images: how many images to sample (all of them when there are fewer).
        rows_per_image_sample: how many rows to sample per image (all when there are fewer).

    Returns:
        A list of ``(image_position, row_indices)`` ordered by image position, with
        ``row_indices`` a sorted int64 array; images with no rows are left out.
    """
    counts = np.asarray(rows_per_image, dtype=np.int64).reshape(-1)
    if np.any(counts < 0):
        raise DataError(f"rows_per_image must be >= 0, got a minimum of {counts.min()}")
    if num_images < 1 or rows_per_image_sample < 1:
        raise ConfigError(
            f"num_images and rows_per_image_sample must be >= 1, got {num_images} and "
            f"{rows_per_image_sample}"
        )
    chosen = rng.choice(counts.size, size=min(num_images, counts.size), replace=False)
    sample = []
    for position in np.sort(chosen):
        n = int(counts[position])
        if n == 0:
            continue
        rows = rng.choice(n, size=min(rows_per_image_sample, n), replace=False)
        sample.append((int(position), np.sort(rows).astype(np.int64)))
    return sample


def estimate_feature_scale(features: np.ndarray, *, target_norm: float = 20.0) -> float:
    """Scale factor that makes the mean L2 norm of ``features`` equal ``target_norm``.

    R-CNN ``rcnn_scale_features.m`` multiplies every feature by ``target_norm / mean_norm``
    (target 20), with ``mean_norm`` measured on a fixed sample (:func:`sample_for_scale`).

    Args:
        features: ``[N, D]`` float array, the sampled feature rows.
        target_norm: the mean L2 norm the scaled features should have.

    Returns:
        The factor (a Python float) to multiply features by.
    """
    x = np.asarray(features)
    if x.ndim != 2:
        raise DataError(f"features must be a 2-D array [N, D], got shape {x.shape}")
    if x.shape[0] == 0:
        raise DataError("cannot estimate the feature scale from 0 feature rows")
    if not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.all(np.isfinite(x), axis=1))
        raise DataError(f"features contain NaN or infinite values (rows {bad[:10].tolist()})")
    return feature_scale_from_norms(
        np.linalg.norm(x.astype(np.float64), axis=1), target_norm=target_norm
    )


def feature_scale_from_norms(norms: np.ndarray, *, target_norm: float = 20.0) -> float:
    """:func:`estimate_feature_scale` from the rows' L2 norms alone.

    For callers that compute the sample's features image by image and keep only their norms
    (``[N]`` float, ``numpy.linalg.norm(features, axis=1)``), so the sample never has to be
    held in memory.
    """
    norms = np.asarray(norms, dtype=np.float64).reshape(-1)
    if not (math.isfinite(target_norm) and target_norm > 0):
        raise ConfigError(f"target_norm must be a positive number, got {target_norm}")
    if norms.size == 0:
        raise DataError("cannot estimate the feature scale from 0 feature rows")
    if not np.all(np.isfinite(norms)) or np.any(norms < 0):
        raise DataError("feature norms must be finite and >= 0")
    mean_norm = float(norms.mean())
    if mean_norm == 0.0:
        raise DataError("all sampled feature rows are zero; the feature scale is undefined")
    return target_norm / mean_norm


# ----------------------------------------------------------------------------------------------
# Which negatives of an image to use
# ----------------------------------------------------------------------------------------------


def unique_window_indices(cells: np.ndarray, scale_index: np.ndarray | None = None) -> np.ndarray:
    """Indices of the first window of each distinct feature-map footprint.

    The released SPP-net code (``spp_features_convX_to_poolX.m``, ``dedup``) keeps one window
    per distinct (feature-map box, scale) pair, since such windows have identical features.

    Args:
        cells: ``[N, 4]`` integer feature-map boxes (the cells each window pools from).
        scale_index: ``[N]`` index of the scale each window was pooled at, or None (one scale).

    Returns:
        Sorted int64 array of kept row indices (the first occurrence of each footprint).
    """
    cells = np.asarray(cells).reshape(-1, 4)
    keys = cells.astype(np.int64)
    if scale_index is not None:
        scale_index = np.asarray(scale_index).reshape(-1)
        if scale_index.shape[0] != cells.shape[0]:
            raise DataError(
                f"scale_index has {scale_index.shape[0]} entries but cells has "
                f"{cells.shape[0]} rows"
            )
        keys = np.concatenate([keys, scale_index.astype(np.int64)[:, None]], axis=1)
    if keys.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    _, first = np.unique(keys, axis=0, return_index=True)
    return np.sort(first).astype(np.int64)


def drop_overlapping_negatives(boxes_xyxy: np.ndarray, *, iou_threshold: float = 0.7) -> np.ndarray:
    """Keep a negative unless it overlaps an earlier kept negative by IoU > ``iou_threshold``.

    The paper's rule (remove a negative that overlaps another negative by more than 70 %),
    read greedily in the given order: torchvision's NMS with scores that decrease with the
    row index does exactly that.

    Args:
        boxes_xyxy: ``[N, 4]`` 0-based continuous boxes of one image's negatives.
        iou_threshold: IoU above which the later box is dropped.

    Returns:
        Sorted int64 array of kept row indices.
    """
    # Imported here so that the joblib workers of train_class_svms need not load torch.
    import torch
    from torchvision.ops import nms

    boxes = torch.as_tensor(np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4))
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    order_scores = -torch.arange(boxes.shape[0], dtype=torch.float64)
    keep = nms(boxes, order_scores, float(iou_threshold)).numpy()
    return np.sort(keep).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# The solver and its objective
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Objective:
    """The SVM primal objective split into its parts (R-CNN ``rcnn_train.m`` logs the same)."""

    total: float
    positive_loss: float
    negative_loss: float
    regularizer: float


def svm_objective(
    w: np.ndarray,
    b: float,
    positives: np.ndarray,
    negatives: np.ndarray,
    *,
    C: float,
    bias_feature: float,
    positive_weight: float,
) -> Objective:
    """The primal objective that liblinear type 3 with a bias feature minimises.

    ``0.5 * (||w||^2 + (b / bias_feature)^2)
    + C * positive_weight * sum_pos max(0, 1 - z) + C * sum_neg max(0, 1 + z)``,
    with ``z = x . w + b``. liblinear appends the constant ``bias_feature`` to every example and
    learns its weight ``u`` like any other (so ``b = bias_feature * u`` is regularised through
    ``u^2 = (b / bias_feature)^2``).

    Args:
        w: ``[D]`` weights.
        b: bias of the decision function.
        positives: ``[P, D]`` scaled positive features.
        negatives: ``[M, D]`` scaled negative features.
        C, bias_feature, positive_weight: the solver settings.

    Returns:
        :class:`Objective` with the total and its three parts.
    """
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    z_pos = np.asarray(positives).reshape(-1, w.size) @ w + b
    z_neg = np.asarray(negatives).reshape(-1, w.size) @ w + b
    return _objective_from_scores(
        w, b, z_pos, z_neg, C=C, bias_feature=bias_feature, positive_weight=positive_weight
    )


def _objective_from_scores(
    w: np.ndarray,
    b: float,
    z_pos: np.ndarray,
    z_neg: np.ndarray,
    *,
    C: float,
    bias_feature: float,
    positive_weight: float,
) -> Objective:
    """:func:`svm_objective` from the scores ``z = x . w + b`` already computed."""
    positive_loss = C * positive_weight * float(np.maximum(0.0, 1.0 - z_pos).sum())
    negative_loss = C * float(np.maximum(0.0, 1.0 + z_neg).sum())
    regularizer = 0.5 * float(w @ w) + 0.5 * (b / bias_feature) ** 2
    return Objective(
        total=positive_loss + negative_loss + regularizer,
        positive_loss=positive_loss,
        negative_loss=negative_loss,
        regularizer=regularizer,
    )


def fit_linear_svm(
    positives: np.ndarray,
    negatives: np.ndarray,
    *,
    C: float = 1e-3,
    bias_feature: float = 10.0,
    positive_weight: float = 2.0,
    tol: float = 0.1,
    max_iter: int = 1000,
    random_state: int | None = 0,
) -> tuple[np.ndarray, float]:
    """Train one linear SVM as R-CNN / SPP-net do (liblinear ``-s 3 -c C -B 10 -w1 2``).

    scikit-learn's ``LinearSVC(loss="hinge", dual=True)`` runs liblinear's solver type 3
    (L2-regularised L1-loss SVC, dual coordinate descent). ``intercept_scaling`` is liblinear's
    ``-B``: a constant feature of that value is appended and its weight ``u`` is regularised;
    scikit-learn reports ``intercept_ = intercept_scaling * u``. ``class_weight`` multiplies C
    per class as liblinear's ``-w1`` does. The minimised objective is :func:`svm_objective`.

    Memory: liblinear needs a float64 copy of all examples plus 16 bytes per non-zero feature
    value (its sparse node list), i.e. up to 24 bytes per feature value on top of the caller's
    arrays.

    Args:
        positives: ``[P, D]`` scaled features, P >= 1.
        negatives: ``[M, D]`` scaled features, M >= 1.
        C: liblinear's C (loss weight of each negative).
        bias_feature: value of the appended bias feature (liblinear ``-B``).
        positive_weight: extra loss weight of positives (liblinear ``-w1``).
        tol: liblinear's stopping tolerance ``eps``; 0.1 is liblinear's default for the dual
            solvers, which is what the released code ran with (no ``-e`` option).
        max_iter: liblinear's cap on outer iterations.
        random_state: seed of liblinear's coordinate order.

    Returns:
        ``(w, b)``: float64 weights ``[D]`` and the bias (a Python float).
    """
    pos = np.asarray(positives)
    neg = np.asarray(negatives)
    if pos.ndim != 2 or neg.ndim != 2 or pos.shape[1] != neg.shape[1]:
        raise DataError(
            f"positives and negatives must be 2-D with the same width, got {pos.shape} and "
            f"{neg.shape}"
        )
    if pos.shape[0] == 0 or neg.shape[0] == 0:
        raise EmptyClassError(
            f"an SVM needs both classes: got {pos.shape[0]} positives and {neg.shape[0]} "
            "negatives"
        )
    # One float64 C-ordered matrix, so that scikit-learn does not make another copy.
    x = np.empty((pos.shape[0] + neg.shape[0], pos.shape[1]), dtype=np.float64)
    x[: pos.shape[0]] = pos
    x[pos.shape[0]:] = neg
    y = np.concatenate([np.ones(pos.shape[0]), -np.ones(neg.shape[0])])
    svc = LinearSVC(
        penalty="l2",
        loss="hinge",
        dual=True,
        C=C,
        fit_intercept=True,
        intercept_scaling=bias_feature,
        class_weight={1: positive_weight, -1: 1.0},
        tol=tol,
        max_iter=max_iter,
        random_state=random_state,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        svc.fit(x, y)
    if any(issubclass(c.category, ConvergenceWarning) for c in caught):
        logger.warning(
            "liblinear stopped at max_iter=%d before reaching tol=%g (%d positives, %d negatives)",
            max_iter, tol, pos.shape[0], neg.shape[0],
        )
    # Binary LinearSVC: coef_[0] scores classes_[1], which is +1 since classes_ = [-1, 1].
    w = svc.coef_[0].astype(np.float64)
    b = float(svc.intercept_[0])
    return w, b


# ----------------------------------------------------------------------------------------------
# Hard-negative mining
# ----------------------------------------------------------------------------------------------


class ImageNegatives(NamedTuple):
    """One image's candidate negatives for one class, as the mining loop consumes them.

    Attributes:
        image_id: the image's id (used in error messages and in the identity of a negative).
        features: ``[n, D]`` raw (unscaled) features of the image's negatives: proposals with
            IoU < 0.3 to every ground-truth box of the class, feature-map duplicates removed
            (:func:`unique_window_indices`).
        proposal_index: ``[n]`` int, each row's index in the image's proposal list; a negative's
            identity is ``(image_id, proposal_index)``. None means ``0 .. n-1``.
    """

    image_id: str
    features: np.ndarray
    proposal_index: np.ndarray | None = None


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


class _NegativeCache:
    """The cached negatives of one class: a growing feature buffer, their identities and their
    scores under the current model (NaN before the first model).

    Rows keep their insertion order; eviction compacts the buffers in place.
    """

    def __init__(self, dim: int, dtype: np.dtype) -> None:
        self._features = np.empty((0, dim), dtype=dtype)
        self._image_code = np.empty(0, dtype=np.int64)
        self._proposal = np.empty(0, dtype=np.int64)
        self._score = np.empty(0, dtype=np.float64)
        self.size = 0

    @property
    def features(self) -> np.ndarray:
        return self._features[: self.size]

    @property
    def image_code(self) -> np.ndarray:
        return self._image_code[: self.size]

    @property
    def proposal(self) -> np.ndarray:
        return self._proposal[: self.size]

    @property
    def score(self) -> np.ndarray:
        return self._score[: self.size]

    def contains(self, image_code: int, proposal_index: np.ndarray) -> np.ndarray:
        """Mask ``[n]``: which of this image's proposals are cached already."""
        cached = self.proposal[self.image_code == image_code]
        return np.isin(proposal_index, cached)

    def add(
        self,
        image_code: int,
        features: np.ndarray,
        proposal_index: np.ndarray,
        score: np.ndarray,
    ) -> None:
        n = features.shape[0]
        needed = self.size + n
        if needed > self._features.shape[0]:
            capacity = max(needed, int(1.5 * self._features.shape[0]), 1024)
            self._features = _grow(self._features, capacity, self.size)
            self._image_code = _grow(self._image_code, capacity, self.size)
            self._proposal = _grow(self._proposal, capacity, self.size)
            self._score = _grow(self._score, capacity, self.size)
        self._features[self.size:needed] = features
        self._image_code[self.size:needed] = image_code
        self._proposal[self.size:needed] = proposal_index
        self._score[self.size:needed] = score
        self.size = needed

    def set_scores(self, score: np.ndarray) -> None:
        self._score[: self.size] = score

    def keep(self, mask: np.ndarray) -> None:
        """Keep the rows where ``mask`` is True, in their order."""
        index = np.flatnonzero(mask)
        n = index.size
        self._features[:n] = self._features[index]
        self._image_code[:n] = self._image_code[index]
        self._proposal[:n] = self._proposal[index]
        self._score[:n] = self._score[index]
        self.size = n


def _grow(array: np.ndarray, capacity: int, used: int) -> np.ndarray:
    grown = np.empty((capacity,) + array.shape[1:], dtype=array.dtype)
    grown[:used] = array[:used]
    return grown


def _check_features(x: Any, what: str, dim: int | None = None) -> np.ndarray:
    """A 2-D float array of finite values, or a DataError that names ``what``."""
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise DataError(f"{what}: expected a 2-D feature array [n, D], got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise DataError(f"{what}: expected {dim} feature columns, got {arr.shape[1]}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=1))
        raise DataError(
            f"{what}: features contain NaN or infinite values in {bad.size} row(s) "
            f"(first rows {bad[:10].tolist()}); rerun the feature step for it"
        )
    return arr


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
        x = _check_features(X, "features to score", self.coef_.shape[0])
        return (x * self.feature_scale_) @ self.coef_ + self.intercept_


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
        pos = _check_features(positives, "positives")
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
        self._cache = _NegativeCache(self.dim, self.dtype)
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
        image_id, features, proposal_index = _unpack_negatives(item, self.dim)
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
        objective = _objective_from_scores(
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


def _unpack_negatives(item: Any, dim: int) -> tuple[str, np.ndarray, np.ndarray]:
    """Validate one image's negatives: ``(image_id, features [n, D], proposal_index [n])``."""
    if not isinstance(item, tuple) or len(item) not in (2, 3):
        raise DataError(
            "each negatives item must be ImageNegatives(image_id, features[, proposal_index]), "
            f"got {type(item).__name__}"
        )
    image_id = str(item[0])
    features = _check_features(item[1], f"negatives of image {image_id!r}", dim)
    proposal_index = item[2] if len(item) == 3 else None
    n = features.shape[0]
    if proposal_index is None:
        return image_id, features, np.arange(n, dtype=np.int64)
    index = np.asarray(proposal_index)
    if index.shape != (n,) or (n and not np.issubdtype(index.dtype, np.integer)):
        raise DataError(
            f"negatives of image {image_id!r}: proposal_index must be {n} integers, got shape "
            f"{index.shape} of {index.dtype}"
        )
    index = index.astype(np.int64)
    if np.unique(index).size != n:
        raise DataError(f"negatives of image {image_id!r}: proposal_index has repeated entries")
    return image_id, features, index


# ----------------------------------------------------------------------------------------------
# All classes
# ----------------------------------------------------------------------------------------------


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


def _log_class_result(name: str, model: "HardNegativeSVM") -> None:
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
    if len(set(classes)) != len(classes):
        raise ConfigError(f"class names must be unique, got {list(classes)}")
    estimator = HardNegativeSVM() if estimator is None else estimator
    skipped: dict[str, str] = {}
    jobs = []
    for name in classes:
        positives = positives_by_class.get(name)
        if positives is None or np.asarray(positives).shape[0] == 0:
            skipped[name] = "no positive examples"
            logger.warning("class %r has no positive examples: no SVM, no detections", name)
            continue
        difficult = None if difficult_by_class is None else difficult_by_class.get(name)
        jobs.append(
            delayed(_fit_class_svm)(
                name, estimator, positives, difficult, negatives_factory, feature_scale
            )
        )
    models: dict[str, HardNegativeSVM] = {}
    if jobs:
        results = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs)
        for name, model, reason in results:
            if model is None:
                skipped[name] = reason
                logger.warning("class %r skipped: %s", name, reason)
                continue
            models[name] = model
            _log_class_result(name, model)
    return ClassSVMs(
        classes=list(classes),
        models={name: models[name] for name in classes if name in models},
        skipped={name: skipped[name] for name in classes if name in skipped},
        feature_scale=float(feature_scale),
    )


# ----------------------------------------------------------------------------------------------
# All classes over one shared stream of images
# ----------------------------------------------------------------------------------------------


class SharedImageNegatives(NamedTuple):
    """One image's candidate negatives for several classes, with their features computed once.

    Attributes:
        image_id: the image's id.
        features: ``[n, D]`` raw features of the image's candidate windows (the union of every
            class's negatives, feature-map duplicates removed).
        negative_masks: class name -> bool ``[n]``, which rows are negatives of that class
            (IoU < 0.3 with every ground-truth box of the class). A class missing here has no
            negative in this image.
        proposal_index: ``[n]`` int, each row's index in the image's proposal list (a
            negative's identity); None means ``0 .. n-1``.
    """

    image_id: str
    features: np.ndarray
    negative_masks: Mapping[str, np.ndarray]
    proposal_index: np.ndarray | None = None


#: ``factory(class_names)`` returns the shared stream for those classes: an iterable of
#: :class:`SharedImageNegatives` (re-iterable when ``epochs > 1``).
SharedNegativesFactory = Callable[[list[str]], Iterable[SharedImageNegatives]]


@dataclass
class GroupResult:
    """What one worker of :func:`train_class_svms_shared` returns."""

    models: dict[str, HardNegativeSVM]
    skipped: dict[str, str]
    seconds: float
    stream_stats: dict[str, Any] = field(default_factory=dict)


def _mine_class_group(
    group: list[str],
    estimator: HardNegativeSVM,
    positives_by_class: Mapping[str, np.ndarray],
    difficult_by_class: Mapping[str, np.ndarray] | None,
    negatives_factory: SharedNegativesFactory,
    feature_scale: float,
) -> GroupResult:
    """Worker of :func:`train_class_svms_shared`: one pass (per epoch) for a group of classes.

    Module-level so that joblib can pickle it.
    """
    start = time.perf_counter()
    miners: dict[str, HardNegativeMiner] = {}
    skipped: dict[str, str] = {}
    for name in group:
        difficult = None if difficult_by_class is None else difficult_by_class.get(name)
        try:
            miners[name] = HardNegativeMiner(
                clone(estimator), positives_by_class[name], difficult=difficult,
                feature_scale=feature_scale,
            )
        except EmptyClassError as error:
            skipped[name] = str(error)
    stream: Iterable[SharedImageNegatives] = []
    if miners:
        stream = negatives_factory(list(miners))
        if estimator.epochs > 1 and iter(stream) is stream:
            raise ConfigError(
                f"epochs={estimator.epochs} needs a re-iterable shared stream, got a one-shot "
                "iterator"
            )
        dims = {miner.dim for miner in miners.values()}
        dim = dims.pop() if len(dims) == 1 else None
        if dim is None:
            raise DataError("the positives of the classes have different feature widths")
        for _ in range(estimator.epochs):
            for item in stream:
                _feed_miners(miners, item, dim, feature_scale)
            for miner in miners.values():
                miner.end_pass()
    models: dict[str, HardNegativeSVM] = {}
    for name, miner in miners.items():
        try:
            models[name] = miner.finish()
        except EmptyClassError as error:
            skipped[name] = str(error)
    stats = getattr(stream, "stats", None)
    return GroupResult(models=models, skipped=skipped, seconds=time.perf_counter() - start,
                       stream_stats=dict(stats) if stats else {})


def _feed_miners(
    miners: Mapping[str, HardNegativeMiner],
    item: SharedImageNegatives,
    dim: int,
    feature_scale: float,
) -> None:
    """Validate one shared image once, scale its features once, and feed every miner."""
    if not isinstance(item, SharedImageNegatives):
        raise DataError(
            f"the shared stream must yield SharedImageNegatives, got {type(item).__name__}"
        )
    image_id, features, proposal_index = _unpack_negatives(
        (item.image_id, item.features, item.proposal_index), dim
    )
    n = features.shape[0]
    scaled_by_dtype: dict[np.dtype, np.ndarray] = {}
    empty_index = np.zeros(0, dtype=np.int64)
    for name, miner in miners.items():
        mask = item.negative_masks.get(name)
        if mask is None:
            miner.add_scaled(image_id, np.zeros((0, dim), miner.dtype), empty_index)
            continue
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (n,):
            raise DataError(
                f"image {image_id!r}: the negative mask of class {name!r} must be bool [{n}], "
                f"got {mask.dtype} {mask.shape}"
            )
        scaled = scaled_by_dtype.get(miner.dtype)
        if scaled is None:
            scaled = (features * feature_scale).astype(miner.dtype, copy=False)
            scaled_by_dtype[miner.dtype] = scaled
        miner.add_scaled(image_id, scaled, proposal_index,
                         None if mask.all() else np.flatnonzero(mask))


def train_class_svms_shared(
    classes: Sequence[str],
    positives_by_class: Mapping[str, np.ndarray],
    negatives_factory: SharedNegativesFactory,
    *,
    estimator: HardNegativeSVM | None = None,
    difficult_by_class: Mapping[str, np.ndarray] | None = None,
    feature_scale: float = 1.0,
    n_jobs: int | None = 1,
    executor: Any = None,
) -> ClassSVMs:
    """Train one :class:`HardNegativeSVM` per class, every class of a worker on one stream.

    :func:`train_class_svms` gives each class its own pass over the images, so each image's
    window features are computed once per class; when computing them (SPP pooling + fc layers)
    costs more than mining, that is K times the work. Here the classes are split into
    ``n_jobs`` groups (round robin); each group runs in one worker that makes one pass over
    the images per epoch, computing each image's features once and feeding every class's
    :class:`HardNegativeMiner` (the released code's loop: images outside, classes inside).
    Features are computed ``n_jobs`` times in all. Each class sees the same negatives in the
    same order as with :func:`train_class_svms`, so the models are the same.

    Args:
        classes: class names.
        positives_by_class: class -> ``[P, D]`` raw features of its ground-truth boxes; a
            class missing here or with 0 rows is skipped with a warning.
        negatives_factory: ``negatives_factory(class_names)`` returns the shared stream of
            :class:`SharedImageNegatives` for those classes; called inside the worker, so it
            must be picklable for ``n_jobs > 1``. If the returned iterable has a ``stats``
            attribute (a dict, e.g. feature timings), it is returned in
            ``ClassSVMs.stream_stats``.
        estimator: the settings, as an unfitted :class:`HardNegativeSVM`; None for defaults.
        difficult_by_class: class -> ``[P]`` bool difficult flags of its positives.
        feature_scale: factor applied to all features.
        n_jobs: worker processes (at most one per trainable class); 1 runs in this process.
        executor: runs the groups (a :class:`sppdet.parallel.executors.Executor`, e.g. a Dask
            cluster) instead of joblib's ``n_jobs`` processes.

    Returns:
        :class:`ClassSVMs`, with ``stream_stats`` (one dict per worker) and ``worker_seconds``.
    """
    if len(set(classes)) != len(classes):
        raise ConfigError(f"class names must be unique, got {list(classes)}")
    estimator = HardNegativeSVM() if estimator is None else estimator
    skipped: dict[str, str] = {}
    trainable = []
    for name in classes:
        positives = positives_by_class.get(name)
        if positives is None or np.asarray(positives).shape[0] == 0:
            skipped[name] = "no positive examples"
            logger.warning("class %r has no positive examples: no SVM, no detections", name)
        else:
            trainable.append(name)
    workers = max(1, min(int(n_jobs or 1), len(trainable)))
    groups = [trainable[i::workers] for i in range(workers)] if trainable else []
    arguments = [
        (
            group, estimator, {name: positives_by_class[name] for name in group},
            None if difficult_by_class is None
            else {n: difficult_by_class[n] for n in group if n in difficult_by_class},
            negatives_factory, feature_scale,
        )
        for group in groups
    ]
    if len(arguments) <= 1:
        results = [_mine_class_group(*args) for args in arguments]
    elif executor is not None:
        results = list(executor.imap(_mine_class_group, arguments))
    else:
        results = Parallel(n_jobs=len(arguments))(
            delayed(_mine_class_group)(*args) for args in arguments
        )
    models: dict[str, HardNegativeSVM] = {}
    for result in results:
        models.update(result.models)
        for name, reason in result.skipped.items():
            skipped[name] = reason
            logger.warning("class %r skipped: %s", name, reason)
    for name, model in models.items():
        _log_class_result(name, model)
    return ClassSVMs(
        classes=list(classes),
        models={name: models[name] for name in classes if name in models},
        skipped={name: skipped[name] for name in classes if name in skipped},
        feature_scale=float(feature_scale),
        stream_stats=[r.stream_stats for r in results],
        worker_seconds=[r.seconds for r in results],
    )


# ----------------------------------------------------------------------------------------------
# The trained SVMs as a file
# ----------------------------------------------------------------------------------------------


@dataclass
class SVMWeights:
    """The per-class SVMs of a detector as stored in ``svm.npz`` and used at test time.

    Attributes:
        classes: class names, in the detector's order (``K``).
        weights: float32 ``[K, D]``, weights for *scaled* features (zeros where not trained).
        bias: float32 ``[K]``.
        trained: bool ``[K]``; a class without an SVM gets no detections.
        feature_scale: factor raw features are multiplied by before scoring (mean norm 20).
        layer: the feature layer the SVMs were trained on (``fc7``, ``fc6`` or ``pool5``).
    """

    classes: list[str]
    weights: np.ndarray
    bias: np.ndarray
    trained: np.ndarray
    feature_scale: float
    layer: str

    @classmethod
    def from_class_svms(cls, svms: ClassSVMs, layer: str) -> SVMWeights:
        arrays = svms.to_arrays()
        return cls(classes=list(svms.classes), weights=arrays["coef"],
                   bias=arrays["intercept"], trained=arrays["trained"],
                   feature_scale=float(arrays["feature_scale"]), layer=str(layer))

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Scores of raw features for every class.

        Args:
            features: ``[N, D]`` raw (unscaled) features of ``layer``.

        Returns:
            float32 ``[N, K]`` ``(features * feature_scale) @ weights.T + bias``; ``-inf`` in
            the columns of classes without an SVM.
        """
        x = _check_features(features, "features to score", self.weights.shape[1])
        scores = (x.astype(np.float32) * np.float32(self.feature_scale)) @ self.weights.T
        scores += self.bias
        scores[:, ~self.trained] = -np.inf
        return scores

    def save(self, path: str | Any) -> None:
        """Write the arrays with ``numpy.savez`` (keys: weights, bias, trained, feature_scale,
        layer, classes) to ``path`` (a path or a binary file object)."""
        arrays = dict(
            weights=np.asarray(self.weights, dtype=np.float32),
            bias=np.asarray(self.bias, dtype=np.float32),
            trained=np.asarray(self.trained, dtype=bool),
            feature_scale=np.float64(self.feature_scale),
            layer=np.str_(self.layer),
            classes=np.asarray(self.classes, dtype=np.str_),
        )
        if isinstance(path, (str, bytes)) or hasattr(path, "__fspath__"):
            with open(path, "wb") as handle:
                np.savez(handle, **arrays)
        else:
            np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str | Any) -> SVMWeights:
        """Read a file written by :meth:`save`.

        Raises:
            ModelError: the file is not an SVM weights file or its arrays do not fit.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                weights = np.asarray(data["weights"], dtype=np.float32)
                model = cls(classes=[str(c) for c in data["classes"].reshape(-1)],
                            weights=weights, bias=np.asarray(data["bias"], dtype=np.float32),
                            trained=np.asarray(data["trained"], dtype=bool),
                            feature_scale=float(data["feature_scale"]),
                            layer=str(data["layer"]))
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"{path}: not an sppdet SVM weights file ({exc}); rerun "
                             "`sppdet train-svm`") from exc
        k = len(model.classes)
        if (model.weights.ndim != 2 or model.weights.shape[0] != k or model.bias.shape != (k,)
                or model.trained.shape != (k,)):
            raise ModelError(f"{path}: arrays of mismatched shapes (weights "
                             f"{model.weights.shape}, bias {model.bias.shape}, {k} classes)")
        return model
