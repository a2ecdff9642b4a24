"""The interface every conv trunk ("backbone") of sppdet implements, and shared helpers.

A backbone maps a preprocessed image batch ``[B, 3, H, W]`` to the map that SPP pools
(conv5 or its equivalent) ``[B, C, h, w]``. Besides ``forward`` it states everything the window
mapping and the feature cache need: the total ``stride``, ``out_channels``, the exact map size
(:meth:`Backbone.output_size`), where each map cell is centred in the image
(:meth:`Backbone.cell_centers`) and the input normalisation (:meth:`Backbone.preprocess`).
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from sppdet.backbones.geometry import (
    Layer2d,
    chain_first_center,
    chain_receptive_field,
    map_size_or_raise,
)
from sppdet.errors import DataError, ModelError
from sppdet.io.hashing import file_sha256

# torchvision's ImageNet normalisation of RGB values in [0, 1] (torchvision.transforms docs).
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """A conv trunk cut at the layer that SPP pools.

    Subclasses set the class attributes ``name``, ``stride``, ``out_channels`` and
    ``preprocessing`` (a short label such as ``"bgr-minus-128"``), and implement
    :meth:`forward`, :meth:`preprocess` and :meth:`geometry`. Everything spatial
    (:meth:`output_size`, :meth:`cell_centers`) is derived from :meth:`geometry`, the chain of
    conv/pool layers along one axis, and is tested against real forward passes.

    A freshly built backbone is in eval mode (BatchNorm uses its running statistics).
    """

    name: str = ""
    stride: int = 0
    out_channels: int = 0
    preprocessing: str = ""

    def __init__(self, *, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed
        self.weights_path: str | None = None
        self.weights_sha256: str | None = None
        self.weights_source: str | None = None

    # ----------------------------------------------------------------------------- interface
    def forward(self, images: Tensor) -> Tensor:  # pragma: no cover - abstract
        """``[B, 3, H, W]`` float (output of :meth:`preprocess`) -> ``[B, C, h, w]``."""
        raise NotImplementedError

    def preprocess(self, image_rgb: np.ndarray) -> Tensor:  # pragma: no cover - abstract
        """``[H, W, 3]`` uint8 RGB -> ``[3, H, W]`` float32 in this backbone's own input format."""
        raise NotImplementedError

    def geometry(self) -> list[Layer2d]:  # pragma: no cover - abstract
        """The chain of conv/pool layers (input side first) that sets the map geometry."""
        raise NotImplementedError

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the output map for an input of ``height x width`` pixels.

        Raises:
            ConfigError: if the input is too small to give at least one cell.
        """
        return map_size_or_raise(height, width, self.geometry(), self.name)

    def cell_centers(self, height: int, width: int) -> tuple[float, float]:
        """(cy0, cx0): image position of the receptive-field centre of map cell (0, 0).

        Positions are 0-based continuous pixel coordinates (pixel ``i`` covers ``[i, i+1)``,
        its centre is ``i + 0.5``). Cell ``(j, i)`` is centred at
        ``(cy0 + stride * j, cx0 + stride * i)``. For a trunk padded by ``floor(k/2)`` in every
        layer (ZF-5) this is ``(0.5, 0.5)``: cell ``x'`` is centred on pixel ``S x'``, the rule
        of the paper's appendix. With TensorFlow SAME padding (EfficientNet-Lite0) it depends on
        the input size, which is why the size is an argument.

        Raises:
            ConfigError: if the input is too small to give at least one cell.
        """
        self.output_size(height, width)
        layers = self.geometry()
        return chain_first_center(height, layers), chain_first_center(width, layers)

    def receptive_field(self) -> int:
        """Side in pixels of one map cell's receptive field (ignoring the image border)."""
        return chain_receptive_field(self.geometry())

    def fc_layers(self) -> dict[str, nn.Linear] | None:
        """Pretrained fc6/fc7-like layers of the source network (``{"fc6": ..., "fc7": ...}``),
        or None when there are none (random init, or a network without such layers)."""
        return None

    def load_weights(self, path: str | None) -> None:  # pragma: no cover - abstract
        """Load weights strictly from a file; None means this backbone's default pretrained
        weights (where it has any: the file shipped with a package, or torchvision's file in
        the torch hub cache).

        Raises:
            ModelError: naming the file, when it is missing, unreadable or does not match.
        """
        raise NotImplementedError

    def config(self) -> dict:
        """Architecture settings that change the features (for artifact records)."""
        return {}

    def describe(self) -> dict:
        """Identity of this backbone for artifact records.

        Returns:
            ``name``, ``stride``, ``out_channels``, ``receptive_field``, ``preprocessing``,
            ``config`` and
            ``weights``: ``"file"`` with ``weights_path`` and ``weights_sha256`` (hex digest of
            the file's bytes), or ``"random-init(seed=N)"`` with those two set to None.
        """
        from_file = self.weights_path is not None
        return {
            "name": self.name,
            "stride": self.stride,
            "out_channels": self.out_channels,
            "receptive_field": self.receptive_field(),
            "preprocessing": self.preprocessing,
            "config": self.config(),
            "weights": "file" if from_file else f"random-init(seed={self.seed})",
            "weights_path": self.weights_path,
            "weights_sha256": self.weights_sha256,
            "weights_source": self.weights_source,
        }

    # ------------------------------------------------------------------------------- helpers
    def _check_images(self, images: Tensor) -> None:
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise DataError(
                f"backbone {self.name!r} expects images as a float tensor [B, 3, H, W] "
                f"(from preprocess), got {shape}"
            )
        if not images.is_floating_point():
            raise DataError(
                f"backbone {self.name!r} expects a float tensor (from preprocess), got "
                f"{images.dtype}"
            )

    def _record_weights_file(self, path: str, source: str | None = None) -> None:
        self.weights_path = os.path.abspath(path)
        self.weights_sha256 = file_sha256(path)
        self.weights_source = source


