"""Commands ``pretrain`` and ``classify``: SPP-net image classification (paper section 3)."""

from __future__ import annotations

from pathlib import Path

import click

from sppdet.classification.evaluate import MODES
from sppdet.classification.model import REPRESENTATIONS, VIEW_MAPPINGS, VIEW_SETS
from sppdet.classification.training import MULTI_SIZE_MODES, PretrainConfig
from sppdet.stages import classify, pretrain

from .context import Settings, pass_settings
from .options import (classes_option, device_option, force_option, jobs_option, parse_classes,
                      parse_int_list, seed_option)

_DEFAULTS = PretrainConfig()


def _positive_ints(text: str, option: str) -> tuple[int, ...]:
    values = parse_int_list(text, option)
    if min(values) < 1:
        raise click.BadParameter(f"expected positive integers, got {text!r}", param_hint=option)
    return values


@click.command("pretrain")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", "-s", default="trainval", show_default=True,
              help="Split of a VOC dataset, or sub-folder of a classification folder (the "
                   "folder itself is used when it has no such sub-folder).")
@click.option("--backbone", "-b", default="zf5", show_default=True,
              type=click.Choice(["zf5", "convnet5", "overfeat5", "overfeat7"]),
              help="The paper's trunk to train.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Checkpoint to start from (e.g. an earlier pretrain's weights.pt).  "
                   "[default: seeded random init]")
@click.option("--name", "-n", default=None,
              help="Output name: <work-dir>/backbones/<name>/.  [default: "
                   "<backbone>-<dataset folder>]")
@click.option("--epochs", type=click.IntRange(min=1), default=_DEFAULTS.epochs,
              show_default=True, help="Passes over the training examples.")
@click.option("--batch-size", type=click.IntRange(min=1), default=_DEFAULTS.batch_size,
              show_default=True, help="Examples per SGD step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=_DEFAULTS.lr,
              show_default=True, help="Starting learning rate (divided by 10 on plateau).")
@click.option("--lr-patience", type=click.IntRange(min=0), default=_DEFAULTS.lr_patience,
              show_default=True,
              help="Epochs without a lower held-out error before the rate drops.")
@click.option("--lr-drop-epochs", default="", show_default=True, metavar="E1,E2,...",
              help="A fixed schedule instead of the plateau rule: the rate is divided by 10 "
                   "from each of these (0-based) epochs on. Empty: on plateau.")
@click.option("--crop-size", type=click.IntRange(min=1), default=_DEFAULTS.crop_size,
              show_default=True, help="Training crop side (pixels).")
@click.option("--image-size", type=click.IntRange(min=1), default=_DEFAULTS.image_size,
              show_default=True,
              help="Shorter side the examples are resized to before cropping; also the "
                   "full-image test size.")
@click.option("--multi-size", type=click.Choice(MULTI_SIZE_MODES),
              default=_DEFAULTS.multi_size, show_default=True,
              help="off: single-size; alternate: epochs alternate crop-size and small-size "
                   "(paper); random: one size in [small-size, crop-size] per epoch.")
@click.option("--small-size", type=click.IntRange(min=1), default=_DEFAULTS.small_size,
              show_default=True,
              help="The smaller input of multi-size training (the crop, resized).")
@click.option("--levels", default=",".join(map(str, _DEFAULTS.levels)), show_default=True,
              help="Pyramid levels (bins per side); '6' is the no-SPP baseline (one 6x6 pool).")
@click.option("--hidden", type=click.IntRange(min=1), default=_DEFAULTS.hidden,
              show_default=True, help="Width of fc6 and fc7.")
@click.option("--dropout", type=click.FloatRange(0.0, 1.0, max_open=True),
              default=_DEFAULTS.dropout, show_default=True, help="Dropout after fc6 and fc7.")
@click.option("--flip/--no-flip", default=_DEFAULTS.flip, show_default=True,
              help="Random horizontal mirroring.")
@click.option("--jitter", type=click.FloatRange(0.0, 1.0, max_open=True),
              default=_DEFAULTS.jitter, show_default=True,
              help="Colour jitter strength (brightness, contrast, saturation).")
@click.option("--val-fraction", type=click.FloatRange(0.0, 1.0, max_open=True),
              default=_DEFAULTS.val_fraction, show_default=True,
              help="Share of each class held out to watch the error.")
@click.option("--context", type=click.FloatRange(min=0.0), default=0.1, show_default=True,
              help="VOC datasets: context added around each object, as a fraction of its "
                   "width/height per side.")
@click.option("--background-per-image", type=click.IntRange(min=0), default=1,
              show_default=True,
              help="VOC datasets: background crops per image (IoU < 0.3 with every object); "
                   "0 for none (no background class).")
@click.option("--include-difficult", is_flag=True, default=False,
              help="VOC datasets: also crop objects marked difficult.")
