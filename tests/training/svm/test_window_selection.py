"""Tests of sppdet.training.svm.window_selection against loop references."""

from __future__ import annotations

import numpy as np
import pytest

from sppdet.errors import DataError
from sppdet.ops.boxes import box_iou
from sppdet.training.svm.window_selection import drop_overlapping_negatives, unique_window_indices


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
