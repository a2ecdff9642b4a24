"""The SVM solver (liblinear type 3 through scikit-learn) and the primal objective it minimises.

Settings of R-CNN / SPP-net (REFERENCE.md section 6): L2-regularised hinge loss solved in the
dual, ``C = 1e-3``, a constant bias feature of 10 whose weight is regularised like every other
weight, loss weight 2 on positives.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from sppdet.errors import DataError

logger = logging.getLogger(__name__)

#: A solver takes scaled positives ``[P, D]`` and negatives ``[M, D]`` and returns the weight
#: vector ``w [D]`` and the bias ``b`` of the decision function ``x . w + b``.
Solver = Callable[[np.ndarray, np.ndarray], "tuple[np.ndarray, float]"]


class EmptyClassError(DataError):
    """A class has no positive or no negative training example, so no SVM can be trained."""


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
    return objective_from_scores(
        w, b, z_pos, z_neg, C=C, bias_feature=bias_feature, positive_weight=positive_weight
    )


def objective_from_scores(
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
