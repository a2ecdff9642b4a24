"""Mini-batches planned a chunk of iterations at a time, and the pooling of a plan's windows.

See the package docstring (**Sampling**) for why and how.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sppdet.errors import ConfigError, DataError
from sppdet.features.cache import FeatureCache
from sppdet.ops.spp import DEFAULT_LEVELS, spp_output_dim
from sppdet.training.finetune_windows import SplitWindows


@dataclass
class ChunkPlan:
    """The mini-batches of one chunk.

    Attributes:
        chunk: chunk number.
        first_iteration: 0-based iteration of the first mini-batch.
        windows: int64 ``[T, B]``, rows of :class:`SplitWindows` per mini-batch slot.
        flip: bool ``[T, B]``, the slot is pooled from the mirrored image.
        scales: int64 ``[T, B]``, the scale each slot is pooled at.
        n_fg: int64 ``[T]``, positives in each mini-batch.
        images: int64 ``[G]``, the chunk's images (index into ``SplitWindows.image_ids``).
    """

    chunk: int
    first_iteration: int
    windows: np.ndarray
    flip: np.ndarray
    scales: np.ndarray
    n_fg: np.ndarray
    images: np.ndarray

    @property
    def n_iterations(self) -> int:
        return int(self.windows.shape[0])


class ChunkSampler:
    """Plans mini-batches chunk by chunk (module docstring: images, then windows).

    Args:
        windows: the labelled windows of the training split.
        scales: the cached scales a window's scale is drawn from.
        batch_size, fg_fraction, images_per_chunk, iterations_per_chunk: as in
            :class:`FinetuneConfig`.
        flip: mirror half of each chunk's images.
        seed: the plan of chunk ``k`` depends only on ``(seed, k)`` and the settings above.
    """

    def __init__(self, windows: SplitWindows, scales: Sequence[int], *, batch_size: int = 128,
                 fg_fraction: float = 0.25, images_per_chunk: int = 64,
                 iterations_per_chunk: int = 32, flip: bool = True, seed: int = 0) -> None:
        if windows.n_images == 0 or len(windows) == 0:
            raise DataError("no training windows: no image has a proposal or ground-truth box "
                            "in the positive or negative IoU band")
        if not scales:
            raise ConfigError("the sampler needs at least one scale")
        self.windows = windows
        self.scales = np.asarray(sorted(int(s) for s in scales), dtype=np.int64)
        self.batch_size = int(batch_size)
        self.fg_per_batch = int(round(fg_fraction * batch_size))
        self.images_per_chunk = min(int(images_per_chunk), windows.n_images)
        self.iterations_per_chunk = int(iterations_per_chunk)
        self.flip = bool(flip)
        self.seed = int(seed)
        self._is_fg = windows.labels > 0

    def state(self, next_iteration: int) -> dict[str, int]:
        """Everything a resumed run needs to continue the same plan."""
        return {"seed": self.seed, "next_iteration": int(next_iteration)}

    def chunk_of(self, iteration: int) -> int:
        return int(iteration) // self.iterations_per_chunk

    def chunk_images(self, chunk: int) -> np.ndarray:
        """Images of ``chunk``: positions ``[k G, (k + 1) G)`` of the concatenated passes, each
        pass a permutation seeded with ``(seed, 0, pass)``; sorted, duplicates removed."""
        n = self.windows.n_images
        start = chunk * self.images_per_chunk
        positions = np.arange(start, start + self.images_per_chunk)
        passes = positions // n
        out = np.empty(len(positions), dtype=np.int64)
        for p in np.unique(passes):
            order = np.random.default_rng([self.seed, 0, int(p)]).permutation(n)
            mask = passes == p
            out[mask] = order[positions[mask] - p * n]
        return np.unique(out)

    def sample_chunk(self, chunk: int, n_iterations: int | None = None) -> ChunkPlan:
        """The first ``n_iterations`` (default all) mini-batches of ``chunk``.

        Mini-batches are drawn one after another from one generator, so a shorter plan is a
        prefix of the full one.
        """
        count = self.iterations_per_chunk if n_iterations is None else int(n_iterations)
        if not 1 <= count <= self.iterations_per_chunk:
            raise ConfigError(f"a chunk has 1..{self.iterations_per_chunk} iterations, "
                              f"asked for {count}")
        rng = np.random.default_rng([self.seed, 1, int(chunk)])
        images = self.chunk_images(chunk)
        flipped_images = (rng.random(len(images)) < 0.5) if self.flip else \
            np.zeros(len(images), dtype=bool)
        rows = np.concatenate([np.arange(self.windows.starts[i], self.windows.starts[i + 1])
                               for i in images])
        fg_pool = rows[self._is_fg[rows]]
        bg_pool = rows[~self._is_fg[rows]]
        image_flip = np.zeros(self.windows.n_images, dtype=bool)
        image_flip[images] = flipped_images
        batch = self.batch_size
        windows = np.empty((count, batch), dtype=np.int64)
        scales = np.empty((count, batch), dtype=np.int64)
        n_fg = np.empty(count, dtype=np.int64)
        for t in range(count):
            take_fg = min(self.fg_per_batch, len(fg_pool))
            if not len(bg_pool):
                take_fg = batch
            fg = fg_pool[rng.choice(len(fg_pool), take_fg, replace=take_fg > len(fg_pool))] \
                if take_fg else np.zeros(0, dtype=np.int64)
            need_bg = batch - take_fg
            bg = bg_pool[rng.choice(len(bg_pool), need_bg, replace=need_bg > len(bg_pool))] \
                if need_bg else np.zeros(0, dtype=np.int64)
            windows[t] = np.concatenate([fg, bg])
            scales[t] = self.scales[rng.integers(0, len(self.scales), size=batch)]
            n_fg[t] = take_fg
        flip = image_flip[self.windows.image_index[windows]]
        return ChunkPlan(chunk=int(chunk), first_iteration=int(chunk) * self.iterations_per_chunk,
                         windows=windows, flip=flip, scales=scales, n_fg=n_fg, images=images)


def pool_plan(cache: FeatureCache, windows: SplitWindows, plan_windows: np.ndarray,
              flip: np.ndarray, scales: np.ndarray | None, *,
              levels: Sequence[int] = DEFAULT_LEVELS, out: Tensor | None = None) -> Tensor:
    """SPP features of planned windows, pooled image by image (each image decoded once).

    Args:
        cache: the split's feature cache (pooling runs on its device).
        windows: the split's labelled windows.
        plan_windows: int ``[...]`` rows of ``windows``.
        flip: bool, same shape: pool from the mirrored maps.
        scales: int, same shape: the scale of each slot; ``None`` for the paper's best scale
            per window (test-time rule).
        levels: pyramid levels.
        out: a float32 buffer of at least ``plan_windows.size`` rows on the cache's device to
            pool into (every row used is overwritten). Fine-tuning reuses one buffer for all
            chunks: allocating a new one per chunk while the previous is alive fragmented the
            heap and grew the process by about a buffer per chunk.

    Returns:
        float32 ``[plan_windows.size, C * sum(n * n)]`` on the cache's device, rows in the
        flattened order of ``plan_windows`` (the first rows of ``out`` when given).
    """
    flat = np.asarray(plan_windows, dtype=np.int64).reshape(-1)
    flip_flat = np.asarray(flip, dtype=bool).reshape(-1)
    scale_flat = None if scales is None else np.asarray(scales, dtype=np.int64).reshape(-1)
    shape = (len(flat), spp_output_dim(cache.channels, levels))
    if out is None:
        out = torch.empty(shape, dtype=torch.float32, device=cache.device)
    else:
        if (out.dim() != 2 or out.shape[0] < shape[0] or out.shape[1] != shape[1]
                or out.dtype != torch.float32 or out.device != torch.device(cache.device)):
            raise ConfigError(f"the pooling buffer must be float32 [>= {shape[0]}, {shape[1]}] "
                              f"on {cache.device}, got {out.dtype} {tuple(out.shape)} on "
                              f"{out.device}")
        out = out[:shape[0]]
    if not len(flat):
        return out
    image_of = windows.image_index[flat]
    order = np.lexsort((flip_flat, image_of))  # by image, then flip
    key = image_of[order].astype(np.int64) * 2 + flip_flat[order]
    bounds = np.flatnonzero(np.diff(key)) + 1
    for group in np.split(order, bounds):
        image_id = windows.image_ids[int(image_of[group[0]])]
        flipped = bool(flip_flat[group[0]])
        if scale_flat is None:
            parts = [(group, "best")]
        else:
            parts = [(group[scale_flat[group] == s], int(s)) for s in np.unique(scale_flat[group])]
        for rows, scale in parts:
            pooled = cache.pool(image_id, windows.boxes[flat[rows]], scale=scale, flip=flipped,
                                levels=levels)
            out[torch.from_numpy(rows).to(out.device)] = pooled
    return out
