"""Tests of sppdet.training.svm.solver: liblinear type 3 with a regularised bias feature,
against an SLSQP solve of the primal."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from sppdet.training.svm.scale import estimate_feature_scale
from sppdet.training.svm.solver import EmptyClassError, fit_linear_svm, svm_objective


def _primal_optimum(x, y, c, C, bias_feature):
    """Solve min 0.5 (||w||^2 + u^2) + C sum c_i xi_i, y_i (x_i.w + B u) >= 1 - xi_i, xi >= 0.

    The slack form of the hinge-loss primal, smooth, solved by SLSQP: the slow, obvious
    reference. Returns (w, b) with b = bias_feature * u.
    """
    n, d = x.shape

    def objective(v):
        return 0.5 * v[: d + 1] @ v[: d + 1] + C * c @ v[d + 1:]

    def gradient(v):
        return np.concatenate([v[: d + 1], C * c])

    a = np.zeros((n, d + 1 + n))
    a[:, :d] = y[:, None] * x
    a[:, d] = y * bias_feature
    a[:, d + 1:] = np.eye(n)
    constraint = {"type": "ineq", "fun": lambda v: a @ v - 1.0, "jac": lambda v: a}
    v0 = np.concatenate([np.zeros(d + 1), np.ones(n) * 2.0])
    result = minimize(
        objective, v0, jac=gradient, constraints=[constraint], method="SLSQP",
        bounds=[(None, None)] * (d + 1) + [(0, None)] * n,
        options={"ftol": 1e-12, "maxiter": 2000},
    )
    assert result.success, result.message
    return result.x[:d], bias_feature * result.x[d]


def _toy_problem(seed, n_pos, n_neg, dim, norm):
    rng = np.random.default_rng(seed)
    pos = rng.normal(0.6, 1.0, size=(n_pos, dim)) + 2.0  # + 2: the bias matters
    neg = rng.normal(-0.6, 1.0, size=(n_neg, dim)) + 2.0
    if norm is not None:
        scale = estimate_feature_scale(np.concatenate([pos, neg]), target_norm=norm)
        pos, neg = pos * scale, neg * scale
    return pos, neg


@pytest.mark.parametrize(
    "C, norm, n_pos, n_neg", [(0.5, None, 8, 12), (1e-3, 20.0, 20, 40)]
)
def test_linear_svc_minimises_the_liblinear_primal(C, norm, n_pos, n_neg):
    pos, neg = _toy_problem(0, n_pos, n_neg, 3, norm)
    x = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(n_pos), -np.ones(n_neg)])
    c = np.where(y > 0, 2.0, 1.0)
    settings = dict(C=C, bias_feature=10.0, positive_weight=2.0)
    w, b = fit_linear_svm(pos, neg, tol=1e-10, max_iter=1_000_000, **settings)
    w_ref, b_ref = _primal_optimum(x, y, c, C, 10.0)
    ours = svm_objective(w, b, pos, neg, **settings).total
    best = svm_objective(w_ref, b_ref, pos, neg, **settings).total
    assert ours == pytest.approx(best, rel=1e-6, abs=1e-10)
    # The primal is strictly convex in (w, b), so the minimiser itself must agree too.
    np.testing.assert_allclose(w, w_ref, rtol=1e-3, atol=1e-5)
    assert b == pytest.approx(b_ref, rel=1e-3, abs=1e-5)
    assert abs(b) > 1e-3  # the bias is in play, so its regularisation is tested


def test_the_objective_check_can_tell_bias_regularisations_apart():
    # The same data solved with a bias feature of 1 (b regularised as b^2 instead of
    # (b/10)^2) has another optimum; LinearSVC's bias-10 solution is clearly worse there.
    pos, neg = _toy_problem(0, 8, 12, 3, None)
    x = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(8), -np.ones(12)])
    c = np.where(y > 0, 2.0, 1.0)
    w, b = fit_linear_svm(pos, neg, C=0.5, tol=1e-10, max_iter=1_000_000)
    w1, b1 = _primal_optimum(x, y, c, 0.5, 1.0)
    at_bias_1 = dict(C=0.5, bias_feature=1.0, positive_weight=2.0)
    gap = (svm_objective(w, b, pos, neg, **at_bias_1).total
           - svm_objective(w1, b1, pos, neg, **at_bias_1).total)
    assert gap > 1e-3


def test_svm_objective_hand_case():
    objective = svm_objective(
        np.array([1.0]), 0.0, np.array([[1.0], [0.5]]), np.array([[-2.0], [-0.5], [0.3]]),
        C=1e-3, bias_feature=10.0, positive_weight=2.0,
    )
    assert objective.positive_loss == pytest.approx(1e-3 * 2 * 0.5)
    assert objective.negative_loss == pytest.approx(1e-3 * (0.5 + 1.3))
    assert objective.regularizer == pytest.approx(0.5)
    assert objective.total == pytest.approx(0.5 + 1e-3 + 1.8e-3)
    with_bias = svm_objective(np.array([0.0]), 4.0, np.zeros((0, 1)), np.zeros((0, 1)),
                              C=1.0, bias_feature=10.0, positive_weight=2.0)
    assert with_bias.total == pytest.approx(0.5 * 0.4**2)


def test_fit_linear_svm_needs_both_classes():
    with pytest.raises(EmptyClassError):
        fit_linear_svm(np.ones((3, 2)), np.zeros((0, 2)))
