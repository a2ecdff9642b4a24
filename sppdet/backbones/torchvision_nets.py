"""torchvision's AlexNet, VGG-16 and ResNet-50 cut at stride 16.

- ``alexnet``: ``features`` through the ReLU of conv5, before the last max pool
  (strides 4 * 2 * 2 = 16), 256 channels.
- ``vgg16``: ``features`` through the ReLU of conv5_3, before pool5 (2^4 = 16), 512 channels.
- ``resnet50``: stem, layer1, layer2, layer3 (2 * 2 * 2 * 2 = 16), 1024 channels.

ImageNet weights come only from a local file: the architecture is built with torchvision's
``weights=None`` and the state dict is loaded from the file (strictly). Nothing is downloaded.
With no path given, the file is looked for where torchvision's own download would have put it
(``<torch hub dir>/checkpoints/<file name>``); a missing file is a ModelError that names the file,
the torchvision weights and their URL. Input: RGB, ImageNet mean/std.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

from sppdet.backbones.base import (
    Backbone,
    load_state_dict_strict,
    preprocess_imagenet_rgb,
    read_state_dict,
    seeded,
)
from sppdet.backbones.geometry import Layer2d
from sppdet.backbones.sequential import sequential_geometry
from sppdet.errors import ModelError


def hub_checkpoint_path(url: str) -> str:
    """Where ``torch.hub.load_state_dict_from_url`` would store the file of ``url``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def describe_torchvision_weights(weights: torchvision.models.WeightsEnum) -> str:
    """``"AlexNet_Weights.IMAGENET1K_V1 (<url>, SHA-256 starting with 7be5be79)"``.

    torchvision names its files ``<name>-<first 8 hex digits of the SHA-256>.pth``.
    """
    filename = os.path.basename(weights.url)
    prefix = os.path.splitext(filename)[0].rsplit("-", 1)[-1]
    return f"{type(weights).__name__}.{weights.name} ({weights.url}, SHA-256 starting with {prefix})"


