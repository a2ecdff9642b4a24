"""Map sizes and receptive-field centres of every backbone, checked on real forward passes."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from sppdet.backbones import BACKBONES
from sppdet.backbones.geometry import (
    Layer2d,
    chain_first_center,
    chain_output_size,
    chain_receptive_field,
    layer_output_size,
    min_input_size,
    tf_same_padding,
)
from sppdet.errors import ConfigError

SIZES = [(224, 224), (97, 300), (375, 500), (688, 917)]
EXPECTED = {  # name: (stride, channels)
    "zf5": (16, 256), "convnet5": (16, 256), "overfeat5": (12, 512), "overfeat7": (12, 512),
    "alexnet": (16, 256), "vgg16": (16, 512), "resnet50": (16, 1024),
    "efficientnet_lite0": (16, 112),
}
CHEAP = ["zf5", "convnet5", "overfeat5", "overfeat7", "efficientnet_lite0"]


# --------------------------------------------------------------------- layer arithmetic
@pytest.mark.parametrize("kernel,stride", [(1, 1), (3, 1), (3, 2), (5, 2), (5, 1), (7, 2)])
def test_tf_same_padding_matches_its_definition(kernel, stride):
    for size in range(1, 40):
        before, after = tf_same_padding(size, kernel, stride)
        out = math.ceil(size / stride)
        # SAME: output ceil(n / s); the padded input is exactly covered by the last window.
        assert (size + before + after - kernel) // stride + 1 == out
        assert after - before in (0, 1)
        assert before + after == max((out - 1) * stride + kernel - size, 0)


def test_tf_same_padding_hand_cases():
    assert tf_same_padding(224, 3, 2) == (0, 1)   # even size, stride 2: extra cell after
    assert tf_same_padding(225, 3, 2) == (1, 1)
    assert tf_same_padding(100, 5, 2) == (1, 2)
    assert tf_same_padding(57, 5, 1) == (2, 2)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 2, 1), (3, 2, 0), (3, 3, 1), (2, 2, 0),
                                                   (3, 1, 1), (5, 3, 2)])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pool_output_size_matches_torch(kernel, stride, padding, ceil_mode):
    layer = Layer2d(kernel, stride, padding, ceil_mode)
    for size in range(1, 60):
        try:
            out = F.max_pool2d(torch.zeros(1, 1, size, 3), (kernel, 1), (stride, 1),
                               (padding, 0), ceil_mode=ceil_mode).shape[2]
        except RuntimeError:  # "output size is too small"
            out = 0
        assert layer_output_size(size, layer) == out, size


def test_chain_centre_hand_cases():
    # Paper appendix: floor(k/2) padding everywhere keeps cell x' on pixel S x' (centre +0.5).
    zf_like = [Layer2d(7, 2, 3), Layer2d(3, 2, 1, True), Layer2d(5, 2, 2), Layer2d(3, 2, 1, True)]
    assert chain_first_center(224, zf_like) == 0.5
    # An unpadded 3x3/2 pool shifts by one input cell: 0.5 + 1 * 1.
    assert chain_first_center(50, [Layer2d(3, 2, 0)]) == 1.5
    # A 2x2/2 pool centres its cell between its two inputs.
    assert chain_first_center(50, [Layer2d(2, 2, 0)]) == 1.0
    # SAME, stride 2, kernel 3 on an even size: padding (0, 1) -> first window pixels 0..2.
    assert chain_first_center(224, [Layer2d(3, 2, "same")]) == 1.5
    assert chain_first_center(225, [Layer2d(3, 2, "same")]) == 0.5
    assert chain_receptive_field(zf_like) == 1 + 6 + 2 * 2 + 4 * 4 + 2 * 8


def test_efficientnet_centres_match_reference_note(random_backbone):
    # REFERENCE 11: cell i centred on pixel 16 i + b; b = 15 for sizes divisible by 16 and, at
    # 688x917, 15 for rows and 4 for columns (pixel b's centre is b + 0.5).
    backbone = random_backbone("efficientnet_lite0")
    assert backbone.cell_centers(688, 917) == (15.5, 4.5)
    assert backbone.cell_centers(224, 224) == (15.5, 15.5)


def test_paper_trunk_centres(random_backbone):
    assert random_backbone("zf5").cell_centers(375, 500) == (0.5, 0.5)
    assert random_backbone("convnet5").cell_centers(97, 300) == (0.5, 0.5)
    # Overfeat's 2x2 pool (stride 6 before it) moves the centre by half its input cell: 3 px.
    assert random_backbone("overfeat5").cell_centers(224, 224) == (3.5, 3.5)


# -------------------------------------------------------------------- sizes vs forward
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_stride_channels_and_meta_output_size(name, random_backbone):
    backbone = random_backbone(name)
    assert (backbone.stride, backbone.out_channels) == EXPECTED[name]
    assert backbone.name == name
    assert math.prod(layer.stride for layer in backbone.geometry()) == backbone.stride
    meta = copy.deepcopy(backbone).to("meta")
    for height, width in SIZES:
        out = meta(torch.empty(2, 3, height, width, device="meta"))
        assert tuple(out.shape) == (2, backbone.out_channels, *backbone.output_size(height, width))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_real_forward_output_size(name, random_backbone):
    backbone = random_backbone(name)
    # The meta-device test above covers every size for every backbone; real passes here.
    sizes = SIZES[:3] if name in ("zf5", "efficientnet_lite0") else SIZES[:2]
    for height, width in sizes:
        with torch.inference_mode():
            out = backbone(torch.randn(1, 3, height, width))
        assert tuple(out.shape) == (1, backbone.out_channels, *backbone.output_size(height, width))


@pytest.mark.parametrize("name", ["zf5", "convnet5", "overfeat5", "efficientnet_lite0", "alexnet"])
def test_small_inputs_real_forward(name, random_backbone):
    """Every height 1..40 (ceil-mode and SAME edge cases); too small -> ConfigError."""
    backbone = random_backbone(name)
    width = 45
    for height in range(1, 41):
        try:
            expected = backbone.output_size(height, width)
        except ConfigError:
            with pytest.raises(RuntimeError):
                with torch.inference_mode():
                    backbone(torch.randn(1, 3, height, width))
            assert height < min_input_size(backbone.geometry())
            continue
        with torch.inference_mode():
            out = backbone(torch.randn(1, 3, height, width))
        assert tuple(out.shape[-2:]) == expected, height


def test_output_size_rejects_bad_sizes(random_backbone):
    backbone = random_backbone("alexnet")
    with pytest.raises(ConfigError, match="too small"):
        backbone.output_size(20, 300)
    with pytest.raises(ConfigError, match="positive integer"):
        backbone.output_size(0, 300)
    with pytest.raises(ConfigError, match="positive integer"):
        backbone.cell_centers(224, 22.5)


def test_chain_output_size_zero_for_empty_map():
    assert chain_output_size(2, [Layer2d(11, 4, 2)]) == 0
