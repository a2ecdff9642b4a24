"""pool_windows: original-image windows -> scale -> cells -> SPP vectors, end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sppdet.errors import ConfigError, DataError
from sppdet.ops.scales import resize_image, resized_size, select_scales
from sppdet.ops.spp import cells_at_scale, pool_distinct_windows, pool_windows, spp_pool


class PatchNet(nn.Module):
    """Stand-in backbone: one 16x16 stride-16 conv, so cell i covers pixels [16 i, 16 i + 16)."""

    stride = 16
    out_channels = 4

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, self.out_channels, kernel_size=16, stride=16)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(images))

    def cell_centers(self, height: int, width: int) -> tuple[float, float]:
        return 8.0, 8.0


def coordinate_maps(map_h: int, map_w: int) -> torch.Tensor:
    """Channels x, -x, y, -y of each cell: max pooling over a window reveals its cell range."""
    ys, xs = torch.meshgrid(torch.arange(map_h), torch.arange(map_w), indexing="ij")
    return torch.stack([xs, -xs, ys, -ys]).float()


def test_hand_computed_window_through_scale_mapping_and_pooling():
    # 375x500 image at scale 750 (factor exactly 2): box [100, 50, 200, 150] becomes
    # [200, 100, 400, 300]. Paper rule, S = 16, c0 = 0.5: x cells floor(200/16)+1 = 13 to
    # ceil(399/16)-1 = 24, y cells floor(100/16)+1 = 7 to ceil(299/16)-1 = 18.
    maps = {750: coordinate_maps(47, 63)}
    pooled = pool_windows(
        maps,
        (375, 500),
        np.array([[100.0, 50.0, 200.0, 150.0]]),
        None,
        stride=16,
        cell_centers_fn=lambda h, w: (0.5, 0.5),
        levels=(1,),
    )
    assert pooled.tolist() == [[24.0, -13.0, 18.0, -7.0]]


def stand_in_features(image: np.ndarray, scales) -> dict[int, torch.Tensor]:
    net = PatchNet().eval()
    maps = {}
    with torch.no_grad():
        for scale in scales:
            resized = resize_image(image, scale)
            tensor = torch.from_numpy(resized).permute(2, 0, 1).float()[None] / 255.0
            maps[scale] = net(tensor)[0]
    return maps


def test_pool_windows_groups_by_scale_like_one_call_per_window():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
    scales = (48, 64, 96)
    maps = stand_in_features(image, scales)
    for scale, fmap in maps.items():
        assert fmap.shape[1:] == tuple(side // 16 for side in resized_size(60, 80, scale))
    corners = rng.uniform(-5, 85, size=(40, 2, 2))
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    boxes[:5, 2] = boxes[:5, 0]  # degenerate windows
    for scale_per_box in (None, rng.choice(scales, size=len(boxes))):
        got = pool_windows(
            maps, (60, 80), boxes, scale_per_box, stride=16, cell_centers_fn=PatchNet().cell_centers
        )
        assert got.shape == (40, 4 * 50)
        chosen = select_scales(boxes, (60, 80), scales) if scale_per_box is None else scale_per_box
        for k, (box, scale) in enumerate(zip(boxes, chosen)):
            fmap = maps[int(scale)]
            cells = cells_at_scale(
                box[None], (60, 80), int(scale), stride=16, cell_centers_fn=PatchNet().cell_centers,
                map_size=fmap.shape[1:],
            )
            torch.testing.assert_close(got[k], spp_pool(fmap, cells)[0], rtol=0, atol=0)


def test_distinct_footprints_are_pooled_once_and_expand_to_every_window():
    """Windows on the same cells of the same scale share one row; ``pooled[inverse]`` is, row by
    row, the one-window-at-a-time result; rows are in order of first appearance."""
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
    scales = (48, 96)
    maps = stand_in_features(image, scales)
    corners = rng.uniform(-5, 85, size=(12, 2, 2))
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    # exact repeats, and a shift of 0.2 px (well inside one 16-px cell at these scales, so the
    # paper's rounding maps it to the same cells unless an edge sits on a cell boundary)
    boxes = np.concatenate([boxes, boxes[:4], boxes[4:8] + 0.2])
    centers = PatchNet().cell_centers
    for scale_per_box in (None, np.array([48, 96] * 10)):
        pooled, inverse = pool_distinct_windows(maps, (60, 80), boxes, scale_per_box, stride=16,
                                                cell_centers_fn=centers)
        chosen = select_scales(boxes, (60, 80), scales) if scale_per_box is None else scale_per_box
        keys = [(int(s), *cells_at_scale(b[None], (60, 80), int(s), stride=16,
                                         cell_centers_fn=centers,
                                         map_size=maps[int(s)].shape[1:])[0].tolist())
                for b, s in zip(boxes, chosen)]
        distinct = list(dict.fromkeys(keys))  # first appearance order
        assert pooled.shape == (len(distinct), 4 * 50) and len(distinct) < len(boxes)
        assert inverse.tolist() == [distinct.index(k) for k in keys]
        expanded = pool_windows(maps, (60, 80), boxes, scale_per_box, stride=16,
                                cell_centers_fn=centers)
        torch.testing.assert_close(pooled[torch.from_numpy(inverse)], expanded, rtol=0, atol=0)
        for k, (key, box) in enumerate(zip(keys, boxes)):
            cells = np.array([key[1:]])
            torch.testing.assert_close(expanded[k], spp_pool(maps[key[0]], cells)[0], rtol=0,
                                       atol=0)
    empty, none = pool_distinct_windows(maps, (60, 80), np.zeros((0, 4)), None, stride=16,
                                        cell_centers_fn=centers)
    assert empty.shape == (0, 200) and none.shape == (0,) and none.dtype == np.int64


def test_released_rules_are_passed_through():
    maps = {480: coordinate_maps(30, 40), 688: coordinate_maps(43, 57)}
    boxes = np.array([[0.0, 0.0, 105.0, 105.0]])  # of {480, 688} the paper's rule picks 688
    paper = pool_windows(
        maps, (375, 500), boxes, None, stride=16, cell_centers_fn=lambda h, w: (0.5, 0.5),
        levels=(1,),
    )
    released = pool_windows(
        maps, (375, 500), boxes, [688], stride=16, cell_centers_fn=lambda h, w: (20.5, 20.5),
        levels=(1,), mapping_rule="released",
    )
    # Paper rule at 688: x 105 * 1.834 = 192.57 -> cells floor(0/16)+1 = 1 to
    # ceil(191.57/16)-1 = 11.
    assert paper.tolist() == [[11.0, -1.0, 11.0, -1.0]]
    # Released rule: ceil((192.57 - 0.5 - 20.5 - 6.5) / 16 - 0.5) = ceil(9.82) = 10 (y: 192.64
    # gives 10 too); left floor((0 + 0.5 - 20.5 + 6.5) / 16 + 0.5) = -1, clamped to 0.
    assert released.tolist() == [[10.0, 0.0, 10.0, 0.0]]


def test_empty_and_invalid_inputs():
    maps = {688: torch.zeros(8, 43, 57)}
    kwargs = dict(stride=16, cell_centers_fn=lambda h, w: (0.5, 0.5))
    assert pool_windows(maps, (375, 500), np.zeros((0, 4)), None, **kwargs).shape == (0, 400)
    batched_map = {688: torch.zeros(1, 8, 43, 57)}
    batched = pool_windows(batched_map, (375, 500), [[0, 0, 10, 10]], None, **kwargs)
    assert batched.shape == (1, 400)
    with pytest.raises(ConfigError, match="no feature map for scale 480"):
        pool_windows(maps, (375, 500), [[0, 0, 10, 10]], [480], **kwargs)
    with pytest.raises(ConfigError, match="at least one feature map"):
        pool_windows({}, (375, 500), [[0, 0, 10, 10]], None, **kwargs)
    with pytest.raises(DataError, match="channels"):
        mixed = {480: torch.zeros(4, 30, 40), 688: torch.zeros(8, 43, 57)}
        pool_windows(mixed, (375, 500), [[0, 0, 1, 1]], None, **kwargs)
    with pytest.raises(DataError, match="one scale per window"):
        pool_windows(maps, (375, 500), [[0, 0, 10, 10]], [688, 688], **kwargs)
    with pytest.raises(DataError, match=r"\[N, 4\]"):
        pool_windows(maps, (375, 500), [[0, 0, 10]], None, **kwargs)