class TorchvisionTrunk(Backbone):
    """A torchvision classification network cut at stride 16.

    Args:
        weights: path of the torchvision ImageNet state dict (the whole network's, as
            torchvision publishes it), or None.
        pretrained: with ``weights=None``: True loads the file from the torch hub cache
            (ModelError if it is not there), False keeps a seeded random init.
        seed: seed of the random init.

    Subclasses set ``WEIGHTS`` (accepted torchvision weights, preferred first), implement
    ``_build`` (the full torchvision network, ``weights=None``) and ``_adopt`` (keep the
    trunk, and fc6/fc7 where the network has them, from a full network).
    """

    preprocessing = "rgb-imagenet-mean-std"
    WEIGHTS: tuple[torchvision.models.WeightsEnum, ...] = ()
    _build: Callable[[], nn.Module]

    def __init__(self, weights: str | None = None, pretrained: bool = True, *,
                 seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.fc6: nn.Linear | None = None
        self.fc7: nn.Linear | None = None
        if weights is None and not pretrained:
            with seeded(seed):
                self._adopt(self._build(), with_fc=False)
        else:
            self.load_weights(weights)
        self.eval()

    def _adopt(self, net: nn.Module, with_fc: bool) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def preprocess(self, image_rgb: np.ndarray) -> Tensor:
        """``[H, W, 3]`` uint8 RGB -> ``[3, H, W]`` float32, RGB, ImageNet mean/std."""
        return preprocess_imagenet_rgb(image_rgb)

    def fc_layers(self) -> dict[str, nn.Linear] | None:
        """The classifier's fc6/fc7 when ImageNet weights are loaded, else None."""
        if self.fc6 is None or self.fc7 is None:
            return None
        return {"fc6": self.fc6, "fc7": self.fc7}

    def _missing_file_message(self, path: str | None) -> str:
        known = "; or ".join(describe_torchvision_weights(w) for w in self.WEIGHTS)
        where = (f"weights file {path} does not exist" if path is not None else
                 "no ImageNet weights file found in the torch hub cache (looked for "
                 + ", ".join(hub_checkpoint_path(w.url) for w in self.WEIGHTS) + ")")
        return (
            f"backbone {self.name!r}: {where}. It needs torchvision's {known}. sppdet does "
            f"not download: fetch the file yourself and give it as the weights file (or put "
            f"it at {hub_checkpoint_path(self.WEIGHTS[0].url)}), or use random init "
            f"(pretrained off)."
        )

    def load_weights(self, path: str | None) -> None:
        """Load torchvision's ImageNet state dict of the whole network from ``path``.

        None looks in the torch hub cache for the files of ``WEIGHTS``, in order.

        Raises:
            ModelError: naming the file, the torchvision weights and their URL when the file
                is missing; naming the file and the offending keys when it does not match.
        """
        if path is None:
            found = [hub_checkpoint_path(w.url) for w in self.WEIGHTS
                     if os.path.isfile(hub_checkpoint_path(w.url))]
            if not found:
                raise ModelError(self._missing_file_message(None))
            path = found[0]
        elif not os.path.isfile(path):
            raise ModelError(self._missing_file_message(path))
        state = read_state_dict(path, self.name)
        with torch.device("meta"):  # no random init: every tensor comes from the file
            net = self._build()
        load_state_dict_strict(net, state, path, self.name, assign=True)
        self._adopt(net, with_fc=True)
        source = next((describe_torchvision_weights(w) for w in self.WEIGHTS
                       if os.path.basename(w.url) == os.path.basename(path)), None)
        self._record_weights_file(path, source=source)


class FeaturesTrunk(TorchvisionTrunk):
    """A torchvision network whose trunk is a prefix of its ``features`` Sequential."""

    features: nn.Sequential

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` preprocessed float -> ``[B, out_channels, h, w]``."""
        self._check_images(images)
        return self.features(images)

    def geometry(self) -> list[Layer2d]:
        return sequential_geometry(self.features)


class AlexNetTrunk(FeaturesTrunk):
    """torchvision AlexNet through conv5's ReLU: stride 16, 256 channels.

    fc6/fc7 (``classifier[1]``, ``classifier[4]``) take the 256 x 6 x 6 map flattened in
    (C, H, W) order, as torchvision computes it: last 3x3/2 max pool, then adaptive average
    pooling to 6 x 6.
    """

    name, stride, out_channels = "alexnet", 16, 256
    WEIGHTS = (torchvision.models.AlexNet_Weights.IMAGENET1K_V1,)

    @staticmethod
    def _build() -> nn.Module:
        return torchvision.models.alexnet(weights=None)

    def _adopt(self, net: nn.Module, with_fc: bool) -> None:
        self.features = net.features[:12]
        if with_fc:
            self.fc6, self.fc7 = net.classifier[1], net.classifier[4]


class VGG16Trunk(FeaturesTrunk):
    """torchvision VGG-16 through conv5_3's ReLU (before pool5): stride 16, 512 channels.

    fc6/fc7 (``classifier[0]``, ``classifier[3]``) take the 512 x 7 x 7 map flattened in
    (C, H, W) order (pool5, then adaptive average pooling to 7 x 7).
    """

    name, stride, out_channels = "vgg16", 16, 512
    WEIGHTS = (torchvision.models.VGG16_Weights.IMAGENET1K_V1,)

    @staticmethod
    def _build() -> nn.Module:
        return torchvision.models.vgg16(weights=None)

    def _adopt(self, net: nn.Module, with_fc: bool) -> None:
        self.features = net.features[:30]
        if with_fc:
            self.fc6, self.fc7 = net.classifier[0], net.classifier[3]


class ResNet50Trunk(TorchvisionTrunk):
    """torchvision ResNet-50 through layer3: stride 16, 1024 channels; no fc6/fc7."""

    name, stride, out_channels = "resnet50", 16, 1024
    WEIGHTS = (torchvision.models.ResNet50_Weights.IMAGENET1K_V2,
               torchvision.models.ResNet50_Weights.IMAGENET1K_V1)

    @staticmethod
    def _build() -> nn.Module:
        return torchvision.models.resnet50(weights=None)

    def _adopt(self, net: nn.Module, with_fc: bool) -> None:
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` preprocessed float -> ``[B, 1024, h, w]``."""
        self._check_images(images)
        return self.layer3(self.layer2(self.layer1(self.stem(images))))

    def geometry(self) -> list[Layer2d]:
        # The main path of each bottleneck (1x1, 3x3 with the stride, 1x1); the shortcut's
        # strided 1x1 gives the same size and centre, which the tests check on real passes.
        modules: list[nn.Module] = list(self.stem)
        for layer in (self.layer1, self.layer2, self.layer3):
            for block in layer:
                modules += [block.conv1, block.conv2, block.conv3]
        return sequential_geometry(modules)
