"""Tests of sppdet.training.bbox_regression: target encoding, window selection, the ridge regressors."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from torchvision.models.detection._utils import BoxCoder

from sppdet.training.bbox_regression import (
    BBoxRegressor,
    decode,
    encode,
    paired_iou,
    select_training_windows,
)
from sppdet.ops.boxes import box_iou
from sppdet.errors import DataError, ModelError
from sppdet.training.svm.scale import estimate_feature_scale


def _random_boxes(rng, n, min_size=2.0):
    xy = rng.uniform(0, 300, size=(n, 2))
    wh = rng.uniform(min_size, 200, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


# ----------------------------------------------------------------------------------------------
# encode / decode
# ----------------------------------------------------------------------------------------------


def test_encode_hand_cases():
    proposals = np.array([[0.0, 0.0, 10.0, 20.0], [0.0, 0.0, 10.0, 20.0]])
    # Proposal: centre (5, 10), size 10 x 20.
    gt = np.array([[2.0, 4.0, 12.0, 24.0],  # centre (7, 14), same size
                   [0.0, 0.0, 20.0, 10.0]])  # centre (10, 5), size 20 x 10
    expected = np.array([[0.2, 0.2, 0.0, 0.0], [0.5, -0.25, math.log(2.0), math.log(0.5)]])
    np.testing.assert_allclose(encode(proposals, gt), expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(decode(proposals, expected), gt, rtol=0, atol=1e-12)


def test_encode_decode_match_torchvision_box_coder():
    # torchvision's BoxCoder uses the same conventions (w = x2 - x1, centre x1 + w / 2).
    rng = np.random.default_rng(0)
    proposals, gt = _random_boxes(rng, 200), _random_boxes(rng, 200)
    coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
    reference = coder.encode_single(torch.from_numpy(gt), torch.from_numpy(proposals)).numpy()
    np.testing.assert_allclose(encode(proposals, gt), reference, rtol=1e-12, atol=1e-12)
    deltas = rng.uniform(-1, 1, size=(200, 4))
    decoded = coder.decode_single(torch.from_numpy(deltas), torch.from_numpy(proposals)).numpy()
    np.testing.assert_allclose(decode(proposals, deltas), decoded, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_round_trips(seed):
    rng = np.random.default_rng(seed)
    # Sizes 4..204: every log size ratio stays under decode's cap of log(1000 / 16).
    proposals, gt = _random_boxes(rng, 100, min_size=4.0), _random_boxes(rng, 100)
    np.testing.assert_allclose(decode(proposals, encode(proposals, gt)), gt, atol=1e-9)
    deltas = rng.uniform(-2, 2, size=(100, 4))
    np.testing.assert_allclose(encode(proposals, decode(proposals, deltas)), deltas, atol=1e-9)


def test_encode_decode_edge_cases():
    assert encode(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0, 4)
    assert decode(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0, 4)
    with pytest.raises(DataError, match="rows \\[1\\]"):
        encode(np.array([[0, 0, 5, 5], [3, 3, 3, 9]]), np.array([[0, 0, 5, 5], [0, 0, 5, 5]]))
    with pytest.raises(DataError):
        encode(np.zeros((2, 4)), np.zeros((3, 4)))
    # A wild scale prediction is capped instead of overflowing.
    wild = decode(np.array([[0.0, 0.0, 16.0, 16.0]]), np.array([[0.0, 0.0, 1e4, 1e4]]))
    assert np.all(np.isfinite(wild))
    np.testing.assert_allclose(wild[0, 2] - wild[0, 0], 1000.0)


def test_paired_iou_is_the_diagonal_of_box_iou():
    rng = np.random.default_rng(1)
    a, b = _random_boxes(rng, 50), _random_boxes(rng, 50)
    b[:10] = a[:10] + rng.uniform(-5, 5, size=(10, 4))  # some real overlaps
    b[10] = a[10]  # IoU exactly 1
    np.testing.assert_allclose(paired_iou(a, b), np.diag(box_iou(a, b)), rtol=1e-12)
    assert paired_iou(a, b)[10] == 1.0
    assert paired_iou(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0,)


def test_select_training_windows_hand_case():
    gt = np.array([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]])
    labels = np.array([3, 7])
    proposals = np.array([
        [0.0, 0.0, 10.0, 20.0],  # IoU 100/200 = 0.5 with gt 0: not > 0.5
        [0.0, 0.0, 10.0, 19.0],  # IoU 100/190 with gt 0
        [21.0, 0.0, 30.0, 10.0],  # IoU 0.9 with gt 1
        [100.0, 100.0, 110.0, 110.0],  # no overlap
        [20.0, 0.0, 30.0, 10.0],  # the ground truth itself
    ])
    windows = select_training_windows(proposals, gt, labels)
    assert windows.index.tolist() == [1, 2, 4]
    assert windows.labels.tolist() == [3, 7, 7]
    np.testing.assert_array_equal(windows.gt_boxes, gt[[0, 1, 1]])
    np.testing.assert_allclose(windows.iou, [100 / 190, 0.9, 1.0])
    assert select_training_windows(proposals, gt, labels, min_iou=0.6).index.tolist() == [2, 4]
    empty = select_training_windows(proposals, np.zeros((0, 4)), np.zeros(0, dtype=int))
    assert empty.index.shape == (0,) and empty.gt_boxes.shape == (0, 4)


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
