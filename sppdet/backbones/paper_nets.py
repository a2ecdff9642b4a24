"""The conv trunks of the SPP-net paper (table 1; REFERENCE 3): ZF-5, Convnet*-5, Overfeat-5/7.

Common choices, all from the paper and its released code:
- every conv and pool of kernel ``k`` is padded by ``floor(k / 2)`` (paper appendix), so a map
  cell ``x'`` is centred on pixel ``S x'`` (the 2x2 pool of Overfeat, an even kernel, has no
  padding and shifts the centres by half a cell; :meth:`cell_centers` accounts for it);
- max pools round their output size up (Caffe's pooling, ``ceil_mode=True``);
- LRN across channels, size 3, alpha 5e-5, beta 0.75, k 1 (the released ZF-5; Caffe's alpha,
  which PyTorch uses with the same meaning);
- a ReLU after every conv;
- input: BGR, minus 128 (the released detection code), divided by 64 inside the trunk (so that
  He-initialised layers start at unit scale when trained from scratch);

Weights: random init from a seed (He-normal, fan-out, zero bias), or a checkpoint file written by
:meth:`PaperTrunk.save_weights` (for example by a pretraining run), which may also carry fc6/fc7.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from sppdet.backbones.base import (
    load_state_dict_strict,
    preprocess_bgr_minus_128,
    read_state_dict,
    seeded,
)
from sppdet.backbones.lrn import CrossChannelLRN
from sppdet.backbones.sequential import SequentialBackbone
from sppdet.errors import ModelError
from sppdet.io.atomic import atomic_path

LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 3, 5e-5, 0.75, 1.0
FC_NAMES = ("fc6", "fc7")
#: Typical standard deviation (grey levels) of a natural image's pixels minus 128.
INPUT_STD = 64.0

# A layer spec: ("conv", out_channels, kernel, stride) | ("lrn",) | ("pool", kernel, stride).
LayerSpec = tuple


class InputScale(nn.Module):
    """Multiply the input by a constant (no parameters, nothing in the state dict)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = float(factor)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


