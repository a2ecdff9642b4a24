"""Time SPP pooling of many windows: sppdet's roi_pool path vs a per-window loop.

Three ways to pool the same windows, checked to give identical vectors first:
``spp_pool`` (roi_pool for the 6x6 level, the 3x3, 2x2 and 1x1 levels max-pooled from its grid),
roi_pool called for every level, and a per-window Python loop with ``adaptive_max_pool2d``.
``spp_pool`` is timed on one thread and on ``--threads`` threads (windows split in chunks),
alternating the two so that a change in machine load hits both alike.

Setting (REFERENCE section 12): ZF-5's conv5 at scale 688 for a 500x375 image is a 256 x 43 x 57
map; about 2,000 proposal windows per image; pyramid {6, 3, 2, 1}. The windows are random boxes
of the original image (sides log-uniform from 10 px to the image size) mapped onto the map with
the paper's rule, as the detector does.

Usage:
    PYTHONPATH=. python3 benchmarks/spp_pooling_speed.py [--windows 2000] [--threads 1]
        [--repeats 7] [--skip-loop]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from sppdet.ops.scales import scale_boxes
from torchvision.ops import roi_pool

from sppdet.ops.spp import DEFAULT_LEVELS, spp_pool
from sppdet.ops.window_mapping import map_windows_to_cells


def loop_pool(feature_map: torch.Tensor, cells: np.ndarray, levels=DEFAULT_LEVELS) -> torch.Tensor:
    """One window at a time: slice its cells, adaptive max pooling per level, concatenate."""
    rows = []
    for x0, y0, x1, y1 in cells.tolist():
        window = feature_map[:, y0 : y1 + 1, x0 : x1 + 1]
        rows.append(torch.cat([F.adaptive_max_pool2d(window, n).flatten() for n in levels]))
    return torch.stack(rows)


def roi_pool_every_level(
    feature_map: torch.Tensor, cells: np.ndarray, levels=DEFAULT_LEVELS
) -> torch.Tensor:
    """One roi_pool call per level, each reading the feature map."""
    rois = torch.cat([torch.zeros(len(cells), 1), torch.from_numpy(cells).float()], dim=1)
    maps = feature_map[None]
    return torch.cat([roi_pool(maps, rois, (n, n), 1.0).flatten(1) for n in levels], dim=1)


def random_windows(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    """Proposal-like boxes: sides from 10 px to the whole image, anywhere inside it."""
    sizes = np.exp(rng.uniform(np.log(10), np.log([width, height]), size=(count, 2)))  # [N, 2]
    x1 = rng.uniform(0, width - sizes[:, 0])
    y1 = rng.uniform(0, height - sizes[:, 1])
    return np.stack([x1, y1, x1 + sizes[:, 0], y1 + sizes[:, 1]], axis=1)


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=2000, help="windows (default 2000)")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for the threaded spp_pool row (default 2)")
    parser.add_argument("--skip-loop", action="store_true",
                        help="time only spp_pool on 1 vs --threads threads")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs; the median is reported")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(1)  # the single-thread rows; the threaded row passes threads=
    rng = np.random.default_rng(args.seed)
    image_h, image_w, scale, stride = 375, 500, 688, 16
    noise = rng.standard_normal((256, 43, 57)).astype(np.float32)
    feature_map = torch.relu(torch.from_numpy(noise))  # post-ReLU like conv5
    boxes = random_windows(rng, args.windows, image_h, image_w)
    start = time.perf_counter()
    scaled = scale_boxes(boxes, (image_h, image_w), scale)
    cells = map_windows_to_cells(scaled, stride, (0.5, 0.5), (43, 57))
    mapping_s = time.perf_counter() - start

    fast = spp_pool(feature_map, cells, threads=1)
    threaded = spp_pool(feature_map, cells, threads=args.threads)
    if not torch.equal(fast, threaded):
        raise SystemExit("threaded pooling differs from one thread")
    if not args.skip_loop:
        same_as_loop = torch.equal(fast, loop_pool(feature_map, cells))
        if not (same_as_loop and torch.equal(fast, roi_pool_every_level(feature_map, cells))):
            raise SystemExit("the pooling paths differ")

    (one_s, one_cpu), (many_s, many_cpu) = alternating_medians(
        lambda: spp_pool(feature_map, cells, threads=1),
        lambda: spp_pool(feature_map, cells, threads=args.threads),
        args.repeats,
    )
    widths = cells[:, 2] - cells[:, 0] + 1
    heights = cells[:, 3] - cells[:, 1] + 1
    print(
        f"torch {torch.__version__}, map 256x43x57, "
        f"{args.windows} windows, levels {DEFAULT_LEVELS}; "
        f"window cells median {int(np.median(widths))}x{int(np.median(heights))}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print("outputs identical: yes")
    print(f"window mapping (numpy):                   {mapping_s * 1e3:8.1f} ms")
    print(f"spp_pool, 1 thread:                       {one_s * 1e3:8.1f} ms  "
          f"(process CPU {one_cpu * 1e3:.1f} ms)")
    print(
        f"spp_pool, {args.threads} threads:                      {many_s * 1e3:8.1f} ms  "
        f"({one_s / many_s:.2f}x vs 1 thread; process CPU {many_cpu * 1e3:.1f} ms, "
        f"{many_cpu / many_s:.2f} cores busy on average)"
    )
    if args.skip_loop:
        return
    every_s = median_seconds(lambda: roi_pool_every_level(feature_map, cells), args.repeats)
    slow_s = median_seconds(lambda: loop_pool(feature_map, cells), args.repeats)
    print(
        f"roi_pool for every level, 1 thread:       {every_s * 1e3:8.1f} ms  "
        f"(spp_pool 1 thread is {slow_s / one_s:.1f}x vs loop)"
    )
    print(f"per-window loop (adaptive_max_pool2d):    {slow_s * 1e3:8.1f} ms")


def alternating_medians(first, second, repeats: int):
    """Median (wall, process CPU) seconds of two functions timed in turn (first, second, ...).

    Process CPU time sums all threads; CPU / wall is how many cores the call kept busy, which on
    a loaded machine shows whether the threads got cores at all.
    """
    first()
    second()
    walls: tuple[list[float], list[float]] = ([], [])
    cpus: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for index, fn in enumerate((first, second)):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            walls[index].append(time.perf_counter() - start)
            cpus[index].append(time.process_time() - start_cpu)
    return tuple((statistics.median(w), statistics.median(c)) for w, c in zip(walls, cpus))


if __name__ == "__main__":
    main()
