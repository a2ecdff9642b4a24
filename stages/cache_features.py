"""Stage ``cache-features``: conv5 maps of every image at every scale, cached in HDF5.

For each image and scale ``s`` the image is resized (bilinear, no antialiasing, as the paper)
so that ``min(H, W) = s``, the backbone's conv trunk runs once, and the map is stored
(float16 by default) with the cell centres the window mapping needs; ``flip`` adds the mirrored
image's maps. Layout: see :mod:`sppdet.features.cache`. Per-image commits make a killed run
resume; ``shard=(i, n)`` splits the work across processes or machines sharing the work dir.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sppdet.io.item_store import shard_items
from sppdet.io.records import Record
from sppdet.backbones import Backbone, build_backbone
from sppdet.io.hashing import file_sha256
from sppdet.backbones.cpu_tuning import freed_memory_kept
from sppdet.data.images import read_image
from sppdet.data.voc import VOCDataset
from sppdet.devices import resolve_device
from sppdet.errors import ConfigError, DataError, ModelError, ParameterError
from sppdet.features.cache import FEATURES_STAGE, compute_maps
from sppdet.progress import get_logger, progress
from sppdet.ops.scales import resized_size

from .common import dataset_params, format_seconds, path_size
from .layout import feature_variant, features_path
from .left_out import left_out_lines, log_left_out
from .params import COMPRESSIONS, PAPER_SCALES, CacheOptions  # re-exported
from .runner import StageOutput, item_summary_lines

log = get_logger("cache-features")
STAGE_VERSION = 1


@dataclass
class CacheSummary:
    """What a cache-features run did."""

    path: Path
    backbone: str
    device: str
    images: int
    scales: tuple[int, ...]
    computed: int = 0
    resumed: int = 0
    seconds: float = 0.0
    bytes_total: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    cpu_fallbacks: list[str] = field(default_factory=list)
    up_to_date: bool = False
    finished: bool = True
    left_out: dict[str, str] = field(default_factory=dict)
    split: str = ""
    engine: str = ""

    def to_text(self) -> str:
        if self.up_to_date:
            return "\n".join([f"Features are up to date: {self.path}",
                              *left_out_lines(self.left_out, self.split)])
        lines = [f"conv5 features ({self.backbone}, scales {list(self.scales)}, on "
                 f"{self.device}) for {self.images} images -> {self.path}"]
        if self.computed:
            rate = self.computed / self.seconds if self.seconds else 0.0
            lines.append(f"  computed {self.computed} images in {format_seconds(self.seconds)} "
                         f"({rate:.2f} images/s, {1000 * self.seconds / self.computed:.0f} ms "
                         f"per image); {self.resumed} already done")
        if self.bytes_total:
            lines.append(f"  size: {self.bytes_total / 1e9:.3f} GB, "
                         f"{self.bytes_total / 1e6 / max(self.images, 1):.2f} MB per image")
        if self.engine:
            lines.append(f"  ran on {self.engine}")
        if self.cpu_fallbacks:
            lines.append(f"  GPU out of memory on {len(self.cpu_fallbacks)} image(s); computed "
                         f"on the CPU: {', '.join(self.cpu_fallbacks[:10])}")
        lines += left_out_lines(self.left_out, self.split)
        lines.extend(item_summary_lines(self.failures, self.finished))
        return "\n".join(lines)


def default_out(work_dir: Path, dataset: str | Path, split: str, *, backbone_name: str,
                weights: str | None, scales: tuple[int, ...], flip: bool) -> Path:
    """The cache's path in the work-dir layout: its variant folder names the scales, the
    mirroring and the weights file's digest (:func:`stages.layout.feature_variant`).

    Raises:
        ModelError: the weights file cannot be read.
    """
    digest = None
    if weights is not None:
        try:
            digest = file_sha256(weights)
        except OSError as exc:
            raise ModelError(f"cannot read the weights file {weights}: {exc}") from exc
    return features_path(work_dir, dataset, split, backbone_name,
                         feature_variant(scales, flip, digest))


def compression_options(name: str, level: int | None = None) -> dict[str, Any]:
    """``h5py.create_dataset`` keyword arguments for a codec name."""
    if name == "none":
        return {}
    if name == "lzf":
        return {"compression": "lzf"}
    if name == "gzip":
        return {"compression": "gzip", "compression_opts": 4 if level is None else level}
    if name == "zstd":
        try:
            import hdf5plugin
        except ImportError as exc:
            raise ConfigError("compression zstd needs the hdf5plugin package "
                              "(pip install hdf5plugin)") from exc
        return dict(hdf5plugin.Zstd(clevel=3 if level is None else level))
    raise ConfigError(f"unknown compression {name!r}; choose from {', '.join(COMPRESSIONS)}")


def estimate_bytes(backbone: Backbone, sizes: list[tuple[int, int]], scales: tuple[int, ...],
                   *, flip: bool, bytes_per_value: int) -> int:
    """Uncompressed bytes of all maps for images of the given ``(height, width)`` sizes."""
    total = 0
    for height, width in sizes:
        for scale in scales:
            h_in, w_in = resized_size(height, width, scale)
            h_out, w_out = backbone.output_size(h_in, w_in)
            total += backbone.out_channels * h_out * w_out * bytes_per_value
    return total * (2 if flip else 1)


def check_disk_space(folder: Path, needed_bytes: int) -> None:
    """Refuse to start when the file system of ``folder`` cannot hold ``needed_bytes``."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed_bytes > free:
        raise ConfigError(
            f"the feature cache needs about {needed_bytes / 1e9:.1f} GB in {folder} (the "
            f"per-image parts plus the merged file) but only {free / 1e9:.1f} GB are free; "
            "free space, cache fewer scales or with gzip compression, or write elsewhere"
        )


