"""Tests of hard-negative mining (sppdet.training.svm.estimator and .miner): traced by hand
with a scripted solver, then with the real solver."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from sppdet.errors import ConfigError, DataError
from sppdet.training.svm.estimator import HardNegativeSVM
from sppdet.training.svm.inputs import ImageNegatives
from sppdet.training.svm.miner import HardNegativeMiner
from sppdet.training.svm.scale import estimate_feature_scale
from sppdet.training.svm.solver import EmptyClassError
from tests.training.svm.toy_shared_svm_data import per_class_negatives
from tests.training.svm.toy_svm_data import toy_negatives, toy_positives


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
# The real solver through the mining loop
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


def test_miner_add_scaled_equals_add_image():
    positives = toy_positives("cat")
    results = []
    for scaled in (False, True):
        miner = HardNegativeMiner(HardNegativeSVM(retrain_every=200), positives,
                                  feature_scale=1.5)
        for item in per_class_negatives("cat"):
            if scaled:
                miner.add_scaled(item.image_id, (item.features * 1.5).astype(miner.dtype),
                                 item.proposal_index)
            else:
                miner.add_image(item)
        miner.end_pass()
        results.append(miner.finish())
    np.testing.assert_array_equal(results[0].coef_, results[1].coef_)
    assert results[0].cached_negative_keys_ == results[1].cached_negative_keys_
    assert results[0].solver_seconds_ > 0 and results[0].mining_seconds_ >= \
        results[0].solver_seconds_
