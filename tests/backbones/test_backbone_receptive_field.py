"""cell_centers checked against the receptive field of real networks (gradient support)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sppdet.backbones.lrn import CrossChannelLRN


def _linearised(backbone: nn.Module) -> nn.Module:
    """Same connectivity, linear and with positive weights: ReLU/ReLU6/LRN -> identity, max
    pool -> average pool with the same kernel/stride/padding/ceil mode, |weights|. Then the
    gradient of one output cell is positive exactly on its receptive field (no cancellation,
    no argmax sparsity)."""
    net = copy.deepcopy(backbone).float()
    for parent in list(net.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, (nn.ReLU, nn.ReLU6, CrossChannelLRN, nn.LocalResponseNorm)):
                setattr(parent, child_name, nn.Identity())
            elif isinstance(child, nn.MaxPool2d):
                setattr(parent, child_name, nn.AvgPool2d(child.kernel_size, child.stride,
                                                         child.padding, child.ceil_mode))
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.abs_().add_(1e-3)
            parameter.requires_grad_(False)
    return net


def _support_centre(net: nn.Module, height: int, width: int, row: int, col: int):
    """(centre_y, centre_x, extent_y, extent_x) of the input-gradient support of one cell."""
    image = torch.ones(1, 3, height, width, requires_grad=True)
    net(image)[0, :, row, col].sum().backward()
    support = image.grad.abs().sum(dim=(0, 1)) > 0  # [H, W]
    rows = torch.nonzero(support.any(dim=1)).flatten()
    cols = torch.nonzero(support.any(dim=0)).flatten()
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    assert top > 0 and left > 0 and bottom < height - 1 and right < width - 1, \
        "cell not interior: use a larger input"
    return ((top + bottom + 1) / 2, (left + right + 1) / 2,
            int(bottom - top + 1), int(right - left + 1))


RF_CASES = [
    ("zf5", (224, 256)), ("zf5", (233, 267)),
    ("efficientnet_lite0", (400, 432)), ("efficientnet_lite0", (411, 437)),
    ("convnet5", (213, 250)), ("overfeat5", (203, 227)), ("overfeat7", (240, 256)),
    ("alexnet", (250, 261)), ("vgg16", (232, 255)), ("resnet50", (323, 334)),
]


@pytest.mark.parametrize("name,size", RF_CASES)
def test_cell_centres_match_receptive_field(name, size, random_backbone):
    backbone = random_backbone(name)
    height, width = size
    net = _linearised(backbone)
    cy0, cx0 = backbone.cell_centers(height, width)
    field = backbone.receptive_field()
    map_h, map_w = backbone.output_size(height, width)
    row = int((height / 2 - cy0) // backbone.stride)
    col = int((width / 2 - cx0) // backbone.stride)
    for j, i in ((row, col), (row + 1, col + 1)):
        assert j < map_h and i < map_w
        centre_y, centre_x, extent_y, extent_x = _support_centre(net, height, width, j, i)
        # Exact in this linear net, so "within half a pixel" holds with room to spare.
        assert float(centre_y) == pytest.approx(cy0 + backbone.stride * j, abs=1e-9)
        assert float(centre_x) == pytest.approx(cx0 + backbone.stride * i, abs=1e-9)
        assert (extent_y, extent_x) == (field, field)
