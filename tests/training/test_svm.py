"""Tests of sppdet.training.svm: feature scale, the liblinear solver's objective, hard-negative mining."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy.optimize import minimize

from sppdet.ops.boxes import box_iou
from sppdet.errors import ConfigError, DataError
from sppdet.training.svm import (
    EmptyClassError,
    HardNegativeSVM,
    ImageNegatives,
    drop_overlapping_negatives,
    estimate_feature_scale,
    fit_linear_svm,
    sample_for_scale,
    svm_objective,
    train_class_svms,
    unique_window_indices,
)
from tests.training.toy_svm_data import DIM, no_negatives, toy_negatives, toy_positives

# ----------------------------------------------------------------------------------------------
# Feature scale and negative selection helpers
# ----------------------------------------------------------------------------------------------


def test_estimate_feature_scale_hand_case():
    features = np.array([[3.0, 4.0], [0.0, 10.0]])  # norms 5 and 10, mean 7.5
    scale = estimate_feature_scale(features)
    assert scale == pytest.approx(20.0 / 7.5)
    assert np.linalg.norm(features * scale, axis=1).mean() == pytest.approx(20.0)
    assert estimate_feature_scale(features, target_norm=1.0) == pytest.approx(1.0 / 7.5)


@pytest.mark.parametrize(
    "features",
    [np.zeros((0, 3)), np.zeros((4, 3)), np.array([[1.0, np.nan]]), np.ones(3)],
)
def test_estimate_feature_scale_refuses_bad_input(features):
    with pytest.raises(DataError):
        estimate_feature_scale(features)


def test_sample_for_scale_is_seeded_and_bounded():
    counts = [0, 5, 300, 1, 250, 7] * 50  # 300 images
    a = sample_for_scale(counts, np.random.default_rng(3), num_images=200)
    b = sample_for_scale(counts, np.random.default_rng(3), num_images=200)
    assert [p for p, _ in a] == [p for p, _ in b]
    assert all(np.array_equal(ra, rb) for (_, ra), (_, rb) in zip(a, b))
    positions = [p for p, _ in a]
    assert positions == sorted(set(positions))
    assert len(positions) <= 200 and all(counts[p] > 0 for p in positions)
    for position, rows in a:
        assert rows.size == min(200, counts[position])
        assert np.unique(rows).size == rows.size and rows.min() >= 0
        assert rows.max() < counts[position]
    other = sample_for_scale(counts, np.random.default_rng(4), num_images=200)
    assert [p for p, _ in other] != positions


def test_sample_for_scale_takes_everything_when_small():
    sample = sample_for_scale([2, 0, 3], np.random.default_rng(0))
    assert [p for p, _ in sample] == [0, 2]
    assert [r.tolist() for _, r in sample] == [[0, 1], [0, 1, 2]]
    assert sample_for_scale([], np.random.default_rng(0)) == []


def _unique_reference(keys: np.ndarray) -> list[int]:
    seen, kept = set(), []
    for i, row in enumerate(map(tuple, keys.tolist())):
        if row not in seen:
            seen.add(row)
            kept.append(i)
    return kept


@pytest.mark.parametrize("seed", range(5))
def test_unique_window_indices_matches_loop(seed):
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 3, size=(60, 4))
    scales = rng.integers(0, 2, size=60)
    assert unique_window_indices(cells).tolist() == _unique_reference(cells)
    keyed = np.concatenate([cells, scales[:, None]], axis=1)
    assert unique_window_indices(cells, scales).tolist() == _unique_reference(keyed)


def test_unique_window_indices_empty_and_mismatch():
    assert unique_window_indices(np.zeros((0, 4), dtype=int)).shape == (0,)
    with pytest.raises(DataError):
        unique_window_indices(np.zeros((3, 4), dtype=int), np.zeros(2, dtype=int))


def _greedy_reference(boxes: np.ndarray, threshold: float) -> list[int]:
    iou = box_iou(boxes, boxes)
    kept: list[int] = []
    for i in range(boxes.shape[0]):
        if all(iou[i, j] <= threshold for j in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("seed", range(5))
def test_drop_overlapping_negatives_matches_greedy_loop(seed):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 40, size=(80, 2))
    wh = rng.uniform(5, 30, size=(80, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    assert drop_overlapping_negatives(boxes).tolist() == _greedy_reference(boxes, 0.7)
    assert drop_overlapping_negatives(boxes, iou_threshold=0.3).tolist() == _greedy_reference(
        boxes, 0.3
    )
    assert drop_overlapping_negatives(np.zeros((0, 4))).shape == (0,)


# ----------------------------------------------------------------------------------------------
# The solver: liblinear type 3 with a regularised bias feature
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Hard-negative mining, traced by hand with a scripted solver
# ----------------------------------------------------------------------------------------------


class ScriptedSolver:
    """Returns the scripted (w, b) in turn and records what each call was given."""

    def __init__(self, script):
        self.script = list(script)
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def __call__(self, positives, negatives):
        self.calls.append((positives.copy(), negatives.copy()))
        w, b = self.script[min(len(self.calls), len(self.script)) - 1]
        return np.array(w, dtype=np.float64), b


def _col(*values):
    return np.array(values, dtype=np.float64).reshape(-1, 1)


def test_mining_hand_traced():
    solver = ScriptedSolver([([1.0], 0.0), ([0.5], -0.8), ([1.0], 0.0)])
    images = [
        # First image: everything is added; then trained (w=1, b=0): -2 is evicted.
        ImageNegatives("A", _col(-2.0, -0.5, 0.3)),
        # Scores = x: -1.1 and -1.0001 are not hard (> -1.0001 is strict); 3 added (> 2):
        # retrain (w=0.5, b=-0.8): B11 (-1.25) and B14 (-1.3) are evicted.
        ImageNegatives("B", _col(-1.1, -0.9, 5.0, -1.0001, -1.0), np.arange(10, 15)),
        # Scores 0.5 x - 0.8 = -1.3, -0.3, -0.5: two added, 2 is not more than 2: no retrain.
        ImageNegatives("C", _col(-1.0, 1.0, 0.6)),
        ImageNegatives("D", np.zeros((0, 1))),  # no negatives at all
        ImageNegatives("E", _col(-3.0)),  # score -2.3: not hard
    ]
    records = []
    svm = HardNegativeSVM(retrain_every=2, solver=solver).fit(
        _col(1.0), images, on_retrain=records.append
    )
    negatives_seen = [neg.ravel().tolist() for _, neg in solver.calls]
    assert negatives_seen == [
        [-2.0, -0.5, 0.3],
        [-0.5, 0.3, -0.9, 5.0, -1.0],
        [-0.5, 0.3, 5.0, 1.0, 0.6],  # the end-of-pass retraining
    ]
    assert all(pos.ravel().tolist() == [1.0] for pos, _ in solver.calls)
    history = svm.history_
    assert records == history
    assert [r.reason for r in history] == ["first", "limit", "end"]
    assert [r.images_seen for r in history] == [1, 2, 5]
    assert [r.image_id for r in history] == ["A", "B", None]
    assert [r.num_negatives for r in history] == [3, 5, 5]
    assert [r.num_added for r in history] == [3, 3, 2]
    assert [r.num_evicted for r in history] == [1, 2, 0]
    assert [r.cache_size for r in history] == [2, 3, 5]
    assert [r.num_negative_support for r in history] == [2, 2, 5]  # z > -1
    # First retraining: z_pos = 1 (on the margin), z_neg = -2, -0.5, 0.3.
    assert history[0].objective.total == pytest.approx(0.5 + 1e-3 * (0.5 + 1.3))
    assert svm.cached_negative_keys_ == [("A", 1), ("A", 2), ("B", 12), ("C", 1), ("C", 2)]
    assert svm.coef_.tolist() == [1.0] and svm.intercept_ == 0.0
    assert svm.n_images_ == 5 and svm.n_positives_ == 1 and svm.n_dropped_by_cap_ == 0


def test_mining_second_pass_does_not_re_add_cached_negatives():
    solver = ScriptedSolver([([1.0], 0.0)])
    images = [ImageNegatives("A", _col(-2.0, -0.5, 0.3)), ImageNegatives("B", _col(0.5, -1.5))]
    svm = HardNegativeSVM(retrain_every=100, epochs=2, solver=solver).fit(_col(1.0), images)
    # Pass 1: A all (first), retrain, -2 evicted; B0 hard. Pass 2 finds only cached ones.
    assert len(solver.calls) == 2
    assert solver.calls[1][1].ravel().tolist() == [-0.5, 0.3, 0.5]
    assert svm.cached_negative_keys_ == [("A", 1), ("A", 2), ("B", 0)]
    assert [r.epoch for r in svm.history_] == [0, 1]


def test_mining_with_epochs_needs_a_reiterable():
    solver = ScriptedSolver([([1.0], 0.0)])
    with pytest.raises(ConfigError):
        HardNegativeSVM(epochs=2, solver=solver).fit(
            _col(1.0), iter([ImageNegatives("A", _col(0.0))])
        )


def test_cache_cap_drops_the_easiest(caplog):
    solver = ScriptedSolver([([1.0], 0.0)])
    images = [ImageNegatives("A", _col(0.0, 0.1)), ImageNegatives("B", _col(0.5, -0.2, 0.9))]
    with caplog.at_level(logging.WARNING, logger="sppdet.training.svm"):
        svm = HardNegativeSVM(max_cached_negatives=3, retrain_every=100, solver=solver).fit(
            _col(1.0), images
        )
    assert svm.n_dropped_by_cap_ == 2
    assert solver.calls[-1][1].ravel().tolist() == [0.1, 0.5, 0.9]
    assert svm.cached_negative_keys_ == [("A", 1), ("B", 0), ("B", 2)]
    assert "cache full" in caplog.text and "'B'" in caplog.text


def test_cache_cap_ranks_by_the_current_model():
    solver = ScriptedSolver([([1.0], 0.0), ([-1.0], 0.0), ([-1.0], 0.0)])
    images = [
        ImageNegatives("A", _col(0.0, 0.5)),  # first; w=1: no eviction
        # w=1 scores 0.2, -0.5: both hard, cache 4 > 3: B1 dropped; 2 added > 1: retrain
        # with w=-1, so the cached scores become A0 0, A1 -0.5, B0 -0.2.
        ImageNegatives("B", _col(0.2, -0.5)),
        # Score 0.3: hard; cache 4 > 3: the easiest under w=-1 is A1 (under the old w=1 it
        # would have been A0).
        ImageNegatives("C", _col(-0.3)),
    ]
    svm = HardNegativeSVM(max_cached_negatives=3, retrain_every=1, solver=solver).fit(
        _col(1.0), images
    )
    assert svm.n_dropped_by_cap_ == 2
    assert svm.cached_negative_keys_ == [("A", 0), ("B", 0), ("C", 0)]
    assert solver.calls[-1][1].ravel().tolist() == [0.0, 0.2, -0.3]


def test_cache_cap_before_any_model_keeps_a_random_subset():
    solver = ScriptedSolver([([1.0], 0.0)])
    svm = HardNegativeSVM(max_cached_negatives=4, solver=solver).fit(
        _col(1.0), [ImageNegatives("A", _col(*np.linspace(-0.9, 0.9, 10)))]
    )
    assert solver.calls[0][1].shape == (4, 1)
    keys = svm.cached_negative_keys_
    assert len(set(keys)) == 4 and all(image == "A" and 0 <= i < 10 for image, i in keys)


def test_feature_scale_is_applied_in_fit_and_in_scoring():
    solver = ScriptedSolver([([0.5], -0.25)])
    svm = HardNegativeSVM(solver=solver).fit(
        _col(2.0), [ImageNegatives("A", _col(-1.0, 3.0))], feature_scale=2.0
    )
    assert solver.calls[0][0].ravel().tolist() == [4.0]
    assert solver.calls[0][1].ravel().tolist() == [-2.0, 6.0]
    assert svm.feature_scale_ == 2.0
    np.testing.assert_allclose(svm.decision_function(_col(1.0, -3.0)), [0.75, -3.25])


def test_difficult_positives_are_a_parameter():
    positives = _col(1.0, 2.0, 3.0)
    difficult = np.array([False, True, False])
    for include, expected in ((True, [1.0, 2.0, 3.0]), (False, [1.0, 3.0])):
        solver = ScriptedSolver([([1.0], 0.0)])
        HardNegativeSVM(include_difficult=include, solver=solver).fit(
            positives, [ImageNegatives("A", _col(-1.0))], difficult=difficult
        )
        assert solver.calls[0][0].ravel().tolist() == expected


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_negatives_name_the_image(bad):
    solver = ScriptedSolver([([1.0], 0.0)])
    images = [ImageNegatives("img1", _col(-1.0)), ImageNegatives("img7", _col(0.5, bad))]
    with pytest.raises(DataError, match="img7"):
        HardNegativeSVM(solver=solver).fit(_col(1.0), images)


def test_bad_positives_and_shapes_are_refused():
    solver = ScriptedSolver([([1.0], 0.0)])
    with pytest.raises(DataError, match="positives"):
        HardNegativeSVM(solver=solver).fit(_col(np.nan), [ImageNegatives("A", _col(0.0))])
    with pytest.raises(DataError, match="'A'"):
        HardNegativeSVM(solver=solver).fit(_col(1.0), [ImageNegatives("A", np.zeros((2, 3)))])
    with pytest.raises(DataError, match="repeated"):
        HardNegativeSVM(solver=solver).fit(
            _col(1.0), [ImageNegatives("A", _col(0.0, 0.1), np.array([4, 4]))]
        )
    with pytest.raises(ConfigError):
        HardNegativeSVM(C=-1.0, solver=solver).fit(_col(1.0), [ImageNegatives("A", _col(0.0))])
    with pytest.raises(ConfigError):
        HardNegativeSVM(evict_threshold=-0.5, solver=solver).fit(
            _col(1.0), [ImageNegatives("A", _col(0.0))]
        )


def test_empty_classes_raise_empty_class_error():
    solver = ScriptedSolver([([1.0], 0.0)])
    with pytest.raises(EmptyClassError, match="positive"):
        HardNegativeSVM(solver=solver).fit(np.zeros((0, 1)), [ImageNegatives("A", _col(0.0))])
    with pytest.raises(EmptyClassError, match="negative"):
        HardNegativeSVM(solver=solver).fit(_col(1.0), [ImageNegatives("A", np.zeros((0, 1)))])
    with pytest.raises(EmptyClassError, match="negative"):
        HardNegativeSVM(solver=solver).fit(_col(1.0), [])


# ----------------------------------------------------------------------------------------------
# The real solver through the mining loop, and the per-class trainer
# ----------------------------------------------------------------------------------------------

def test_real_solver_separates_separable_toy_data():
    positives = toy_positives("cat")
    all_negatives = np.concatenate([n.features for n in toy_negatives("cat")])
    scale = estimate_feature_scale(np.concatenate([positives, all_negatives]))
    svm = HardNegativeSVM(retrain_every=200).fit(
        positives, toy_negatives("cat"), feature_scale=scale
    )
    assert (svm.decision_function(positives) > 0).all()
    assert (svm.decision_function(all_negatives) < 0).all()
    assert len(svm.history_) >= 2 and svm.history_[0].reason == "first"
    # The cache holds what was mined, not every negative: mining did prune.
    assert len(svm.cached_negative_keys_) < all_negatives.shape[0]


def test_train_class_svms_parallel_equals_serial_and_skips_empty_classes(caplog):
    classes = ["cat", "dog", "bird"]
    positives = {"cat": toy_positives("cat"), "dog": np.zeros((0, DIM), np.float32),
                 "bird": toy_positives("bird")}
    estimator = HardNegativeSVM(retrain_every=300)
    with caplog.at_level(logging.WARNING, logger="sppdet.training.svm"):
        serial = train_class_svms(classes, positives, toy_negatives, estimator=estimator,
                                  feature_scale=2.0, n_jobs=1)
    parallel = train_class_svms(classes, positives, toy_negatives, estimator=estimator,
                                feature_scale=2.0, n_jobs=2)
    assert list(serial.models) == ["cat", "bird"] == list(parallel.models)
    assert serial.skipped == {"dog": "no positive examples"} == parallel.skipped
    assert "'dog'" in caplog.text
    for name in ("cat", "bird"):
        np.testing.assert_array_equal(serial.models[name].coef_, parallel.models[name].coef_)
        assert serial.models[name].intercept_ == parallel.models[name].intercept_
    assert not hasattr(estimator, "coef_")  # the prototype is cloned, never fitted
    arrays = serial.to_arrays()
    assert arrays["coef"].shape == (3, DIM) and arrays["trained"].tolist() == [True, False, True]
    assert not arrays["coef"][1].any()
    x = toy_positives("cat")[:5]
    expected = serial.models["cat"].decision_function(x)
    stacked = (x * arrays["feature_scale"]) @ arrays["coef"].T + arrays["intercept"]
    np.testing.assert_allclose(stacked[:, 0], expected, rtol=1e-4, atol=1e-4)


def test_train_class_svms_records_a_class_without_negatives():
    result = train_class_svms(["cat"], {"cat": toy_positives("cat")}, no_negatives)
    assert result.models == {} and "no negative" in result.skipped["cat"]
