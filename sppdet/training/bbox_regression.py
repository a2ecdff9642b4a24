"""Bounding-box regression, R-CNN style, as SPP-net uses it (REFERENCE.md section 7).

A proposal P is moved towards a ground-truth box G by four targets (R-CNN appendix C;
:mod:`sppdet.training.box_targets` computes them and selects the training windows).

One ridge regressor per class predicts the four targets from the pooled conv5 (SPP) features,
scaled to mean norm 20. The released SPP-net code (``spp_train_bbox_regressor.m``): training
windows with IoU > 0.5 to their best-matching ground truth of the class (R-CNN: > 0.6), lambda
4000 (R-CNN: 1000), a constant 1 appended to the features whose weight is regularised too, and
targets centred and whitened per class.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import scipy.linalg
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator
from sklearn.linear_model import Ridge
from sklearn.utils.validation import check_is_fitted

from sppdet.errors import ConfigError, DataError, ModelError
from sppdet.io.npz import save_npz
from sppdet.ops.boxes import clip_boxes
from sppdet.training.box_targets import as_boxes, decode, encode, paired_iou

logger = logging.getLogger(__name__)


def _target_statistics(targets: np.ndarray, whiten: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(mean [4], std [4])`` the targets are whitened with (zeros and ones without)."""
    if not whiten:
        return np.zeros(4), np.ones(4)
    # The released code centres the targets and decorrelates them with the inverse square
    # root of their covariance. Ridge is linear in the targets with one design matrix for
    # all four, so any invertible linear map of the centred targets, undone at test, gives
    # the same predictions; only the centring matters (the bias weight is regularised).
    # Dividing by the standard deviation keeps the same predictions and simple numbers.
    mean = targets.mean(axis=0)
    std = targets.std(axis=0)
    return mean, np.where(std > 1e-12, std, 1.0)


def _check_finite_rows(x: np.ndarray, class_name: str) -> None:
    if not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.all(np.isfinite(x), axis=1))
        raise DataError(
            f"class {class_name!r}: features contain NaN or infinite values in rows "
            f"{bad[:10].tolist()}"
        )


