"""Spatial arithmetic of a conv trunk: output size and receptive-field centres.

A trunk is described, along one image axis, by the chain of layers that change geometry
(convolutions and pools; pointwise layers such as ReLU, BatchNorm or LRN do not). Both image
axes use the same chain because every kernel in sppdet's backbones is square.

Coordinates are sppdet's 0-based continuous pixel coordinates: pixel ``i`` covers ``[i, i+1)``
and its centre is ``i + 0.5``. Receptive-field arithmetic (e.g. Dumoulin & Visin, "A guide to
convolution arithmetic", 2016): a layer with kernel ``k``, stride ``s`` and left padding ``p``
applied to a map whose cell 0 is centred at ``c`` with spacing ``j`` gives a map whose cell 0 is
centred at ``c + ((k - 1) / 2 - p) * j`` with spacing ``j * s``. With ``p = floor(k / 2)`` and odd
``k`` the centre does not move, which is the paper's "centred at S x'" rule (SPP-net appendix).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

from sppdet.errors import ConfigError


@dataclass(frozen=True)
class Layer2d:
    """Geometry of one square conv or pool layer.

    Attributes:
        kernel: kernel size in cells of the layer's input.
        stride: stride in cells of the layer's input.
        padding: symmetric zero padding in cells, or ``"same"`` for TensorFlow's SAME padding
            computed from the actual input size (output ``ceil(n / stride)``, the odd cell of
            padding on the right/bottom).
        ceil_mode: pooling output size rounded up (Caffe's pooling, PyTorch ``ceil_mode=True``).
    """

    kernel: int
    stride: int = 1
    padding: int | Literal["same"] = 0
    ceil_mode: bool = False


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) in pixels for one axis.

    TensorFlow's ``padding="SAME"``: output size ``ceil(size / stride)``, total padding
    ``max((out - 1) * stride + kernel - size, 0)``, of which ``total // 2`` goes before and the
    rest after (so an odd total puts the extra cell on the right/bottom).
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def layer_padding(size: int, layer: Layer2d) -> tuple[int, int]:
    """(before, after) zero padding of ``layer`` for an input of ``size`` cells along one axis."""
    if layer.padding == "same":
        return tf_same_padding(size, layer.kernel, layer.stride)
    return layer.padding, layer.padding


def layer_output_size(size: int, layer: Layer2d) -> int:
    """Output cells of ``layer`` for ``size`` input cells along one axis (may be <= 0).

    Floor mode is PyTorch's/Caffe's convolution rule; ceil mode is PyTorch's
    ``pooling_output_shape`` (identical to Caffe's PoolingLayer): round up, then drop the last
    window if it would start inside the right padding.
    """
    before, after = layer_padding(size, layer)
    span = size + before + after - layer.kernel
    if not layer.ceil_mode:
        # A conv or floor-mode pool needs the padded input to hold at least one window.
        return span // layer.stride + 1 if span >= 0 else 0
    # Ceil mode keeps a window that starts inside the input even when it runs past the end,
    # also when the input is smaller than the kernel (span < 0).
    out = -(-span // layer.stride) + 1
    if (out - 1) * layer.stride >= size + before:
        out -= 1
    return out


def chain_output_size(size: int, layers: Sequence[Layer2d]) -> int:
    """Output cells of a chain of layers along one axis; 0 when the input is too small."""
    for layer in layers:
        size = layer_output_size(size, layer)
        if size <= 0:
            return 0
    return size


def chain_first_center(size: int, layers: Sequence[Layer2d]) -> float:
    """Continuous image coordinate of the receptive-field centre of output cell 0 (one axis).

    Args:
        size: input size in pixels along the axis (needed for SAME padding).
        layers: the chain, input side first.

    Returns:
        The centre in 0-based continuous pixel coordinates; cell ``i`` is centred at
        ``center + i * prod(strides)``.
    """
    center, jump = 0.5, 1.0  # pixel 0 is centred at 0.5 and pixels are 1 apart
    for layer in layers:
        before, _ = layer_padding(size, layer)
        center += ((layer.kernel - 1) / 2.0 - before) * jump
        jump *= layer.stride
        size = layer_output_size(size, layer)
    return center


def chain_stride(layers: Sequence[Layer2d]) -> int:
    """Total stride (product of the strides) of a chain."""
    return math.prod(layer.stride for layer in layers)


def chain_receptive_field(layers: Sequence[Layer2d]) -> int:
    """Receptive-field size in pixels of one output cell (ignoring the image border)."""
    field, jump = 1, 1
    for layer in layers:
        field += (layer.kernel - 1) * jump
        jump *= layer.stride
    return field


def map_size_or_raise(
    height: int, width: int, layers: Sequence[Layer2d], backbone_name: str
) -> tuple[int, int]:
    """(h, w) of the output map for an ``height x width`` input; ConfigError when empty.

    Raises:
        ConfigError: if a size is not a positive integer or the input is too small to give at
            least one output cell.
    """
    for label, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(
                f"backbone {backbone_name!r}: input {label} must be a positive integer, "
                f"got {value!r}"
            )
    out_h, out_w = chain_output_size(height, layers), chain_output_size(width, layers)
    if out_h <= 0 or out_w <= 0:
        raise ConfigError(
            f"backbone {backbone_name!r}: an input of {height}x{width} pixels (HxW) is too "
            f"small; its feature map would be {max(out_h, 0)}x{max(out_w, 0)}. Use a larger "
            f"scale: both sides must be at least {min_input_size(layers)} pixels."
        )
    return out_h, out_w


def min_input_size(layers: Sequence[Layer2d], limit: int = 100_000) -> int:
    """Smallest input size (pixels, one axis) that gives at least one output cell."""
    for size in range(1, limit + 1):
        if chain_output_size(size, layers) >= 1:
            return size
    raise ConfigError(f"no input size up to {limit} pixels gives an output cell")
