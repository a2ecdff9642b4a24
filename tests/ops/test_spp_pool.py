"""SPP pooling against a slow loop reference, hand-computed layouts and bins, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import roi_pool

from sppdet.errors import ConfigError, DataError
from sppdet.ops.spp import (
    DEFAULT_LEVELS,
    SpatialPyramidPool,
    _direct_levels,
    _inexact_window_sizes,
    spp_output_dim,
    spp_pool,
)


def reference_spp(feature_map: torch.Tensor, cells, levels=DEFAULT_LEVELS) -> torch.Tensor:
    """Obvious loops: paper 2.3 bins [floor(i w / n), ceil((i + 1) w / n)) in integer arithmetic."""
    channels = feature_map.shape[0]
    rows = []
    for x0, y0, x1, y1 in [tuple(int(v) for v in c) for c in cells]:
        width, height = x1 - x0 + 1, y1 - y0 + 1
        parts = []
        for n in levels:
            level = torch.empty(channels, n, n, dtype=feature_map.dtype)
            for row in range(n):
                ys, ye = (row * height) // n, -((-(row + 1) * height) // n)
                for col in range(n):
                    xs, xe = (col * width) // n, -((-(col + 1) * width) // n)
                    region = feature_map[:, y0 + ys : y0 + ye, x0 + xs : x0 + xe]
                    level[:, row, col] = region.reshape(channels, -1).max(dim=1).values
            parts.append(level.reshape(-1))
        rows.append(torch.cat(parts))
    if not rows:
        return torch.zeros(0, spp_output_dim(channels, levels), dtype=feature_map.dtype)
    return torch.stack(rows)


def random_cells(rng: np.random.Generator, height: int, width: int, count: int) -> np.ndarray:
    """Random windows plus the edge cases: border, single-cell, whole-map windows."""
    xs = np.sort(rng.integers(0, width, size=(count, 2)), axis=1)
    ys = np.sort(rng.integers(0, height, size=(count, 2)), axis=1)
    cells = [np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1)]
    cells.append(np.array([[0, 0, width - 1, height - 1]]))  # whole map
    corner = [width - 1, height - 1, width - 1, height - 1]
    cells.append(np.array([corner, [0, 0, 0, 0]]))  # single corner cells
    cells.append(np.array([[rng.integers(0, width), 0, width - 1, height - 1]]))  # right border
    cells.append(np.array([[0, rng.integers(0, height), rng.integers(0, width), height - 1]]))
    return np.concatenate(cells).astype(np.int64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_loop_reference_on_random_maps(dtype):
    for seed in range(40):
        rng = np.random.default_rng(seed)
        height, width = int(rng.integers(1, 21)), int(rng.integers(1, 21))  # often smaller than 6x6
        channels = int(rng.integers(1, 5))
        fmap = torch.from_numpy(rng.standard_normal((channels, height, width))).to(dtype)
        cells = random_cells(rng, height, width, count=12)
        got = spp_pool(fmap, cells)
        assert got.shape == (len(cells), channels * 50)
        assert got.dtype == dtype
        torch.testing.assert_close(got, reference_spp(fmap, cells), rtol=0, atol=0)


def test_large_windows_match_reference():
    # Windows up to 120 cells wide exercise the float bin arithmetic well past the 6x6 grid.
    rng = np.random.default_rng(7)
    fmap = torch.from_numpy(rng.standard_normal((3, 75, 120))).float()
    cells = random_cells(rng, 75, 120, count=30)
    torch.testing.assert_close(spp_pool(fmap, cells), reference_spp(fmap, cells), rtol=0, atol=0)


@pytest.mark.parametrize(
    "levels", [(1,), (2, 1), (6, 4, 3, 2, 1), (1, 3, 12, 6), (5, 10, 2), (16, 8, 9, 3)]
)
def test_other_pyramids_match_reference(levels):
    rng = np.random.default_rng(sum(levels))
    fmap = torch.from_numpy(rng.standard_normal((2, 30, 41))).float()
    cells = random_cells(rng, 30, 41, count=25)
    got = spp_pool(fmap, cells, levels=levels)
    assert got.shape == (len(cells), 2 * sum(n * n for n in levels))
    torch.testing.assert_close(got, reference_spp(fmap, cells, levels), rtol=0, atol=0)


def test_only_levels_without_a_finer_multiple_read_the_map():
    assert _direct_levels((6, 3, 2, 1)) == (6,)
    assert _direct_levels((1, 2, 3, 6)) == (6,)
    assert _direct_levels((6, 4, 3, 2, 1)) == (6, 4)
    assert _direct_levels((5, 3)) == (5, 3)


def test_batched_maps_use_batch_idx():
    rng = np.random.default_rng(3)
    maps = torch.from_numpy(rng.standard_normal((3, 2, 9, 11))).float()
    cells = random_cells(rng, 9, 11, count=8)
    batch_idx = rng.integers(0, 3, size=len(cells))
    got = spp_pool(maps, cells, batch_idx)
    expected = torch.cat(
        [reference_spp(maps[b], cells[k : k + 1]) for k, b in enumerate(batch_idx)]
    )
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_layout_is_levels_in_order_then_channel_then_bin_row_then_column():
    fmap = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4)
    got = spp_pool(fmap, [[0, 0, 3, 3]], levels=(2, 1))
    # 2x2 level: bins cover cells [0, 2) and [2, 4); channel 0 holds 0..15 row-major, so the
    # bins' maxima are cells (1,1)=5, (1,3)=7, (3,1)=13, (3,3)=15; channel 1 adds 16.
    expected = [5, 7, 13, 15, 21, 23, 29, 31, 15, 31]
    assert got[0].tolist() == expected
    reversed_order = spp_pool(fmap, [[0, 0, 3, 3]], levels=(1, 2))
    assert reversed_order[0].tolist() == [15, 31, 5, 7, 13, 15, 21, 23, 29, 31]


@pytest.mark.parametrize(
    "width, level, bins_of_cell",
    [
        # w=5, n=3: bins [0,2), [1,4), [3,5) -- floor left, ceil right, overlapping.
        (5, 3, {0: {0}, 1: {0, 1}, 2: {1}, 3: {1, 2}, 4: {2}}),
        # w=2, n=3 (window smaller than the level): bins [0,1), [0,2), [1,2).
        (2, 3, {0: {0, 1}, 1: {1, 2}}),
        # w=7, n=6: bins [0,2), [1,3), [2,4), [3,5), [4,6), [5,7).
        (7, 6, {0: {0}, 1: {0, 1}, 2: {1, 2}, 3: {2, 3}, 4: {3, 4}, 5: {4, 5}, 6: {5}}),
    ],
)
def test_bins_are_floor_left_ceil_right(width, level, bins_of_cell):
    # A one-hot map shows which bins each cell falls into (hand-computed from the paper's rule).
    offset = 2  # the window does not start at the map's origin
    for cell, bins in bins_of_cell.items():
        fmap = torch.zeros(1, 1, width + 4)
        fmap[0, 0, offset + cell] = 1.0
        got = spp_pool(fmap, [[offset, 0, offset + width - 1, 0]], levels=(level,))
        # With a single row, bin (0, col) of row 0 is repeated on every bin row.
        first_row = got[0, :level]
        assert set(torch.nonzero(first_row).flatten().tolist()) == bins


def test_roi_pool_float_bins_are_exact_only_for_the_checked_levels():
    # Replaying roi_pool's float32 bin arithmetic predicts exactly where roi_pool leaves the
    # paper's partition; increasing / decreasing maps expose wrong bin ends / starts.
    max_width = 160
    ramp = torch.arange(max_width, dtype=torch.float32).reshape(1, 1, 1, max_width)
    rois = torch.tensor([[0, 0, 0, w - 1, 0] for w in range(1, max_width + 1)], dtype=torch.float32)
    for level in range(1, 17):
        found = set()
        for fmap in (ramp, -ramp):
            got = roi_pool(fmap, rois, output_size=(1, level), spatial_scale=1.0)[:, 0, 0, :]
            for k, width in enumerate(range(1, max_width + 1)):
                window = fmap[0, 0, 0, :width]
                bins = [
                    ((i * width) // level, -((-(i + 1) * width) // level)) for i in range(level)
                ]
                expected = torch.stack([window[start:end].max() for start, end in bins])
                if not torch.equal(got[k], expected):
                    found.add(width)
        predicted = {w for w in _inexact_window_sizes(level, "float32", 4096) if w <= max_width}
        assert found == predicted, level
        if level in DEFAULT_LEVELS:
            assert predicted == set()
    assert 57 in _inexact_window_sizes(7, "float32", 4096)


def test_inexact_levels_are_refused():
    fmap = torch.zeros(1, 4, 4)
    with pytest.raises(ConfigError, match="level 7"):
        spp_pool(fmap, [[0, 0, 1, 1]], levels=(6, 7))
    with pytest.raises(ConfigError, match="level 13"):
        SpatialPyramidPool(levels=(13, 1))
    with pytest.raises(ConfigError, match="positive integers"):
        SpatialPyramidPool(levels=())
    assert SpatialPyramidPool(levels=(4, 2, 1)).output_dim(8) == 8 * 21


def test_gradcheck_float64():
    rng = np.random.default_rng(11)
    fmap = torch.from_numpy(rng.standard_normal((2, 7, 9))).requires_grad_(True)
    cells = random_cells(rng, 7, 9, count=4)
    assert torch.autograd.gradcheck(lambda x: spp_pool(x, cells), (fmap,), eps=1e-6, atol=1e-5)


def test_gradient_matches_reference_gradient():
    rng = np.random.default_rng(12)
    base = torch.from_numpy(rng.standard_normal((3, 10, 8)))
    cells = random_cells(rng, 10, 8, count=6)
    weights = torch.from_numpy(rng.standard_normal((len(cells), 3 * 50)))
    fast = base.clone().requires_grad_(True)
    (spp_pool(fast, cells) * weights).sum().backward()
    slow = base.clone().requires_grad_(True)
    (reference_spp(slow, cells) * weights).sum().backward()
    torch.testing.assert_close(fast.grad, slow.grad)


def test_empty_windows_give_empty_output():
    fmap = torch.zeros(5, 3, 4)
    assert spp_pool(fmap, np.zeros((0, 4), dtype=np.int64)).shape == (0, 250)
    assert spp_pool(fmap, torch.zeros(0, 4, dtype=torch.int64), levels=(2,)).shape == (0, 20)


@pytest.mark.parametrize(
    "cells, message",
    [
        ([[0, 0, 4, 1]], "0 <= x0 <= x1 < 4"),  # x1 == W
        ([[-1, 0, 1, 1]], "window 0"),
        ([[2, 0, 1, 1]], "x0 <= x1"),  # inverted
        ([[0, 0, 1, 3]], "y1 < 3"),
        ([[0.0, 0.0, 1.0, 1.0]], "integer"),
        ([[0, 0, 1]], r"\[N, 4\]"),
    ],
)
def test_invalid_cells_are_rejected(cells, message):
    fmap = torch.zeros(2, 3, 4)
    cells_t = torch.tensor(cells)
    with pytest.raises(DataError, match=message):
        spp_pool(fmap, cells_t)


def test_invalid_maps_and_batch_indices_are_rejected():
    with pytest.raises(DataError, match="float32 or float64"):
        spp_pool(torch.zeros(2, 3, 4, dtype=torch.int32), [[0, 0, 0, 0]])
    with pytest.raises(DataError, match=r"\[C, H, W\]"):
        spp_pool(torch.zeros(3, 4), [[0, 0, 0, 0]])
    with pytest.raises(DataError, match="batch_idx is required"):
        spp_pool(torch.zeros(2, 1, 3, 4), [[0, 0, 0, 0]])
    with pytest.raises(DataError, match=r"\[0, 2\)"):
        spp_pool(torch.zeros(2, 1, 3, 4), [[0, 0, 0, 0]], batch_idx=[2])


def test_module_forwards_and_describes_itself():
    pool = SpatialPyramidPool()
    assert repr(pool) == "SpatialPyramidPool(levels=(6, 3, 2, 1), bins=50)"
    assert pool.output_dim(256) == 12800
    fmap = torch.randn(4, 6, 5)
    cells = [[0, 1, 4, 5], [2, 2, 2, 2]]
    torch.testing.assert_close(pool(fmap, cells), spp_pool(fmap, cells), rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(5)
    fmap = torch.from_numpy(rng.standard_normal((8, 43, 57))).float()
    cells = random_cells(rng, 43, 57, count=200)
    got = spp_pool(fmap.cuda(), torch.from_numpy(cells).cuda())
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), spp_pool(fmap, cells), rtol=0, atol=0)


# --- pooling on several threads ---------------------------------------------------------------


@pytest.mark.parametrize("threads", [2, 3, 7])
def test_threaded_pooling_is_bit_identical_to_one_thread(threads):
    rng = np.random.default_rng(5)
    maps = torch.relu(torch.randn(3, 16, 23, 31, generator=torch.Generator().manual_seed(5)))
    cells = random_cells(rng, 23, 31, 1500)
    batch = rng.integers(0, 3, size=len(cells))
    single = spp_pool(maps, cells, batch, threads=1)
    several = spp_pool(maps, cells, batch, threads=threads)
    assert several.shape == single.shape
    assert torch.equal(several, single)
    # and the one-thread path itself is the slow loop's result
    first = batch == 0
    assert torch.equal(single[torch.from_numpy(first)], reference_spp(maps[0], cells[first]))


def test_threaded_pooling_splits_the_windows(monkeypatch):
    """The threaded path really runs: roi_pool is called once per chunk, from pool threads."""
    import threading

    import sppdet.ops.spp as spp_module

    calls = []
    real = spp_module.roi_pool

    def spy(maps, rois, **kwargs):
        calls.append((len(rois), threading.current_thread().name))
        return real(maps, rois, **kwargs)

    monkeypatch.setattr(spp_module, "roi_pool", spy)
    fmap = torch.rand(4, 9, 9)
    cells = random_cells(np.random.default_rng(0), 9, 9, 400)
    spp_pool(fmap, cells, threads=2)
    assert sorted(n for n, _ in calls) == sorted([len(cells) // 2, len(cells) - len(cells) // 2])
    assert all(name.startswith("spp-pool") for _, name in calls)
    calls.clear()
    spp_pool(fmap, cells[:100], threads=2)  # too few windows to split: one call, this thread
    assert calls == [(100, threading.current_thread().name)]


def test_threaded_pooling_under_inference_mode_and_with_grad():
    fmap = torch.rand(4, 12, 12, dtype=torch.float64)
    cells = random_cells(np.random.default_rng(1), 12, 12, 300)
    expected = reference_spp(fmap, cells)
    with torch.inference_mode():
        inference_map = fmap.clone()
        assert torch.equal(spp_pool(inference_map, cells, threads=2), expected)
    leaf = fmap.clone().requires_grad_(True)
    pooled = spp_pool(leaf, cells, threads=2)  # needs a graph: pooled in one call
    assert pooled.requires_grad and torch.equal(pooled.detach(), expected)
    pooled.sum().backward()
    assert leaf.grad is not None and float(leaf.grad.sum()) == pytest.approx(pooled.numel())


def test_invalid_thread_count_is_rejected():
    with pytest.raises(ConfigError, match="threads must be >= 1"):
        spp_pool(torch.rand(2, 5, 5), np.array([[0, 0, 4, 4]] * 200), threads=0)
