"""Window -> feature-map cell mapping: the paper's formulas, the released code's, brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sppdet.errors import ConfigError, DataError
from sppdet.ops.window_mapping import RELEASED_ZF5_CELL_CENTER, map_windows_to_cells

STRIDE = 16
PAPER_ZF5_CENTER = 0.5  # floor(p/2) padding: cell x' centred on pixel index 16 x'


def paper_formula_cells(box, size: int) -> tuple[int, int]:
    """One axis of the paper's appendix on the edge pixels' 0-based indices; collapse, clamp."""
    left_pixel, right_pixel = box[0], box[1] - 1
    start = math.floor(left_pixel / STRIDE) + 1
    end = math.ceil(right_pixel / STRIDE) - 1
    if start > end:
        start = end = (start + end) // 2
    return min(max(start, 0), size - 1), min(max(end, 0), size - 1)


def released_cells(box, size: int) -> tuple[int, int]:
    """One axis of spm_pool_caffe_mex.cpp (offset0 = 21, offset = 6.5, 1-based, C int division)."""
    xmin, xmax = box[0] + 1, box[1]  # 0-based continuous -> 1-based inclusive
    start = int(math.floor((xmin - 21 + 6.5) / 16 + 0.5) + 1)
    end = int(math.ceil((xmax - 21 - 6.5) / 16 - 0.5) + 1)
    if start > end:
        start = int((start + end) / 2)  # C integer division truncates toward zero
        end = start
    start, end = min(size, max(1, start)), min(size, max(1, end))
    return start - 1, end - 1


def brute_force_cells(low: float, high: float, center0: float, size: int) -> tuple[int, int]:
    """Cells whose centre lies strictly between the centres of the window's first and last pixel."""
    centres = {i: center0 + STRIDE * i for i in range(-200, 400)}
    right_of_left = [i for i, c in centres.items() if c > low + 0.5]
    left_of_right = [i for i, c in centres.items() if c < high - 0.5]
    start, end = min(right_of_left), max(left_of_right)
    if start > end:
        start = end = (start + end) // 2
    return min(max(start, 0), size - 1), min(max(end, 0), size - 1)


def as_box(x_range, y_range):
    return [x_range[0], y_range[0], x_range[1], y_range[1]]


@pytest.mark.parametrize(
    "x1, x2, expected",
    [
        (0, 100, (1, 6)),  # left: floor(0/16)+1 = 1; right pixel 99: ceil(99/16)-1 = 6
        (31, 97, (2, 5)),  # floor(31/16)+1 = 2; right pixel 96: ceil(96/16)-1 = 5
        (32, 98, (3, 6)),  # floor(32/16)+1 = 3 (cell 2 sits on pixel 32 itself); ceil(97/16)-1 = 6
        (33, 113, (3, 6)),  # right pixel 112 = 16*7: ceil(7)-1 = 6 (cell 7 sits on it)
        (50, 52, (3, 3)),  # empty range 4..3 collapses to floor(7/2) = 3
        (40, 41, (2, 2)),  # one pixel: empty range 3..2 -> 2, the cell centred on pixel 32
        (-200, 2000, (0, 19)),  # larger than the image: clamped to a 20-cell map
        (1000, 1100, (19, 19)),  # entirely right of the map: last cell
    ],
)
def test_paper_rule_hand_computed(x1, x2, expected):
    cells = map_windows_to_cells(
        np.array([as_box((x1, x2), (x1, x2))], dtype=np.float64),
        STRIDE,
        (PAPER_ZF5_CENTER, PAPER_ZF5_CENTER),
        (20, 20),
    )
    assert cells.dtype == np.int64
    assert cells[0].tolist() == [expected[0], expected[0], expected[1], expected[1]]


def test_paper_rule_equals_paper_formulas_on_integer_boxes():
    size = 14
    lows, highs = np.meshgrid(np.arange(-20, 260), np.arange(-20, 260), indexing="ij")
    keep = highs >= lows
    xs = np.stack([lows[keep], highs[keep]], axis=1).astype(np.float64)  # [K, 2]
    boxes = np.stack([xs[:, 0], xs[:, 0], xs[:, 1], xs[:, 1]], axis=1)
    cells = map_windows_to_cells(boxes, STRIDE, (PAPER_ZF5_CENTER, PAPER_ZF5_CENTER), (size, size))
    expected = np.array([paper_formula_cells(x, size) for x in xs.astype(int)])
    np.testing.assert_array_equal(cells[:, [0, 2]], expected)
    np.testing.assert_array_equal(cells[:, [1, 3]], expected)


