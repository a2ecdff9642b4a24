"""Commands ``pretrain``, ``classify`` and ``image-svm``: SPP-net image classification (paper
section 3)."""

from __future__ import annotations

from pathlib import Path

import click

from sppdet.classification.config import MULTI_SIZE_MODES, PretrainConfig
from sppdet.stages.params import (TEST_SPLIT, TRAIN_SPLIT, ClassifyOptions, ImageSvmOptions,
                                  PretrainOptions)

from .context import Settings, pass_settings
from .options import (IntListType, classes_option, device_option, force_option, jobs_option, option,
                      param_option, parse_classes, seed_option)
from .remedies import summary_text

_DEFAULTS = PretrainConfig()


@click.command("pretrain")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@option("--split", "-s", default=TRAIN_SPLIT, show_default=True,
        help="Split of a VOC dataset, or sub-folder of a classification folder (the "
             "folder itself is used when it has no such sub-folder).")
@param_option(PretrainOptions, "backbone", "--backbone", "-b",
              help="The paper's trunk to train.")
@option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
        show_default="seeded random init",
        help="Checkpoint to start from (e.g. an earlier pretrain's weights.pt).")
@option("--name", "-n", default=None, show_default="<backbone>-<dataset folder>",
        help="Output name: <work-dir>/backbones/<name>/.")
@option("--epochs", type=click.IntRange(min=1), default=_DEFAULTS.epochs,
        show_default=True, help="Passes over the training examples.")
@option("--batch-size", type=click.IntRange(min=1), default=_DEFAULTS.batch_size,
        show_default=True, help="Examples per SGD step.")
@option("--lr", type=click.FloatRange(min=0, min_open=True), default=_DEFAULTS.lr,
        show_default=True, help="Starting learning rate (divided by 10 on plateau).")
@option("--lr-patience", type=click.IntRange(min=0), default=_DEFAULTS.lr_patience,
        show_default=True,
        help="Epochs without a lower held-out error before the rate drops.")
@option("--lr-drop-epochs", type=IntListType("epoch", min=1), default=None,
        metavar="E1,E2,...", show_default="on plateau",
        help="A fixed schedule instead of the plateau rule: the rate is divided by 10 "
             "from each of these (0-based) epochs on.")
@option("--crop-size", type=click.IntRange(min=1), default=_DEFAULTS.crop_size,
        show_default=True, help="Training crop side (pixels).")
@option("--image-size", type=click.IntRange(min=1), default=_DEFAULTS.image_size,
        show_default=True,
        help="Shorter side the examples are resized to before cropping; also the "
             "full-image test size.")
@option("--multi-size", type=click.Choice(MULTI_SIZE_MODES),
        default=_DEFAULTS.multi_size, show_default=True,
        help="off: single-size; alternate: epochs alternate crop-size and small-size "
             "(paper); random: one size in [small-size, crop-size] per epoch.")
@option("--small-size", type=click.IntRange(min=1), default=_DEFAULTS.small_size,
        show_default=True,
        help="The smaller input of multi-size training (the crop, resized).")
@option("--levels", type=IntListType("level", min=1),
        default=",".join(map(str, _DEFAULTS.levels)), show_default=True,
        help="Pyramid levels (bins per side); '6' is the no-SPP baseline (one 6x6 pool).")
@option("--hidden", type=click.IntRange(min=1), default=_DEFAULTS.hidden,
        show_default=True, help="Width of fc6 and fc7.")
@option("--dropout", type=click.FloatRange(0.0, 1.0, max_open=True),
        default=_DEFAULTS.dropout, show_default=True, help="Dropout after fc6 and fc7.")
@option("--flip/--no-flip", default=_DEFAULTS.flip, show_default=True,
        help="Random horizontal mirroring.")
@option("--jitter", type=click.FloatRange(0.0, 1.0, max_open=True),
        default=_DEFAULTS.jitter, show_default=True,
        help="Colour jitter strength (brightness, contrast, saturation).")
@option("--val-fraction", type=click.FloatRange(0.0, 1.0, max_open=True),
        default=_DEFAULTS.val_fraction, show_default=True,
        help="Share of each class held out to watch the error.")
@param_option(PretrainOptions, "context", "--context",
              help="VOC datasets: context added around each object, as a fraction of its "
                   "width/height per side.")
@param_option(PretrainOptions, "background_per_image", "--background-per-image",
              help="VOC datasets: background crops per image (IoU < 0.3 with every object); "
                   "0 for none (no background class).")
@param_option(PretrainOptions, "include_difficult",
              "--include-difficult/--no-include-difficult",
              help="VOC datasets: also crop objects marked difficult.")
