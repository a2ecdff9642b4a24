"""R-CNN-style window features against per-window references and hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sppdet.backbones import build_backbone
from sppdet.errors import ConfigError, DataError
from sppdet.rcnn.features import rcnn_feature_dim, rcnn_pool5, rcnn_pool5_features
from sppdet.ops.spp import spp_pool
from sppdet.rcnn.warp import warp_windows


def pool5_reference(conv_map: torch.Tensor, n: int) -> torch.Tensor:
    """One window's ``[C, h, w]`` map -> ``[C * n * n]``: bins [floor(i w/n), ceil((i+1) w/n))."""
    channels, height, width = conv_map.shape
    out = torch.empty(channels, n, n, dtype=conv_map.dtype)
    for row in range(n):
        y0, y1 = math.floor(row * height / n), math.ceil((row + 1) * height / n)
        for col in range(n):
            x0, x1 = math.floor(col * width / n), math.ceil((col + 1) * width / n)
            out[:, row, col] = conv_map[:, y0:y1, x0:x1].amax(dim=(1, 2))
    return out.flatten()


@pytest.fixture(scope="module")
def zf5():
    return build_backbone("zf5", seed=3)


@pytest.fixture(scope="module")
def photo_like_image() -> np.ndarray:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    return image


@pytest.mark.parametrize("size", [(15, 15), (13, 13), (7, 11), (4, 4), (1, 1), (6, 20)])
def test_pool5_matches_loop_reference(size):
    torch.manual_seed(0)
    maps = torch.randn(3, 5, *size)
    got = rcnn_pool5(maps)
    assert got.shape == (3, 5 * 36)
    expected = torch.stack([pool5_reference(m, 6) for m in maps])
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_pool5_equals_spp_six_by_six_level_of_whole_map():
    torch.manual_seed(1)
    conv_map = torch.randn(4, 15, 15)
    whole_window = np.array([[0, 0, 14, 14]])
    spp_six = spp_pool(conv_map, whole_window, levels=(6,))
    torch.testing.assert_close(rcnn_pool5(conv_map[None]), spp_six, rtol=0, atol=0)


def test_pool5_channels_last_and_other_grid():
    torch.manual_seed(2)
    maps = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(rcnn_pool5(maps.contiguous(memory_format=torch.channels_last)),
                               rcnn_pool5(maps), rtol=0, atol=0)
    assert rcnn_pool5(maps, pool_size=3).shape == (2, 27)
    torch.testing.assert_close(rcnn_pool5(maps, 3)[1], pool5_reference(maps[1], 3))


def test_features_match_per_window_reference(zf5, photo_like_image):
    boxes = np.array([[10.0, 12.0, 70.0, 90.0],      # inside
                      [0.0, 0.0, 160.0, 120.0],      # whole image: context falls outside
                      [150.0, 100.0, 160.0, 120.0],  # corner, small
                      [30.5, 40.25, 31.5, 41.0]])    # smaller than a pixel
    got = rcnn_pool5_features(zf5, photo_like_image, boxes, warp_size=64, batch_size=3)
    assert got.shape == (4, rcnn_feature_dim(256)) and got.dtype == torch.float32
    # Reference: the released code's preprocessing by hand (BGR, minus 128), one window at a
    # time, the whole trunk, then the loop pooling.
    bgr_minus_128 = torch.from_numpy(
        photo_like_image[:, :, ::-1].astype(np.float32).transpose(2, 0, 1).copy()) - 128.0
    with torch.no_grad():
        for k, box in enumerate(boxes):
            warped = warp_windows(bgr_minus_128, box[None], size=64, context_pad=16)
            conv = zf5.features(warped)[0]
            torch.testing.assert_close(got[k], pool5_reference(conv, 6), rtol=1e-4, atol=1e-4)


def test_window_outside_image_sees_only_the_mean(zf5, photo_like_image):
    # R-CNN pads with the mean: 0 after subtracting 128, i.e. a uniform grey window.
    outside = np.array([[500.0, 500.0, 600.0, 600.0]])
    got = rcnn_pool5_features(zf5, photo_like_image, outside, warp_size=64)
    with torch.no_grad():
        grey = rcnn_pool5(zf5(torch.zeros(1, 3, 64, 64)))
    torch.testing.assert_close(got, grey, rtol=1e-5, atol=1e-5)


def test_batch_size_and_memory_format_do_not_change_features(zf5, photo_like_image):
    rng = np.random.default_rng(4)
    corners = rng.uniform(0, 100, size=(5, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5, 60, size=(5, 2))], axis=1)
    reference = rcnn_pool5_features(zf5, photo_like_image, boxes, warp_size=64, batch_size=5)
    for batch_size in (1, 2, 7):
        got = rcnn_pool5_features(zf5, photo_like_image, boxes, warp_size=64,
                                  batch_size=batch_size)
        torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-4)
    got = rcnn_pool5_features(zf5, photo_like_image, torch.from_numpy(boxes), warp_size=64,
                              memory_format=torch.channels_last)
    torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-4)


def test_default_warp_gives_9216_dims_for_zf5(zf5, photo_like_image):
    got = rcnn_pool5_features(zf5, photo_like_image, np.array([[20.0, 20.0, 100.0, 90.0]]))
    assert zf5.output_size(224, 224) == (15, 15)
    assert got.shape == (1, 9216) and bool(torch.isfinite(got).all())


def test_no_windows(zf5, photo_like_image):
    for empty in (np.zeros((0, 4)), np.zeros((0,)), []):
        got = rcnn_pool5_features(zf5, photo_like_image, empty)
        assert got.shape == (0, 9216)


def test_invalid_inputs(zf5, photo_like_image):
    box = np.array([[0.0, 0.0, 10.0, 10.0]])
    with pytest.raises(ConfigError, match="batch_size"):
        rcnn_pool5_features(zf5, photo_like_image, box, batch_size=0)
    with pytest.raises(ConfigError, match="pool_size"):
        rcnn_pool5_features(zf5, photo_like_image, box, pool_size=0)
    with pytest.raises(ConfigError):
        rcnn_pool5_features(zf5, photo_like_image, box, warp_size=4)  # no conv5 cell left
    with pytest.raises(ConfigError, match="context_pad"):
        rcnn_pool5_features(zf5, photo_like_image, box, warp_size=64, context_pad=32)
    with pytest.raises(DataError, match=r"\[N, 4\]"):
        rcnn_pool5_features(zf5, photo_like_image, np.zeros((2, 3)))
    with pytest.raises(DataError, match="NaN"):
        rcnn_pool5_features(zf5, photo_like_image, np.array([[0.0, 0.0, np.nan, 5.0]]))
    with pytest.raises(DataError, match="uint8"):
        rcnn_pool5_features(zf5, photo_like_image.astype(np.float32), box)
    with pytest.raises(DataError, match=r"\[B, C, h, w\]"):
        rcnn_pool5(torch.zeros(3, 5, 5))