# ----------------------------------------------------------------------------- preprocessing
def check_rgb_image(image_rgb: np.ndarray) -> np.ndarray:
    """Validate an ``[H, W, 3]`` uint8 RGB image; raise DataError saying what came instead."""
    if not isinstance(image_rgb, np.ndarray):
        raise DataError(f"expected an image as a numpy array [H, W, 3] uint8 RGB, got "
                        f"{type(image_rgb).__name__}")
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise DataError(
            f"expected an image [H, W, 3] uint8 RGB, got shape {image_rgb.shape} "
            f"dtype {image_rgb.dtype}"
        )
    if image_rgb.shape[0] == 0 or image_rgb.shape[1] == 0:
        raise DataError(f"expected a non-empty image, got shape {image_rgb.shape}")
    return image_rgb


def preprocess_bgr_minus_128(image_rgb: np.ndarray) -> Tensor:
    """SPP-net's released detection code: BGR channel order, subtract 128 (REFERENCE 3).

    Returns:
        float32 ``[3, H, W]``, channel 0 = blue, values in [-128, 127].
    """
    image = check_rgb_image(image_rgb)
    chw = np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32)
    return torch.from_numpy(chw).sub_(128.0)


def preprocess_imagenet_rgb(image_rgb: np.ndarray) -> Tensor:
    """torchvision's ImageNet input: RGB in [0, 1], minus mean, over std per channel.

    Returns:
        float32 ``[3, H, W]``, channel 0 = red.
    """
    image = check_rgb_image(image_rgb)
    chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
    mean = torch.tensor(IMAGENET_MEAN_RGB, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD_RGB, dtype=torch.float32).view(3, 1, 1)
    return chw.div_(255.0).sub_(mean).div_(std)


def preprocess_rgb_unit_range(image_rgb: np.ndarray) -> Tensor:
    """EfficientNet-Lite input (REFERENCE 11): RGB, ``(x - 127.5) / 127.5`` in [-1, 1].

    Returns:
        float32 ``[3, H, W]``, channel 0 = red.
    """
    image = check_rgb_image(image_rgb)
    chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
    return chw.sub_(127.5).div_(127.5)


# ---------------------------------------------------------------------------------- weights
@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU generator seeded, restoring the caller's state after.

    Used around module construction so that random init is reproducible from ``seed`` without
    disturbing the global random stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def read_state_dict(path: str, backbone_name: str) -> dict[str, Tensor]:
    """Read a state dict (a mapping of names to tensors) saved with ``torch.save``.

    Only tensors are unpickled (``weights_only=True``), so a file cannot run code.

    Raises:
        ModelError: naming the file, if it is missing, unreadable or not a state dict.
    """
    if not os.path.isfile(path):
        raise ModelError(f"weights file {path} for backbone {backbone_name!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise ModelError(
            f"cannot read weights file {path} for backbone {backbone_name!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, Tensor) for key, value in state.items()
    ):
        raise ModelError(
            f"weights file {path} for backbone {backbone_name!r} is not a state dict (a "
            f"mapping of parameter names to tensors); got {type(state).__name__}"
        )
    return dict(state)


def load_state_dict_strict(
    module: nn.Module,
    state: Mapping[str, Tensor],
    path: str,
    backbone_name: str,
    *,
    assign: bool = False,
) -> None:
    """``module.load_state_dict(state, strict=True)`` with a message that names the file.

    ``assign=True`` makes the loaded tensors the module's parameters (for a module built on the
    meta device, which skips the cost of a random init that would be overwritten).

    Raises:
        ModelError: listing missing keys, unexpected keys and shape mismatches (first few of
            each) and naming the file and the backbone.
    """
    expected = module.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and tuple(state[key].shape) != tuple(value.shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", mismatched)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{label}: {', '.join(items[:5])}{more}")
        raise ModelError(
            f"weights file {path} does not match backbone {backbone_name!r}: "
            + "; ".join(parts)
        )
    module.load_state_dict(state, strict=True, assign=assign)
