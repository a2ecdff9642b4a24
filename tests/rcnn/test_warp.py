"""R-CNN window warping against a per-window crop + cv2.resize reference and hand cases."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from sppdet.errors import ConfigError, DataError
from sppdet.rcnn.warp import rcnn_context_boxes, warp_windows


def test_context_boxes_hand_computed():
    boxes = np.array([[0.0, 0.0, 192.0, 192.0], [150.0, 60.0, 270.0, 300.0]])
    dilated = rcnn_context_boxes(boxes, 224, 16)  # dilation 224 / 192 = 7 / 6
    expected = [[-16, -16, 208, 208], [140, 40, 280, 320]]
    np.testing.assert_allclose(dilated, expected, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(rcnn_context_boxes(boxes, 224, 0), boxes)


def crop_and_resize_reference(image: np.ndarray, box, size: int, context_pad: int) -> np.ndarray:
    """rcnn_im_crop.m for a window whose dilated box is whole pixels inside the image."""
    x1, y1, x2, y2 = (int(v) for v in rcnn_context_boxes(np.array([box]), size, context_pad)[0])
    crop = image[y1:y2, x1:x2].astype(np.float32)
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)


def test_interior_window_matches_crop_and_resize():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(400, 500, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(image, (0, 0), 3)  # a smooth image, like a photograph
    # Dilated to [140, 40, 280, 320]: x 140 -> 224 pixels (up), y 280 -> 224 (down).
    box = [150.0, 60.0, 270.0, 300.0]
    got = warp_windows(image, np.array([box]), size=224, context_pad=16)
    assert got.shape == (1, 3, 224, 224) and got.dtype == torch.float32
    expected = crop_and_resize_reference(image, box, 224, 16)
    diff = np.abs(got[0].numpy() - expected)
    # Away from the crop's edges both sample the same points bilinearly.
    assert diff[:, 1:-1, 1:-1].max() < 1e-3
    # On the outermost output pixels the crop replicates its edge while warp_windows reads the
    # neighbouring image pixel (within half a source pixel).
    assert diff.max() < 5.0


def test_border_window_gets_fill_as_context():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(100, 120, 3), dtype=np.uint8)
    # size 64, pad 8: dilation 64/48, so [0, 0, 48, 48] -> [-8, -8, 56, 56] warped 1:1; output
    # pixel j samples image pixel centre j - 8 + 0.5 exactly.
    box = np.array([[0.0, 0.0, 48.0, 48.0]])
    got = warp_windows(image, box, size=64, context_pad=8, fill=(10.0, 20.0, 30.0))
    window = got[0].numpy()
    expected = np.empty((3, 64, 64), dtype=np.float32)
    expected[:] = np.array([10.0, 20.0, 30.0], dtype=np.float32)[:, None, None]
    expected[:, 8:, 8:] = image[:56, :56].transpose(2, 0, 1)
    np.testing.assert_allclose(window, expected, rtol=0, atol=1e-3)


def test_window_beyond_the_image_is_all_fill():
    image = np.full((50, 60, 3), 200, dtype=np.uint8)
    box = np.array([[100.0, 100.0, 140.0, 130.0]])
    got = warp_windows(image, box, size=32, context_pad=4, fill=7.0)
    assert torch.equal(got, torch.full((1, 3, 32, 32), 7.0))


def test_tensor_image_and_batches_agree_with_array_image_one_by_one():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(70, 90, 3), dtype=np.uint8)
    corners = rng.uniform(-10, 100, size=(6, 2, 2))
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    boxes[0, 2] = boxes[0, 0]  # degenerate
    batch = warp_windows(image, boxes, size=40, context_pad=5)
    assert batch.shape == (6, 3, 40, 40)
    chw = torch.from_numpy(image).permute(2, 0, 1).float() - 100.0  # e.g. a mean-subtracted input
    shifted = warp_windows(chw, boxes, size=40, context_pad=5, fill=-100.0)
    torch.testing.assert_close(shifted + 100.0, batch, rtol=0, atol=1e-3)
    # float64 images stay float64 (and agree up to float32's coordinate resolution).
    precise = warp_windows(chw.double(), boxes, size=40, context_pad=5, fill=-100.0)
    assert precise.dtype == torch.float64
    torch.testing.assert_close(precise.float(), shifted, rtol=0, atol=1e-2)
    for k in range(len(boxes)):
        single = warp_windows(image, boxes[k : k + 1], size=40, context_pad=5)
        torch.testing.assert_close(single[0], batch[k])


def test_empty_and_invalid_inputs():
    image = np.zeros((10, 12, 3), dtype=np.uint8)
    assert warp_windows(image, np.zeros((0, 4))).shape == (0, 3, 224, 224)
    with pytest.raises(ConfigError, match="context_pad"):
        warp_windows(image, np.zeros((1, 4)), size=32, context_pad=16)
    with pytest.raises(ConfigError, match="fill"):
        warp_windows(image, np.zeros((1, 4)), fill=(1.0, 2.0))
    with pytest.raises(DataError, match=r"\[H, W, 3\]"):
        warp_windows(np.zeros((10, 12)), np.zeros((1, 4)))
    with pytest.raises(DataError, match=r"\[3, H, W\]"):
        warp_windows(torch.zeros(10, 12, 3), np.zeros((1, 4)))
