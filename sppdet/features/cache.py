"""The conv5 feature cache: its per-image layout and the reader that pools windows from it.

A features artifact (written by the ``cache-features`` stage through
:class:`sppdet.io.item_store.ItemStore`) holds one group per image with

- datasets ``s<scale>``: conv5 map ``[C, h, w]`` (float16 by default) of the image resized so
  that ``min(H, W) = scale`` (:func:`sppdet.ops.scales.resized_size`);
- datasets ``flip/s<scale>`` when the cache holds mirrored images too;
- attributes ``width``, ``height`` (original pixels) and ``cell_centers`` (JSON: scale ->
  ``[cy0, cx0]``, the continuous image coordinate of the centre of cell ``(0, 0)`` at that
  scale, from the backbone). Storing the centres means readers need no backbone.

The record's params carry ``backbone`` (name and weights identity), ``stride``, ``channels``,
``scales``, ``flip``, ``dtype`` and ``compression`` (the codec name; ``zstd`` needs the
hdf5plugin package to read, which :class:`FeatureCache` loads).

:class:`FeatureCache` reads maps (a small LRU cache of decoded maps, since training visits an
image's windows in bursts, bounded both in images and in bytes) and pools windows with
:func:`sppdet.ops.spp.pool_windows`.
"""

from __future__ import annotations

import json
import os
from typing import Any
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from sppdet.io.item_store import ItemReader
from sppdet.backbones import Backbone
from sppdet.errors import ConfigError, DataError, Remedy
from sppdet.ops.scales import resize_image, resized_size
from sppdet.ops.spp import DEFAULT_LEVELS, pool_distinct_windows, pool_windows
from sppdet.io.closing import Closing

FEATURES_STAGE = "cache-features"
#: Codecs HDF5 decodes by itself; the others (``zstd``) need the hdf5plugin package loaded.
BUILTIN_CODECS = ("none", "lzf", "gzip")
#: Decoded maps (float32, every scale of an image) a :class:`FeatureCache` keeps at most.
DEFAULT_MAX_CACHED_BYTES = 256 * 1024 * 1024


