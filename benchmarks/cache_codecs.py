"""Size and speed of the conv5 feature cache for each HDF5 codec (``cache-features``).

What it measures, on ``--images`` real 500x375 VOC photos (a synthetic demo image for each
missing one) and EfficientNet-Lite0 (packaged ImageNet weights, so the maps hold real feature
statistics; codecs depend on them):

1. ``compute_maps`` (what ``cache-features`` runs per image) at ``--scales`` (the paper's five
   by default): ms per image on the CPU, and of ZF-5 for comparison on ``--compare-images``.
2. For every codec and storage dtype (float16, the default, and float32 for reference), the
   maps of every image are written the way the stage does it, through
   :class:`sppdet.io.item_store.ItemStore` (one part file per image, one chunk per map, then the
   merge into one artifact), and read back with :class:`sppdet.features.cache.FeatureCache`:

   * **MB / image**: size of the merged artifact divided by the image count (1 MB = 1e6 bytes);
     ``ratio`` = uncompressed map bytes / artifact bytes.
   * **write MB/s**: uncompressed map bytes / time in ``ItemStore.write`` (compression and the
     HDF5 write into the page cache, no fsync, as in the stage); **merge ms / image**: the
     final ``finalize`` (chunks are copied without recompression).
   * **cold read MB/s**: uncompressed bytes / time of ``FeatureCache.maps`` for every image
     (read from disk, decode, float32, finiteness check) after the artifact's pages were
     evicted from the OS page cache (``--evict``: ``fadvise`` drops only this file's pages, no
     root needed; ``drop-caches`` writes to ``/proc/sys/vm/drop_caches`` and falls back to
     ``fadvise`` when not permitted; ``none``); **cold read ms / image** the same as a time.
   * **warm read MB/s**: the same with the file in the page cache (what training sees when the
     cache fits in memory); **h5py read MB/s**: bare ``dataset[()]`` reads, warm (decode only).
   * **warm read + pool ms / image**: ``FeatureCache.pool`` of ``--windows`` random windows per
     image, scale chosen by the paper's rule, maps not yet decoded (page cache warm).

   Every read is compared with what was written (all codecs here are lossless).

Timings are medians over ``--repeats`` passes over all images. 1 MB/s = 1e6 bytes per second of
*uncompressed* map data, so codecs compare on the work they save the reader.

Usage (from the project root)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python3 benchmarks/cache_codecs.py
    OMP_NUM_THREADS=1 PYTHONPATH=. python3 benchmarks/cache_codecs.py --quick    # seconds

Results on this project's machine: ``benchmarks/results/cache_codecs.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, ROOT)

import h5py  # noqa: E402

from benchmarks.machine import load_average, machine_name  # noqa: E402
from sppdet.io.item_store import ItemStore  # noqa: E402
from sppdet.io.records import Record  # noqa: E402
from sppdet.backbones import Backbone, build_backbone  # noqa: E402
from sppdet.backbones.cpu_tuning import keep_freed_memory  # noqa: E402
from sppdet.data.images import read_image  # noqa: E402
from sppdet.features.cache import FEATURES_STAGE, FeatureCache, compute_maps, map_name  # noqa: E402
from sppdet.ops.scales import PAPER_SCALES, resized_size  # noqa: E402
from sppdet.ops.spp import pool_windows  # noqa: E402

# Real 500x375 VOC2007 photos from the shared check data (SOURCES.md there), next to the
# project folder or one level further up for a checkout inside a work-tree folder.
_SHARED_IMAGES = os.path.join("shared", "data", "voc-fixtures", "VOC2007", "JPEGImages")
DEFAULT_IMAGE_DIR = next(
    (path for path in (os.path.join(ROOT, "..", _SHARED_IMAGES),
                       os.path.join(ROOT, "..", "..", _SHARED_IMAGES)) if os.path.isdir(path)),
    os.path.join(ROOT, "..", _SHARED_IMAGES),
)
IMAGE_SIZE = (375, 500)  # (height, width) of the photos used
DTYPES = ("float16", "float32")
QUICK_SCALE = 96


@dataclass(frozen=True)
class Codec:
    """An HDF5 filter setting: its label in the table and its ``create_dataset`` kwargs."""

    label: str
    options: Callable[[], dict[str, Any]]
    plugin: bool = False  # needs hdf5plugin


def _plugin(name: str, **kwargs: Any) -> Callable[[], dict[str, Any]]:
    def options() -> dict[str, Any]:
        import hdf5plugin

        if name == "blosc":
            kwargs["shuffle"] = hdf5plugin.Blosc.SHUFFLE
        return dict(getattr(hdf5plugin, name.capitalize())(**kwargs))

    return options


#: Codecs in table order. ``shuffle`` is HDF5's built-in byte shuffle (no plugin): it puts the
#: high bytes (sign, exponent) of all values together, which compress better.
CODECS: tuple[Codec, ...] = (
    Codec("none", lambda: {}),
    Codec("lzf", lambda: {"compression": "lzf"}),
    Codec("lzf + shuffle", lambda: {"compression": "lzf", "shuffle": True}),
    Codec("gzip 1", lambda: {"compression": "gzip", "compression_opts": 1}),
    Codec("gzip 4", lambda: {"compression": "gzip", "compression_opts": 4}),
    Codec("gzip 1 + shuffle", lambda: {"compression": "gzip", "compression_opts": 1,
                                       "shuffle": True}),
    Codec("zstd 1", _plugin("zstd", clevel=1), plugin=True),
    Codec("zstd 3", _plugin("zstd", clevel=3), plugin=True),
    Codec("blosc lz4 5 + shuffle", _plugin("blosc", cname="lz4", clevel=5), plugin=True),
    Codec("blosc zstd 1 + shuffle", _plugin("blosc", cname="zstd", clevel=1), plugin=True),
    Codec("blosc zstd 5 + shuffle", _plugin("blosc", cname="zstd", clevel=5), plugin=True),
    Codec("bitshuffle lz4", _plugin("bitshuffle", cname="lz4"), plugin=True),
)

#: Table columns after codec and dtype.
COLUMNS = ("MB / image", "ratio", "write MB/s", "merge ms / image", "cold read MB/s",
           "cold read ms / image", "warm read MB/s", "h5py read MB/s",
           "warm read + pool ms / image")


@dataclass
class Row:
    codec: str
    dtype: str
    values: dict[str, float] = field(default_factory=dict)
    identical: bool = True


# ------------------------------------------------------------------------------------- inputs
def load_images(folder: str, count: int) -> tuple[list[tuple[str, np.ndarray]], str]:
    """``count`` RGB images: the 500x375 photos of ``folder`` in name order, then synthetic ones.

    Returns ``([(image_id, rgb uint8 [H, W, 3])], a line saying where they came from)``.
    """
    from PIL import Image

    images: list[tuple[str, np.ndarray]] = []
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if len(images) == count:
                break
            path = os.path.join(folder, name)
            if name.lower().endswith(".jpg"):
                with Image.open(path) as im:
                    if im.size != IMAGE_SIZE[::-1]:
                        continue
                images.append((os.path.splitext(name)[0], read_image(path)))
    label = f"{len(images)} VOC2007 photos 500x375 from {os.path.normpath(folder)}"
    missing = count - len(images)
    if missing:
        from sppdet.data.synthetic.config import DemoDataConfig
        from sppdet.data.synthetic.scene import render_demo_image

        config = DemoDataConfig(image_width=IMAGE_SIZE[1], image_height=IMAGE_SIZE[0],
                                size_jitter=0.0, portrait_fraction=0.0,
                                n_trainval=max(missing, 1), n_test=0)
        for index in range(missing):
            demo = render_demo_image(index, config)
            images.append((f"synthetic{index}", np.ascontiguousarray(demo.image_bgr[:, :, ::-1])))
        label += f" + {missing} synthetic (sppdet.data.synthetic, seed {config.seed})"
    return images, label


def byte_entropy_ratio(arrays: list[np.ndarray]) -> float:
    """Size / order-0 entropy of the byte planes (byte ``k`` of every value, as after a shuffle).

    What a coder of each byte plane by its histogram alone (no context, no runs) reaches: a
    rough gauge of how compressible the maps are (codecs beat it on runs of zeros).
    """
    itemsize = arrays[0].dtype.itemsize
    planes = np.concatenate([a.reshape(-1).view(np.uint8).reshape(-1, itemsize)
                             for a in arrays])  # [values, itemsize]
    bits = 0.0
    for k in range(itemsize):
        p = np.bincount(planes[:, k], minlength=256) / len(planes)
        p = p[p > 0]
        bits += float(-(p * np.log2(p)).sum())
    return 8 * itemsize / bits


def random_windows(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    """Proposal-like boxes ``[count, 4]`` (xyxy pixels): sides log-uniform 10 px .. image side."""
    sizes = np.exp(rng.uniform(np.log(10), np.log([width, height]), size=(count, 2)))  # [N, 2]
    x1 = rng.uniform(0, width - sizes[:, 0])
    y1 = rng.uniform(0, height - sizes[:, 1])
    return np.stack([x1, y1, x1 + sizes[:, 0], y1 + sizes[:, 1]], axis=1).astype(np.float32)


# -------------------------------------------------------------------------------- page cache
def evict(path: Path, method: str) -> str:
    """Drop ``path``'s pages from the OS page cache; returns the method that was used."""
    if method == "none":
        return "none"
    if method == "drop-caches":
        os.sync()
        try:
            with open("/proc/sys/vm/drop_caches", "w") as handle:
                handle.write("1\n")
            return "drop-caches"
        except OSError:
            pass  # not root, or a read-only /proc: fall back to this file only
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return "fadvise"


