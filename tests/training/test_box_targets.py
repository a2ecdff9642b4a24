"""Tests of sppdet.training.box_targets: target encoding against torchvision's BoxCoder and
by hand, and the selection of training windows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.models.detection._utils import BoxCoder

from sppdet.errors import DataError
from sppdet.ops.boxes import box_iou
from sppdet.training.box_targets import decode, encode, paired_iou, select_training_windows


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