@pytest.mark.parametrize("center0", [0.5, 8.0, 15.5, 20.5, -3.25])
def test_paper_rule_equals_brute_force_on_float_boxes(center0):
    rng = np.random.default_rng(int(center0 * 100) % 97)
    map_h, map_w = 23, 31
    x = np.sort(rng.uniform(-60, 560, size=(300, 2)), axis=1)
    y = np.sort(rng.uniform(-60, 420, size=(300, 2)), axis=1)
    x[:40, 1] = x[:40, 0] + rng.uniform(0, 3, size=40)  # tiny and degenerate windows
    x[40:50, 1] = x[40:50, 0]
    boxes = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)
    cells = map_windows_to_cells(boxes, STRIDE, (center0 + 1.0, center0), (map_h, map_w))
    for box, cell in zip(boxes, cells):
        assert tuple(cell[[0, 2]]) == brute_force_cells(box[0], box[2], center0, map_w)
        assert tuple(cell[[1, 3]]) == brute_force_cells(box[1], box[3], center0 + 1.0, map_h)


def test_released_rule_equals_released_code():
    rng = np.random.default_rng(0)
    map_size = 40
    x = np.sort(rng.uniform(-40, 700, size=(500, 2)), axis=1)
    x[:100] = np.round(x[:100])  # integer boxes as in the released code
    x[100:150, 1] = x[100:150, 0] + rng.uniform(0, 20, size=50)  # small windows collapse
    boxes = np.stack([x[:, 0], x[:, 0], x[:, 1], x[:, 1]], axis=1)
    centres = (RELEASED_ZF5_CELL_CENTER, RELEASED_ZF5_CELL_CENTER)
    cells = map_windows_to_cells(boxes, STRIDE, centres, (map_size, map_size), rule="released")
    expected = np.array([released_cells(pair, map_size) for pair in x])
    np.testing.assert_array_equal(cells[:, [0, 2]], expected)


def test_released_rule_maps_a_whole_224_image_to_the_whole_13x13_map():
    # 1-based [1, 224]: floor((1 - 21 + 6.5)/16 + 0.5) + 1 = 0 -> clamped to 1;
    # ceil((224 - 21 - 6.5)/16 - 0.5) + 1 = 13. In 0-based cells: 0..12.
    centres = (RELEASED_ZF5_CELL_CENTER, RELEASED_ZF5_CELL_CENTER)
    whole = np.array([[0.0, 0.0, 224.0, 224.0]])
    cells = map_windows_to_cells(whole, STRIDE, centres, (13, 13), rule="released")
    assert cells[0].tolist() == [0, 0, 12, 12]


def test_every_window_gets_at_least_one_cell_inside_the_map():
    rng = np.random.default_rng(1)
    corners = rng.uniform(-1000, 1000, size=(400, 2, 2))
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    for rule in ("paper", "released"):
        cells = map_windows_to_cells(boxes, STRIDE, (4.0, 7.5), (3, 5), rule=rule)
        assert (cells[:, 0] >= 0).all() and (cells[:, 2] <= 4).all()
        assert (cells[:, 1] >= 0).all() and (cells[:, 3] <= 2).all()
        assert (cells[:, 0] <= cells[:, 2]).all() and (cells[:, 1] <= cells[:, 3]).all()


def test_tensor_in_tensor_out_and_empty_input():
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    cells = map_windows_to_cells(boxes, STRIDE, (0.5, 0.5), (20, 20))
    assert isinstance(cells, torch.Tensor) and cells.dtype == torch.int64
    assert cells.tolist() == [[1, 1, 6, 6]]
    assert map_windows_to_cells(np.zeros((0, 4)), STRIDE, (0.5, 0.5), (5, 5)).shape == (0, 4)
    assert map_windows_to_cells(torch.zeros(0, 4), STRIDE, (0.5, 0.5), (5, 5)).shape == (0, 4)


def test_invalid_input_is_rejected():
    good = np.array([[0.0, 0.0, 10.0, 10.0]])
    with pytest.raises(DataError, match="x2 >= x1"):
        map_windows_to_cells(np.array([[5.0, 0.0, 4.0, 10.0]]), STRIDE, (0.5, 0.5), (5, 5))
    with pytest.raises(DataError, match="NaN"):
        map_windows_to_cells(np.array([[np.nan, 0.0, 4.0, 10.0]]), STRIDE, (0.5, 0.5), (5, 5))
    with pytest.raises(DataError, match=r"\[N, 4\]"):
        map_windows_to_cells(np.zeros((2, 3)), STRIDE, (0.5, 0.5), (5, 5))
    with pytest.raises(ConfigError, match="rule"):
        map_windows_to_cells(good, STRIDE, (0.5, 0.5), (5, 5), rule="nearest")
    with pytest.raises(ConfigError, match="stride"):
        map_windows_to_cells(good, 0, (0.5, 0.5), (5, 5))
    with pytest.raises(ConfigError, match="map size"):
        map_windows_to_cells(good, STRIDE, (0.5, 0.5), (0, 5))
