"""The SPP-net image classifier (paper section 3): conv trunk -> SPP -> fc6 -> fc7 -> fc8.

The spatial pyramid pooling layer replaces the last pooling layer of the trunk, so one network
accepts any input size: a 224 crop, the 180 input of multi-size training, or the full image at
``min(h, w) = 256`` (paper 3.1.4). The pooled vector is laid out exactly as
:func:`sppdet.ops.spp.spp_pool` lays out detection windows, so the fc6/fc7 trained here can start
the detector's fine-tuning (``sppdet finetune --init pretrained``).

"No SPP" (the paper's baseline with one pooling layer to 6x6) is the same network with the
single level ``(6,)``.

Three ways to score an image (paper 3.1.5, table 3):

* ``crop``: the centre ``crop_size`` crop, run through the network;
* ``full``: the whole image, pooled over its whole conv map;
* ``multiview``: several views (centre and 4 corners, or 18 views with the edge middles; each
  also mirrored) at one or more scales; each view is pooled from the conv map of the whole
  image at that scale -- one trunk pass per scale and mirror -- and the softmax scores of all
  views are averaged.

A view is pooled over the cells the network would have produced for that crop alone (its own
map size, placed at the view's offset in cells: the ``"crop"`` view mapping, **default**), so
the centre view of a ``crop_size`` image is exactly the crop path; the paper's appendix rule
for detection windows (cells whose centres lie inside the window) is available as ``"paper"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from sppdet.io.checkpoints import load_checkpoint, save_checkpoint
from sppdet.backbones import Backbone, build_backbone
from sppdet.classification.config import (  # re-exported
    REPRESENTATIONS, VIEW_MAPPINGS, VIEW_SETS)
from sppdet.errors import ConfigError, DataError, ModelError
from sppdet.ops.scales import resize_image
from sppdet.ops.spp import DEFAULT_LEVELS, spp_output_dim, spp_pool
from sppdet.ops.window_mapping import map_windows_to_cells

CHECKPOINT_FORMAT = "sppdet-spp-classifier"
CHECKPOINT_VERSION = 1


class SPPClassifier(nn.Module):
    """Trunk -> spatial pyramid pooling of the whole map -> fc6 -> fc7 -> K-way fc8.

    Args:
        backbone: the conv trunk (any :class:`~sppdet.backbones.Backbone`); trained with the rest.
        num_classes: K, the number of classes (fc8 outputs; no implicit background class).
        levels: pyramid levels in output order; ``(6,)`` is the no-SPP baseline.
        hidden: width of fc6 and fc7 (4096 in the paper).
        dropout: dropout after fc6 and fc7 (0.5, paper).
        seed: seeds the fc initialisation: fc6/fc7 He-normal (std ``sqrt(2 / fan_in)``, zero
            bias), fc8 Gaussian with std 0.01 (paper).
    """

    def __init__(self, backbone: Backbone, num_classes: int, *,
                 levels: Sequence[int] = DEFAULT_LEVELS, hidden: int = 4096,
                 dropout: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
        if hidden < 1:
            raise ConfigError(f"hidden must be >= 1, got {hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.backbone = backbone
        self.levels = tuple(int(n) for n in levels)
        self.num_classes = int(num_classes)
        self.hidden = int(hidden)
        self.dropout_p = float(dropout)
        in_dim = spp_output_dim(backbone.out_channels, self.levels)
        self.fc6 = nn.Linear(in_dim, hidden)
        self.fc7 = nn.Linear(hidden, hidden)
        self.fc8 = nn.Linear(hidden, num_classes)
        self.dropout = nn.Dropout(dropout)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in (self.fc6, self.fc7):
                # He et al. 2015: Var[w] = 2 / fan_in keeps ReLU activations at unit scale
                layer.weight.normal_(0.0, math.sqrt(2.0 / layer.in_features),
                                     generator=generator)
                layer.bias.zero_()
            self.fc8.weight.normal_(0.0, 0.01, generator=generator)
            self.fc8.bias.zero_()

    @property
    def in_dim(self) -> int:
        """Length of the pooled vector (``channels * sum(n * n)``)."""
        return self.fc6.in_features

    # ------------------------------------------------------------------ the network
    def pool(self, maps: Tensor) -> Tensor:
        """SPP of each whole map: ``[B, C, h, w]`` -> ``[B, C * sum(n * n)]``."""
        batch, _, height, width = maps.shape
        cells = torch.tensor([[0, 0, width - 1, height - 1]], dtype=torch.int64,
                             device=maps.device).expand(batch, 4)
        return spp_pool(maps, cells, torch.arange(batch, device=maps.device), self.levels)

    def head(self, pooled: Tensor) -> Tensor:
        """``[N, in_dim]`` pooled vectors -> ``[N, K]`` logits (dropout in train mode)."""
        x = self.dropout(torch.relu(self.fc6(pooled)))
        x = self.dropout(torch.relu(self.fc7(x)))
        return self.fc8(x)

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` preprocessed images (any H, W the trunk takes) -> ``[B, K]`` logits."""
        return self.head(self.pool(self.backbone(images)))

    @torch.no_grad()
    def representation(self, images: Tensor, layer: str = "spp") -> Tensor:
        """Full-image features for linear classifiers (paper 3.2), without dropout.

        Args:
            images: ``[B, 3, H, W]`` preprocessed.
            layer: ``"spp"`` (the pooled vector), ``"fc6"`` or ``"fc7"`` (after ReLU).

        Returns:
            ``[B, D]`` float.
        """
        if layer not in REPRESENTATIONS:
            raise ConfigError(f"layer must be one of {REPRESENTATIONS}, got {layer!r}")
        x = self.pool(self.backbone(images))
        if layer == "spp":
            return x
        x = torch.relu(self.fc6(x))
        if layer == "fc6":
            return x
        return torch.relu(self.fc7(x))

    def config(self) -> dict[str, Any]:
        """What rebuilds this network around a backbone (stored in checkpoints)."""
        return {"num_classes": self.num_classes, "levels": list(self.levels),
                "hidden": self.hidden, "dropout": self.dropout_p}

    def fc_layers(self) -> dict[str, nn.Linear]:
        """fc6 and fc7, for a backbone checkpoint the detector can fine-tune from."""
        return {"fc6": self.fc6, "fc7": self.fc7}