def build_trunk(specs: Sequence[LayerSpec], in_channels: int = 3) -> nn.Sequential:
    """Build an ``nn.Sequential`` with Caffe-style names (conv1, relu1, norm1, pool1, ...).

    Convs and pools get ``floor(k / 2)`` padding, except even-sized pools (no padding); pools
    use ceil mode. The number in a layer's name is that of the conv before it.
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    # He init assumes unit-scale inputs; BGR-minus-128 pixels have a standard deviation of
    # about INPUT_STD, so the trunk divides them by it first. Scaling the input (not conv1's
    # weights) also keeps conv1's gradients at the scale of the other layers' when training
    # from scratch.
    layers["input_scale"] = InputScale(1.0 / INPUT_STD)
    channels, index = in_channels, 0
    for spec in specs:
        kind = spec[0]
        if kind == "conv":
            _, out_channels, kernel, stride = spec
            index += 1
            layers[f"conv{index}"] = nn.Conv2d(channels, out_channels, kernel, stride,
                                               padding=kernel // 2)
            layers[f"relu{index}"] = nn.ReLU(inplace=True)
            channels = out_channels
        elif kind == "lrn":
            layers[f"norm{index}"] = CrossChannelLRN(LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K)
        elif kind == "pool":
            _, kernel, stride = spec
            padding = kernel // 2 if kernel % 2 == 1 else 0
            layers[f"pool{index}"] = nn.MaxPool2d(kernel, stride, padding, ceil_mode=True)
        else:
            raise ValueError(f"unknown layer kind {kind!r}")
    return nn.Sequential(layers)


class PaperTrunk(SequentialBackbone):
    """A trunk of paper table 1; subclasses set ``name``, ``stride``, ``out_channels``, ``SPECS``.

    Args:
        weights: checkpoint file (see :meth:`save_weights`), or None for random init.
        pretrained: ignored: these trunks have no published weights; kept so that every
            backbone constructor takes the same arguments.
        seed: seed of the random init (recorded by :meth:`describe`).
    """

    preprocessing = "bgr-minus-128"
    SPECS: tuple[LayerSpec, ...] = ()

    def __init__(self, weights: str | None = None, pretrained: bool = True, *,
                 seed: int = 0) -> None:
        super().__init__(seed=seed)
        with seeded(seed):
            self.features = build_trunk(self.SPECS)
            for module in self.features:
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(module.bias)
        self.fc6: nn.Linear | None = None
        self.fc7: nn.Linear | None = None
        if weights is not None:
            self.load_weights(weights)
        self.eval()

    def preprocess(self, image_rgb: np.ndarray) -> Tensor:
        """``[H, W, 3]`` uint8 RGB -> ``[3, H, W]`` float32, BGR order, minus 128."""
        return preprocess_bgr_minus_128(image_rgb)

    def config(self) -> dict:
        return {
            "padding": "floor(k/2); none for even pools",
            "pool_ceil_mode": True,
            "lrn": {"size": LRN_SIZE, "alpha": LRN_ALPHA, "beta": LRN_BETA, "k": LRN_K},
        }

    def fc_layers(self) -> dict[str, nn.Linear] | None:
        """fc6/fc7 from the checkpoint (pretraining), or None."""
        if self.fc6 is None or self.fc7 is None:
            return None
        return {"fc6": self.fc6, "fc7": self.fc7}

    def load_weights(self, path: str | None) -> None:
        """Load a checkpoint written by :meth:`save_weights` (strict on the trunk's keys).

        The file holds the trunk's ``features.*`` tensors and optionally ``fc6.weight``,
        ``fc6.bias``, ``fc7.weight``, ``fc7.bias`` (all four or none); the fc layers are
        built from the stored shapes.

        Raises:
            ModelError: naming the file when it is missing, unreadable or does not match.
        """
        if path is None:
            raise ModelError(
                f"backbone {self.name!r} has no published weights: give it a weights file "
                f"(for example one written by pretraining), or use the random init"
            )
        state = read_state_dict(path, self.name)
        fc_keys = [f"{fc}.{part}" for fc in FC_NAMES for part in ("weight", "bias")]
        present = [key for key in fc_keys if key in state]
        if present and len(present) != len(fc_keys):
            missing = sorted(set(fc_keys) - set(present))
            raise ModelError(
                f"weights file {path} for backbone {self.name!r} has only part of fc6/fc7: "
                f"missing {', '.join(missing)}"
            )
        fc_layers: dict[str, nn.Linear] = {}
        for fc in FC_NAMES if present else ():
            weight, bias = state.pop(f"{fc}.weight"), state.pop(f"{fc}.bias")
            if weight.dim() != 2 or bias.shape != (weight.shape[0],):
                raise ModelError(
                    f"weights file {path}: {fc}.weight {tuple(weight.shape)} and {fc}.bias "
                    f"{tuple(bias.shape)} do not form a linear layer"
                )
            layer = nn.Linear(weight.shape[1], weight.shape[0])
            with torch.no_grad():
                layer.weight.copy_(weight)
                layer.bias.copy_(bias)
            fc_layers[fc] = layer
        if fc_layers and fc_layers["fc7"].in_features != fc_layers["fc6"].out_features:
            raise ModelError(
                f"weights file {path}: fc7 takes {fc_layers['fc7'].in_features} inputs but "
                f"fc6 gives {fc_layers['fc6'].out_features}"
            )
        trunk_only = nn.Module()
        trunk_only.features = self.features
        load_state_dict_strict(trunk_only, state, path, self.name)
        self.fc6, self.fc7 = fc_layers.get("fc6"), fc_layers.get("fc7")
        self._record_weights_file(path)

    def save_weights(self, path: str, fc_layers: dict[str, nn.Linear] | None = None) -> None:
        """Write the trunk (and optionally fc6/fc7) as a checkpoint :meth:`load_weights` reads.

        Written to a temporary name in the same folder and renamed, so a crash never leaves
        a half-written file under ``path``.

        Args:
            path: output file.
            fc_layers: ``{"fc6": Linear, "fc7": Linear}`` to store with the trunk, or None
                (then the backbone's own fc6/fc7 are stored if it has them).
        """
        fc_layers = fc_layers if fc_layers is not None else self.fc_layers()
        state = {f"features.{key}": value.detach().cpu()
                 for key, value in self.features.state_dict().items()}
        if fc_layers is not None:
            if set(fc_layers) != set(FC_NAMES):
                raise ModelError(f"fc_layers must be exactly {FC_NAMES}, got {sorted(fc_layers)}")
            for fc in FC_NAMES:
                state[f"{fc}.weight"] = fc_layers[fc].weight.detach().cpu()
                state[f"{fc}.bias"] = fc_layers[fc].bias.detach().cpu()
        # A plain state dict (no checkpoint tags): read_state_dict and other tools read it.
        with atomic_path(path) as temporary:
            torch.save(state, temporary)


class ZF5(PaperTrunk):
    """ZF-5 (paper table 1): stride 16, 256 channels, receptive field 139 pixels."""

    name, stride, out_channels = "zf5", 16, 256
    SPECS = (
        ("conv", 96, 7, 2), ("lrn",), ("pool", 3, 2),
        ("conv", 256, 5, 2), ("lrn",), ("pool", 3, 2),
        ("conv", 384, 3, 1),
        ("conv", 384, 3, 1),
        ("conv", 256, 3, 1),
    )


class ConvNet5(PaperTrunk):
    """Convnet*-5 (paper table 1: AlexNet with the pools after conv2 and conv3): stride 16."""

    name, stride, out_channels = "convnet5", 16, 256
    SPECS = (
        ("conv", 96, 11, 4),
        ("conv", 256, 5, 1), ("lrn",), ("pool", 3, 2),
        ("conv", 384, 3, 1), ("pool", 3, 2),
        ("conv", 384, 3, 1),
        ("conv", 256, 3, 1),
    )


class OverFeat5(PaperTrunk):
    """Overfeat-5 (paper table 1): stride 12, 512 channels.

    The table gives no LRN parameters for Overfeat; ZF-5's are used.
    """

    name, stride, out_channels = "overfeat5", 12, 512
    SPECS = (
        ("conv", 96, 7, 2), ("pool", 3, 3), ("lrn",),
        ("conv", 256, 5, 1), ("pool", 2, 2),
        ("conv", 512, 3, 1),
        ("conv", 512, 3, 1),
        ("conv", 512, 3, 1),
    )


class OverFeat7(OverFeat5):
    """Overfeat-7 (paper table 1): Overfeat-5 plus conv6 and conv7 (512 x 3x3)."""

    name = "overfeat7"
    SPECS = OverFeat5.SPECS + (("conv", 512, 3, 1), ("conv", 512, 3, 1))
