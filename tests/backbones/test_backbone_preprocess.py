"""Each backbone's input normalisation and channel order; input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sppdet.backbones import BACKBONES
from sppdet.errors import DataError

FAMILY = {
    "zf5": "bgr", "convnet5": "bgr", "overfeat5": "bgr", "overfeat7": "bgr",
    "alexnet": "imagenet", "vgg16": "imagenet", "resnet50": "imagenet",
    "efficientnet_lite0": "unit",
}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _expected(image: np.ndarray, family: str) -> np.ndarray:
    """Slow per-pixel reference: [3, H, W] float64."""
    height, width, _ = image.shape
    out = np.zeros((3, height, width))
    for y in range(height):
        for x in range(width):
            red, green, blue = (float(v) for v in image[y, x])
            if family == "bgr":  # SPP-net's released code: BGR, minus 128
                out[:, y, x] = (blue - 128, green - 128, red - 128)
            elif family == "imagenet":
                out[:, y, x] = [(v / 255 - m) / s for v, m, s in
                                zip((red, green, blue), MEAN, STD)]
            else:  # EfficientNet-Lite: RGB in [-1, 1]
                out[:, y, x] = [(v - 127.5) / 127.5 for v in (red, green, blue)]
    return out


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_preprocess_channel_order_and_values(name, random_backbone):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(3, 5, 3), dtype=np.uint8)
    image[0, 0] = (255, 0, 0)  # a pure red pixel
    tensor = random_backbone(name).preprocess(image)
    assert tensor.dtype == torch.float32 and tuple(tensor.shape) == (3, 3, 5)
    np.testing.assert_allclose(tensor.numpy(), _expected(image, FAMILY[name]), atol=1e-5)
    red_channel = 2 if FAMILY[name] == "bgr" else 0
    assert tensor[red_channel, 0, 0] == tensor[:, 0, 0].max()


def test_preprocess_accepts_non_contiguous_views(random_backbone):
    image = np.random.default_rng(2).integers(0, 256, size=(8, 10, 3), dtype=np.uint8)
    view = image[::2, ::-1]
    backbone = random_backbone("zf5")
    np.testing.assert_array_equal(backbone.preprocess(view).numpy(),
                                  backbone.preprocess(np.ascontiguousarray(view)).numpy())


@pytest.mark.parametrize("bad", [
    np.zeros((4, 4, 3), dtype=np.float32),
    np.zeros((4, 4), dtype=np.uint8),
    np.zeros((4, 4, 4), dtype=np.uint8),
    np.zeros((0, 4, 3), dtype=np.uint8),
    [[0, 0, 0]],
])
def test_preprocess_rejects_bad_images(bad, random_backbone):
    with pytest.raises(DataError, match="expected"):
        random_backbone("efficientnet_lite0").preprocess(bad)


def test_forward_rejects_bad_tensors(random_backbone):
    backbone = random_backbone("zf5")
    with pytest.raises(DataError, match=r"\[B, 3, H, W\]"):
        backbone(torch.zeros(3, 32, 32))
    with pytest.raises(DataError, match=r"\[B, 3, H, W\]"):
        backbone(torch.zeros(1, 1, 32, 32))
    with pytest.raises(DataError, match="float"):
        backbone(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