# --------------------------------------------------------------------------------- measuring
def time_compute(backbone: Backbone, images: list[tuple[str, np.ndarray]],
                 scales: tuple[int, ...]) -> tuple[float, list[dict[str, np.ndarray]],
                                                   list[dict[str, list[float]]]]:
    """ms per image of ``compute_maps`` after one warm-up.

    Returns ``(ms per image, float32 maps per image, cell centres per image)``; the float16
    maps the stage stores by default are these rounded (``compute_maps`` does the same).
    """
    device = torch.device("cpu")
    compute_maps(backbone, images[0][1], (min(scales),), device, dtype=np.dtype(np.float32),
                 flip=False)  # warm-up: first-call allocations and kernel selection
    maps: list[dict[str, np.ndarray]] = []
    centers: list[dict[str, list[float]]] = []
    seconds = 0.0
    for _, image in images:
        start = time.perf_counter()
        arrays, cells = compute_maps(backbone, image, scales, device,
                                     dtype=np.dtype(np.float32), flip=False)
        seconds += time.perf_counter() - start
        maps.append(arrays)
        centers.append(cells)
    return 1000 * seconds / len(images), maps, centers


def measure_codec(codec: Codec, dtype: str, work: Path, backbone: Backbone,
                  scales: tuple[int, ...], images: list[tuple[str, np.ndarray]],
                  maps: list[dict[str, np.ndarray]], centers: list[dict[str, list[float]]],
                  windows: list[np.ndarray], repeats: int, evict_method: str
                  ) -> tuple[Row, str]:
    """One table row; returns it and the eviction method that was used."""
    options = codec.options()
    arrays = [{k: v.astype(dtype) for k, v in m.items()} for m in maps]
    raw_bytes = sum(a.nbytes for m in arrays for a in m.values())
    ids = [image_id for image_id, _ in images]
    record = Record(FEATURES_STAGE, {
        "backbone": backbone.describe(), "stride": backbone.stride,
        "channels": backbone.out_channels, "scales": list(scales), "flip": False,
        "dtype": dtype, "compression": codec.label,
    })
    write_s, merge_s = [], []
    path = work / "features.h5"
    for _ in range(repeats):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        seconds = 0.0
        with ItemStore(path, record) as store:
            for (image_id, image), m, cells in zip(images, arrays, centers):
                attrs = {"width": int(image.shape[1]), "height": int(image.shape[0]),
                         "cell_centers": cells}
                start = time.perf_counter()
                store.write(image_id, m, attrs, compression=options)
                seconds += time.perf_counter() - start
            start = time.perf_counter()
            store.finalize(ids)
            merge_s.append(time.perf_counter() - start)
        write_s.append(seconds)
    size = path.stat().st_size

    identical = True
    cold_s, warm_s, h5_s, pool_s = [], [], [], []
    used = evict_method
    for _ in range(repeats):
        used = evict(path, evict_method)
        for bucket in (cold_s, warm_s):  # the cold pass fills the page cache for the warm one
            seconds = 0.0
            with FeatureCache(path, max_cached_images=1) as cache:
                for image_id, m in zip(ids, arrays):
                    start = time.perf_counter()
                    read = cache.maps(image_id)
                    seconds += time.perf_counter() - start
                    identical &= all(torch.equal(read[s], torch.from_numpy(
                        m[map_name(s)].astype(np.float32))) for s in scales)
            bucket.append(seconds)
        seconds = 0.0
        with h5py.File(path, "r") as handle:
            for image_id in ids:
                group = handle["items"][image_id]
                start = time.perf_counter()
                for scale in scales:
                    group[map_name(scale)][()]
                seconds += time.perf_counter() - start
        h5_s.append(seconds)
        seconds = 0.0
        with FeatureCache(path, max_cached_images=1) as cache:
            for image_id, boxes in zip(ids, windows):
                start = time.perf_counter()
                cache.pool(image_id, boxes, scale="best")
                seconds += time.perf_counter() - start
        pool_s.append(seconds)
    shutil.rmtree(work, ignore_errors=True)

    n = len(ids)
    mb = raw_bytes / 1e6
    med = statistics.median
    row = Row(codec.label, dtype, identical=identical)
    row.values = {
        "MB / image": size / 1e6 / n,
        "ratio": raw_bytes / size,
        "write MB/s": mb / med(write_s),
        "merge ms / image": 1000 * med(merge_s) / n,
        "cold read MB/s": mb / med(cold_s),
        "cold read ms / image": 1000 * med(cold_s) / n,
        "warm read MB/s": mb / med(warm_s),
        "h5py read MB/s": mb / med(h5_s),
        "warm read + pool ms / image": 1000 * med(pool_s) / n,
    }
    return row, used