def _training_rows(class_name: str, features: np.ndarray, proposals: np.ndarray,
                   gt_boxes: np.ndarray, *, min_iou: float, dim: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which of a class's windows (or of a chunk of them) train its regressor, and their targets.

    Args:
        features: ``[n, D]`` raw features; proposals, gt_boxes: ``[n, 4]``.
        min_iou: a window trains the regressor if its IoU with its ground truth is above it.
        dim: the feature width ``D`` the features must have (None: any).

    Returns:
        ``(features, keep, targets)``: the features as an array, the bool mask ``[n]`` of
        the training windows, and their targets ``[keep.sum(), 4]`` (:func:`encode`).

    Raises:
        DataError: shapes that do not fit, NaN or infinite features.
    """
    x = np.asarray(features)
    p = as_boxes(proposals, f"proposals of class {class_name!r}")
    g = as_boxes(gt_boxes, f"ground-truth boxes of class {class_name!r}")
    width_ok = dim is None or (x.ndim == 2 and x.shape[1] == dim)
    if x.ndim != 2 or x.shape[0] != p.shape[0] or g.shape != p.shape or not width_ok:
        columns = "" if dim is None else f" and the features D={dim} columns"
        raise DataError(
            f"class {class_name!r}: features {x.shape}, proposals {p.shape} and ground-truth "
            f"boxes {g.shape} must have the same number of rows{columns}"
        )
    _check_finite_rows(x, class_name)
    keep = paired_iou(p, g) > min_iou
    return x, keep, encode(p[keep], g[keep])


def _design_matrix(x: np.ndarray, keep: np.ndarray, feature_scale: float) -> np.ndarray:
    """``A = [scaled features, 1]`` of the kept rows, float64 ``[m, D + 1]``, filled in place
    (no float64 copy of the features besides ``A`` itself)."""
    dim = x.shape[1]
    design = np.empty((int(np.count_nonzero(keep)), dim + 1), dtype=np.float64)
    design[:, :dim] = x[keep]
    design[:, :dim] *= feature_scale
    design[:, dim] = 1.0
    return design


def _fitted(coef: np.ndarray, mean: np.ndarray, std: np.ndarray, num_windows: int
            ) -> dict[str, np.ndarray]:
    """One class's fitted arrays from ``coef [4, D + 1]`` (weights, then the bias column)."""
    return {
        "coef": coef[:, :-1].copy(),
        "intercept": coef[:, -1].copy(),
        "target_mean": mean,
        "target_std": std,
        "num_windows": np.int64(num_windows),
    }


def _fit_class_regressor_chunked(
    class_name: str,
    chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    dim: int,
    lambda_: float,
    min_iou: float,
    whiten: bool,
    feature_scale: float,
) -> tuple[str, dict[str, np.ndarray] | None, str | None]:
    """:func:`_fit_class_regressor` from chunks of windows, in ``O(D^2)`` memory.

    Solves the same problem through the normal equations ``(A^T A + lambda I) B = A^T Y``,
    ``A = [scaled features, 1]``, accumulating ``A^T A`` and ``A^T T`` chunk by chunk, so the
    memory is one ``(D+1)^2`` matrix whatever the number of windows (scikit-learn's ``Ridge``
    needs all rows at once; its cholesky solver forms and solves the same system). Whitening
    needs the targets' mean first: ``A^T (T - 1 m) = A^T T - (A^T 1) m``, and ``A^T 1`` is
    the last column of ``A^T A``.

    Args:
        chunks: ``(features [m, D], proposals [m, 4], gt_boxes [m, 4])`` chunks.
        dim: ``D``.
        Others: as :func:`_fit_class_regressor`.
    """
    gram = np.zeros((dim + 1, dim + 1))
    cross = np.zeros((dim + 1, 4))
    kept_targets = []
    for features, proposals, gt_boxes in chunks:
        x, keep, targets = _training_rows(class_name, features, proposals, gt_boxes,
                                          min_iou=min_iou, dim=dim)
        if not keep.any():
            continue
        design = _design_matrix(x, keep, feature_scale)
        gram += design.T @ design
        cross += design.T @ targets
        kept_targets.append(targets)
    if not kept_targets:
        return class_name, None, f"no training window with IoU > {min_iou}"
    targets = np.concatenate(kept_targets)
    mean, std = _target_statistics(targets, whiten)
    rhs = (cross - gram[:, dim:] * mean) / std  # A^T (T - 1 mean) / std, [D + 1, 4]
    gram.flat[:: dim + 2] += lambda_
    coef = scipy.linalg.solve(gram, rhs, assume_a="pos", overwrite_a=True).T  # [4, D + 1]
    return class_name, _fitted(coef, mean, std, targets.shape[0]), None


class WindowSource(Protocol):
    """Box-regression windows grouped by class, readable one class at a time (e.g.
    :class:`sppdet.training.windows.RegressionWindowStore`); ``dim`` is the feature width."""

    dim: int

    def counts(self) -> Mapping[str, int]:
        """class -> number of windows."""

    def chunks(self, class_name: str, rows: int = ...) -> Iterable[
            tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(features [m, D], proposals [m, 4], gt_boxes [m, 4])`` chunks of a class."""

    def load(self, class_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All windows of a class at once."""


def _fit_class_regressor(
    class_name: str,
    features: np.ndarray,
    proposals: np.ndarray,
    gt_boxes: np.ndarray,
    *,
    lambda_: float,
    min_iou: float,
    whiten: bool,
    feature_scale: float,
) -> tuple[str, dict[str, np.ndarray] | None, str | None]:
    """Worker of :meth:`BBoxRegressor.fit` for one class (module-level so joblib can pickle it)."""
    x, keep, targets = _training_rows(class_name, features, proposals, gt_boxes,
                                      min_iou=min_iou)
    if not keep.any():
        return class_name, None, f"no training window with IoU > {min_iou}"
    mean, std = _target_statistics(targets, whiten)
    y = (targets - mean) / std
    design = _design_matrix(x, keep, feature_scale)
    # The released code solves min ||A b - y||^2 + lambda ||b||^2 (no averaging over N) with
    # A = [features, 1], the bias weight regularised too. scikit-learn's Ridge minimises
    # ||y - X w||^2 + alpha ||w||^2, also without averaging, so alpha = lambda exactly; the
    # constant column with fit_intercept=False regularises the bias as the released code does.
    ridge = Ridge(alpha=lambda_, fit_intercept=False, solver="cholesky")
    ridge.fit(design, y)
    coef = np.asarray(ridge.coef_, dtype=np.float64)  # [4, D + 1]
    return class_name, _fitted(coef, mean, std, design.shape[0]), None


class BBoxRegressor(BaseEstimator):
    """Per-class ridge box regressors on pooled conv5 features (REFERENCE.md section 7).

    Args:
        lambda_: ridge penalty on ``||w||^2`` for the un-averaged squared error (released
            SPP-net code: 4000; R-CNN: 1000). Maps to scikit-learn ``Ridge(alpha=lambda_)``.
        min_iou: a window trains the regressor if its IoU with its ground truth is
            ``> min_iou`` (SPP-net: 0.5; R-CNN: 0.6).
        whiten: centre (and scale) the targets per class, undone at prediction (the released
            code does).
        n_jobs: joblib workers for the per-class fits.

    Attributes (after ``fit``):
        classes_: the trained classes, in input order.
        skipped_: class -> why it has no regressor (no training window).
        coef_: class -> float64 ``[4, D]`` weights for scaled features.
        intercept_: class -> float64 ``[4]``.
        target_mean_, target_std_: class -> ``[4]`` whitening statistics.
        num_windows_: class -> training windows used.
        feature_scale_: the factor features are multiplied by.
    """

    def __init__(
        self,
        lambda_: float = 4000.0,
        min_iou: float = 0.5,
        whiten: bool = True,
        n_jobs: int | None = 1,
    ) -> None:
        self.lambda_ = lambda_
        self.min_iou = min_iou
        self.whiten = whiten
        self.n_jobs = n_jobs

    def fit(
        self,
        features_by_class: Mapping[str, np.ndarray],
        proposals_by_class: Mapping[str, np.ndarray],
        gt_by_class: Mapping[str, np.ndarray],
        *,
        feature_scale: float = 1.0,
    ) -> BBoxRegressor:
        """Fit one regressor per class.

        Args:
            features_by_class: class -> ``[N, D]`` raw pooled features of its candidate
                windows (any Mapping; with ``n_jobs=1`` its values are read one class at a
                time, so a lazy mapping keeps one class in memory).
            proposals_by_class: class -> ``[N, 4]`` the windows' boxes.
            gt_by_class: class -> ``[N, 4]`` the ground-truth box each window is matched to
                (:func:`sppdet.training.box_targets.select_training_windows`).
            feature_scale: factor applied to every feature (mean norm 20).

        Returns:
            self. Classes with no window of IoU > ``min_iou`` are skipped with a warning.

        Memory: a float64 copy of a class's training windows plus a ``(D+1)^2`` or ``N^2``
        Gram matrix (scikit-learn picks the smaller).
        """
        self._check_params(feature_scale)
        missing = [
            c for c in features_by_class if c not in proposals_by_class or c not in gt_by_class
        ]
        if missing:
            raise DataError(f"classes {missing} have features but no proposals or ground truth")
        settings = self._settings(feature_scale)
        results = Parallel(n_jobs=self.n_jobs)(
            delayed(_fit_class_regressor)(
                name, features_by_class[name], proposals_by_class[name], gt_by_class[name],
                **settings,
            )
            for name in features_by_class
        )
        self._set_results(results, feature_scale)
        return self

    def fit_windows(
        self,
        source: WindowSource,
        classes: Sequence[str],
        *,
        feature_scale: float = 1.0,
        max_bytes_in_memory: int = 1 << 30,
    ) -> BBoxRegressor:
        """Fit one regressor per class from windows stored class by class.

        A class whose windows fit in ``max_bytes_in_memory`` (as a float64 design matrix) is
        loaded and fitted like :meth:`fit` (scikit-learn's ``Ridge``); a larger one is fitted
        chunk by chunk through the normal equations, in ``(D+1)^2`` memory, with the same
        result up to rounding. Classes run one after the other (``n_jobs`` is not used), so
        memory holds one class.

        Args:
            source: the windows (:class:`WindowSource`).
            classes: the classes to fit, in order; a class with no window is skipped with a
                warning (its boxes are left as they are at test time).
            feature_scale: factor applied to every feature (mean norm 20).
            max_bytes_in_memory: the in-memory path's limit.

        Returns:
            self.
        """
        self._check_params(feature_scale)
        settings = self._settings(feature_scale)
        counts = source.counts()
        results = []
        for name in classes:
            n = int(counts.get(name, 0))
            if n == 0:
                results.append((name, None, f"no training window with IoU > {self.min_iou}"))
                continue
            if n * (source.dim + 1) * 8 <= max_bytes_in_memory:
                results.append(_fit_class_regressor(name, *source.load(name), **settings))
            else:
                results.append(_fit_class_regressor_chunked(name, source.chunks(name),
                                                            dim=source.dim, **settings))
        self._set_results(results, feature_scale)
        return self

    def _check_params(self, feature_scale: float) -> None:
        if not (isinstance(self.lambda_, numbers.Real) and self.lambda_ >= 0):
            raise ConfigError(f"lambda_ must be a number >= 0, got {self.lambda_!r}")
        if not (isinstance(self.min_iou, numbers.Real) and 0 <= self.min_iou < 1):
            raise ConfigError(f"min_iou must be in [0, 1), got {self.min_iou!r}")
        if not (math.isfinite(feature_scale) and feature_scale > 0):
            raise ConfigError(f"feature_scale must be a positive number, got {feature_scale!r}")

    def _settings(self, feature_scale: float) -> dict:
        return dict(
            lambda_=float(self.lambda_),
            min_iou=float(self.min_iou),
            whiten=bool(self.whiten),
            feature_scale=float(feature_scale),
        )

    def _set_results(self, results: Iterable[tuple], feature_scale: float) -> None:
        self.classes_ = []
        self.skipped_ = {}
        self.coef_, self.intercept_ = {}, {}
        self.target_mean_, self.target_std_, self.num_windows_ = {}, {}, {}
        for name, fitted, reason in results:
            if fitted is None:
                self.skipped_[name] = reason
                logger.warning("class %r: %s; its boxes are left as they are", name, reason)
                continue
            self.classes_.append(name)
            self.coef_[name] = fitted["coef"]
            self.intercept_[name] = fitted["intercept"]
            self.target_mean_[name] = fitted["target_mean"]
            self.target_std_[name] = fitted["target_std"]
            self.num_windows_[name] = int(fitted["num_windows"])
            logger.info("class %r: box regressor on %d windows", name, self.num_windows_[name])
        self.feature_scale_ = float(feature_scale)

    # -- file ----------------------------------------------------------------------------

    def save(self, path: str | Any, classes: Sequence[str]) -> None:
        """Write the regressors with ``numpy.savez`` to ``path`` (a path or a binary file).

        Keys: ``classes`` [K], ``trained`` bool [K], ``coef`` float64 [K, 4, D] (zeros where
        not trained), ``intercept``, ``target_mean``, ``target_std`` float64 [K, 4],
        ``num_windows`` int64 [K], ``feature_scale``, ``lambda_``, ``min_iou``, ``whiten``.
        Deltas of raw features X for class k: ``((X * feature_scale) @ coef[k].T +
        intercept[k]) * target_std[k] + target_mean[k]``.

        Args:
            classes: every class of the detector, in its order (skipped ones included).
        """
        check_is_fitted(self, "coef_")
        unknown = [c for c in self.coef_ if c not in classes]
        if unknown:
            raise ConfigError(f"trained classes {unknown} are not in the class list {classes}")
        dims = {c.shape[1] for c in self.coef_.values()}
        dim = dims.pop() if dims else 0
        k = len(classes)
        arrays = {
            "classes": np.asarray(list(classes), dtype=np.str_),
            "trained": np.array([c in self.coef_ for c in classes], dtype=bool),
            "coef": np.zeros((k, 4, dim)),
            "intercept": np.zeros((k, 4)),
            "target_mean": np.zeros((k, 4)),
            "target_std": np.ones((k, 4)),
            "num_windows": np.zeros(k, dtype=np.int64),
            "feature_scale": np.float64(self.feature_scale_),
            "lambda_": np.float64(self.lambda_),
            "min_iou": np.float64(self.min_iou),
            "whiten": np.bool_(self.whiten),
        }
        for i, name in enumerate(classes):
            if name in self.coef_:
                arrays["coef"][i] = self.coef_[name]
                arrays["intercept"][i] = self.intercept_[name]
                arrays["target_mean"][i] = self.target_mean_[name]
                arrays["target_std"][i] = self.target_std_[name]
                arrays["num_windows"][i] = self.num_windows_[name]
        save_npz(path, arrays)

    @classmethod
    def load(cls, path: str | Any) -> tuple[BBoxRegressor, list[str]]:
        """Read a file written by :meth:`save`; returns ``(regressor, classes)``.

        Classes stored as not trained are in ``skipped_`` (their boxes are left unchanged).

        Raises:
            ModelError: not a box-regression file.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
            classes = [str(c) for c in arrays["classes"].reshape(-1)]
            model = cls(lambda_=float(arrays["lambda_"]), min_iou=float(arrays["min_iou"]),
                        whiten=bool(arrays["whiten"]))
            results = []
            for i, name in enumerate(classes):
                if not arrays["trained"][i]:
                    results.append((name, None, "not trained (no training window)"))
                    continue
                results.append((name, {
                    "coef": np.asarray(arrays["coef"][i], dtype=np.float64),
                    "intercept": np.asarray(arrays["intercept"][i], dtype=np.float64),
                    "target_mean": np.asarray(arrays["target_mean"][i], dtype=np.float64),
                    "target_std": np.asarray(arrays["target_std"][i], dtype=np.float64),
                    "num_windows": arrays["num_windows"][i],
                }, None))
        except (OSError, KeyError, ValueError, IndexError) as exc:
            raise ModelError(f"{path}: not an sppdet box-regression file ({exc}); rerun "
                             "`sppdet train-bbox-reg`") from exc
        previous = logger.level
        logger.setLevel(logging.ERROR)  # loading is not training: no per-class messages
        try:
            model._set_results(results, float(arrays["feature_scale"]))
        finally:
            logger.setLevel(previous)
        return model, classes

    def predict_deltas(self, class_name: str, features: np.ndarray) -> np.ndarray:
        """Predicted targets ``[N, 4]`` (whitening undone) for raw features ``[N, D]``."""
        check_is_fitted(self, "coef_")
        if class_name not in self.coef_:
            raise ModelError(
                f"no box regressor for class {class_name!r}; trained classes: {self.classes_}"
            )
        coef = self.coef_[class_name]
        x = np.asarray(features)
        if x.ndim != 2 or x.shape[1] != coef.shape[1]:
            raise DataError(
                f"features for class {class_name!r}: expected [N, {coef.shape[1]}], got {x.shape}"
            )
        y = (x.astype(np.float64) * self.feature_scale_) @ coef.T + self.intercept_[class_name]
        return y * self.target_std_[class_name] + self.target_mean_[class_name]

    def predict(
        self,
        class_name: str,
        features: np.ndarray,
        proposals: np.ndarray,
        *,
        image_size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Regressed boxes for one class.

        Args:
            class_name: the class whose regressor to apply. A class that was skipped at fit
                keeps its boxes unchanged; a class never seen at fit is a ModelError.
            features: ``[N, D]`` raw pooled features of the boxes.
            proposals: ``[N, 4]`` the boxes (0-based continuous xyxy).
            image_size: ``(width, height)`` to clip the result to, or None.

        Returns:
            float64 ``[N, 4]`` boxes.
        """
        check_is_fitted(self, "coef_")
        p = as_boxes(proposals, "proposals")
        if class_name in self.skipped_:
            boxes = p.copy()
        else:
            deltas = self.predict_deltas(class_name, features)
            if deltas.shape[0] != p.shape[0]:
                raise DataError(f"{deltas.shape[0]} feature rows but {p.shape[0]} proposals")
            boxes = decode(p, deltas)
        if image_size is not None:
            boxes = clip_boxes(boxes, image_size[0], image_size[1])
        return boxes
