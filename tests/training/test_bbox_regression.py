"""Tests of sppdet.training.bbox_regression: the per-class ridge regressors."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from sppdet.training.bbox_regression import BBoxRegressor
from sppdet.training.box_targets import decode, encode, paired_iou
from sppdet.errors import DataError, ModelError
from sppdet.training.svm.scale import estimate_feature_scale


def _random_boxes(rng, n, min_size=2.0):
    xy = rng.uniform(0, 300, size=(n, 2))
    wh = rng.uniform(min_size, 200, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


# ----------------------------------------------------------------------------------------------
# The per-class ridge regressors
# ----------------------------------------------------------------------------------------------


def _shifted_windows(rng, n, projection, noise=0.02):
    """Ground truths, proposals shifted from them by known deltas, and features that encode
    the deltas linearly (a random projection plus noise)."""
    gt = _random_boxes(rng, n, min_size=20.0)
    true_deltas = rng.uniform(-0.15, 0.15, size=(n, 4))
    # decode(P, t) = G with t = true_deltas: solve for P from G.
    gx, gy = 0.5 * (gt[:, 0] + gt[:, 2]), 0.5 * (gt[:, 1] + gt[:, 3])
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    pw, ph = gw / np.exp(true_deltas[:, 2]), gh / np.exp(true_deltas[:, 3])
    px, py = gx - true_deltas[:, 0] * pw, gy - true_deltas[:, 1] * ph
    proposals = np.stack([px - pw / 2, py - ph / 2, px + pw / 2, py + ph / 2], axis=1)
    features = true_deltas @ projection + 1.0 + noise * rng.normal(size=(n, projection.shape[1]))
    return features.astype(np.float32), proposals, gt, true_deltas


def test_regressor_recovers_a_linear_shift():
    rng = np.random.default_rng(0)
    projection = rng.normal(size=(4, 64)) * 5.0
    features, proposals, gt, _ = _shifted_windows(rng, 3000, projection)
    scale = estimate_feature_scale(features)
    regressor = BBoxRegressor().fit(
        {"car": features}, {"car": proposals}, {"car": gt}, feature_scale=scale
    )
    assert regressor.classes_ == ["car"] and regressor.num_windows_["car"] > 2000
    test_features, test_proposals, test_gt, test_deltas = _shifted_windows(rng, 500, projection)
    predicted = regressor.predict("car", test_features, test_proposals)
    before = paired_iou(test_proposals, test_gt)
    after = paired_iou(predicted, test_gt)
    assert after.mean() > 0.98 > before.mean() + 0.1
    deltas = regressor.predict_deltas("car", test_features)
    assert np.abs(deltas - test_deltas).mean() < 0.1 * np.abs(test_deltas).mean()


def _released_code_reference(x, targets, lambda_, x_test, center=True):
    """spp_train_bbox_regressor.m / spp_predict_bbox_regressor.m in numpy: bias column of 1s,
    centred targets decorrelated by V diag(1/sqrt(d + 0.001)) V' of their covariance,
    (A'A + lambda I) beta = A'y by a direct solve."""
    if center:
        mu = targets.mean(axis=0)
        centred = targets - mu
        d, v = np.linalg.eigh(centred.T @ centred / centred.shape[0])
        t = v @ np.diag(1.0 / np.sqrt(d + 0.001)) @ v.T
        t_inv = v @ np.diag(np.sqrt(d + 0.001)) @ v.T
    else:
        mu, centred, t, t_inv = np.zeros(4), targets, np.eye(4), np.eye(4)
    a = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    beta = np.linalg.solve(a.T @ a + lambda_ * np.eye(a.shape[1]), a.T @ (centred @ t))
    a_test = np.concatenate([x_test, np.ones((x_test.shape[0], 1))], axis=1)
    return (a_test @ beta) @ t_inv + mu


@pytest.mark.parametrize("whiten", [True, False])
def test_regressor_equals_the_released_code(whiten):
    rng = np.random.default_rng(5)
    projection = rng.normal(size=(4, 20))
    features, proposals, gt, _ = _shifted_windows(rng, 200, projection, noise=0.5)
    targets = encode(proposals, gt) + [0.05, -0.03, 0.1, 0.02]  # non-zero means
    gt = decode(proposals, targets)
    scale, lambda_ = 0.7, 50.0
    regressor = BBoxRegressor(lambda_=lambda_, min_iou=0.0, whiten=whiten).fit(
        {"c": features}, {"c": proposals}, {"c": gt}, feature_scale=scale
    )
    x_test = rng.normal(size=(30, 20)) + 1.0
    ours = regressor.predict_deltas("c", x_test)
    reference = _released_code_reference(
        features.astype(np.float64) * scale, targets, lambda_, x_test * scale, center=whiten
    )
    np.testing.assert_allclose(ours, reference, rtol=1e-8, atol=1e-10)
    # Centring matters (the bias is regularised), so this comparison can tell the two apart.
    other = _released_code_reference(
        features.astype(np.float64) * scale, targets, lambda_, x_test * scale, center=not whiten
    )
    assert np.abs(other - reference).max() > 1e-3


def test_classes_without_windows_are_skipped(caplog):
    rng = np.random.default_rng(2)
    projection = rng.normal(size=(4, 8))
    features, proposals, gt, _ = _shifted_windows(rng, 50, projection)
    far = proposals + 1000.0  # IoU 0 with every ground truth
    with caplog.at_level(logging.WARNING, logger="sppdet.training.bbox_regression"):
        regressor = BBoxRegressor().fit(
            {"car": features, "cow": features[:5], "dog": features[:0]},
            {"car": proposals, "cow": far[:5], "dog": proposals[:0]},
            {"car": gt, "cow": gt[:5], "dog": gt[:0]},
        )
    assert regressor.classes_ == ["car"]
    assert set(regressor.skipped_) == {"cow", "dog"}
    assert "'cow'" in caplog.text and "'dog'" in caplog.text
    # A skipped class keeps its boxes (clipped when asked); an unknown class is an error.
    kept = regressor.predict("cow", features[:3], proposals[:3])
    np.testing.assert_array_equal(kept, proposals[:3])
    clipped = regressor.predict("cow", features[:3], proposals[:3], image_size=(50, 40))
    assert clipped[:, 0::2].max() <= 50 and clipped[:, 1::2].max() <= 40
    with pytest.raises(ModelError, match="horse"):
        regressor.predict("horse", features[:3], proposals[:3])


def test_min_iou_selects_windows():
    rng = np.random.default_rng(3)
    projection = rng.normal(size=(4, 8))
    features, proposals, gt, _ = _shifted_windows(rng, 400, projection)
    iou = paired_iou(proposals, gt)
    for min_iou in (0.5, 0.6, 0.7):
        regressor = BBoxRegressor(min_iou=min_iou).fit(
            {"c": features}, {"c": proposals}, {"c": gt}
        )
        assert regressor.num_windows_["c"] == int((iou > min_iou).sum())


def test_bad_features_are_refused():
    rng = np.random.default_rng(4)
    features, proposals, gt, _ = _shifted_windows(rng, 20, rng.normal(size=(4, 8)))
    features[3, 2] = np.nan
    with pytest.raises(DataError, match="'car'"):
        BBoxRegressor().fit({"car": features}, {"car": proposals}, {"car": gt})
    with pytest.raises(DataError, match="'car'"):
        BBoxRegressor().fit({"car": features[:5]}, {"car": proposals}, {"car": gt})