def run(dataset: str | Path, split: str, out: Path, *, backbone_name: str,
        weights: str | None = None, scales: tuple[int, ...] = PAPER_SCALES,
        flip: bool = CacheOptions.flip,
        dtype: str = "float16", compression: str = "lzf", device: str = "auto",
        classes: tuple[str, ...] | None = None, shard: tuple[int, int] | None = None,
        on_error: str = "fail", force: bool = False, seed: int = 0,
        merge_gate: Callable[[], bool] | None = None) -> CacheSummary:
    """Compute and cache conv5 maps of every image of ``split``.

    Args:
        dataset: VOC-layout dataset folder.
        split: split name.
        out: the features artifact.
        backbone_name: a key of :data:`sppdet.backbones.BACKBONES`.
        weights: weights file for the backbone (default: its packaged pretrained weights, or
            a seeded random init for the paper's trunks).
        scales: shorter image sides in pixels.
        flip: also cache the mirrored images.
        dtype: ``float16`` or ``float32`` storage.
        compression: ``none``, ``lzf``, ``gzip`` or ``zstd`` (hdf5plugin).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        classes: dataset class list.
        shard: ``(i, n)`` to process one shard.
        on_error: ``fail`` or ``skip`` for per-image failures.
        force: rebuild; discard a partial run made with other options.
        seed: seed of a random-init backbone.
        merge_gate: called once this process's images are committed; the parts are merged
            only if it returns True (torchrun: a barrier, then rank 0 merges).
    """
    scales = tuple(sorted({int(s) for s in scales}))
    if not scales or min(scales) < 16:
        raise ParameterError("scales", "scales must be shorter-side sizes of at least 16 "
                                       f"pixels, got {list(scales)}")
    if dtype not in ("float16", "float32"):
        raise ParameterError("dtype", f"dtype must be float16 or float32, got {dtype!r}")
    h5_options = compression_options(compression)
    torch_device = resolve_device(device)
    data = VOCDataset(dataset, split, classes)
    backbone = build_backbone(backbone_name, weights, seed=seed).eval()
    description = backbone.describe()
    record = Record(FEATURES_STAGE, {
        "backbone": description, "stride": backbone.stride, "channels": backbone.out_channels,
        "scales": list(scales), "flip": flip, "dtype": dtype, "compression": compression,
        "data": dataset_params(data),
    }, stage_version=STAGE_VERSION)
    out = Path(out)
    summary = CacheSummary(path=out, backbone=backbone_name, device=str(torch_device),
                           images=len(data), scales=scales, left_out=data.left_out, split=split)
    output = StageOutput(out, record, force=force)
    if output.is_current():
        summary.up_to_date = True
        summary.bytes_total = path_size(out)
        return summary
    ids = data.image_ids
    mine = shard_items(ids, shard)
    np_dtype = np.dtype(dtype)
    if torch_device.type == "cpu":
        backbone = backbone.to(memory_format=torch.channels_last)
    backbone = backbone.to(torch_device)
    cpu_backbone: Backbone | None = None
    # REFERENCE 12: glibc's trimming doubled conv time here; the memory goes back at the end
    with output.logging(), output.item_store(shard=shard) as store, \
            freed_memory_kept(torch_device.type == "cpu"):
        log_left_out(log, data)
        pending = store.pending(mine)
        needed = estimate_bytes(backbone, [(data[i].height, data[i].width) for i in pending],
                                scales, flip=flip, bytes_per_value=np_dtype.itemsize)
        check_disk_space(out.parent, 2 * needed)
        log.debug("caching %d images (%d done) with %s on %s; estimate %.2f GB uncompressed",
                  len(pending), len(mine) - len(pending), description, torch_device,
                  needed / 1e9)
        start = time.perf_counter()
        for image_id in progress(pending, total=len(pending), desc=f"conv5 {backbone_name}"):
            ann = data[image_id]
            try:
                image = read_image(ann.image_path)
                try:
                    arrays, centers = compute_maps(backbone, image, scales, torch_device,
                                                   dtype=np_dtype, flip=flip)
                except torch.cuda.OutOfMemoryError:
                    # one huge image must not kill a long run: redo it on the CPU
                    torch.cuda.empty_cache()
                    if cpu_backbone is None:
                        cpu_backbone = build_backbone(backbone_name, weights, seed=seed).eval()
                    arrays, centers = compute_maps(cpu_backbone, image, scales,
                                                   torch.device("cpu"), dtype=np_dtype,
                                                   flip=flip)
                    summary.cpu_fallbacks.append(image_id)
            except DataError as exc:
                store.write_failure(image_id, str(exc))
                summary.failures[image_id] = str(exc)
                log.warning("%s: %s", image_id, exc)
                continue
            store.write(image_id, arrays, {
                "width": int(image.shape[1]), "height": int(image.shape[0]),
                "cell_centers": json.dumps(centers),
            }, compression=h5_options)
            summary.computed += 1
        summary.seconds = time.perf_counter() - start
        summary.resumed = len(mine) - len(pending)
        merge = merge_gate() if merge_gate is not None else True
        final = store.finalize(ids, allow_failures=on_error == "skip") if merge else None
        summary.finished = final is not None
        summary.failures = store.failures() if final is None else summary.failures
    if summary.finished:
        summary.bytes_total = path_size(out)
    return summary