@classes_option
@device_option
@jobs_option
@seed_option
@force_option
@pass_settings
def pretrain_command(settings: Settings, dataset: Path, split: str, backbone: str,
                     weights: str | None, name: str | None,
                     lr_drop_epochs: tuple[int, ...] | None, context: float,
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
    from sppdet.stages import pretrain

    # every other option is a field of PretrainConfig, under the same name
    config = PretrainConfig(lr_drop_epochs=lr_drop_epochs or (),
                            **hyper_parameters)  # type: ignore[arg-type]
    options = PretrainOptions(context=context, background_per_image=background_per_image,
                              include_difficult=include_difficult)
    summary = pretrain.run(dataset, settings.work_dir, split=split, backbone=backbone,
                           weights=weights, name=name, config=config,
                           classes=parse_classes(classes),
                           crop_options=options.crop_options(config.seed), device=device,
                           jobs=jobs, force=force)
    click.echo(summary_text(summary))


@click.command("classify")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@option("--split", "-s", default=TEST_SPLIT, show_default=True,
        help="Split of a VOC dataset, or sub-folder of a classification folder.")
@param_option(ClassifyOptions, "modes", "--modes",
              help="Test modes: crop (centre crop), full (whole image), multiview (views "
                   "pooled from one map per scale).")
@param_option(ClassifyOptions, "views", "--views",
              help="Multi-view set: 1 (centre), 10 (centre + 4 corners, mirrored), 18 (+ 4 "
                   "edge middles, mirrored).")
@param_option(ClassifyOptions, "view_scales", "--view-scales", metavar="S1,S2,...",
              show_default="the training image size",
              help="Shorter sides for multi-view testing.")
@param_option(ClassifyOptions, "view_mapping", "--view-mapping",
              help="How a view finds its cells: crop (the crop's own map, shifted) or paper "
                   "(appendix rule for windows).")
@param_option(ClassifyOptions, "features", "--features",
              help="Also write full-image features of this layer (HDF5) for linear SVMs.")
@param_option(ClassifyOptions, "whole_images", "--whole-images/--no-whole-images",
              help="Features of whole VOC images with multi-label targets, instead of the "
                   "evaluated crops.")
@param_option(ClassifyOptions, "feature_size", "--feature-size",
              show_default="the training image size",
              help="Shorter side of images for --features.")
@device_option
@jobs_option
@force_option
@pass_settings
def classify_command(settings: Settings, dataset: Path, model: Path, split: str,
                     modes: tuple[str, ...], views: str, view_scales: tuple[int, ...] | None,
                     view_mapping: str, features: str | None, whole_images: bool,
                     feature_size: int | None, device: str, jobs: int, force: bool) -> None:
    """Top-1/top-5 error of a pretrained classifier: centre crop, full image, multi-view.

    DATASET is a VOC-layout dataset or a classification folder; MODEL is classifier.pt from
    `sppdet pretrain` (or its folder). The three test modes of the paper (3.1.4-3.1.5) are
    run side by side and written to <work-dir>/classify/<model>/<dataset>/<split>/report.md.
    """
    if (dataset / "classifier.pt").is_file():
        raise click.UsageError(f"{dataset} holds a classifier: DATASET comes first, then "
                               "MODEL (sppdet classify DATASET MODEL)")
    from sppdet.stages import classify

    summary = classify.run(model, dataset, settings.work_dir, split=split, modes=modes,
                           views=views, view_scales=view_scales, view_mapping=view_mapping,
                           features=features, whole_images=whole_images,
                           feature_size=feature_size, device=device, jobs=jobs, force=force)
    click.echo(summary_text(summary))


@click.command("image-svm")
@click.argument("train_features", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("test_features", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@param_option(ImageSvmOptions, "C", "--C", help="SVM regularisation constant.")
@param_option(ImageSvmOptions, "normalize", "--normalize/--no-normalize",
              help="L2-normalise each feature vector first.")
@option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
        show_default="image-svm.json beside TEST_FEATURES", help="Report file (JSON).")
def image_svm_command(train_features: Path, test_features: Path, C: float, normalize: bool,
                      out: Path | None) -> None:
    """Linear SVMs on full-image features from `sppdet classify --features` (paper 3.2).

    One SVM per class (one-vs-rest); reports the average precision of each class (VOC 2007
    11-point), the mean, and the top-1 error for single-label data.
    """
    from sppdet.stages import image_svm

    result, out = image_svm.run(train_features, test_features, out, C=C, normalize=normalize)
    click.echo(result.to_text())
    click.echo(f"report: {out}")


COMMANDS = [pretrain_command, classify_command, image_svm_command]
