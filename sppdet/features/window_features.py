"""Features of image windows read from the conv5 cache: SPP ("pool5"), then fc6 or fc7.

The SVMs, the box regressors and the detector all describe a window the same way: the window
is pooled from the cached conv5 map of the scale chosen for it (paper 4.1, "best" scale,
:meth:`sppdet.features.cache.FeatureCache.pool`), and for ``fc6`` / ``fc7`` the pooled vector
goes through the fine-tuned fc layers (:meth:`sppdet.features.fc_head.FcHead.features`, after ReLU).
:class:`WindowFeaturizer` does this for one image at a time, in batches, and keeps the time
spent pooling and in the fc layers apart. :func:`window_cells` gives the feature-map cells a
window pools from, so windows with the same footprint (identical features) can be pooled once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from sppdet.errors import ConfigError, DataError, ModelError, Remedy
from sppdet.features.fc_head import LAYERS, FcHead
from sppdet.features.cache import FeatureCache
from sppdet.ops.scales import select_scales
from sppdet.ops.spp import DEFAULT_LEVELS, cells_at_scale, spp_output_dim


def window_cells(cache: FeatureCache, image_id: str,
                 boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Feature-map cells of windows at their best scale, as ``FeatureCache.pool`` maps them.

    Same rules as ``FeatureCache.pool(scale="best")``: the scale among the cached ones whose
    scaled window is closest to 224 x 224 pixels (:func:`sppdet.ops.scales.select_scales`, paper
    rule, ties to the smaller scale), then the paper's window-to-cell mapping. Two windows with
    equal cells and scale have identical pooled features.

    Args:
        cache: the open feature cache.
        image_id: the image.
        boxes_xyxy: ``[N, 4]`` 0-based continuous boxes in original-image pixels.

    Returns:
        ``(cells, scale)``: int64 ``[N, 4]`` inclusive cells ``(x0, y0, x1, y1)`` and int64
        ``[N]`` the scale (shorter side in pixels) each window is pooled at.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    cells = np.zeros((boxes.shape[0], 4), dtype=np.int64)
    chosen = np.zeros(boxes.shape[0], dtype=np.int64)
    if boxes.shape[0] == 0:
        return cells, chosen
    height, width = cache.image_size(image_id)
    maps = cache.maps(image_id)
    centers = cache.cell_centers(image_id)
    chosen[:] = select_scales(boxes, (height, width), sorted(maps))
    for scale in np.unique(chosen):
        rows = np.flatnonzero(chosen == scale)
        fmap = maps[int(scale)]
        center = centers[int(scale)]
        cells[rows] = cells_at_scale(
            boxes[rows], (height, width), int(scale), stride=cache.stride,
            cell_centers_fn=lambda _h, _w, c=center: c,
            map_size=(int(fmap.shape[-2]), int(fmap.shape[-1])),
        )
    return cells, chosen


@dataclass
class FeatureTimes:
    """Wall time of a :class:`WindowFeaturizer` so far.

    Attributes:
        pool_seconds: reading maps and SPP pooling.
        fc_seconds: the fc layers (0 for ``pool5``).
        windows: windows featurized.
        distinct: their distinct footprints, each pooled and put through the fc layers once.
        images: calls made.
    """

    pool_seconds: float = 0.0
    fc_seconds: float = 0.0
    windows: int = 0
    distinct: int = 0
    images: int = 0


class WindowFeaturizer:
    """Features of one image's windows: SPP at the best scale, then the fc layers.

    Args:
        cache: the open feature cache (its ``device`` is where pooling and the fc run).
        head: the fine-tuned fc layers; required for ``fc6`` / ``fc7``, ignored for ``pool5``.
        layer: ``"fc7"`` (the SVMs' default), ``"fc6"`` or ``"pool5"`` (the SPP vector).
        batch_size: windows per fc forward pass (bounds the memory of the fc activations).

    Attributes:
        dim: length ``D`` of a feature vector.
        times: :class:`FeatureTimes`.

    Raises:
        ConfigError: an unknown layer, or fc6/fc7 without a head.
        ModelError: the head's input width does not match the cache's SPP vector.
    """

    def __init__(self, cache: FeatureCache, head: FcHead | None, layer: str = "fc7", *,
                 batch_size: int = 1024) -> None:
        if layer not in LAYERS:
            raise ConfigError(f"layer must be one of {LAYERS}, got {layer!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.cache = cache
        self.layer = layer
        self.batch_size = int(batch_size)
        self.pooled_dim = spp_output_dim(cache.channels, DEFAULT_LEVELS)
        self.head: FcHead | None = None
        if layer != "pool5":
            if head is None:
                raise ConfigError(f"layer {layer} needs the fine-tuned fc layers (an fc "
                                  "checkpoint); pool5 needs none")
            if head.in_dim != self.pooled_dim:
                raise ModelError(
                    f"the fc layers take {head.in_dim}-d SPP vectors but {cache.path} gives "
                    f"{self.pooled_dim}-d ones ({cache.channels} channels x "
                    f"{self.pooled_dim // cache.channels} bins): they were made with another "
                    "backbone or pyramid"
                )
            self.head = head.to(cache.device).eval()
        self.dim = self.pooled_dim if self.head is None else self.head.hidden
        self.times = FeatureTimes()

    def __call__(self, image_id: str, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Features of ``[N, 4]`` windows (original-image pixels) of one image.

        Returns:
            float32 ``[N, D]`` on the CPU (``[0, D]`` for no windows).

        Raises:
            DataError: the features hold NaN or inf (names the image and the layer).
        """
        boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        out = np.empty((boxes.shape[0], self.dim), dtype=np.float32)
        self.times.images += 1
        if boxes.shape[0] == 0:
            return out
        start = time.perf_counter()
        # one row per distinct footprint: windows on the same cells have the same features
        pooled, inverse = self.cache.pool_distinct(image_id, boxes, scale="best")
        _sync(pooled)
        pooled_at = time.perf_counter()
        self.times.pool_seconds += pooled_at - start
        if self.head is None:
            distinct = pooled.cpu().numpy()
        else:
            distinct = np.empty((pooled.shape[0], self.dim), dtype=np.float32)
            with torch.inference_mode():
                for first in range(0, pooled.shape[0], self.batch_size):
                    batch = pooled[first:first + self.batch_size]
                    distinct[first:first + batch.shape[0]] = (
                        self.head.features(batch, self.layer).cpu().numpy()
                    )
            self.times.fc_seconds += time.perf_counter() - pooled_at
        np.take(distinct, inverse, axis=0, out=out)
        self.times.windows += boxes.shape[0]
        self.times.distinct += pooled.shape[0]
        finite = np.isfinite(out).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise DataError(
                f"{self.cache.path}: the {self.layer} features of image {image_id} hold NaN or "
                f"inf in {bad.size} window(s) (first {bad[:5].tolist()})",
                remedy=Remedy.rerun("cache-features", force=True,
                                    alternative="check the fc checkpoint",
                                    purpose=" to rebuild the feature cache"))
        return out


def _sync(tensor: torch.Tensor) -> None:
    """Wait for queued GPU work, so the pooling time is not billed to the fc layers."""
    if tensor.is_cuda:
        torch.cuda.synchronize(tensor.device)
