"""Time fine-tuning of the fc layers (sppdet.training.finetune.trainer) on this machine.

Three measurements:

1. ``step``: one SGD iteration of :class:`sppdet.features.fc_head.FcHead` (forward, softmax loss,
   backward, momentum + weight-decay update) on a mini-batch of B windows of dimension
   ``in_dim`` (default 112 x 50 = 5,600, EfficientNet-Lite0's conv5 with the 50-bin pyramid),
   for each ``--hidden`` width.
2. ``pooling``: a synthetic feature cache in the real layout and at real sizes (500 x 375
   images, 112 channels, the paper's five scales, mirrored maps, float16, lzf), then: the time
   to decode one image's maps (what a window from a not-yet-loaded image costs), and the
   pooling cost per iteration of :class:`sppdet.training.finetune.sampling.ChunkSampler` plans
   for several ``(images per chunk, iterations per chunk)`` settings. ``G = 128, T = 1`` is
   what drawing every window of a mini-batch from a different image costs (the released code's
   window data layer draws windows uniformly over the whole split).
3. ``train``: :class:`sppdet.training.finetune.trainer.FcFinetuner` end to end on that cache
   (pooling + steps).

The cache holds Gaussian noise: conv5 of EfficientNet-Lite0 cut after block 10 is the output of
a linear 1x1 projection (no ReLU), so real maps are dense and compress about as badly.

Usage (results: benchmarks/finetune_speed_results.md):
    PYTHONPATH=. python3 benchmarks/finetune_speed.py step --hidden 4096 1024 --threads 2
    PYTHONPATH=. python3 benchmarks/finetune_speed.py pooling --images 96
    PYTHONPATH=. python3 benchmarks/finetune_speed.py train --images 96 --hidden 1024
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sppdet.io.item_store import ItemStore
from sppdet.io.records import Record
from sppdet.features.fc_head import FcHead
from sppdet.features.cache import FEATURES_STAGE, FeatureCache, map_name
from sppdet.training.finetune.config import FinetuneConfig
from sppdet.training.finetune.sampling import ChunkSampler, pool_plan
from sppdet.training.finetune.trainer import FcFinetuner
from sppdet.ops.scales import PAPER_SCALES, resized_size
from sppdet.training.windows import SplitWindows

WIDTH, HEIGHT, STRIDE, CHANNELS = 500, 375, 16, 112


def bench_step(in_dim: int, hidden: int, batch: int, iterations: int, warmup: int = 3,
               device: str = "cpu") -> dict:
    head = FcHead(in_dim, 20, hidden=hidden).to(device)
    optimizer = torch.optim.SGD(head.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, in_dim, device=device)
    y = torch.randint(0, 21, (batch,), device=device)
    times = []
    for i in range(warmup + iterations):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(head(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device != "cpu":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return {"in_dim": in_dim, "hidden": hidden, "batch": batch, "device": device,
            "threads": torch.get_num_threads(), "ms_median": 1000 * float(np.median(times)),
            "ms_min": 1000 * float(np.min(times))}


def make_cache(folder: Path, n_images: int, scales: tuple[int, ...], flip: bool = True,
               compression: str | None = "lzf") -> Path:
    path = folder / "features.h5"
    record = Record(FEATURES_STAGE, {"backbone": {"name": "synthetic"}, "stride": STRIDE,
                                     "channels": CHANNELS, "scales": list(scales),
                                     "flip": flip, "dtype": "float16"})
    rng = np.random.default_rng(0)
    options = {"compression": compression} if compression else None
    with ItemStore(path, record) as store:
        for k in range(n_images):
            arrays = {}
            for flipped in ((False, True) if flip else (False,)):
                for scale in scales:
                    h, w = resized_size(HEIGHT, WIDTH, scale)
                    arrays[map_name(scale, flipped)] = rng.standard_normal(
                        (CHANNELS, -(-h // STRIDE), -(-w // STRIDE)), dtype=np.float32
                    ).astype(np.float16)
            centers = {str(s): [7.5, 7.5] for s in scales}
            store.write(f"im{k:05d}", arrays, {"width": WIDTH, "height": HEIGHT,
                                               "cell_centers": json.dumps(centers)},
                        compression=options)
        store.finalize([f"im{k:05d}" for k in range(n_images)])
    return path


def synthetic_windows(n_images: int, per_image: int = 400, fg_share: float = 0.1,
                      num_classes: int = 20) -> SplitWindows:
    rng = np.random.default_rng(1)
    n = n_images * per_image
    x1 = rng.uniform(0, WIDTH - 40, n)
    y1 = rng.uniform(0, HEIGHT - 40, n)
    w = rng.uniform(30, WIDTH, n)
    h = rng.uniform(30, HEIGHT, n)
    boxes = np.stack([x1, y1, np.minimum(x1 + w, WIDTH), np.minimum(y1 + h, HEIGHT)], 1)
    labels = np.where(rng.random(n) < fg_share, rng.integers(1, num_classes + 1, n), 0)
    return SplitWindows([f"im{k:05d}" for k in range(n_images)],
                        np.repeat(np.arange(n_images), per_image), boxes, labels, num_classes)


def bench_pooling(cache_path: Path, n_images: int, settings: list[tuple[int, int]],
                  batch: int = 128) -> list[dict]:
    results = []
    cache = FeatureCache(cache_path, max_cached_images=1)
    decode = []
    for k in range(min(n_images, 20)):
        start = time.perf_counter()
        cache.maps(f"im{k:05d}")
        decode.append(time.perf_counter() - start)
    results.append({"what": "decode one image, all scales", "ms_median":
                    1000 * float(np.median(decode))})
    windows = synthetic_windows(n_images)
    for images_per_chunk, iterations_per_chunk in settings:
        sampler = ChunkSampler(windows, cache.scales, batch_size=batch,
                               images_per_chunk=images_per_chunk,
                               iterations_per_chunk=iterations_per_chunk, seed=0)
        cache = FeatureCache(cache_path, max_cached_images=4)
        spent, iterations = 0.0, 0
        # enough chunks for about 32 iterations, but at least 2 (3 when a chunk is short)
        for chunk in range(max(2 if iterations_per_chunk >= 4 else 3,
                               32 // iterations_per_chunk if iterations_per_chunk >= 4 else 3)):
            plan = sampler.sample_chunk(chunk)
            start = time.perf_counter()
            pool_plan(cache, windows, plan.windows, plan.flip, plan.scales)
            spent += time.perf_counter() - start
            iterations += plan.n_iterations
        results.append({"what": "pooling per iteration", "images_per_chunk": images_per_chunk,
                        "iterations_per_chunk": iterations_per_chunk,
                        "ms_per_iteration": 1000 * spent / iterations})
    return results


def bench_train(cache_path: Path, n_images: int, hidden: int, iterations: int,
                images_per_chunk: int, iterations_per_chunk: int) -> dict:
    windows = synthetic_windows(n_images)
    cache = FeatureCache(cache_path)
    config = FinetuneConfig(iterations=iterations, hidden=hidden,
                            images_per_chunk=images_per_chunk,
                            iterations_per_chunk=iterations_per_chunk, log_every=iterations,
                            checkpoint_every=0)
    trainer = FcFinetuner(config).fit(windows, cache)
    timing = trainer.timing_
    return {"hidden": hidden, "iterations": iterations, "images_per_chunk": images_per_chunk,
            "iterations_per_chunk": iterations_per_chunk,
            "ms_per_iteration": timing.ms_per_iteration,
            "ms_pooling": timing.ms_pooling_per_iteration,
            "ms_step": timing.ms_step_per_iteration}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["step", "pooling", "train"])
    parser.add_argument("--in-dim", type=int, default=CHANNELS * 50)
    parser.add_argument("--hidden", type=int, nargs="+", default=[4096, 1024])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--scales", type=int, nargs="+", default=list(PAPER_SCALES))
    parser.add_argument("--chunk", type=int, nargs=2, action="append", metavar=("G", "T"),
                        help="images and iterations per chunk (repeatable)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.2f}")
    if args.what == "step":
        for hidden in args.hidden:
            print(json.dumps(bench_step(args.in_dim, hidden, args.batch, args.iterations,
                                        device=args.device)))
        return
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        path = make_cache(Path(folder), args.images, tuple(args.scales))
        size = path.stat().st_size
        print(f"# synthetic cache: {args.images} images, {size / 1e6:.0f} MB, "
              f"{time.perf_counter() - start:.0f} s to write")
        chunks = [tuple(c) for c in args.chunk] if args.chunk else \
            [(128, 1), (32, 4), (64, 16), (64, 32), (96, 64)]
        if args.what == "pooling":
            for result in bench_pooling(path, args.images, chunks, args.batch):
                print(json.dumps(result))
        else:
            for hidden in args.hidden:
                for g, t in chunks:
                    print(json.dumps(bench_train(path, args.images, hidden, args.iterations,
                                                 g, t)))


if __name__ == "__main__":
    main()
