"""Command ``cache-features``: multi-scale conv5 maps to HDF5."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from sppdet.stages.params import DEFAULT_BACKBONE, TRAIN_SPLIT, CacheOptions

from .context import Settings, pass_settings
from .options import (IntListType, backbone_choice, classes_option, dataset_argument,
                      device_option, force_option, on_error_option, option, param_option,
                      parse_classes, seed_option, shard_option, split_option)
from .remedies import summary_text
from .scaleout import run_maybe_ranked


@click.command("cache-features")
@dataset_argument
@split_option(TRAIN_SPLIT)
@param_option(CacheOptions, "backbone", "--backbone", "-b", type=backbone_choice(),
              default=DEFAULT_BACKBONE,
              help="Conv trunk. efficientnet_lite0 brings ImageNet weights offline; the "
                   "paper's trunks (zf5, ...) start from a seeded random init or --weights.")
@param_option(CacheOptions, "weights", "--weights",
              type=click.Path(exists=True, dir_okay=False),
              help="Weights file for the backbone (torchvision state dict, a `sppdet "
                   "pretrain` checkpoint...).")
@param_option(CacheOptions, "scales", "--scales", type=IntListType("scale", min=1),
              help="Shorter image sides in pixels, comma-separated (the paper: 688 for 1 "
                   "scale, 480..1200 for 5).")
@param_option(CacheOptions, "flip", "--flip/--no-flip",
              help="Also cache the mirrored images: fine-tuning trains on them. A split that "
                   "is only detected needs none (--no-flip halves its cache).")
@param_option(CacheOptions, "dtype", "--dtype", help="Storage type of the maps.")
@param_option(CacheOptions, "compression", "--compression",
              help="HDF5 codec (zstd needs hdf5plugin).")
@option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
        show_default="<work-dir>/features/<dataset-tag>/<backbone>/<variant>/<split>.h5",
        help="Output file; <variant> names the scales, --flip and the --weights file's "
             "SHA-256, e.g. s480-576-flip-w1a2b3c4d.")
@device_option
@classes_option
@shard_option
@on_error_option
@seed_option
@force_option
@pass_settings
def cache_features_command(settings: Settings, dataset: str, split: str, backbone: str,
                           weights: str | None, scales: tuple[int, ...], flip: bool,
                           dtype: str, compression: str, out: Path | None, device: str,
                           classes: str | None, shard: tuple[int, int] | None, on_error: str,
                           seed: int, force: bool) -> None:
    """Run the conv trunk once per image and scale and cache conv5 in HDF5.

    Each image is resized so that its shorter side equals each scale (bilinear, no
    antialiasing, as the paper). Resumable: rerun after a crash and it continues.
    """
    from sppdet.stages import cache_features

    out = out or cache_features.default_out(settings.work_dir, dataset, split,
                                            backbone_name=backbone, weights=weights,
                                            scales=scales, flip=flip)
    run = functools.partial(
        cache_features.run, dataset, split, out, backbone_name=backbone, weights=weights,
        scales=scales, flip=flip, dtype=dtype, compression=compression,
        classes=parse_classes(classes), on_error=on_error, force=force, seed=seed)
    summary = run_maybe_ranked(run, shard=shard, device=device,
                               sums=("computed", "resumed"),
                               unions=("failures", "cpu_fallbacks"))
    if summary is not None:
        click.echo(summary_text(summary))


COMMANDS = [cache_features_command]