@classes_option
@device_option
@jobs_option
@seed_option
@force_option
@pass_settings
def pretrain_command(settings: Settings, dataset: Path, split: str, backbone: str,
                     weights: str | None, name: str | None, levels: str, lr_drop_epochs: str,
                     context: float,
                     background_per_image: int, include_difficult: bool,
                     classes: str | None, device: str, jobs: int, force: bool,
                     **hyper_parameters: object) -> None:
    """Train a paper trunk + SPP + fc6/fc7 + a K-way classifier on image-level labels.

    DATASET is a classification folder (one sub-folder per class, as torchvision's
    ImageFolder) or a VOC-layout detection dataset, whose objects become crops with context
    plus background crops (an extra class). SGD with momentum 0.9, weight decay 5e-4, dropout
    0.5, the rate divided by 10 when the held-out error stops falling. A killed run resumes
    after its last finished epoch when rerun with the same options.

    The output weights.pt is a backbone checkpoint: pass it to `sppdet cache-features
    --backbone zf5 --weights ...` and start the detector's fc6/fc7 from it with
    `sppdet finetune --init pretrained`.
    """
    drops = _positive_ints(lr_drop_epochs, "--lr-drop-epochs") if lr_drop_epochs.strip() else ()
    config = PretrainConfig(levels=_positive_ints(levels, "--levels"), lr_drop_epochs=drops,
                            **hyper_parameters)  # type: ignore[arg-type]
    crop_options = {"context": context, "background_per_image": background_per_image,
                    "include_difficult": include_difficult, "seed": config.seed}
    summary = pretrain.run(dataset, settings.work_dir, split=split, backbone=backbone,
                           weights=weights, name=name, config=config,
                           classes=parse_classes(classes), crop_options=crop_options,
                           device=device, jobs=jobs, force=force)
    click.echo(summary.to_text())


@click.command("classify")
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", "-s", default="test", show_default=True,
              help="Split of a VOC dataset, or sub-folder of a classification folder.")
@click.option("--modes", default=",".join(MODES), show_default=True,
              help="Test modes: crop (centre crop), full (whole image), multiview (views "
                   "pooled from one map per scale).")
@click.option("--views", type=click.Choice(VIEW_SETS), default="10", show_default=True,
              help="Multi-view set: 1 (centre), 10 (centre + 4 corners, mirrored), 18 (+ 4 "
                   "edge middles, mirrored).")
@click.option("--view-scales", default=None, metavar="S1,S2,...",
              help="Shorter sides for multi-view testing.  [default: the training image size]")
@click.option("--view-mapping", type=click.Choice(VIEW_MAPPINGS), default="crop",
              show_default=True,
              help="How a view finds its cells: crop (the crop's own map, shifted) or paper "
                   "(appendix rule for windows).")
@click.option("--features", type=click.Choice(REPRESENTATIONS), default=None,
              help="Also write full-image features of this layer (HDF5) for linear SVMs.")
@click.option("--whole-images", is_flag=True, default=False,
              help="Features of whole VOC images with multi-label targets, instead of the "
                   "evaluated crops.")
@click.option("--feature-size", type=click.IntRange(min=1), default=None,
              help="Shorter side of images for --features.  [default: the training image size]")
@device_option
@jobs_option
@force_option
@pass_settings
def classify_command(settings: Settings, model: Path, dataset: Path, split: str, modes: str,
                     views: str, view_scales: str | None, view_mapping: str,
                     features: str | None, whole_images: bool, feature_size: int | None,
                     device: str, jobs: int, force: bool) -> None:
    """Top-1/top-5 error of a pretrained classifier: centre crop, full image, multi-view.

    MODEL is classifier.pt from `sppdet pretrain` (or its folder). The three test modes of
    the paper (3.1.4-3.1.5) are run side by side and written to
    <work-dir>/classify/<model>/<dataset>/<split>/report.md.
    """
    mode_list = tuple(part.strip() for part in modes.split(",") if part.strip())
    bad = [mode for mode in mode_list if mode not in MODES]
    if bad or not mode_list:
        raise click.BadParameter(f"choose from {', '.join(MODES)}", param_hint="--modes")
    scales = _positive_ints(view_scales, "--view-scales") if view_scales else None
    summary = classify.run(model, dataset, settings.work_dir, split=split, modes=mode_list,
                           views=views, view_scales=scales, view_mapping=view_mapping,
                           features=features, whole_images=whole_images,
                           feature_size=feature_size, device=device, jobs=jobs, force=force)
    click.echo(summary.to_text())


COMMANDS = [pretrain_command, classify_command]


@click.command("image-svm")
@click.argument("train_features", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("test_features", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--C", "C", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="SVM regularisation constant.")
@click.option("--normalize/--no-normalize", default=True, show_default=True,
              help="L2-normalise each feature vector first.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Report file (JSON).  [default: image-svm.json beside TEST_FEATURES]")
def image_svm_command(train_features: Path, test_features: Path, C: float, normalize: bool,
                      out: Path | None) -> None:
    """Linear SVMs on full-image features from `sppdet classify --features` (paper 3.2).

    One SVM per class (one-vs-rest); reports the average precision of each class (VOC 2007
    11-point), the mean, and the top-1 error for single-label data.
    """
    import json

    from sppdet.io.atomic import write_text_atomic
    from sppdet.classification.image_svm import read_feature_file, train_and_test

    result = train_and_test(read_feature_file(train_features), read_feature_file(test_features),
                            C=C, normalize=normalize)
    out = out or test_features.with_name("image-svm.json")
    write_text_atomic(out, json.dumps(result.to_dict(), indent=2) + "\n")
    click.echo(result.to_text())
    click.echo(f"report: {out}")


COMMANDS.append(image_svm_command)
