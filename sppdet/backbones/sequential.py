"""A backbone whose trunk is one ``nn.Sequential`` of conv, pool and pointwise layers."""

from __future__ import annotations

from typing import Iterable

from torch import Tensor, nn

from sppdet.backbones.base import Backbone
from sppdet.backbones.geometry import Layer2d


def _square(value: int | tuple[int, ...], what: str, module: nn.Module) -> int:
    if isinstance(value, int):
        return value
    if len(set(value)) != 1:
        raise ValueError(f"non-square {what} {value} in {module}: not supported")
    return int(value[0])


def sequential_geometry(trunk: Iterable[nn.Module]) -> list[Layer2d]:
    """Layer chain of modules applied one after the other: every Conv2d and Max/AvgPool2d.

    Raises:
        ValueError: for a layer the geometry cannot describe (dilation, non-square kernel,
            string padding), so a new trunk cannot silently get a wrong geometry.
    """
    layers: list[Layer2d] = []
    for module in trunk:
        if isinstance(module, nn.Conv2d):
            if isinstance(module.padding, str):
                raise ValueError(f"string padding in {module}: not supported")
            if _square(module.dilation, "dilation", module) != 1:
                raise ValueError(f"dilated {module}: not supported")
            layers.append(Layer2d(
                kernel=_square(module.kernel_size, "kernel", module),
                stride=_square(module.stride, "stride", module),
                padding=_square(module.padding, "padding", module),
            ))
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            if isinstance(module, nn.MaxPool2d) and _square(module.dilation, "dilation",
                                                            module) != 1:
                raise ValueError(f"dilated {module}: not supported")
            layers.append(Layer2d(
                kernel=_square(module.kernel_size, "kernel", module),
                stride=_square(module.stride, "stride", module),
                padding=_square(module.padding, "padding", module),
                ceil_mode=bool(module.ceil_mode),
            ))
    return layers


class SequentialBackbone(Backbone):
    """Backbone whose conv trunk is ``self.features`` (an ``nn.Sequential``)."""

    features: nn.Sequential

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` preprocessed float -> ``[B, out_channels, h, w]``."""
        self._check_images(images)
        return self.features(images)

    def geometry(self) -> list[Layer2d]:
        return sequential_geometry(self.features)
