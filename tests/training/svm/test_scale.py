"""Tests of sppdet.training.svm.scale: the feature scale and its sample."""

from __future__ import annotations

import numpy as np
import pytest

from sppdet.errors import DataError
from sppdet.training.svm.scale import (
    estimate_feature_scale,
    feature_scale_from_norms,
    sample_for_scale,
)


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


def test_feature_scale_from_norms_equals_the_estimate():
    x = np.random.default_rng(0).normal(size=(50, 7))
    assert feature_scale_from_norms(np.linalg.norm(x, axis=1)) == \
        pytest.approx(estimate_feature_scale(x), rel=1e-12)
    with pytest.raises(DataError):
        feature_scale_from_norms(np.zeros(0))
    with pytest.raises(DataError):
        feature_scale_from_norms(np.zeros(3))
