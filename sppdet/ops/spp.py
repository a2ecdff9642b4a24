"""Spatial pyramid pooling (paper section 2.3 and 4.1) of image windows on conv feature maps.

Output layout (fixed; a trained fc6 depends on it):

* levels are concatenated in the order of ``levels`` (default ``(6, 3, 2, 1)``: the 6x6 level
  first; the released Caffe net used ``(1, 2, 3, 6)``);
* within a level of ``n x n`` bins the ``C * n * n`` values are channel-major, then bin row,
  then bin column: index ``c * n * n + row * n + col`` (the flattening of a ``[C, n, n]``
  tensor, as the released code's ``spm_pool_caffe_mex.cpp`` also lays them out).

Bins (paper 2.3 and REFERENCE section 4): for a window of ``w`` cells and a level of ``n``
bins, bin ``i`` (0-based) covers cells ``[floor(i w / n), ceil((i + 1) w / n))`` -- floor on
the left/top, ceil on the right/bottom; max pooling. torchvision's ``roi_pool`` computes
exactly this partition on integer cell boxes: it takes ``roi_w = x1 - x0 + 1`` and bins
``floor(i * bin_w)`` / ``ceil((i + 1) * bin_w)`` with ``bin_w = roi_w / n`` in the feature
map's float type. That floating-point arithmetic is exact for n in
{1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 16} (checked for every window size up to 65536 cells) but not
for e.g. n = 7 or 13 (a 57-cell window at n = 7 in float32 gets a wrong bin); :func:`spp_pool`
therefore checks each level it pools with roi_pool against the exact partition and refuses one
that differs.

Only the finest level reads the feature map: a level ``n`` that divides a finer level ``m``
(3, 2 and 1 divide 6) is max-pooled from ``m``'s grid, which gives the same partition exactly
(proof in ``_direct_levels``) and saves the coarse levels' passes over the windows (a
fifth to a quarter of the pooling time, ``benchmarks/spp_pooling_speed.py``).

Unlike the released code (which starts each bin at 0, i.e. pools ``max(0, x)``), this is a
plain max; the two agree on post-ReLU features.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_pool

from sppdet.errors import ConfigError, DataError
from sppdet.ops.scales import resized_size, scale_boxes, select_scales
from sppdet.ops.spp_levels import DEFAULT_LEVELS  # re-exported
from sppdet.ops.window_mapping import RELEASED_OFFSET, map_windows_to_cells


# Window sizes (cells) up to which a level's roi_pool partition is checked at least.
_EXACTNESS_CHECK_CELLS = 4096
_POOL_DTYPES = (torch.float32, torch.float64)
# Below this many windows per thread, the thread hand-off costs more than it saves.
_MIN_WINDOWS_PER_THREAD = 64


def spp_output_dim(channels: int, levels: Sequence[int] = DEFAULT_LEVELS) -> int:
    """Length of an SPP vector: ``channels * sum(n * n for n in levels)`` (12,800 for ZF-5)."""
    return int(channels) * sum(int(n) * int(n) for n in levels)


def _check_levels(levels: Sequence[int]) -> tuple[int, ...]:
    values = tuple(levels)
    if not values or any(int(n) != n or n < 1 for n in values):
        raise ConfigError(
            f"pyramid levels must be a non-empty list of positive integers, got {levels!r}"
        )
    return tuple(int(n) for n in values)


@functools.lru_cache(maxsize=None)
def _inexact_window_sizes(level: int, dtype_name: str, max_cells: int) -> tuple[int, ...]:
    """Window sizes ``<= max_cells`` whose roi_pool bins differ from the exact partition.

    Replays roi_pool's arithmetic (``bin = T(w) / T(n)``, ``floor(T(i) * bin)``,
    ``ceil(T(i + 1) * bin)`` in the map's type ``T``, torchvision ``roi_pool_kernel``) against
    integer floor/ceil division.
    """
    float_type = np.float32 if dtype_name == "float32" else np.float64
    sizes = np.arange(1, max_cells + 1, dtype=np.int64)  # [W]
    bin_size = (sizes.astype(float_type) / float_type(level)).astype(float_type)
    wrong = np.zeros(sizes.shape, dtype=bool)
    for i in range(level):  # bin starts: floor(i * bin), i = 0 .. n - 1
        edge = (float_type(i) * bin_size).astype(float_type)
        wrong |= np.floor(edge).astype(np.int64) != (i * sizes) // level
    for i in range(1, level + 1):  # bin ends: ceil(i * bin), i = 1 .. n
        edge = (float_type(i) * bin_size).astype(float_type)
        wrong |= np.ceil(edge).astype(np.int64) != -((-i * sizes) // level)
    return tuple(int(size) for size in sizes[wrong])


def _direct_levels(levels: Sequence[int]) -> tuple[int, ...]:
    """The levels pooled with roi_pool; every other level is max-pooled from a finer one.

    For ``n`` dividing ``m = k n``, bin ``i`` of level ``n``,
    ``[floor(i w / n), ceil((i + 1) w / n))``, is the union of bins ``k i .. k i + k - 1`` of
    level ``m``: the outer ends agree (``floor(k i w / m) = floor(i w / n)``, likewise for
    ceil) and consecutive bins touch or overlap (bin ``j`` ends at ``ceil((j + 1) w / m)``,
    bin ``j + 1`` starts at ``floor((j + 1) w / m)``). So ``k x k`` max pooling of level
    ``m``'s grid is level ``n`` exactly: {3, 2, 1} come from the 6x6 grid, and only the 6x6
    level reads the feature map.
    """
    unique = sorted(set(levels), reverse=True)
    return tuple(n for n in unique if not any(m % n == 0 for m in unique if m > n))


def _check_levels_exact(levels: tuple[int, ...], dtype: torch.dtype, max_cells: int) -> None:
    bound = max(_EXACTNESS_CHECK_CELLS, 1 << (max(int(max_cells), 1) - 1).bit_length())
    dtype_name = "float32" if dtype == torch.float32 else "float64"
    for level in _direct_levels(levels):
        sizes = _inexact_window_sizes(level, dtype_name, bound)
        if sizes:
            raise ConfigError(
                f"pyramid level {level} cannot be pooled exactly with torchvision's roi_pool: "
                f"its {dtype_name} bin arithmetic gives a wrong bin for windows of {sizes[0]} "
                "cells; use levels from {1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 16}"
            )


def spp_pool(
    feature_map: Tensor,
    cells: Tensor | np.ndarray,
    batch_idx: Tensor | np.ndarray | None = None,
    levels: Sequence[int] = DEFAULT_LEVELS,
    *,
    threads: int | None = None,
) -> Tensor:
    """Spatial pyramid max pooling of windows given in feature-map cells.

    One ``torchvision.ops.roi_pool`` call over all windows (no loop over windows) for the finest
    level; coarser levels that divide it are max-pooled from its grid. On the CPU the windows
    are split over ``threads`` threads (default ``torch.get_num_threads()``; torchvision's CPU
    roi_pool uses one); the result is bit-identical for any thread count.
    Differentiable with respect to ``feature_map``; works on any device roi_pool supports.

    Args:
        feature_map: ``[C, H, W]`` or ``[B, C, H, W]``, float32 or float64.
        cells: int ``[N, 4]`` inclusive cell indices ``(x0, y0, x1, y1)`` with
            ``0 <= x0 <= x1 < W`` and ``0 <= y0 <= y1 < H`` (see
            :func:`sppdet.ops.window_mapping.map_windows_to_cells`).
        batch_idx: int ``[N]``, the map of each window in a ``[B, C, H, W]`` batch; may be
            omitted when there is one map.
        levels: bins per side of each pyramid level, in output order (default ``(6, 3, 2, 1)``).
        threads: CPU threads to pool with (default ``torch.get_num_threads()``); ignored on a
            GPU and when the map requires grad (one call, so autograd sees one op).

    Returns:
        ``[N, C * sum(n * n)]`` of the map's dtype and device, laid out as in the module
        docstring; ``[0, C * sum(n * n)]`` when ``N == 0``.

    Raises:
        DataError: wrong shapes or dtypes, cells outside the map or with ``x0 > x1``.
        ConfigError: invalid levels, a level roi_pool cannot pool exactly, or threads < 1.
    """
    levels = _check_levels(levels)
    if not isinstance(feature_map, Tensor) or feature_map.dim() not in (3, 4):
        if isinstance(feature_map, Tensor):
            got = tuple(feature_map.shape)
        else:
            got = type(feature_map).__name__
        raise DataError(f"feature_map must be a tensor [C, H, W] or [B, C, H, W], got {got}")
    if feature_map.dtype not in _POOL_DTYPES:
        raise DataError(f"feature_map must be float32 or float64, got {feature_map.dtype}")
    maps = feature_map if feature_map.dim() == 4 else feature_map.unsqueeze(0)
    num_maps, channels, height, width = maps.shape
    if height < 1 or width < 1:
        raise DataError(
            f"feature_map must have at least one cell, got shape {tuple(feature_map.shape)}"
        )
    _check_levels_exact(levels, maps.dtype, max(height, width))

    cells_t = torch.as_tensor(cells, device=maps.device)
    if cells_t.numel() == 0:
        return maps.new_zeros((0, spp_output_dim(channels, levels)))
    if cells_t.dim() != 2 or cells_t.shape[1] != 4:
        raise DataError(
            f"cells must have shape [N, 4] (x0, y0, x1, y1), got {tuple(cells_t.shape)}"
        )
    if cells_t.dtype.is_floating_point or cells_t.dtype == torch.bool or cells_t.is_complex():
        raise DataError(f"cells must be integer cell indices, got {cells_t.dtype}")
    cells_t = cells_t.to(torch.int64)
    x0, y0, x1, y1 = cells_t.unbind(dim=1)
    outside = (x0 < 0) | (y0 < 0) | (x1 >= width) | (y1 >= height) | (x0 > x1) | (y0 > y1)
    if bool(outside.any()):
        first = int(torch.nonzero(outside)[0, 0])
        raise DataError(
            f"cells must satisfy 0 <= x0 <= x1 < {width} and 0 <= y0 <= y1 < {height} "
            f"(map of {height}x{width} cells); window {first} is {cells_t[first].tolist()}"
        )
    num_windows = cells_t.shape[0]
    if batch_idx is None:
        if num_maps != 1:
            raise DataError(f"batch_idx is required for a batch of {num_maps} feature maps")
        batch_t = torch.zeros(num_windows, dtype=torch.int64, device=maps.device)
    else:
        batch_t = torch.as_tensor(batch_idx, device=maps.device).reshape(-1).to(torch.int64)
        if batch_t.shape[0] != num_windows:
            raise DataError(
                f"batch_idx must have one entry per window ({num_windows}), got {batch_t.shape[0]}"
            )
        if bool(((batch_t < 0) | (batch_t >= num_maps)).any()):
            raise DataError(f"batch_idx must lie in [0, {num_maps}), got values outside it")

    # roi_pool takes [K, 5] (batch index, x1, y1, x2, y2); integers are exact in float32/64.
    rois = torch.cat([batch_t[:, None], cells_t], dim=1).to(maps.dtype)  # [N, 5]
    workers = _pool_workers(maps, num_windows, threads)
    if workers <= 1:
        grids = _pyramid_grids(maps, rois, levels)
        return torch.cat([grids[level].flatten(1) for level in levels], dim=1)  # [N, C*sum]
    return _spp_pool_threaded(maps, rois, levels, workers)


def _pyramid_grids(maps: Tensor, rois: Tensor, levels: tuple[int, ...]) -> dict[int, Tensor]:
    """level -> ``[N, C, n, n]`` grid of ``rois`` (``[N, 5]``); only the finest levels read maps."""
    grids: dict[int, Tensor] = {}
    for level in sorted(set(levels), reverse=True):
        finer = min((m for m in grids if m % level == 0), default=None)
        if finer is None:
            grids[level] = roi_pool(maps, rois, output_size=(level, level), spatial_scale=1.0)
        else:
            # Exact: level n's bins are unions of k x k bins of level m = k n (_direct_levels).
            factor = finer // level
            grids[level] = F.max_pool2d(grids[finer], kernel_size=factor, stride=factor)
    return grids


def _pool_workers(maps: Tensor, num_windows: int, threads: int | None) -> int:
    """Threads to pool with: 1 on a GPU, for few windows, or when the result needs a graph.

    torchvision's CPU roi_pool runs on one thread, so windows are split in chunks pooled on
    ``threads`` (default ``torch.get_num_threads()``) Python threads; roi_pool releases the GIL
    while it runs. A map that requires grad is pooled in one call so autograd sees one op.
    """
    if maps.device.type != "cpu" or (maps.requires_grad and torch.is_grad_enabled()):
        return 1
    wanted = torch.get_num_threads() if threads is None else int(threads)
    if wanted < 1:
        raise ConfigError(f"pooling threads must be >= 1, got {threads}")
    return max(1, min(wanted, num_windows // _MIN_WINDOWS_PER_THREAD))


def _spp_pool_threaded(maps: Tensor, rois: Tensor, levels: tuple[int, ...],
                       workers: int) -> Tensor:
    """:func:`spp_pool` of ``rois`` split in ``workers`` contiguous chunks pooled in parallel.

    Max pooling is exact, so every chunking gives bit-identical rows. Each thread writes its
    rows of the output in place (no concatenation of chunks).
    """
    num_windows, channels = rois.shape[0], maps.shape[1]
    offsets = np.cumsum([0] + [channels * n * n for n in levels])
    # A plain tensor even under inference mode: the pool threads are not in inference mode
    # (it is thread-local) and may not write into an inference tensor.
    with torch.inference_mode(False):
        out = maps.new_empty((num_windows, int(offsets[-1])))
    bounds = np.linspace(0, num_windows, workers + 1).astype(int)

    def pool_chunk(first: int, last: int) -> None:
        with torch.no_grad():
            grids = _pyramid_grids(maps, rois[first:last], levels)
            for index, level in enumerate(levels):
                out[first:last, offsets[index]:offsets[index + 1]] = grids[level].flatten(1)

    futures = [_executor(workers).submit(pool_chunk, int(bounds[i]), int(bounds[i + 1]))
               for i in range(workers)]
    for future in futures:
        future.result()  # re-raises a worker's error here
    return out


_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_SIZE = 0
_EXECUTOR_LOCK = threading.Lock()


def _executor(workers: int) -> ThreadPoolExecutor:
    """A process-wide thread pool with at least ``workers`` threads (grown on demand)."""
    global _EXECUTOR, _EXECUTOR_SIZE
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None or _EXECUTOR_SIZE < workers:
            if _EXECUTOR is not None:
                _EXECUTOR.shutdown(wait=False)
            _EXECUTOR = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="spp-pool")
            _EXECUTOR_SIZE = workers
        return _EXECUTOR


class SpatialPyramidPool(nn.Module):
    """Module form of :func:`spp_pool`; stores the pyramid levels.

    Args:
        levels: bins per side of each level, in output order (default ``(6, 3, 2, 1)``).
    """

    def __init__(self, levels: Sequence[int] = DEFAULT_LEVELS) -> None:
        super().__init__()
        self.levels = _check_levels(levels)
        for dtype in _POOL_DTYPES:
            _check_levels_exact(self.levels, dtype, _EXACTNESS_CHECK_CELLS)

    def output_dim(self, channels: int) -> int:
        """Length of the pooled vector for a map with ``channels`` channels."""
        return spp_output_dim(channels, self.levels)

    def forward(
        self,
        feature_map: Tensor,
        cells: Tensor | np.ndarray,
        batch_idx: Tensor | np.ndarray | None = None,
    ) -> Tensor:
        return spp_pool(feature_map, cells, batch_idx, self.levels)

    def __repr__(self) -> str:
        bins = sum(n * n for n in self.levels)
        return f"{self.__class__.__name__}(levels={self.levels}, bins={bins})"


def cells_at_scale(
    boxes_xyxy: np.ndarray | Tensor,
    image_size: tuple[int, int],
    scale: int,
    *,
    stride: int,
    cell_centers_fn: Callable[[int, int], tuple[float, float]],
    map_size: tuple[int, int],
    rule: str = "paper",
    offset: float = RELEASED_OFFSET,
) -> np.ndarray:
    """Cells of original-image windows on the feature map computed at ``scale``.

    Scales the boxes into the resized image (:func:`sppdet.ops.scales.scale_boxes`), asks
    ``cell_centers_fn(h, w)`` for the cell-0 centre of an input of the resized size ``(h, w)``
    and projects (:func:`sppdet.ops.window_mapping.map_windows_to_cells`). Also useful to find
    windows that fall on the same cells (the released code's de-duplication).

    Args:
        boxes_xyxy: ``[N, 4]`` 0-based continuous boxes in original-image pixels.
        image_size: ``(height, width)`` of the original image.
        scale: shorter side of the resized image the map was computed on.
        stride: total stride of the map in pixels.
        cell_centers_fn: ``backbone.cell_centers``: ``(h_in, w_in) -> (cy0, cx0)``.
        map_size: ``(h, w)`` of the map in cells.
        rule, offset: see :func:`~sppdet.ops.window_mapping.map_windows_to_cells`.

    Returns:
        int64 array ``[N, 4]`` of inclusive cells ``(x0, y0, x1, y1)``.
    """
    if isinstance(boxes_xyxy, Tensor):
        boxes_xyxy = boxes_xyxy.detach().cpu().numpy()
    in_h, in_w = resized_size(image_size[0], image_size[1], scale)
    scaled = scale_boxes(boxes_xyxy, image_size, scale)
    return map_windows_to_cells(
        scaled, stride, cell_centers_fn(in_h, in_w), map_size, rule=rule, offset=offset
    )


def pool_windows(
    feature_maps: Mapping[int, Tensor],
    image_size: tuple[int, int],
    boxes_xyxy: np.ndarray | Tensor,
    scale_per_box: np.ndarray | Tensor | Sequence[int] | None,
    *,
    stride: int,
    cell_centers_fn: Callable[[int, int], tuple[float, float]],
    levels: Sequence[int] = DEFAULT_LEVELS,
    scale_rule: str = "paper",
    mapping_rule: str = "paper",
    offset: float = RELEASED_OFFSET,
) -> Tensor:
    """SPP features of an image's windows from its conv maps at one or several scales.

    Every window is pooled, repeats included: where a caller needs one row per window, copying
    the rows of repeated footprints costs more than pooling them again unless a large share of
    the windows repeat (a 2,000 x 5,600 gather takes a quarter of the time of pooling them).
    :func:`pool_distinct_windows` pools each footprint once, for callers that score the rows
    before expanding. Arguments and errors as there.

    Returns:
        ``[N, C * sum(n * n)]`` (``[N, C * 50]`` by default) in the maps' dtype and device, row
        ``k`` for window ``k``; ``[0, C * 50]`` when there are no windows.
    """
    pooled, _ = _pool_footprints(
        feature_maps, image_size, boxes_xyxy, scale_per_box, stride=stride,
        cell_centers_fn=cell_centers_fn, levels=levels, scale_rule=scale_rule,
        mapping_rule=mapping_rule, offset=offset, distinct=False)
    return pooled


def pool_distinct_windows(
    feature_maps: Mapping[int, Tensor],
    image_size: tuple[int, int],
    boxes_xyxy: np.ndarray | Tensor,
    scale_per_box: np.ndarray | Tensor | Sequence[int] | None,
    *,
    stride: int,
    cell_centers_fn: Callable[[int, int], tuple[float, float]],
    levels: Sequence[int] = DEFAULT_LEVELS,
    scale_rule: str = "paper",
    mapping_rule: str = "paper",
    offset: float = RELEASED_OFFSET,
) -> tuple[Tensor, np.ndarray]:
    """SPP features of an image's distinct window footprints, and which footprint each window has.

    Windows that fall on the same cells of the map of the same scale have identical features;
    on selective search's 2,000 boxes of a VOC photo about 15 % of the windows repeat another's
    footprint (ZF-5, scale 688). Pooling and scoring each footprint once is exact (the released
    SPP-net code and Fast R-CNN's test-time ``DEDUP_BOXES`` do the same). Windows are grouped
    by scale and pooled with one :func:`spp_pool` call per scale.

    Args:
        feature_maps: scale (shorter side in pixels) -> conv map ``[C, h, w]`` (or
            ``[1, C, h, w]``) computed on the image resized with
            :func:`sppdet.ops.scales.resized_size`; all maps share ``C``, dtype and device.
        image_size: ``(height, width)`` of the original image in pixels.
        boxes_xyxy: ``[N, 4]`` 0-based continuous boxes in original-image pixels.
        scale_per_box: ``[N]`` scale of each window (keys of ``feature_maps``), or ``None`` to
            choose with :func:`sppdet.ops.scales.select_scales` among the maps' scales.
        stride: total stride of the maps in pixels.
        cell_centers_fn: ``backbone.cell_centers``: ``(h_in, w_in) -> (cy0, cx0)``.
        levels: pyramid levels (default ``(6, 3, 2, 1)``).
        scale_rule: ``"paper"`` (default) or ``"released"``, used when ``scale_per_box`` is None.
        mapping_rule: ``"paper"`` (default) or ``"released"`` window-to-cell rule.
        offset: the released mapping rule's shrink in pixels.

    Returns:
        ``(pooled, inverse)``: ``pooled`` ``[U, C * sum(n * n)]`` in the maps' dtype and device,
        one row per distinct (scale, cells) footprint in order of first appearance, and
        ``inverse`` int64 ``[N]`` with ``pooled[inverse[k]]`` the features of window ``k``
        (``U <= N``; ``[0, C * 50]`` and ``[0]`` when there are no windows).

    Raises:
        ConfigError: no feature maps, or a requested scale has no map.
        DataError: maps of different channel counts, dtypes or devices; malformed boxes.
    """
    return _pool_footprints(
        feature_maps, image_size, boxes_xyxy, scale_per_box, stride=stride,
        cell_centers_fn=cell_centers_fn, levels=levels, scale_rule=scale_rule,
        mapping_rule=mapping_rule, offset=offset, distinct=True)


def _pool_footprints(
    feature_maps: Mapping[int, Tensor],
    image_size: tuple[int, int],
    boxes_xyxy: np.ndarray | Tensor,
    scale_per_box: np.ndarray | Tensor | Sequence[int] | None,
    *,
    stride: int,
    cell_centers_fn: Callable[[int, int], tuple[float, float]],
    levels: Sequence[int],
    scale_rule: str,
    mapping_rule: str,
    offset: float,
    distinct: bool,
) -> tuple[Tensor, np.ndarray]:
    """:func:`pool_distinct_windows` (``distinct``) or every window with ``inverse`` the
    identity (:func:`pool_windows`)."""
    levels = _check_levels(levels)
    if not feature_maps:
        raise ConfigError("pool_windows needs at least one feature map (scale -> [C, h, w])")
    maps: dict[int, Tensor] = {}
    for scale, fmap in feature_maps.items():
        if fmap.dim() == 4 and fmap.shape[0] == 1:
            fmap = fmap[0]
        if fmap.dim() != 3:
            raise DataError(
                f"feature map at scale {scale} must be [C, h, w], got {tuple(fmap.shape)}"
            )
        maps[int(scale)] = fmap
    reference = next(iter(maps.values()))
    for scale, fmap in maps.items():
        same = (fmap.shape[0], fmap.dtype, fmap.device)
        if same != (reference.shape[0], reference.dtype, reference.device):
            raise DataError(
                f"all feature maps must share channels, dtype and device; scale {scale} has "
                f"{fmap.shape[0]} channels, {fmap.dtype}, {fmap.device} vs {reference.shape[0]}, "
                f"{reference.dtype}, {reference.device}"
            )
    channels = reference.shape[0]

    if isinstance(boxes_xyxy, Tensor):
        boxes_xyxy = boxes_xyxy.detach().cpu().numpy()
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(f"boxes must have shape [N, 4] (x1, y1, x2, y2), got {boxes.shape}")
    num_windows = boxes.shape[0]
    if num_windows == 0:
        return (reference.new_zeros((0, spp_output_dim(channels, levels))),
                np.zeros(0, dtype=np.int64))

    if scale_per_box is None:
        chosen = select_scales(boxes, image_size, sorted(maps), rule=scale_rule)
    else:
        if isinstance(scale_per_box, Tensor):
            scale_per_box = scale_per_box.detach().cpu().numpy()
        chosen = np.asarray(scale_per_box).reshape(-1)
        if chosen.shape[0] != num_windows:
            raise DataError(
                f"scale_per_box must have one scale per window ({num_windows}), "
                f"got {chosen.shape[0]}"
            )
    chosen = chosen.astype(np.int64)
    cells = np.zeros((num_windows, 4), dtype=np.int64)
    for scale in np.unique(chosen):
        if int(scale) not in maps:
            raise ConfigError(
                f"no feature map for scale {scale}; maps exist for scales {sorted(maps)}"
            )
        rows = np.nonzero(chosen == scale)[0]
        fmap = maps[int(scale)]
        cells[rows] = cells_at_scale(
            boxes[rows],
            image_size,
            int(scale),
            stride=stride,
            cell_centers_fn=cell_centers_fn,
            map_size=(fmap.shape[1], fmap.shape[2]),
            rule=mapping_rule,
            offset=offset,
        )
    if distinct:
        keys = np.concatenate([chosen[:, None], cells], axis=1)
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        # number the footprints in order of first appearance (np.unique sorts them)
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        inverse = rank[inverse.reshape(-1)].astype(np.int64)
        firsts = first[order]
    else:
        inverse = firsts = np.arange(num_windows, dtype=np.int64)
    scales = np.unique(chosen[firsts])
    if scales.size == 1:  # one map: its rows are the output, no copy into a new tensor
        return spp_pool(maps[int(scales[0])], cells[firsts], levels=levels), inverse
    out = reference.new_zeros((firsts.size, spp_output_dim(channels, levels)))
    for scale in scales:
        rows = np.nonzero(chosen[firsts] == scale)[0]
        out[torch.from_numpy(rows).to(out.device)] = spp_pool(
            maps[int(scale)], cells[firsts[rows]], levels=levels)
    return out, inverse