def _nbytes(maps: dict[int, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in maps.values())


def map_name(scale: int, flip: bool = False) -> str:
    """Dataset name of the map at ``scale`` inside an image's group."""
    return f"flip/s{int(scale)}" if flip else f"s{int(scale)}"


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether no value of a float tensor is NaN or inf.

    A sum is about 30x cheaper than an elementwise check and is non-finite whenever a value is;
    only a sum that overflowed (huge but finite values) needs the elementwise check.
    """
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def load_codec(codec: str, path: Path) -> None:
    """Make HDF5 able to decode maps written with ``codec`` (a ``cache-features`` name).

    hdf5plugin registers its filters (zstd, blosc, ...) with HDF5 when imported; without the
    import a plugin-compressed dataset fails to read with an obscure HDF5 error.

    Raises:
        ConfigError: the codec needs hdf5plugin and it is not installed.
    """
    if codec in BUILTIN_CODECS:
        return
    try:
        import hdf5plugin  # noqa: F401  (registers the filters on import)
    except ImportError as exc:
        raise ConfigError(f"{path} was written with compression {codec}, which needs the "
                          "hdf5plugin package to read (pip install hdf5plugin)") from exc


def flip_boxes(boxes_xyxy: np.ndarray, width: int) -> np.ndarray:
    """Mirror 0-based continuous boxes horizontally in an image ``width`` pixels wide."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4).copy()
    x1 = boxes[:, 0].copy()
    boxes[:, 0] = width - boxes[:, 2]
    boxes[:, 2] = width - x1
    return boxes


class FeatureCache(Closing):
    """Reader of a features artifact.

    Args:
        path: the features artifact (``.h5``).
        device: where pooled features go (``"cpu"`` or a CUDA device).
        max_cached_images: decoded images kept in memory (all their scales).
        max_cached_bytes: bytes of decoded maps kept in memory at most (default 256 MiB);
            the least recently used images are dropped first. The image being read is kept
            even when it alone is larger (it is needed), so the bound is
            ``max(max_cached_bytes, one image's maps)``.

    Attributes:
        record: the artifact's :class:`~sppdet.io.records.Record`.
        backbone: backbone name.
        stride: total stride of the maps (pixels).
        channels: channels ``C`` of the maps.
        scales: tuple of scales (shorter side in pixels) cached for every image.
        has_flip: whether mirrored maps are cached.
    """

    def __init__(self, path: str | os.PathLike[str], *, device: str | torch.device = "cpu",
                 max_cached_images: int = 4,
                 max_cached_bytes: int = DEFAULT_MAX_CACHED_BYTES) -> None:
        if max_cached_images < 1 or max_cached_bytes < 1:
            raise ConfigError(f"the decoded-map cache needs room for at least one image, got "
                              f"{max_cached_images} images and {max_cached_bytes} bytes")
        self.path = Path(path)
        self._reader = ItemReader(self.path, made_by=FEATURES_STAGE)
        self.record = self._reader.record
        if self.record.stage != FEATURES_STAGE:
            raise ConfigError(f"{self.path} was made by `sppdet {self.record.stage}`, not by "
                              f"`sppdet {FEATURES_STAGE}`")
        params = self.record.params
        self.backbone: str = params["backbone"]["name"]
        self.stride = int(params["stride"])
        self.channels = int(params["channels"])
        self.scales: tuple[int, ...] = tuple(int(s) for s in params["scales"])
        self.has_flip = bool(params.get("flip", False))
        load_codec(str(params.get("compression", "lzf")), self.path)
        self.device = torch.device(device)
        self._max_cached = max_cached_images
        self._max_cached_bytes = int(max_cached_bytes)
        self._cache: OrderedDict[tuple[str, bool], dict[int, torch.Tensor]] = OrderedDict()
        self._cached_bytes = 0

    @property
    def cached_images(self) -> int:
        """(image, mirrored) entries of decoded maps held now."""
        return len(self._cache)

    @property
    def cached_bytes(self) -> int:
        """Bytes of the decoded maps held now (every scale of every held entry)."""
        return self._cached_bytes

    def close(self) -> None:
        self._reader.close()

    def image_ids(self) -> list[str]:
        return self._reader.ids()

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._reader

    def image_size(self, image_id: str) -> tuple[int, int]:
        """``(height, width)`` of the original image."""
        attrs = self._reader.group(image_id).attrs
        return int(attrs["height"]), int(attrs["width"])

    def cell_centers(self, image_id: str) -> dict[int, tuple[float, float]]:
        """scale -> ``(cy0, cx0)`` of the image's maps."""
        raw = json.loads(self._reader.group(image_id).attrs["cell_centers"])
        return {int(k): (float(v[0]), float(v[1])) for k, v in raw.items()}

    def maps(self, image_id: str, *, flip: bool = False,
             scales: Sequence[int] | None = None) -> dict[int, torch.Tensor]:
        """Conv maps ``scale -> [C, h, w]`` as float32 on ``device`` (LRU-cached per image).

        Raises:
            ConfigError: ``flip`` on a cache without mirrored maps, or an unknown scale.
            DataError: a map holds NaN or inf (names the image).
        """
        if flip and not self.has_flip:
            raise ConfigError(f"{self.path} has no mirrored maps",
                              remedy=Remedy.rerun(FEATURES_STAGE, flip=True))
        wanted = tuple(self.scales if scales is None else (int(s) for s in scales))
        unknown = [s for s in wanted if s not in self.scales]
        if unknown:
            raise ConfigError(f"scales {unknown} are not in {self.path} (cached: "
                              f"{list(self.scales)}); rerun cache-features with those scales")
        key = (image_id, flip)
        cached = self._cache.get(key)
        if cached is None:
            group = self._reader.group(image_id)
            cached = {}
            for scale in self.scales:
                array = group[map_name(scale, flip)][()]
                # torch's float16 -> float32 is about twice numpy's, and one sum replaces the
                # elementwise check (benchmarks/results/cache_codecs.md)
                tensor = torch.from_numpy(array).to(torch.float32)
                if not all_finite(tensor):
                    raise DataError(f"{self.path}: the conv map of image {image_id} at scale "
                                    f"{scale} holds NaN or inf",
                                    remedy=Remedy.rerun(FEATURES_STAGE, force=True))
                cached[scale] = tensor.to(self.device)
            self._cache[key] = cached
            self._cached_bytes += _nbytes(cached)
            # Least recently used first; the entry just read always stays.
            while len(self._cache) > 1 and (len(self._cache) > self._max_cached
                                            or self._cached_bytes > self._max_cached_bytes):
                _, dropped = self._cache.popitem(last=False)
                self._cached_bytes -= _nbytes(dropped)
        else:
            self._cache.move_to_end(key)
        return {s: cached[s] for s in wanted}

    def pool(self, image_id: str, boxes_xyxy: np.ndarray, *,
             scale: str | int = "best", flip: bool = False,
             rng: np.random.Generator | None = None,
             levels: Sequence[int] = DEFAULT_LEVELS) -> torch.Tensor:
        """SPP features of windows of one image.

        Args:
            image_id: the image.
            boxes_xyxy: ``[N, 4]`` windows in original-image pixels (0-based continuous),
                always given for the unmirrored image; with ``flip`` they are mirrored here.
            scale: ``"best"`` (per window, the scale whose scaled window is closest to
                224 x 224 pixels, the paper's rule), ``"random"`` (a random cached scale per
                window, used in fine-tuning; needs ``rng``), or one cached scale.
            flip: pool from the mirrored image's maps.
            rng: generator for ``scale="random"``.
            levels: pyramid levels.

        Returns:
            float32 ``[N, C * sum(n * n)]`` on ``device``.
        """
        return self._pool(image_id, boxes_xyxy, scale, flip, rng, levels, distinct=False)

    def pool_distinct(self, image_id: str, boxes_xyxy: np.ndarray, *,
                      scale: str | int = "best", flip: bool = False,
                      rng: np.random.Generator | None = None,
                      levels: Sequence[int] = DEFAULT_LEVELS) -> tuple[torch.Tensor, np.ndarray]:
        """:meth:`pool` once per distinct footprint: ``(pooled [U, D], inverse [N])`` with
        ``pooled[inverse]`` equal to :meth:`pool`'s result
        (:func:`sppdet.ops.spp.pool_distinct_windows`)."""
        return self._pool(image_id, boxes_xyxy, scale, flip, rng, levels, distinct=True)

    def _pool(self, image_id: str, boxes_xyxy: np.ndarray, scale: str | int, flip: bool,
              rng: np.random.Generator | None, levels: Sequence[int], *,
              distinct: bool) -> Any:
        """:meth:`pool` (``pool_windows``) or :meth:`pool_distinct` (``pool_distinct_windows``)."""
        boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        height, width = self.image_size(image_id)
        if flip:
            boxes = flip_boxes(boxes, width)
        if scale == "best":
            scale_per_box = None
        elif scale == "random":
            if rng is None:
                raise ConfigError("scale='random' needs an rng")
            scale_per_box = rng.choice(np.asarray(self.scales), size=len(boxes))
        else:
            if int(scale) not in self.scales:
                raise ConfigError(f"scale {scale} is not cached in {self.path} "
                                  f"(cached: {list(self.scales)})")
            scale_per_box = np.full(len(boxes), int(scale))
        maps = self.maps(image_id, flip=flip)
        centers = self.cell_centers(image_id)
        by_size = {resized_size(height, width, s): centers[s] for s in self.scales}

        def centers_fn(h_in: int, w_in: int) -> tuple[float, float]:
            try:
                return by_size[(h_in, w_in)]
            except KeyError:
                raise DataError(f"{self.path}: no cell centres stored for a {w_in}x{h_in} input "
                                f"of image {image_id}") from None

        pool = pool_distinct_windows if distinct else pool_windows
        return pool(maps, (height, width), boxes, scale_per_box, stride=self.stride,
                    cell_centers_fn=centers_fn, levels=levels)


@torch.no_grad()
def compute_maps(backbone: Backbone, image_rgb: np.ndarray, scales: tuple[int, ...],
                 device: torch.device, *, dtype: np.dtype, flip: bool
                 ) -> tuple[dict[str, np.ndarray], dict[str, list[float]]]:
    """conv5 maps of one image at every scale (and mirrored when ``flip``).

    Returns:
        ``(arrays, cell_centers)``: dataset name (``s<scale>``, ``flip/s<scale>``) -> map
        ``[C, h, w]`` of ``dtype``; scale (as text) -> ``[cy0, cx0]``.
    """
    height, width = image_rgb.shape[:2]
    arrays: dict[str, np.ndarray] = {}
    centers: dict[str, list[float]] = {}
    variants = [(False, image_rgb)] + ([(True, np.ascontiguousarray(image_rgb[:, ::-1]))]
                                       if flip else [])
    for scale in scales:
        h_in, w_in = resized_size(height, width, scale)
        centers[str(scale)] = list(backbone.cell_centers(h_in, w_in))
        for mirrored, image in variants:
            resized = resize_image(image, scale)
            batch = backbone.preprocess(resized).unsqueeze(0).to(device)
            if device.type == "cpu":
                batch = batch.contiguous(memory_format=torch.channels_last)
            if device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.float16):
                    fmap = backbone(batch)
            else:
                fmap = backbone(batch)
            fmap = fmap[0].float()
            if not torch.isfinite(fmap).all():
                raise DataError(f"the conv map at scale {scale} holds NaN or inf")
            arrays[map_name(scale, mirrored)] = fmap.cpu().numpy().astype(dtype)
    return arrays, centers


