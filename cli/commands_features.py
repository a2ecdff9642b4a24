"""Command ``cache-features``: multi-scale conv5 maps to HDF5."""

from __future__ import annotations

from pathlib import Path

import click

from sppdet.io.item_store import parse_shard
from sppdet.backbones import BACKBONES
from sppdet.stages import cache_features

from .context import Settings, pass_settings
from .options import (classes_option, dataset_argument, device_option, force_option,
                      on_error_option, parse_classes, parse_int_list, seed_option, shard_option,
                      split_option)


def parse_scales(text: str) -> tuple[int, ...]:
    return parse_int_list(text, "--scales", what="scale")


@click.command("cache-features")
@dataset_argument
@split_option("trainval")
@click.option("--backbone", "-b", type=click.Choice(sorted(BACKBONES)),
              default="efficientnet_lite0", show_default=True,
              help="Conv trunk. efficientnet_lite0 brings ImageNet weights offline; the "
                   "paper's trunks (zf5, ...) start from a seeded random init or --weights.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Weights file for the backbone (torchvision state dict, a `sppdet "
                   "pretrain` checkpoint...).")
@click.option("--scales", default=",".join(map(str, cache_features.PAPER_SCALES)),
              show_default=True, help="Shorter image sides in pixels, comma-separated "
                                      "(the paper: 688 for 1 scale, 480..1200 for 5).")
@click.option("--flip/--no-flip", default=False, show_default=True,
              help="Also cache the mirrored images (fine-tuning uses them).")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16",
              show_default=True, help="Storage type of the maps.")
@click.option("--compression", type=click.Choice(list(cache_features.COMPRESSIONS)),
              default="lzf", show_default=True, help="HDF5 codec (zstd needs hdf5plugin).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Output file.  [default: <work-dir>/features/<dataset>/<backbone>/<variant>/"
                   "<split>.h5, <variant> naming the scales, --flip and the --weights file's "
                   "SHA-256, e.g. s480-576-flip-w1a2b3c4d]")
@device_option
@classes_option
@shard_option
@on_error_option
@seed_option
@force_option
@pass_settings
def cache_features_command(settings: Settings, dataset: str, split: str, backbone: str,
                           weights: str | None, scales: str, flip: bool, dtype: str,
                           compression: str, out: Path | None, device: str,
                           classes: str | None, shard: str | None, on_error: str, seed: int,
                           force: bool) -> None:
    """Run the conv trunk once per image and scale and cache conv5 in HDF5.

    Each image is resized so that its shorter side equals each scale (bilinear, no
    antialiasing, as the paper). Resumable: rerun after a crash and it continues.
    """
    scale_list = parse_scales(scales)
    out = out or cache_features.default_out(settings.work_dir, dataset, split,
                                            backbone_name=backbone, weights=weights,
                                            scales=scale_list, flip=flip)
    summary = cache_features.run(
        dataset, split, out, backbone_name=backbone, weights=weights,
        scales=scale_list, flip=flip, dtype=dtype, compression=compression,
        device=device, classes=parse_classes(classes), shard=parse_shard(shard),
        on_error=on_error, force=force, seed=seed)
    click.echo(summary.to_text())


COMMANDS = [cache_features_command]