# ---------------------------------------------------------------------- inputs and views
def image_tensor(model: SPPClassifier, images: Sequence[np.ndarray]) -> Tensor:
    """Preprocess same-sized ``[H, W, 3]`` uint8 RGB images into ``[B, 3, H, W]``."""
    if not len(images):
        raise DataError("no images to stack")
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise DataError(f"images of one batch must share a size, got {sorted(shapes)}")
    return torch.stack([model.backbone.preprocess(image) for image in images])


def view_windows(height: int, width: int, size: int, views: str = "10") -> np.ndarray:
    """Square views of an image, as ``[V, 4]`` float64 0-based continuous xyxy pixels.

    ``"1"``: the centre; ``"10"``/``"18"`` give the unmirrored half of the paper's view sets
    (3.1.5): centre and 4 corners, plus the 4 edge middles for ``"18"``; the mirrored half is
    the same windows on the mirrored image (the set is symmetric). A side shorter than ``size``
    gives views of that side's full length.
    """
    if views not in VIEW_SETS:
        raise ConfigError(f"views must be one of {VIEW_SETS}, got {views!r}")
    if size < 1 or height < 1 or width < 1:
        raise DataError(f"view size {size} and image {height}x{width} must be positive")
    view_w, view_h = min(size, width), min(size, height)
    xs = {"l": 0, "c": (width - view_w) // 2, "r": width - view_w}
    ys = {"t": 0, "c": (height - view_h) // 2, "b": height - view_h}
    names = ["cc"]
    if views in ("10", "18"):
        names += ["tl", "tr", "bl", "br"]
    if views == "18":
        names += ["tc", "bc", "cl", "cr"]
    rows = []
    for name in names:
        y = ys[name[0]]
        x = xs[name[1]]
        rows.append((x, y, x + view_w, y + view_h))
    return np.asarray(rows, dtype=np.float64)


def crop_view_cells(model: SPPClassifier, windows: np.ndarray,
                    map_size: tuple[int, int]) -> np.ndarray:
    """Cells of integer-pixel views: the crop's own map, shifted by the view's offset in cells.

    A view ``(x, y, x + w, y + h)`` covers ``output_size(h, w)`` cells starting at cell
    ``(round(y / S), round(x / S))``; clamped to the map. When ``x`` and ``y`` are multiples
    of the stride ``S`` these are the cells whose receptive fields sit where the crop's own
    cells would.

    Returns:
        int64 ``[V, 4]`` inclusive ``(x0, y0, x1, y1)``.
    """
    stride = model.backbone.stride
    map_h, map_w = map_size
    cells = np.zeros((len(windows), 4), dtype=np.int64)
    for k, (x1, y1, x2, y2) in enumerate(np.asarray(windows, dtype=np.float64)):
        out_h, out_w = model.backbone.output_size(int(round(y2 - y1)), int(round(x2 - x1)))
        cx0 = min(int(math.floor(x1 / stride + 0.5)), map_w - 1)
        cy0 = min(int(math.floor(y1 / stride + 0.5)), map_h - 1)
        cells[k] = (cx0, cy0, min(cx0 + out_w, map_w) - 1, min(cy0 + out_h, map_h) - 1)
    return cells


@torch.no_grad()
def view_logits(model: SPPClassifier, feature_map: Tensor, image_size: tuple[int, int],
                windows: np.ndarray, *, mapping: str = "crop") -> Tensor:
    """Logits of views pooled from one conv map of the whole image.

    Args:
        feature_map: ``[1, C, h, w]`` or ``[C, h, w]``, the trunk's map of the image.
        image_size: ``(H, W)`` of the image the map was computed on.
        windows: ``[V, 4]`` views in that image's pixels (:func:`view_windows`).
        mapping: ``"crop"`` (:func:`crop_view_cells`, default) or ``"paper"`` (appendix rule).

    Returns:
        ``[V, K]`` logits (eval mode expected).
    """
    if mapping not in VIEW_MAPPINGS:
        raise ConfigError(f"view mapping must be one of {VIEW_MAPPINGS}, got {mapping!r}")
    fmap = feature_map if feature_map.dim() == 4 else feature_map.unsqueeze(0)
    map_size = (int(fmap.shape[2]), int(fmap.shape[3]))
    if mapping == "crop":
        cells = crop_view_cells(model, windows, map_size)
    else:
        centers = model.backbone.cell_centers(*image_size)
        cells = map_windows_to_cells(windows, model.backbone.stride, centers, map_size)
    return model.head(spp_pool(fmap, cells, levels=model.levels))


@dataclass(frozen=True)
class ViewSettings:
    """Multi-view testing (paper 3.1.5).

    Attributes:
        size: side of a view in pixels (224 in the paper).
        scales: shorter sides the image is resized to; one conv map each (and one of the
            mirrored image when ``flip``). The paper's 10-view uses 256; its 18-view uses six
            scales {224, 256, 300, 360, 448, 560}.
        views: ``"1"``, ``"10"`` or ``"18"`` (see :func:`view_windows`).
        flip: add the mirrored views.
        mapping: ``"crop"`` or ``"paper"`` (see the module docstring).
    """

    size: int = 224
    scales: tuple[int, ...] = (256,)
    views: str = "10"
    flip: bool = True
    mapping: str = "crop"

    def __post_init__(self) -> None:
        if self.views not in VIEW_SETS:
            raise ConfigError(f"views must be one of {VIEW_SETS}, got {self.views!r}")
        if self.mapping not in VIEW_MAPPINGS:
            raise ConfigError(f"view mapping must be one of {VIEW_MAPPINGS}, "
                              f"got {self.mapping!r}")
        if self.size < 1 or not self.scales or min(self.scales) < 1:
            raise ConfigError(f"view size and scales must be positive, got {self.size}, "
                              f"{self.scales}")

    @property
    def views_per_image(self) -> int:
        unmirrored = {"1": 1, "10": 5, "18": 9}[self.views]
        return unmirrored * (2 if self.flip else 1) * len(self.scales)


@torch.no_grad()
def multi_view_probabilities(model: SPPClassifier, image_rgb: np.ndarray,
                             settings: ViewSettings = ViewSettings(), *,
                             device: str | torch.device = "cpu") -> Tensor:
    """Mean softmax over all views of one image: ``[H, W, 3]`` uint8 RGB -> ``[K]`` (CPU)."""
    probabilities = []
    for scale in settings.scales:
        resized = resize_image(image_rgb, scale) if min(image_rgb.shape[:2]) != scale \
            else image_rgb
        height, width = resized.shape[:2]
        windows = view_windows(height, width, settings.size, settings.views)
        for mirrored in ((False, True) if settings.flip else (False,)):
            view_image = np.ascontiguousarray(resized[:, ::-1]) if mirrored else resized
            fmap = model.backbone(model.backbone.preprocess(view_image)[None].to(device))
            logits = view_logits(model, fmap, (height, width), windows,
                                 mapping=settings.mapping)
            probabilities.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(probabilities).mean(dim=0)


# ------------------------------------------------------------------------- checkpoints
def save_classifier(model: SPPClassifier, path: str | Path, *, classes: Sequence[str],
                    meta: dict[str, Any] | None = None) -> None:
    """Write the whole classifier (trunk, fc6-fc8, class names) with ``torch.save``.

    Written under a temporary name and renamed, so a crash never leaves half a file.
    """
    if len(classes) != model.num_classes:
        raise ConfigError(f"{len(classes)} class names for a {model.num_classes}-way classifier")
    payload = {
        "backbone": model.backbone.name,
        "config": model.config(),
        "classes": list(classes),
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "meta": dict(meta or {}),
    }
    save_checkpoint(path, payload, format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION)


def load_classifier(path: str | Path, *, map_location: str | torch.device = "cpu"
                    ) -> tuple[SPPClassifier, tuple[str, ...], dict[str, Any]]:
    """Read a checkpoint of :func:`save_classifier`: ``(model in eval mode, classes, meta)``.

    Raises:
        ModelError: the file is missing or is not an sppdet classifier checkpoint.
    """
    blob = load_checkpoint(path, format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION,
                           what="classifier checkpoint", map_location=map_location,
                           missing_hint="; run `sppdet pretrain` first",
                           hint=" (written by `sppdet pretrain` as classifier.pt)")
    try:
        config = dict(blob["config"])
        backbone = build_backbone(str(blob["backbone"]), None, pretrained=False)
        model = SPPClassifier(backbone, int(config["num_classes"]),
                              levels=tuple(config["levels"]), hidden=int(config["hidden"]),
                              dropout=float(config["dropout"]))
        model.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: the checkpoint does not rebuild a classifier ({exc})") from exc
    model.eval()
    return model, tuple(str(name) for name in blob["classes"]), dict(blob.get("meta", {}))