def time_pool_only(backbone: Backbone, images: list[tuple[str, np.ndarray]],
                   maps: list[dict[str, np.ndarray]], scales: tuple[int, ...],
                   windows: list[np.ndarray]) -> float:
    """ms per image of ``pool_windows`` alone (float32 maps already in memory)."""
    seconds = 0.0
    for (_, image), m, boxes in zip(images, maps, windows):
        tensors = {s: torch.from_numpy(m[map_name(s)].astype(np.float32)) for s in scales}
        start = time.perf_counter()
        pool_windows(tensors, image.shape[:2], boxes, None, stride=backbone.stride,
                     cell_centers_fn=backbone.cell_centers)
        seconds += time.perf_counter() - start
    return 1000 * seconds / len(images)


# ----------------------------------------------------------------------------------- output
def _format(column: str, value: float) -> str:
    if column in ("MB / image", "ratio"):
        return f"{value:.3f}" if value < 10 else f"{value:.2f}"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def build_table(rows: list[Row]) -> list[str]:
    """Markdown table: one row per (codec, dtype)."""
    lines = ["| codec | dtype | " + " | ".join(COLUMNS) + " |",
             "|---|---|" + "---:|" * len(COLUMNS)]
    for row in rows:
        cells = [_format(c, row.values[c]) for c in COLUMNS]
        lines.append(f"| {row.codec} | {row.dtype} | " + " | ".join(cells) + " |")
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--images", type=int, default=6, help="images to cache")
    parser.add_argument("--image-dir", default=DEFAULT_IMAGE_DIR,
                        help="folder of VOC JPEGs; its 500x375 photos are used")
    parser.add_argument("--scales", type=int, nargs="+", default=list(PAPER_SCALES),
                        help="shorter image sides in pixels")
    parser.add_argument("--windows", type=int, default=2000, help="windows pooled per image")
    parser.add_argument("--repeats", type=int, default=3,
                        help="passes per codec for write and read timings (median)")
    parser.add_argument("--backbone", default="efficientnet_lite0",
                        help="trunk whose maps are cached (the stage's default; its packaged "
                             "ImageNet weights; the paper's trunks have a random init)")
    parser.add_argument("--compare", default="zf5",
                        help="backbone whose compute_maps time is shown for comparison "
                             "('none' to skip)")
    parser.add_argument("--compare-images", type=int, default=1,
                        help="images the comparison backbone is timed on")
    parser.add_argument("--codecs", nargs="+", default=None,
                        help="codec labels to run (default: all); see CODECS")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--evict", default="fadvise", choices=("fadvise", "drop-caches", "none"),
                        help="how pages are dropped before cold reads")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--work-dir", default=None,
                        help="folder for the test caches (default: a temporary folder)")
    parser.add_argument("--markdown", default=None,
                        help="also write the setting and the table to this file")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: 1 image, scale {QUICK_SCALE} (unless --scales is "
                             "given), 1 repeat, 100 windows, ZF-5 comparison skipped")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeats, args.windows, args.compare = 1, 1, 100, "none"
        if args.scales == list(PAPER_SCALES):
            args.scales = [QUICK_SCALE]
    for name in ("images", "windows", "repeats", "threads", "compare_images"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if min(args.scales) < 16:
        parser.error(f"--scales must be at least 16 pixels, got {args.scales}")
    known = [c.label for c in CODECS]
    unknown = [c for c in args.codecs or [] if c not in known]
    if unknown:
        parser.error(f"unknown codecs {unknown}; known: {known}")
    return args


def main(argv: Sequence[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as cache-features does on the CPU (REFERENCE 12)
    scales = tuple(sorted(set(args.scales)))
    load_before = load_average()
    images, image_label = load_images(args.image_dir, args.images)
    try:
        import hdf5plugin
        plugin_line = f"hdf5plugin {hdf5plugin.version}"
    except ImportError:
        hdf5plugin = None
        plugin_line = "hdf5plugin not installed: its codecs are skipped"
    codecs = [c for c in CODECS if args.codecs is None or c.label in args.codecs]
    skipped = [c.label for c in codecs if c.plugin and hdf5plugin is None]
    codecs = [c for c in codecs if c.label not in skipped]

    backbone = build_backbone(args.backbone).eval().to(memory_format=torch.channels_last)
    compute_ms, maps, centers = time_compute(backbone, images, scales)
    weights = str(backbone.describe().get("weights_source") or backbone.describe()["weights"])
    values = [a for m in maps for a in m.values()]
    zeros = sum(int((a == 0).sum()) for a in values) / sum(a.size for a in values)
    entropy = {d: byte_entropy_ratio([a.astype(d) for a in values]) for d in DTYPES}
    compare_ms = None
    if args.compare != "none":
        other = build_backbone(args.compare).eval().to(memory_format=torch.channels_last)
        compare_ms, _, _ = time_compute(other, images[:args.compare_images], scales)
        del other
    rng = np.random.default_rng(0)
    windows = [random_windows(rng, args.windows, *image.shape[:2]) for _, image in images]
    pool_ms = time_pool_only(backbone, images, maps, scales, windows)

    rows: list[Row] = []
    used: set[str] = set()
    work_root = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(
        prefix="cache_codecs."))
    try:
        for dtype in args.dtypes:
            for codec in codecs:
                row, method = measure_codec(codec, dtype, work_root / "cache", backbone, scales,
                                            images, maps, centers, windows, args.repeats,
                                            args.evict)
                rows.append(row)
                used.add(method)
                print(f"  {codec.label} {dtype}: {row.values['MB / image']:.3f} MB / image",
                      file=sys.stderr, flush=True)
    finally:
        if not args.work_dir:
            shutil.rmtree(work_root, ignore_errors=True)
    load_after = load_average()

    cells = sum(int(np.prod(m[map_name(s)].shape[1:])) for m in maps[:1] for s in scales)
    sizes = ", ".join(f"{s}: {resized_size(*images[0][1].shape[:2], s)[::-1]}" for s in scales)
    command = "python3 benchmarks/cache_codecs.py " + shlex.join(argv if argv is not None
                                                                 else sys.argv[1:])
    setting = [
        f"- Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} "
        f"PYTHONPATH=. {command.strip()}`",
        f"- Machine: {machine_name()}, {os.cpu_count()} CPUs; torch {torch.__version__} "
        f"({args.threads} thread(s)), h5py {h5py.version.version}, HDF5 "
        f"{h5py.version.hdf5_version}, {plugin_line}; Python {platform.python_version()}",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"load average before {load_before}, after {load_after}",
        f"- Images: {image_label}",
        f"- Maps: {args.backbone} ({weights}), {backbone.out_channels} channels, "
        f"stride {backbone.stride}, scales {list(scales)} (resized W x H of the first image: "
        f"{sizes}); {cells} cells per image = "
        f"{cells * backbone.out_channels * 2 / 1e6:.3f} MB float16 uncompressed; "
        f"{100 * zeros:.1f} % of the values are 0; size / order-0 entropy of the byte "
        f"planes {entropy['float16']:.2f}x (float16), {entropy['float32']:.2f}x (float32)",
        f"- compute_maps on the CPU: {args.backbone} {compute_ms:.0f} ms / image"
        + (f"; {args.compare} (random init) {compare_ms:.0f} ms / image on "
           f"{min(args.compare_images, len(images))} image(s)" if compare_ms is not None else ""),
        f"- Windows: {args.windows} random per image (sides log-uniform 10 px .. image side, "
        f"seed 0), scale by the paper's rule; pool_windows alone on maps in memory: "
        f"{pool_ms:.0f} ms / image",
        f"- Cold reads: pages evicted with {', '.join(sorted(used)) or args.evict}; timings "
        f"are medians of {args.repeats} pass(es) over all images",
    ]
    if skipped:
        setting.append(f"- Skipped (hdf5plugin missing): {', '.join(skipped)}")
    table = build_table(rows)
    check = ("check: ok (every codec returned the written maps bit for bit)"
             if all(r.identical for r in rows) else
             "check: FAILED for " + ", ".join(f"{r.codec} {r.dtype}" for r in rows
                                             if not r.identical))
    print("\n".join(setting))
    print()
    print("\n".join(table))
    print(check)
    if args.markdown:
        Path(args.markdown).write_text("\n".join(
            ["# conv5 feature cache: size and speed per codec", "", *setting, "", *table, "",
             check, ""]))
    return rows


if __name__ == "__main__":
    main()