class ComputedFeatures:
    """Conv5 maps computed on demand with a backbone, with :class:`FeatureCache`'s ``pool``.

    What ``detect`` uses when a split has no feature cache (new images, one-off runs).

    Args:
        backbone: the conv trunk (eval mode, on ``device``).
        scales: shorter image sides in pixels.
        device: where the trunk runs.
        load_image: image id -> RGB uint8 ``[H, W, 3]``.
    """

    def __init__(self, backbone: Backbone, scales: Sequence[int], device: torch.device,
                 load_image: Callable[[str], np.ndarray]) -> None:
        self.backbone = backbone
        self.scales = tuple(int(s) for s in scales)
        self.device = device
        self.stride = backbone.stride
        self.channels = backbone.out_channels
        self._load_image = load_image
        self._last: tuple[str, dict[int, torch.Tensor], tuple[int, int]] | None = None

    def maps(self, image_id: str) -> tuple[dict[int, torch.Tensor], tuple[int, int]]:
        """scale -> map ``[C, h, w]`` (float32 on ``device``) and the image's ``(H, W)``."""
        if self._last is not None and self._last[0] == image_id:
            return self._last[1], self._last[2]
        image = self._load_image(image_id)
        arrays, _ = compute_maps(self.backbone, image, self.scales, self.device,
                                 dtype=np.dtype(np.float32), flip=False)
        maps = {s: torch.from_numpy(arrays[map_name(s)]).to(self.device) for s in self.scales}
        self._last = (image_id, maps, (int(image.shape[0]), int(image.shape[1])))
        return maps, self._last[2]

    def pool(self, image_id: str, boxes_xyxy: np.ndarray, *, scale: str | int = "best",
             levels: Sequence[int] = DEFAULT_LEVELS) -> torch.Tensor:
        """SPP features ``[N, C * 50]`` of windows in original pixels (see FeatureCache.pool)."""
        return self._pool(image_id, boxes_xyxy, scale, levels, distinct=False)

    def pool_distinct(self, image_id: str, boxes_xyxy: np.ndarray, *,
                      scale: str | int = "best", levels: Sequence[int] = DEFAULT_LEVELS
                      ) -> tuple[torch.Tensor, np.ndarray]:
        """``(pooled [U, D], inverse [N])``, see :meth:`FeatureCache.pool_distinct`."""
        return self._pool(image_id, boxes_xyxy, scale, levels, distinct=True)

    def _pool(self, image_id: str, boxes_xyxy: np.ndarray, scale: str | int,
              levels: Sequence[int], *, distinct: bool) -> Any:
        maps, (height, width) = self.maps(image_id)
        boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        if scale == "best":
            scale_per_box = None
        else:
            if int(scale) not in self.scales:
                raise ConfigError(f"scale {scale} is not among {list(self.scales)}")
            scale_per_box = np.full(len(boxes), int(scale))
        pool = pool_distinct_windows if distinct else pool_windows
        return pool(maps, (height, width), boxes, scale_per_box, stride=self.stride,
                    cell_centers_fn=self.backbone.cell_centers, levels=levels)
